//! [`Client`]: one opened backend and every call made to it.
//!
//! The layer between the backend (what it is, what it can do) and what the
//! store does with it (uploads, reads, batches, sweeps). Every call passes
//! through [`Client::call`] or [`Client::call_once`], that is through the
//! process's [`Scheduler`]: queued fairly, under the limit, retried under
//! the budget. The client also owns the store's own work: its group of
//! system calls, the background cleanups that [`Client::close`] waits for,
//! and the prober that finds a backend again after an outage.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use corral_sched::{Group, Health, Scheduler};
use futures::{StreamExt, TryFutureExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{Backend, Orphans, Parts};
use crate::error::{BackendError, Error, Result};
use crate::key::Key;

/// The object the start-up check writes and removes, and the prober asks
/// for (under `.corral/`, which is no tenant's).
const PROBE: &str = ".corral/probe";

/// How often the prober looks at the backend's health.
const PROBE_TICK: Duration = Duration::from_secs(1);

/// How long [`Client::close`] waits for background cleanups.
const CLEANUP_GRACE: Duration = Duration::from_secs(10);

/// One backend and its calls. Cloning is cheap.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    inner: Arc<Inner>,
}

/// A [`Client`] that does not keep the backend open: for background loops
/// that end when the store is dropped.
#[derive(Debug, Clone)]
pub(crate) struct WeakClient(Weak<Inner>);

#[derive(Debug)]
struct Inner {
    backend: Backend,
    /// Every backend call of the process goes through it.
    scheduler: Scheduler,
    /// The group of the store's own calls (checks, cleanups, sweeps).
    system: Group,
    /// Cancelled by [`Client::close`]: stops the background loops.
    stop: CancellationToken,
    /// Background cleanups (aborting uploads, removing rolled-back
    /// objects); [`Client::close`] waits for them.
    cleanup: TaskTracker,
    /// Keys whose failed or abandoned write is still being cleaned up
    /// (aborted, deleted); each token is cancelled once its cleanup ended.
    /// Each entry is numbered, so that a cleanup removes only its own.
    cleaning: Mutex<HashMap<String, (u64, CancellationToken)>>,
    cleanups_begun: AtomicU64,
}

impl Client {
    pub(crate) fn new(backend: Backend, scheduler: Scheduler) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                system: scheduler.system_group(),
                scheduler,
                stop: CancellationToken::new(),
                cleanup: TaskTracker::new(),
                cleaning: Mutex::default(),
                cleanups_begun: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn downgrade(&self) -> WeakClient {
        WeakClient(Arc::downgrade(&self.inner))
    }

    /// Runs a backend call of `cost` bytes as a job of `group`: queued
    /// fairly, under the limit, retried if it fails transiently. `call` is
    /// called once per attempt.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        group: &Group,
        key: &str,
        cost: u64,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        group
            .run(cost, || call().map_err(BackendError))
            .await
            .map_err(|e| Error::job(key, e))
    }

    /// Like [`call`](Self::call), for a call that cannot be repeated.
    pub(crate) async fn call_once<T>(
        &self,
        group: &Group,
        key: &str,
        cost: u64,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T> {
        group
            .run_once(cost, call.map_err(BackendError))
            .await
            .map_err(|e| Error::job(key, e))
    }

    /// One attempt at deleting `paths`, in bulk where the backend can;
    /// paths already gone are no error.
    pub(crate) async fn delete_call(&self, paths: &[Path]) -> object_store::Result<()> {
        let locations = futures::stream::iter(paths.to_vec()).map(Ok).boxed();
        let mut deleted = self.backend().delete_stream(locations);
        while let Some(outcome) = deleted.next().await {
            match outcome {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes and removes a probe object, so that a store that cannot be
    /// written fails at startup and not at the first upload.
    pub(crate) async fn check(&self) -> Result<()> {
        let probe = Path::from(PROBE);
        let (key, group, backend) = (probe.as_ref(), self.system(), self.backend());
        let ok = PutPayload::from_static(b"ok");
        self.call(group, key, 2, || backend.put(&probe, ok.clone()))
            .await?;
        self.call(group, key, 0, || backend.delete(&probe)).await
    }

    /// While the scheduler's breaker holds the backend for down (see
    /// [`corral_sched::breaker`]), probes it each time a probe is due, so
    /// that it is found again without traffic: a load balancer sends none
    /// to an instance whose `/readyz` fails. Logs when the backend goes
    /// down and when it comes back. Stops with [`Client::close`].
    pub(crate) fn start_prober(&self) {
        let weak = self.downgrade();
        let stop = self.inner.stop.clone();
        self.spawn_cleanup(async move {
            let mut down = false;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(PROBE_TICK) => {}
                    () = stop.cancelled() => return,
                }
                let Some(client) = weak.upgrade() else {
                    return;
                };
                match client.inner.scheduler.health() {
                    Health::Up if down => {
                        tracing::info!(url = %client.url(), "the storage backend answers again");
                        down = false;
                    }
                    Health::Up => {}
                    Health::Down { retry_at, .. } => {
                        if !down {
                            tracing::warn!(url = %client.url(), "the storage backend is unavailable: refusing work until it answers");
                            down = true;
                        }
                        if tokio::time::Instant::now() >= retry_at {
                            // Any answer will do, a 404 included: the
                            // breaker learns from the call itself.
                            let probe = Path::from(PROBE);
                            let backend = client.backend();
                            let head = client.call(client.system(), probe.as_ref(), 0, || {
                                backend.head(&probe)
                            });
                            tokio::select! {
                                _ = head => {}
                                () = stop.cancelled() => return,
                            }
                        }
                    }
                }
            }
        });
    }

    /// Runs `work` in the background; [`close`](Self::close) waits for it.
    pub(crate) fn spawn_cleanup(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.inner.cleanup.spawn(work);
    }

    /// Runs `work`, a cleanup of `key` (aborting its upload, deleting what
    /// a failed write left), in the background; [`settled`](Self::settled)
    /// waits for it.
    pub(crate) fn spawn_cleanup_of(
        &self,
        key: &Key,
        work: impl Future<Output = ()> + Send + 'static,
    ) {
        let token = CancellationToken::new();
        let id = self.inner.cleanups_begun.fetch_add(1, Ordering::Relaxed);
        let previous = self
            .cleaning()
            .insert(key.to_string(), (id, token.clone()))
            .map(|(_, previous)| previous);
        let (client, key) = (self.clone(), key.to_string());
        self.spawn_cleanup(async move {
            // A cleanup of the same key still running goes first.
            if let Some(previous) = previous {
                previous.cancelled().await;
            }
            work.await;
            let mut cleaning = client.cleaning();
            if cleaning.get(&key).is_some_and(|(own, _)| *own == id) {
                cleaning.remove(&key);
            }
            drop(cleaning);
            token.cancel();
        });
    }

    /// Waits until no cleanup of `key` is running.
    pub(crate) async fn settled(&self, key: &Key) {
        let pending = (self.cleaning().get(key.as_str())).map(|(_, token)| token.clone());
        if let Some(pending) = pending {
            pending.cancelled().await;
        }
    }

    fn cleaning(&self) -> MutexGuard<'_, HashMap<String, (u64, CancellationToken)>> {
        self.inner.cleaning.lock().expect("never poisoned")
    }

    /// Sleeps for `wait`; `false` if [`close`](Self::close) came first.
    pub(crate) async fn pause(&self, wait: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = self.inner.stop.cancelled() => false,
        }
    }

    /// Cancelled once [`close`](Self::close) begins.
    pub(crate) fn stopping(&self) -> &CancellationToken {
        &self.inner.stop
    }

    /// The scheduler of every backend call.
    pub(crate) fn scheduler(&self) -> &Scheduler {
        &self.inner.scheduler
    }

    /// The group of the store's own calls.
    pub(crate) fn system(&self) -> &Group {
        &self.inner.system
    }

    pub(crate) fn backend(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.backend.store
    }

    /// The store's URL, for people (a local path is shown absolute).
    pub(crate) fn url(&self) -> &str {
        &self.inner.backend.url
    }

    /// What to tell people if the first call fails (see [`Backend::hint`]).
    pub(crate) fn hint(&self) -> Option<&'static str> {
        self.inner.backend.hint
    }

    /// The backend's parts interface, where it has one.
    pub(crate) fn parts(&self) -> Option<&Parts> {
        self.inner.backend.parts.as_ref()
    }

    /// The parts interface of uploads that must outlive the process: the
    /// backend's, else the one made for them (see [`Backend`]).
    pub(crate) fn resumable_parts(&self) -> Option<&Parts> {
        self.parts().or(self.inner.backend.resumable_parts.as_ref())
    }

    /// Whether objects keep attributes (content type, user metadata).
    pub(crate) fn keeps_attributes(&self) -> bool {
        self.inner.backend.attributes
    }

    /// How the backend's abandoned multipart uploads are found.
    pub(crate) fn orphans(&self) -> &Orphans {
        &self.inner.backend.orphans
    }

    /// Stops the background loops and waits for background cleanups to
    /// finish, for at most ten seconds (`CLEANUP_GRACE`): then those still
    /// retrying (the backend is down) are given up, and logged.
    pub(crate) async fn close(&self) {
        self.inner.stop.cancel();
        self.inner.cleanup.close();
        let waited = tokio::time::timeout(CLEANUP_GRACE, self.inner.cleanup.wait()).await;
        if waited.is_err() {
            tracing::warn!(
                cleanups = self.inner.cleanup.len(),
                "background cleanups still retrying at shutdown: giving them up"
            );
            self.inner.system.cancel();
            self.inner.cleanup.wait().await;
        }
    }
}

impl WeakClient {
    /// The client, unless every store holding it is gone.
    pub(crate) fn upgrade(&self) -> Option<Client> {
        self.0.upgrade().map(|inner| Client { inner })
    }
}
