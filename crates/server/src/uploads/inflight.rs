//! [`Inflight`]: at most one request at a time on each resumable upload,
//! the newest.
//!
//! Two requests writing one upload at once would interleave their bytes.
//! A client sends a second request on an upload mostly because it gave up
//! on the first (its connection stalled, it was restarted, the user pressed
//! resume): the first request is then the one to stop, as the IETF draft
//! recommends, not the second to refuse. So a request entering an upload
//! stops the one inside ([`Turn::stopped`] fires there: it saves what it
//! received and ends) and waits for it to leave. If a third comes while the
//! second is waiting, the second gives up ([`Superseded`], answered `423`)
//! and the third goes next: only the newest request is ever served.
//!
//! Within one process. Across instances sharing a store, the upload's
//! lease keeps requests apart (see [`corral_store::resumable`]): a
//! request on another instance is refused (`423 locked`) rather than
//! stopping this one, which it cannot reach.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;

/// The requests on each upload of this process.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    uploads: Mutex<HashMap<String, Entry>>,
}

/// One upload with a request on it or waiting for it.
#[derive(Debug)]
struct Entry {
    /// Held by the request inside.
    turn: Arc<AsyncMutex<()>>,
    /// The newest request's token: cancelling it stops that request,
    /// inside or waiting.
    newest: CancellationToken,
    /// Requests holding or waiting for the turn.
    requests: usize,
}

/// A request's turn on an upload: while it lives, no other request of
/// this process writes the upload.
#[derive(Debug)]
pub(crate) struct Turn {
    _guard: OwnedMutexGuard<()>,
    leave: Leave,
}

/// Removes the upload's entry once its last request leaves.
#[derive(Debug)]
struct Leave {
    inflight: Arc<Inflight>,
    upload: String,
    stop: CancellationToken,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let mut uploads = self.inflight.uploads.lock().expect("never poisoned");
        if let Some(entry) = uploads.get_mut(&self.upload) {
            entry.requests -= 1;
            if entry.requests == 0 {
                uploads.remove(&self.upload);
            }
        }
    }
}

/// A newer request on the upload came while this one waited for its turn.
#[derive(Debug, thiserror::Error)]
#[error("a newer request on this upload came while this one waited for it")]
pub(crate) struct Superseded;

impl Turn {
    /// Fires when a newer request on the upload wants it: save what was
    /// received, and end.
    pub(crate) async fn stopped(&self) {
        self.leave.stop.cancelled().await;
    }
}

impl Inflight {
    /// Waits for the turn on `upload`, stopping the request inside.
    ///
    /// # Errors
    ///
    /// [`Superseded`] if a newer request came meanwhile.
    pub(crate) async fn enter(self: &Arc<Self>, upload: &str) -> Result<Turn, Superseded> {
        let stop = CancellationToken::new();
        let turn = {
            let mut uploads = self.uploads.lock().expect("never poisoned");
            let entry = uploads.entry(upload.to_owned()).or_insert_with(|| Entry {
                turn: Arc::default(),
                newest: CancellationToken::new(),
                requests: 0,
            });
            entry.newest.cancel();
            entry.newest = stop.clone();
            entry.requests += 1;
            Arc::clone(&entry.turn)
        };
        let leave = Leave {
            inflight: Arc::clone(self),
            upload: upload.to_owned(),
            stop,
        };
        tokio::select! {
            biased;
            guard = turn.lock_owned() => {
                // Superseded as the turn came: `stopped` fires at once.
                Ok(Turn { _guard: guard, leave })
            }
            () = leave.stop.cancelled() => Err(Superseded),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_newest_request_stops_the_one_inside_and_a_waiting_one_gives_up() {
        let inflight = Arc::new(Inflight::default());
        let first = inflight.enter("u").await.unwrap();
        let second = tokio::spawn({
            let inflight = Arc::clone(&inflight);
            async move { inflight.enter("u").await.map(|_| ()) }
        });
        // The first is asked to stop.
        tokio::time::timeout(Duration::from_secs(1), first.stopped())
            .await
            .expect("the first request is told to stop");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let third = tokio::spawn({
            let inflight = Arc::clone(&inflight);
            async move {
                let turn = inflight.enter("u").await.unwrap();
                // Nobody newer: not asked to stop.
                let asked = tokio::time::timeout(Duration::from_secs(1), turn.stopped()).await;
                asked.is_err()
            }
        });
        assert!(matches!(second.await.unwrap(), Err(Superseded)));
        // The third waits for the first to leave.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!third.is_finished());
        drop(first);
        assert!(third.await.unwrap(), "the newest request was asked to stop");
        assert!(inflight.uploads.lock().unwrap().is_empty());
        // Other uploads are not held up.
        let a = inflight.enter("a").await.unwrap();
        let b = inflight.enter("b").await.unwrap();
        drop((a, b));
        assert!(inflight.uploads.lock().unwrap().is_empty());
    }
}
