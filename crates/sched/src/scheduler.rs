//! [`Scheduler`]: one per backend, shared by every request.
//!
//! A request's work is a [`Group`]; each backend call is a job of a group,
//! run with [`Group::run`]. A job waits in the fair queue until the limit
//! lets it through, runs in the caller's own task (the scheduler spawns
//! nothing, so a job is exactly as alive as the request awaiting it), and
//! on a transient failure goes back through the queue after a backoff, if
//! the retry budget allows.
//!
//! The slot a running job occupies is a [`Permit`] owned by the job's
//! future: completion, cancellation and panic all drop it, and dropping it
//! hands the slot to the next job in fair order.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{JobError, Refused};
use crate::limit::{LimitConfig, Limiter, Outcome, Sample};
use crate::metrics::{Counters, Stats};
use crate::queue::{EntryId, FairQueue};
use crate::retry::{Budget, Class, Classify, RetryConfig, backoff};

/// Bytes a job costs on top of its size: a tiny call is not free.
const JOB_OVERHEAD: u64 = 64 << 10;

/// How much work may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Most jobs waiting; beyond, new groups and jobs are refused.
    pub max_jobs: usize,
    /// Most bytes of jobs waiting; beyond, new groups and jobs are refused.
    pub max_bytes: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_jobs: 10_000,
            max_bytes: 4 << 30,
        }
    }
}

/// Everything the scheduler is configured with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedConfig {
    /// How the limit on calls in flight is set.
    pub limit: LimitConfig,
    /// How much work may wait.
    pub queue: QueueConfig,
    /// How failed calls are retried.
    pub retry: RetryConfig,
}

/// One backend's scheduler. Cloning is cheap; clones share everything.
#[derive(Debug, Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    retry: RetryConfig,
    queue: QueueConfig,
    counters: Counters,
    /// Cancelled when shutdown gives up waiting; every group's token is a
    /// child of it.
    root: CancellationToken,
    /// Notified whenever the scheduler becomes idle.
    idle: Notify,
    next_group: AtomicU64,
}

#[derive(Debug)]
struct State {
    queue: FairQueue<oneshot::Sender<Grant>>,
    limiter: Limiter,
    in_flight: usize,
    /// Calls in flight per group, for the per-request strategy.
    group_in_flight: HashMap<u64, usize>,
    tenants: HashMap<String, u64>,
    budget: Budget,
    rng: fastrand::Rng,
    drain: DrainRate,
    closed: bool,
}

/// Completions per second, smoothed: how fast the queue drains.
#[derive(Debug)]
struct DrainRate {
    window_start: Instant,
    count: u64,
    per_sec: f64,
}

impl DrainRate {
    fn record(&mut self, now: Instant) {
        self.count += 1;
        let elapsed = (now - self.window_start).as_secs_f64();
        if elapsed >= 1.0 {
            let rate = self.count as f64 / elapsed;
            self.per_sec = if self.per_sec == 0.0 {
                rate
            } else {
                0.5 * self.per_sec + 0.5 * rate
            };
            self.window_start = now;
            self.count = 0;
        }
    }
}

/// What a waiting job receives when it may run.
#[derive(Debug)]
struct Grant {
    dispatched: Instant,
    in_flight: usize,
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
            limiter: Limiter::new(config.limit, now),
            in_flight: 0,
            group_in_flight: HashMap::new(),
            tenants: HashMap::new(),
            budget: Budget::new(&config.retry, now),
            rng,
            drain: DrainRate {
                window_start: now,
                count: 0,
                per_sec: 0.0,
            },
            closed: false,
        };
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                retry: config.retry,
                queue: config.queue,
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
    /// full; [`Refused::ShuttingDown`] after [`close`](Self::close).
    pub fn group(&self, tenant: &str) -> Result<Group, Refused> {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.closed {
            return Err(Refused::ShuttingDown);
        }
        if let Some(retry_after) = shared.full(&state) {
            Counters::bump(&shared.counters.rejected);
            return Err(Refused::Overloaded { retry_after });
        }
        let next_tenant = state.tenants.len() as u64;
        let tenant = *state
            .tenants
            .entry(tenant.to_owned())
            .or_insert(next_tenant);
        drop(state);
        Counters::bump(&shared.counters.admitted);
        Ok(Group {
            shared: Arc::clone(shared),
            id: shared.next_group.fetch_add(1, Ordering::Relaxed),
            tenant,
            token: shared.root.child_token(),
        })
    }

    /// A group that is never refused, for work the process owes itself
    /// (aborting uploads, rolling back batches).
    pub fn system_group(&self) -> Group {
        Group {
            shared: Arc::clone(&self.shared),
            id: self.shared.next_group.fetch_add(1, Ordering::Relaxed),
            tenant: u64::MAX,
            token: self.shared.root.child_token(),
        }
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

    /// Counters since the start.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Refuses new groups from now on; work already admitted goes on.
    pub fn close(&self) {
        self.shared.lock().closed = true;
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

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is never held across a call that can panic.
        self.state
            .lock()
            .expect("the scheduler state is never poisoned")
    }

    /// If the queue is full: how long to wait before trying again, from
    /// how fast it drains.
    fn full(&self, state: &State) -> Option<Duration> {
        let jobs = state.queue.len();
        if jobs < self.queue.max_jobs && state.queue.bytes() < self.queue.max_bytes {
            return None;
        }
        let per_sec = state.drain.per_sec.max(1.0);
        let secs = (jobs as f64 / per_sec).ceil().clamp(1.0, 60.0);
        Some(Duration::from_secs_f64(secs))
    }

    /// Hands free slots to waiting jobs, in fair order.
    fn dispatch(&self, state: &mut State) {
        let now = Instant::now();
        loop {
            if state.in_flight >= state.limiter.limit() {
                return;
            }
            let per_group = state.limiter.per_group();
            let State {
                queue,
                group_in_flight,
                ..
            } = &mut *state;
            let eligible = |group: u64| {
                per_group.is_none_or(|cap| group_in_flight.get(&group).copied().unwrap_or(0) < cap)
            };
            let Some((waiter, group, _cost)) = queue.pop(eligible) else {
                return;
            };
            state.in_flight += 1;
            *state.group_in_flight.entry(group).or_default() += 1;
            let grant = Grant {
                dispatched: now,
                in_flight: state.in_flight,
            };
            if waiter.send(grant).is_err() {
                // The waiter is gone (it only lets go of its receiver after
                // taking its entry out, so this is a forgotten future).
                self.release(state, group);
            }
        }
    }

    fn release(&self, state: &mut State, group: u64) {
        state.in_flight -= 1;
        if let Some(count) = state.group_in_flight.get_mut(&group) {
            *count -= 1;
            if *count == 0 {
                state.group_in_flight.remove(&group);
            }
        }
    }
}

/// A running job's slot; dropping it frees the slot and reports the call
/// to the limit.
#[derive(Debug)]
struct Permit {
    shared: Arc<Shared>,
    group: u64,
    cost: u64,
    grant: Grant,
    outcome: Outcome,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let now = Instant::now();
        let rtt = now - self.grant.dispatched;
        self.shared.counters.observe(self.outcome, rtt);
        let mut state = self.shared.lock();
        self.shared.release(&mut state, self.group);
        if self.outcome == Outcome::Success {
            state.drain.record(now);
        }
        let sample = Sample {
            dispatched: self.grant.dispatched,
            rtt,
            cost: self.cost,
            in_flight: self.grant.in_flight,
            outcome: self.outcome,
        };
        state.limiter.on_sample(sample, now);
        self.shared.dispatch(&mut state);
        let idle = state.in_flight == 0 && state.queue.len() == 0;
        drop(state);
        if idle {
            self.shared.idle.notify_waiters();
        }
    }
}

/// A queued job: takes its entry out of the queue if dropped while
/// waiting, and frees its slot if dropped just after being granted one.
struct Waiter {
    shared: Arc<Shared>,
    entry: EntryId,
    group: u64,
    cost: u64,
    receiver: Option<oneshot::Receiver<Grant>>,
}

impl Waiter {
    async fn wait(mut self) -> Option<Permit> {
        let receiver = self.receiver.as_mut().expect("taken only here and in drop");
        let grant = receiver.await.ok()?;
        self.receiver = None;
        Some(Permit {
            shared: Arc::clone(&self.shared),
            group: self.group,
            cost: self.cost,
            grant,
            outcome: Outcome::Ignore,
        })
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let Some(mut receiver) = self.receiver.take() else {
            return;
        };
        let still_queued = self.shared.lock().queue.remove(self.entry).is_some();
        if !still_queued && let Ok(grant) = receiver.try_recv() {
            // Granted but never used: the permit frees the slot.
            drop(Permit {
                shared: Arc::clone(&self.shared),
                group: self.group,
                cost: self.cost,
                grant,
                outcome: Outcome::Ignore,
            });
        }
    }
}

/// The jobs of one request, with errgroup semantics: the first job that
/// fails for good cancels the others, and dropping the group (the client
/// went away, the deadline passed) takes its queued jobs out of the queue
/// and cancels the running ones.
#[derive(Debug)]
pub struct Group {
    shared: Arc<Shared>,
    id: u64,
    tenant: u64,
    /// Cancelled by the first failure, by [`Group::cancel`], by drop, or
    /// at the end of a shutdown's grace period.
    token: CancellationToken,
}

impl Group {
    /// Runs `job` as a backend call of `cost` bytes: waits for a slot in
    /// fair order, runs it, and retries it with backoff while it fails
    /// transiently and the budget allows. `job` is called once per attempt.
    ///
    /// Cancel safe: dropping the future takes the job out of the queue or,
    /// if it is running, drops the call and frees its slot.
    ///
    /// # Errors
    ///
    /// - [`JobError::Failed`]: the last attempt's error, when it is
    ///   permanent, or attempts or budget ran out. The group is cancelled.
    /// - [`JobError::Cancelled`]: the group was cancelled.
    /// - [`JobError::Overloaded`]: the queue is full.
    /// - [`JobError::Panicked`]: `job` panicked. The group is cancelled.
    pub async fn run<T, E, F, Fut>(&self, cost: u64, job: F) -> Result<T, JobError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        self.execute(cost, self.shared.retry.max_attempts, job)
            .await
    }

    /// Runs `job` once, without retrying: for calls that cannot be repeated
    /// (completing a multipart upload consumes it).
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub async fn run_once<T, E, Fut>(&self, cost: u64, job: Fut) -> Result<T, JobError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        let mut job = Some(job);
        self.execute(cost, 1, || job.take().expect("called once: one attempt"))
            .await
    }

    async fn execute<T, E, F, Fut>(
        &self,
        cost: u64,
        max_attempts: u32,
        mut job: F,
    ) -> Result<T, JobError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        let counters = &self.shared.counters;
        let mut attempt = 1;
        loop {
            let mut permit = self.acquire(cost).await?;
            Counters::bump(&counters.calls);
            if attempt == 1 {
                self.shared.lock().budget.deposit(Instant::now());
            }
            let call = AssertUnwindSafe(job()).catch_unwind();
            let result = tokio::select! {
                result = call => result,
                () = self.token.cancelled() => return Err(JobError::Cancelled),
            };
            let error = match result {
                Ok(Ok(value)) => {
                    permit.outcome = Outcome::Success;
                    return Ok(value);
                }
                Ok(Err(error)) => error,
                Err(panic) => {
                    self.token.cancel();
                    return Err(JobError::Panicked {
                        message: panic_message(&*panic),
                    });
                }
            };
            let retry_after = match error.classify() {
                Class::Permanent => None,
                Class::Transient { retry_after } => Some(retry_after),
                Class::Throttled { retry_after } => {
                    permit.outcome = Outcome::Loss;
                    Some(retry_after)
                }
            };
            drop(permit);
            let wait = retry_after.and_then(|retry_after| {
                if attempt >= max_attempts {
                    return None;
                }
                let mut state = self.shared.lock();
                if !state.budget.withdraw(Instant::now()) {
                    Counters::bump(&counters.budget_exhausted);
                    return None;
                }
                Some(backoff(
                    &self.shared.retry,
                    attempt,
                    retry_after,
                    &mut state.rng,
                ))
            });
            let Some(wait) = wait else {
                self.token.cancel();
                return Err(JobError::Failed {
                    source: error,
                    attempts: attempt,
                });
            };
            Counters::bump(&counters.retries);
            attempt += 1;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.token.cancelled() => return Err(JobError::Cancelled),
            }
        }
    }

    /// Waits in the queue for a slot.
    async fn acquire<E>(&self, cost: u64) -> Result<Permit, JobError<E>> {
        if self.token.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let cost = cost.saturating_add(JOB_OVERHEAD);
        let (sender, receiver) = oneshot::channel();
        let entry = {
            let mut state = self.shared.lock();
            // Work the process owes itself is never refused.
            if self.tenant != u64::MAX
                && let Some(retry_after) = self.shared.full(&state)
            {
                return Err(JobError::Overloaded { retry_after });
            }
            let entry = state.queue.push(self.tenant, self.id, cost, sender);
            self.shared.dispatch(&mut state);
            entry
        };
        let waiter = Waiter {
            shared: Arc::clone(&self.shared),
            entry,
            group: self.id,
            cost,
            receiver: Some(receiver),
        };
        tokio::select! {
            permit = waiter.wait() => permit.ok_or(JobError::Cancelled),
            () = self.token.cancelled() => Err(JobError::Cancelled),
        }
    }

    /// Cancels the group: queued jobs leave the queue, running ones are
    /// dropped at their next poll.
    pub fn cancel(&self) {
        self.token.cancel();
        let removed = self.shared.lock().queue.remove_group(self.id);
        // The senders are dropped outside the lock.
        drop(removed);
    }

    /// Whether the group was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.cancel();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a job panicked".to_owned())
}
