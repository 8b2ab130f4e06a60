//! What every handle of one scheduler shares: [`Shared`], held by the
//! [`Scheduler`](crate::Scheduler) and each [`Group`](crate::Group), and
//! the [`State`] behind its lock.
//!
//! It sits below the scheduler's other modules so that the scheduler, its
//! groups and their permits each reach the state from here, and none has
//! to reach back into another for it.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::breaker::Breaker;
use crate::limit::Limiter;
use crate::metrics::Counters;
use crate::queue::FairQueue;
use crate::retry::{Budget, RetryConfig};

/// One scheduler's shared part, behind an `Arc` that the scheduler and
/// every group hold: it lives until the last of them is dropped.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) retry: RetryConfig,
    pub(crate) counters: Counters,
    /// Cancelled when shutdown gives up waiting; every group's token is a
    /// child of it.
    pub(crate) root: CancellationToken,
    /// Notified whenever the scheduler becomes idle.
    pub(crate) idle: Notify,
    pub(crate) next_group: AtomicU64,
}

/// What changes as work comes and goes, under one lock.
#[derive(Debug)]
pub(crate) struct State {
    /// The waiting jobs; each is granted its slot through its sender.
    pub(crate) queue: FairQueue<oneshot::Sender<Grant>>,
    pub(crate) admission: Admission,
    pub(crate) limiter: Limiter,
    pub(crate) in_flight: usize,
    /// Calls in flight per group, counted only under the per-request
    /// strategy (the only one with a cap per group).
    pub(crate) group_in_flight: HashMap<u64, usize>,
    pub(crate) tenants: HashMap<String, u64>,
    pub(crate) budget: Budget,
    pub(crate) breaker: Breaker,
    pub(crate) rng: fastrand::Rng,
    pub(crate) closed: bool,
}

/// What a waiting job receives when it may run.
#[derive(Debug)]
pub(crate) struct Grant {
    pub(crate) dispatched: Instant,
    /// Calls in flight once this one was counted.
    pub(crate) in_flight: usize,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is never held across a call that can panic.
        self.state
            .lock()
            .expect("the scheduler state is never poisoned")
    }
}
