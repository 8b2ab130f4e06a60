//! [`Door`]: where connections come in. Each is accepted and given a place
//! among the connections served ([`Connections`]), or refused there.
//!
//! # A refusal is an answer
//!
//! A connection beyond `--max-connections` is not left in the backlog nor
//! closed in silence, which a client cannot tell from a network fault: it
//! is accepted, answered `503 too_many_connections` with `Retry-After`,
//! `Connection: close` and corral's JSON error, and closed, without
//! reading its request (which may not have come yet; a client sends it
//! and reads the answer already there). The close lingers as hyper's do
//! (see [`super::socket`]): closing a socket with a request unread in it
//! would reset the connection and could destroy the answer. The whole
//! exchange takes at most [`REFUSAL_TIME`], and at most [`MAX_REFUSING`]
//! are written at once; beyond, a refused connection is closed at once, so
//! that a flood costs a bounded number of tasks and descriptors.
//!
//! # Out of descriptors
//!
//! `accept` fails with `EMFILE` (or `ENFILE`) when the process (or the
//! system) has no descriptor left; the connection stays in the backlog and
//! the next `accept` would fail at once. The door waits [`ACCEPT_BACKOFF`]
//! before trying again, rather than spinning, and the server goes on
//! serving the connections it has. Refusals and failures are logged at
//! most once per [`LOG_EVERY`], with the count of those not logged.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::admission::{Connections, Refusal};
use crate::error::{self, ApiError};
use crate::metrics::Metrics;

/// The longest a refused connection is kept: its answer written, and what
/// its client still sends read and discarded.
pub(super) const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// The most refusals written at once.
const MAX_REFUSING: usize = 1024;

/// How long the door waits after `accept` failed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The least time between two log lines of one kind.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Accepts connections, admitting them or refusing them.
pub(super) struct Door {
    connections: Connections,
    metrics: Arc<Metrics>,
    /// One permit per refusal being written, moved into its task.
    refusing: Arc<Semaphore>,
    /// The refusals being written: [`Door::close`] waits for them.
    refusals: TaskTracker,
    refused_log: Throttle,
    failed_log: Throttle,
}

impl Door {
    pub(super) fn new(connections: Connections, metrics: Arc<Metrics>) -> Self {
        Self {
            connections,
            metrics,
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            refusals: TaskTracker::new(),
            refused_log: Throttle::default(),
            failed_log: Throttle::default(),
        }
    }

    /// The next connection admitted, with its place among the connections
    /// served: dropping the place lets another in. Connections beyond the
    /// limit are refused on the way; a failed `accept` is logged and
    /// retried after [`ACCEPT_BACKOFF`].
    ///
    /// Cancel safe: a connection accepted is admitted or refused before
    /// the next await.
    pub(super) async fn next(
        &mut self,
        listener: &TcpListener,
    ) -> (TcpStream, OwnedSemaphorePermit) {
        loop {
            let socket = match accept(listener).await {
                Ok(socket) => socket,
                Err(error) => {
                    self.accept_failed(&error);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if let Some(admitted) = self.admit(socket) {
                return admitted;
            }
        }
    }

    /// `socket`, with its place among the connections served; `None` if
    /// it was refused.
    pub(super) fn admit(&mut self, socket: TcpStream) -> Option<(TcpStream, OwnedSemaphorePermit)> {
        match self.connections.admit() {
            Ok(place) => Some((socket, place)),
            Err(refusal) => {
                self.refuse(socket, &refusal);
                None
            }
        }
    }

    /// Answers `socket` with `refusal` and closes it (see the
    /// [module docs](self)).
    fn refuse(&mut self, socket: TcpStream, refusal: &Refusal) {
        self.metrics.count_refusal(refusal);
        if let Some(held) = self.refused_log.pass() {
            tracing::warn!(
                limit = self.connections.limit(),
                refused_since_last_message = held,
                "refusing connections: as many are open as --max-connections allows"
            );
        }
        let Ok(slot) = Arc::clone(&self.refusing).try_acquire_owned() else {
            // Too many refusals being written already: closed unanswered.
            return;
        };
        let date = format!("date: {}\r\n", httpdate::fmt_http_date(SystemTime::now()));
        let answer = error::raw_answer(&ApiError::Refused(refusal.clone()), &date);
        self.refusals.spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(REFUSAL_TIME, answer_and_close(socket, &answer)).await;
        });
    }

    fn accept_failed(&mut self, error: &io::Error) {
        let Some(held) = self.failed_log.pass() else {
            return;
        };
        let errno = rustix::io::Errno::from_io_error(error);
        if matches!(
            errno,
            Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
        ) {
            tracing::warn!(
                %error,
                open = self.connections.open(),
                failed_since_last_message = held,
                "out of file descriptors: connections wait in the backlog; raise the \
                 open-files limit (ulimit -n, LimitNOFILE= in systemd) or lower \
                 --max-connections"
            );
        } else {
            // A connection reset before it was accepted, and the like.
            tracing::warn!(
                %error,
                failed_since_last_message = held,
                "accepting a connection failed"
            );
        }
    }

    /// Waits for the refusals being written (each within
    /// [`REFUSAL_TIME`]).
    pub(super) async fn close(self) {
        self.refusals.close();
        self.refusals.wait().await;
    }
}

/// Writes `answer`, shuts the write side, and reads what the client still
/// sends until it closes its side.
async fn answer_and_close(mut socket: TcpStream, answer: &[u8]) -> io::Result<()> {
    socket.write_all(answer).await?;
    socket.shutdown().await?;
    let mut discard = [0; 4096];
    while socket.read(&mut discard).await? > 0 {}
    Ok(())
}

/// The next connection, with `TCP_NODELAY` set: an answer is written as a
/// head and a body, and without it Nagle's algorithm holds the second
/// write back until the client's delayed ACK, about 40 ms later, on every
/// request of a kept-alive connection.
async fn accept(listener: &TcpListener) -> io::Result<TcpStream> {
    let (socket, _) = listener.accept().await?;
    if let Err(error) = socket.set_nodelay(true) {
        tracing::debug!(%error, "setting TCP_NODELAY failed");
    }
    Ok(socket)
}

/// Lets a log line through at most once per [`LOG_EVERY`], counting those
/// it held back.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// How many were held back since the last one let through, if this
    /// one may be logged.
    fn pass(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < LOG_EVERY)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a kept-alive GET of 10 bytes took 27 ms against 0.6 ms
    /// on a fresh connection, Nagle's algorithm holding each answer's body
    /// back until the client's delayed ACK.
    #[tokio::test]
    async fn accepted_connections_have_nodelay_set() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, accept(&listener));
        let (_client, accepted) = (client.unwrap(), accepted.unwrap());
        assert!(accepted.nodelay().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_line_passes_once_per_period_with_the_count_held_back() {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.pass(), Some(0));
        assert_eq!(throttle.pass(), None);
        assert_eq!(throttle.pass(), None);
        tokio::time::advance(LOG_EVERY).await;
        assert_eq!(throttle.pass(), Some(2));
        assert_eq!(throttle.pass(), None);
    }
}
