//! [`Scheduler`]: one per backend, shared by every request.
//!
//! A request's work is a [`Group`], admitted by [`Scheduler::group`]; each
//! backend call is a job of a group, run with [`Group::run`]. A job waits in the fair queue until the
//! limit lets it through, runs in the caller's own task (the scheduler
//! spawns nothing, so a job is exactly as alive as the request awaiting
//! it), and on a transient failure goes back through the queue after a
//! backoff, if the retry budget allows.
//!
//! This module wires the parts together: the queue, the limit, the retry
//! budget and the breaker in one [`State`] behind one lock; the slots a
//! job holds are in [`crate::permit`], how a job runs in [`crate::group`],
//! and when work is refused in [`crate::admission`].

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, QueueConfig, Refused};
use crate::breaker::{Breaker, BreakerConfig, Health};
use crate::group::Group;
use crate::limit::{LimitConfig, Limiter};
use crate::metrics::{CounterSnapshot, Counters, Stats};
use crate::queue::FairQueue;
use crate::retry::{Budget, RetryConfig};
use crate::shared::{Shared, State};

/// Everything the scheduler is configured with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedConfig {
    /// How the limit on calls in flight is set.
    pub limit: LimitConfig,
    /// How much work may wait.
    pub queue: QueueConfig,
    /// How failed calls are retried.
    pub retry: RetryConfig,
    /// When the backend counts as down.
    pub breaker: BreakerConfig,
}

/// One backend's scheduler. Cloning is cheap; clones share everything.
#[derive(Debug, Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl Scheduler {
    /// A scheduler following `config`.
    pub fn new(config: SchedConfig) -> Self {
        let now = Instant::now();
        let rng = match config.retry.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        let state = State {
            queue: FairQueue::default(),
            admission: Admission::new(config.queue, now),
            limiter: Limiter::new(config.limit, now),
            in_flight: 0,
            group_in_flight: HashMap::new(),
            tenants: HashMap::new(),
            budget: Budget::new(&config.retry, now),
            breaker: Breaker::new(config.breaker, now),
            rng,
            closed: false,
        };
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                retry: config.retry,
                counters: Counters::default(),
                root: CancellationToken::new(),
                idle: Notify::new(),
                next_group: AtomicU64::new(0),
            }),
        }
    }

    /// Admits a new group of work for `tenant`: the admission check, made
    /// before a request's body is read.
    ///
    /// # Errors
    ///
    /// [`Refused::Overloaded`] with a suggested wait when the queue is
    /// full; [`Refused::Unavailable`] while the backend is down (see
    /// [`crate::breaker`]); [`Refused::ShuttingDown`] after
    /// [`close`](Self::close).
    pub fn group(&self, tenant: &str) -> Result<Group, Refused> {
        self.admit(tenant, true)
    }

    /// Like [`group`](Self::group), but admitted while the backend is
    /// down: for a request whose work can wait for it, such as one that
    /// spools its upload to disk. Its calls, if it makes any, are refused
    /// while the backend is down.
    ///
    /// # Errors
    ///
    /// As [`group`](Self::group), never [`Refused::Unavailable`].
    pub fn group_while_down(&self, tenant: &str) -> Result<Group, Refused> {
        self.admit(tenant, false)
    }

    fn admit(&self, tenant: &str, needs_backend: bool) -> Result<Group, Refused> {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.closed {
            return Err(Refused::ShuttingDown);
        }
        if let Some(retry_after) = state.admission.overloaded(&state.queue) {
            Counters::bump(&shared.counters.rejected);
            return Err(Refused::Overloaded { retry_after });
        }
        if needs_backend && let Some(retry_after) = state.breaker.refuses(Instant::now()) {
            Counters::bump(&shared.counters.unavailable);
            return Err(Refused::Unavailable { retry_after });
        }
        let tenant = match state.tenants.get(tenant) {
            Some(&id) => id,
            None => {
                let id = state.tenants.len() as u64;
                state.tenants.insert(tenant.to_owned(), id);
                id
            }
        };
        drop(state);
        Counters::bump(&shared.counters.admitted);
        Ok(Group::request(shared, tenant))
    }

    /// A group that is never refused, for work the process owes itself
    /// (aborting uploads, rolling back batches).
    ///
    /// Unlike a request's group it has no errgroup semantics (one failed
    /// cleanup must not cancel the next) and a shutdown does not cancel it
    /// (rolling back a cancelled request is exactly what shutdown needs).
    pub fn system_group(&self) -> Group {
        Group::system(&self.shared, u64::MAX)
    }

    /// The state now.
    pub fn stats(&self) -> Stats {
        let state = self.shared.lock();
        Stats {
            limit: state.limiter.limit(),
            in_flight: state.in_flight,
            queued_jobs: state.queue.len(),
            queued_bytes: state.queue.bytes(),
            probing: state.limiter.probing(),
        }
    }

    /// Whether the backend is usable, as the circuit breaker sees it (see
    /// [`crate::breaker`]).
    pub fn health(&self) -> Health {
        self.shared.lock().breaker.health()
    }

    /// The counters since the start, read now.
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }

    /// Refuses new groups from now on; work already admitted goes on.
    pub fn close(&self) {
        self.shared.lock().closed = true;
    }

    /// Whether [`Scheduler::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Completes once [`Scheduler::shutdown`] has cancelled the work left,
    /// its grace period over: for work that makes no call at the moment
    /// (a request reading its client's body) to stop as the calls do.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn cancelled(&self) {
        self.shared.root.cancelled().await;
    }

    /// Closes, waits up to `grace` for admitted work to finish, then
    /// cancels whatever is left. Returns whether everything finished.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.close();
        let drained = tokio::time::timeout(grace, async {
            loop {
                let idle = self.shared.idle.notified();
                {
                    let state = self.shared.lock();
                    if state.in_flight == 0 && state.queue.len() == 0 {
                        return;
                    }
                }
                idle.await;
            }
        })
        .await
        .is_ok();
        self.shared.root.cancel();
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobError;
    use crate::testing::{Running, idle, scheduler};

    #[tokio::test(start_paused = true)]
    async fn cancelled_completes_once_shutdown_gives_up_waiting() {
        let scheduler = scheduler(LimitConfig::Fixed(4));
        let group = scheduler.group("t").unwrap();
        let running = Running::default();
        let waited = tokio::time::timeout(Duration::from_secs(5), scheduler.cancelled());
        assert!(waited.await.is_err(), "not while serving");
        let (result, drained) = tokio::join!(
            group.run(0, || running.call(Duration::from_secs(20))),
            scheduler.shutdown(Duration::from_secs(1)),
        );
        assert!(result.is_err() && !drained);
        let waited = tokio::time::timeout(Duration::from_millis(1), scheduler.cancelled());
        assert!(waited.await.is_ok(), "once the grace period is over");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_running_jobs_until_the_grace_period_ends() {
        let scheduler = scheduler(LimitConfig::Fixed(4));
        assert!(scheduler.shutdown(Duration::from_secs(1)).await, "idle");

        let scheduler = self::scheduler(LimitConfig::Fixed(4));
        let group = scheduler.group("t").unwrap();
        let running = Running::default();
        let start = Instant::now();
        let (result, drained) = tokio::join!(
            group.run(0, || running.call(Duration::from_secs(2))),
            scheduler.shutdown(Duration::from_secs(10)),
        );
        assert!(result.is_ok() && drained);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert!(matches!(scheduler.group("t"), Err(Refused::ShuttingDown)));

        let scheduler = self::scheduler(LimitConfig::Fixed(4));
        let group = scheduler.group("t").unwrap();
        let (result, drained) = tokio::join!(
            group.run(0, || running.call(Duration::from_secs(20))),
            scheduler.shutdown(Duration::from_secs(1)),
        );
        assert!(matches!(result, Err(JobError::Cancelled)) && !drained);
        assert!(idle(&scheduler));
    }
}
