//! [`Connections`]: the most connections served at once, the first gate a
//! client meets.
//!
//! Every connection holds resources whatever it does: a descriptor, a
//! task, hyper's buffers (about 13 KiB in all when idle). Thousands of idle
//! keep-alive connections are normal behind a load balancer or with
//! browsers, but with no bound a flood of them ends in `EMFILE` at
//! `accept`, where the server can only drop connections silently. The
//! bound turns that into an answer: a connection beyond it is told
//! `503 too_many_connections` with `Retry-After`, and closed.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::refusal::Refusal;

/// The connections served at once, at most `limit`. Cloning shares them.
#[derive(Debug, Clone)]
pub(crate) struct Connections {
    /// One permit per connection that may still be opened. A connection's
    /// task holds its permit until it ends; dropping it (the connection
    /// closed, or its task was dropped) lets the next one in.
    permits: Arc<Semaphore>,
    limit: usize,
}

impl Connections {
    /// At most `limit` connections at once (at least one).
    pub(crate) fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// A place for one more connection, held by the returned permit.
    ///
    /// # Errors
    ///
    /// [`Refusal::TooManyConnections`] when `limit` connections are open.
    pub(crate) fn admit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|error| match error {
                // Never closed: only a full semaphore refuses.
                TryAcquireError::NoPermits | TryAcquireError::Closed => {
                    Refusal::TooManyConnections { limit: self.limit }
                }
            })
    }

    /// The connections open now.
    pub(crate) fn open(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// The most connections served at once.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_beyond_the_limit_is_refused_until_one_closes() {
        let connections = Connections::new(2);
        let first = connections.admit().unwrap();
        let _second = connections.admit().unwrap();
        assert_eq!(connections.open(), 2);
        assert_eq!(
            connections.admit().unwrap_err(),
            Refusal::TooManyConnections { limit: 2 }
        );
        drop(first);
        assert_eq!(connections.open(), 1);
        let _third = connections.admit().unwrap();
    }
}
