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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::breaker::{Admit, Breaker, BreakerConfig, Health};
use crate::error::{JobError, Refused};
use crate::limit::{LimitConfig, Limiter, Outcome, Sample};
use crate::metrics::{CounterSnapshot, Counters, Stats};
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
    /// When the backend counts as down.
    pub breaker: BreakerConfig,
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
    /// Calls in flight per group, counted only under the per-request
    /// strategy (the only one with a cap per group).
    group_in_flight: HashMap<u64, usize>,
    tenants: HashMap<String, u64>,
    budget: Budget,
    breaker: Breaker,
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
            breaker: Breaker::new(config.breaker, now),
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
        if let Some(retry_after) = shared.full(&state) {
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
        Ok(Group {
            shared: Arc::clone(shared),
            id: shared.next_group.fetch_add(1, Ordering::Relaxed),
            tenant,
            token: shared.root.child_token(),
            queued: AtomicBool::new(false),
            system: false,
            detached: OnceLock::new(),
        })
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

    /// Whether a job of `group` may start now, as far as the limit and
    /// the group's cap allow: the test `dispatch` makes before popping.
    fn has_room(state: &mut State, group: u64) -> bool {
        state.in_flight < state.limiter.dispatch_limit()
            && state
                .limiter
                .per_group()
                .is_none_or(|cap| state.group_in_flight.get(&group).copied().unwrap_or(0) < cap)
    }

    /// Counts a job of `group` as in flight from `now`.
    fn grant(state: &mut State, group: u64, now: Instant) -> Grant {
        state.in_flight += 1;
        if state.limiter.per_group().is_some() {
            *state.group_in_flight.entry(group).or_default() += 1;
        }
        Grant {
            dispatched: now,
            in_flight: state.in_flight,
        }
    }

    /// Hands free slots to waiting jobs, in fair order.
    fn dispatch(state: &mut State, now: Instant) {
        while state.in_flight < state.limiter.dispatch_limit() {
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
            let grant = Self::grant(state, group, now);
            if waiter.send(grant).is_err() {
                // The receiver is gone without having taken its entry out,
                // which a waiter's drop always does first: unreachable in
                // practice, and harmless, since the slot is released here.
                Self::release(state, group);
            }
        }
    }

    fn release(state: &mut State, group: u64) {
        state.in_flight -= 1;
        if state.limiter.per_group().is_some()
            && let Some(count) = state.group_in_flight.get_mut(&group)
        {
            *count -= 1;
            if *count == 0 {
                state.group_in_flight.remove(&group);
            }
        }
    }
}

/// A running job's slot; dropping it frees the slot and reports the call
/// to the limit and the breaker.
#[derive(Debug)]
struct Permit<'a> {
    shared: &'a Shared,
    group: u64,
    cost: u64,
    grant: Grant,
    outcome: Outcome,
    /// Whether the backend answered well (`Some(true)`), failed
    /// (`Some(false)`), or the call never ended (`None`).
    answered: Option<bool>,
    /// Whether the call is the breaker's probe.
    probe: bool,
}

impl<'a> Permit<'a> {
    fn new(shared: &'a Shared, group: u64, cost: u64, grant: Grant, probe: bool) -> Self {
        Self {
            shared,
            group,
            cost,
            grant,
            outcome: Outcome::Ignore,
            answered: None,
            probe,
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let rtt = now - self.grant.dispatched;
        self.shared.counters.observe(self.outcome, rtt);
        let mut state = self.shared.lock();
        Shared::release(&mut state, self.group);
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
        match self.answered {
            Some(true) => state.breaker.on_answer(now),
            Some(false) if state.breaker.on_failure(now, self.probe) => {
                Counters::bump(&self.shared.counters.breaker_opened);
            }
            None if self.probe => state.breaker.probe_dropped(),
            Some(false) | None => {}
        }
        Shared::dispatch(&mut state, now);
        // Only a shutdown waits for idleness, and it closes first.
        let idle = state.closed && state.in_flight == 0 && state.queue.len() == 0;
        drop(state);
        if idle {
            self.shared.idle.notify_waiters();
        }
    }
}

/// How a job gets its slot.
enum Start<'a> {
    /// At once.
    Now(Permit<'a>),
    /// After waiting in the queue.
    Queued(Waiter<'a>),
}

/// A queued job: takes its entry out of the queue if dropped while
/// waiting, and frees its slot if dropped just after being granted one.
struct Waiter<'a> {
    shared: &'a Shared,
    entry: EntryId,
    group: u64,
    cost: u64,
    receiver: Option<oneshot::Receiver<Grant>>,
    /// Whether the job is the breaker's probe.
    probe: bool,
}

impl<'a> Waiter<'a> {
    async fn wait(mut self) -> Option<Permit<'a>> {
        let receiver = self.receiver.as_mut().expect("taken only here and in drop");
        let grant = receiver.await.ok()?;
        self.receiver = None;
        let permit = Permit::new(self.shared, self.group, self.cost, grant, self.probe);
        Some(permit)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let Some(mut receiver) = self.receiver.take() else {
            return;
        };
        let mut state = self.shared.lock();
        let still_queued = state.queue.remove(self.entry).is_some();
        if still_queued && self.probe {
            state.breaker.probe_dropped();
        }
        drop(state);
        if !still_queued && let Ok(grant) = receiver.try_recv() {
            // Granted but never used: the permit frees the slot (and lets
            // the next probe go).
            drop(Permit::new(
                self.shared,
                self.group,
                self.cost,
                grant,
                self.probe,
            ));
        }
    }
}

/// How long a job keeps trying (see [`Group::retry_wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persistence {
    /// One attempt: the call cannot be repeated.
    Once,
    /// Tried again only after a throttle: the call must not be repeated
    /// once the backend may have acted on it.
    AfterThrottles,
    /// A request's call: throttles are retried while the group lives,
    /// other transient failures up to this many attempts in all.
    Attempts(u32),
    /// Work the process owes itself: retried until done.
    UntilDone,
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
    /// Cancelled by the first failure, by [`Group::cancel`], or at the end
    /// of a shutdown's grace period. Jobs borrow the group, so once it is
    /// dropped no one is left waiting on it.
    token: CancellationToken,
    /// Set when a job of the group first waits in the queue; until then
    /// the group has nothing in the queue for drop to take out.
    queued: AtomicBool,
    /// Whether this is work the process owes itself (see
    /// [`Scheduler::system_group`] and [`Group::detached`]): never refused,
    /// not cancelled by its own failures, by a shutdown, or by the group it
    /// was detached from.
    system: bool,
    /// The group [`Group::detached`] hands out, made on first use.
    detached: OnceLock<Arc<Group>>,
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
        let persistence = Persistence::Attempts(self.shared.retry.max_attempts);
        self.execute(cost, persistence, job).await
    }

    /// Runs `job`, a call that must not be repeated once the backend may
    /// have acted on it, such as completing a multipart upload (which
    /// consumes it): tried again only after a throttle, which a backend
    /// answers instead of acting, and as [`run`](Self::run) retries
    /// throttles. Any other failure ends it.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub async fn run_unless_acted_on<T, E, F, Fut>(
        &self,
        cost: u64,
        job: F,
    ) -> Result<T, JobError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        self.execute(cost, Persistence::AfterThrottles, job).await
    }

    /// Runs `job` until it succeeds or fails for good: for work the
    /// process owes itself, such as removing the objects of a batch that
    /// failed or aborting a multipart upload. Every failure that may pass
    /// (throttles, timeouts, `5xx`, a backend that is down) is retried with
    /// exponential backoff, spending nothing from the retry budget, for as
    /// long as the group is not cancelled.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run), but never [`JobError::Unavailable`] and
    /// [`JobError::Failed`] only for a permanent failure.
    pub async fn run_until_done<T, E, F, Fut>(&self, cost: u64, job: F) -> Result<T, JobError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        self.execute(cost, Persistence::UntilDone, job).await
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
        self.execute(cost, Persistence::Once, || {
            job.take().expect("called once: one attempt")
        })
        .await
    }

    async fn execute<T, E, F, Fut>(
        &self,
        cost: u64,
        persistence: Persistence,
        mut job: F,
    ) -> Result<T, JobError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        let counters = &self.shared.counters;
        let mut attempt = 1;
        // Failed attempts that were not throttles.
        let mut failures = 0;
        loop {
            // The queue's and the backoff's states are boxed: a job pays
            // for them only when it waits or retries, and every future
            // that runs jobs stays small.
            let mut permit = {
                // In a block of its own, so that the call's state does not
                // keep room for it.
                let start = match self.start(cost, attempt == 1) {
                    Err(JobError::Unavailable { retry_after })
                        if persistence == Persistence::UntilDone =>
                    {
                        Box::pin(self.sleep(retry_after)).await?;
                        continue;
                    }
                    Err(JobError::Unavailable { retry_after }) => {
                        self.fail();
                        return Err(JobError::Unavailable { retry_after });
                    }
                    start => start?,
                };
                match start {
                    Start::Now(permit) => permit,
                    Start::Queued(waiter) => Box::pin(self.wait(waiter, attempt == 1)).await?,
                }
            };
            Counters::bump(&counters.calls);
            let call = AssertUnwindSafe(job()).catch_unwind();
            let result = tokio::select! {
                // The call first: a call that finishes at once never has to
                // register for the group's cancellation.
                biased;
                result = call => result,
                () = self.token.cancelled() => return Err(JobError::Cancelled),
            };
            let error = match result {
                Ok(Ok(value)) => {
                    permit.outcome = Outcome::Success;
                    permit.answered = Some(true);
                    return Ok(value);
                }
                Ok(Err(error)) => error,
                Err(panic) => {
                    self.fail();
                    return Err(JobError::Panicked {
                        message: panic_message(&*panic),
                    });
                }
            };
            let class = error.classify();
            permit.answered = Some(class == Class::Permanent);
            if let Class::Throttled { .. } = class {
                permit.outcome = Outcome::Loss;
            }
            drop(permit);
            let wait = self.retry_wait(class, persistence, &mut failures);
            let Some(wait) = wait else {
                self.fail();
                return Err(JobError::Failed {
                    source: error,
                    attempts: attempt,
                });
            };
            // The attempt did no work: its retry queues where it stood.
            (self.shared.lock().queue).refund(
                self.tenant,
                self.id,
                cost.saturating_add(JOB_OVERHEAD),
            );
            // Not kept across the backoff.
            drop(error);
            Counters::bump(&counters.retries);
            attempt += 1;
            Box::pin(self.sleep(wait)).await?;
        }
    }

    /// How long to wait before retrying an attempt that failed with
    /// `class`, or `None` if the job has failed for good.
    ///
    /// - A throttle is retried for as long as the group lives, after a
    ///   short jittered pause (or the backend's `Retry-After`), at no cost
    ///   to the budget and whatever the attempts so far: the limit, which
    ///   has just been cut, is what slows the calls down, and a throttle
    ///   that ended a request would turn a busy backend into failures.
    /// - Another transient failure of a request's job is retried with
    ///   exponential backoff while it has attempts left
    ///   ([`RetryConfig::max_attempts`]) and the budget pays for it.
    /// - Work the process owes itself ([`Group::run_until_done`]) retries
    ///   every failure that may pass, with exponential backoff and no
    ///   budget: one call at a time per cleanup, queued behind the limit
    ///   like every other, cannot amplify an overload.
    fn retry_wait(
        &self,
        class: Class,
        persistence: Persistence,
        failures: &mut u32,
    ) -> Option<Duration> {
        let config = &self.shared.retry;
        let (retry_after, throttled) = match class {
            Class::Permanent => return None,
            Class::Transient { retry_after } => (retry_after, false),
            Class::Throttled { retry_after } => (retry_after, true),
        };
        if !throttled {
            *failures += 1;
        }
        let mut state = self.shared.lock();
        match persistence {
            Persistence::Once => return None,
            Persistence::AfterThrottles if !throttled => return None,
            Persistence::Attempts(max) if !throttled => {
                if *failures >= max {
                    return None;
                }
                if !state.budget.withdraw(Instant::now()) {
                    Counters::bump(&self.shared.counters.budget_exhausted);
                    return None;
                }
            }
            Persistence::Attempts(_) | Persistence::AfterThrottles | Persistence::UntilDone => {}
        }
        let step = if throttled { 1 } else { (*failures).max(1) };
        Some(backoff(config, step, retry_after, &mut state.rng))
    }

    /// Sleeps for `wait`, unless the group is cancelled first.
    async fn sleep<E>(&self, wait: Duration) -> Result<(), JobError<E>> {
        tokio::select! {
            () = tokio::time::sleep(wait) => Ok(()),
            () = self.token.cancelled() => Err(JobError::Cancelled),
        }
    }

    /// Takes a slot at once if nobody waits and there is room, or a place
    /// in the queue. A first attempt that starts at once makes its deposit
    /// into the retry budget.
    fn start<E>(&self, cost: u64, first: bool) -> Result<Start<'_>, JobError<E>> {
        if self.token.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let shared = &*self.shared;
        let cost = cost.saturating_add(JOB_OVERHEAD);
        // Read outside the lock, to keep it short.
        let now = Instant::now();
        let mut state = shared.lock();
        // Work the process owes itself is never refused.
        if !self.system
            && let Some(retry_after) = shared.full(&state)
        {
            return Err(JobError::Overloaded { retry_after });
        }
        let probe = match state.breaker.admit(now) {
            Admit::Go => false,
            Admit::Probe => true,
            Admit::Refuse(retry_after) => {
                drop(state);
                Counters::bump(&shared.counters.unavailable);
                return Err(JobError::Unavailable { retry_after });
            }
        };
        if state.queue.len() == 0 && Shared::has_room(&mut state, self.id) {
            // Served at once, with no entry and no channel, as pushing and
            // popping would.
            state.queue.pass(self.tenant, cost);
            let grant = Shared::grant(&mut state, self.id, now);
            if first {
                state.budget.deposit(now);
            }
            return Ok(Start::Now(Permit::new(shared, self.id, cost, grant, probe)));
        }
        self.queued.store(true, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        let entry = state.queue.push(self.tenant, self.id, cost, sender);
        Shared::dispatch(&mut state, now);
        drop(state);
        Ok(Start::Queued(Waiter {
            shared,
            entry,
            group: self.id,
            cost,
            receiver: Some(receiver),
            probe,
        }))
    }

    /// Waits in the queue for a slot. A first attempt then makes its
    /// deposit into the retry budget.
    async fn wait<'a, E>(
        &'a self,
        waiter: Waiter<'a>,
        first: bool,
    ) -> Result<Permit<'a>, JobError<E>> {
        let permit = tokio::select! {
            // A cancelled group takes no slot, even one just granted.
            biased;
            () = self.token.cancelled() => return Err(JobError::Cancelled),
            permit = waiter.wait() => permit.ok_or(JobError::Cancelled)?,
        };
        if first {
            self.shared.lock().budget.deposit(Instant::now());
        }
        Ok(permit)
    }

    fn system(shared: &Arc<Shared>, tenant: u64) -> Group {
        Group {
            shared: Arc::clone(shared),
            id: shared.next_group.fetch_add(1, Ordering::Relaxed),
            tenant,
            token: CancellationToken::new(),
            queued: AtomicBool::new(false),
            system: true,
            detached: OnceLock::new(),
        }
    }

    /// A group of the same tenant for work that must finish even if this
    /// group is cancelled or dropped, such as publishing or rolling back an
    /// object whose write has begun: never refused, not cancelled by
    /// failures, by this group or by a shutdown. Its calls still count
    /// against the limit and queue fairly as the tenant's.
    ///
    /// Every call returns the same group: all the work a request leaves
    /// behind queues as one flow, however many of its objects are being
    /// published at once, so it never takes more than a request's share.
    pub fn detached(&self) -> Arc<Group> {
        let detached = self
            .detached
            .get_or_init(|| Arc::new(Group::system(&self.shared, self.tenant)));
        Arc::clone(detached)
    }

    /// Cancels the group: queued jobs leave the queue, running ones are
    /// dropped at their next poll.
    pub fn cancel(&self) {
        self.token.cancel();
        let removed = self.shared.lock().queue.remove_group(self.id);
        // The senders are dropped outside the lock.
        drop(removed);
    }

    /// A job failed for good: a request's other jobs are pointless now.
    fn fail(&self) {
        if !self.system {
            self.token.cancel();
        }
    }

    /// Whether the group was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // Every job borrows the group, so none runs or waits any more and
        // the token has no one left to tell. Only a job future forgotten
        // while it waited can have left an entry in the queue.
        if self.queued.load(Ordering::Relaxed) {
            let mut state = self.shared.lock();
            let removed = state.queue.forget_group(self.id);
            drop(state);
            // The senders are dropped outside the lock.
            drop(removed);
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a job panicked".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::future::join_all;

    use super::*;

    #[derive(Debug)]
    struct Fail(Class);

    impl Classify for Fail {
        fn classify(&self) -> Class {
            self.0
        }
    }

    fn scheduler(limit: LimitConfig) -> Scheduler {
        Scheduler::new(SchedConfig {
            limit,
            retry: RetryConfig {
                seed: Some(7),
                ..RetryConfig::default()
            },
            ..SchedConfig::default()
        })
    }

    /// Calls running now and at most, overall and per group.
    #[derive(Default)]
    struct Running {
        now: AtomicUsize,
        max: AtomicUsize,
    }

    impl Running {
        async fn call(&self, time: Duration) -> Result<(), Fail> {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(time).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }

        fn max(&self) -> usize {
            self.max.load(Ordering::SeqCst)
        }
    }

    fn idle(scheduler: &Scheduler) -> bool {
        let stats = scheduler.stats();
        stats.in_flight == 0 && stats.queued_jobs == 0 && stats.queued_bytes == 0
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_holds_whether_jobs_start_at_once_or_wait() {
        let scheduler = scheduler(LimitConfig::Fixed(3));
        let running = Running::default();
        let groups: Vec<Group> = (0..4)
            .map(|i| scheduler.group(&format!("tenant {}", i % 2)).unwrap())
            .collect();
        let jobs = (0..40).map(|i| {
            let group = &groups[i % groups.len()];
            let running = &running;
            async move {
                // Arrivals spread out, so that some find room and some wait.
                tokio::time::sleep(Duration::from_millis(3 * i as u64)).await;
                group
                    .run(0, || running.call(Duration::from_millis(10)))
                    .await
            }
        });
        let results = join_all(jobs).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(running.max(), 3);
        assert!(idle(&scheduler));
        assert_eq!(scheduler.counters().calls, 40);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_jobs_are_served_in_fair_order() {
        let scheduler = scheduler(LimitConfig::Fixed(1));
        let blocker = scheduler.group("c").unwrap();
        let (a, b) = (scheduler.group("a").unwrap(), scheduler.group("b").unwrap());
        let order = Mutex::new(Vec::new());
        async fn job(
            group: &Group,
            order: &Mutex<Vec<&'static str>>,
            name: &'static str,
        ) -> Result<(), JobError<Fail>> {
            let call = async {
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(())
            };
            group.run_once(1000, call).await
        }
        let job = |group, name| job(group, &order, name);
        let mut jobs = vec![job(&blocker, "c")];
        jobs.extend((0..3).map(|_| job(&a, "a")));
        jobs.extend((0..3).map(|_| job(&b, "b")));
        assert!(join_all(jobs).await.iter().all(Result::is_ok));
        assert_eq!(
            order.into_inner().unwrap(),
            ["c", "a", "b", "a", "b", "a", "b"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_request_leaves_behind_queues_as_one_flow() {
        let scheduler = scheduler(LimitConfig::Fixed(1));
        let blocker = scheduler.group("c").unwrap();
        // Two requests of one tenant: `a` detaches each of its jobs, as a
        // batch does for each file it publishes; `b` runs its own.
        let (a, b) = (scheduler.group("t").unwrap(), scheduler.group("t").unwrap());
        let order = Mutex::new(Vec::new());
        let job = |group: Arc<Group>, name: &'static str| {
            let order = &order;
            async move {
                let call = async {
                    order.lock().unwrap().push(name);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Ok::<_, Fail>(())
                };
                group.run_once(1000, call).await
            }
        };
        let b = Arc::new(b);
        let mut jobs = vec![job(Arc::new(blocker), "c")];
        jobs.extend((0..3).map(|_| job(a.detached(), "a")));
        jobs.extend((0..3).map(|_| job(Arc::clone(&b), "b")));
        assert!(join_all(jobs).await.iter().all(Result::is_ok));
        // One flow each, so they take turns; a flow per detached job
        // would have served `a` three times in a row.
        let order = order.into_inner().unwrap();
        assert_eq!(order, ["c", "b", "a", "b", "a", "b", "a"]);
        assert!(Arc::ptr_eq(&a.detached(), &a.detached()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let scheduler = scheduler(LimitConfig::Fixed(1));
        let group = scheduler.group("t").unwrap();
        let running = Running::default();
        let blocker = group.run(0, || running.call(Duration::from_secs(1)));
        let waiter = async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let stop = tokio::time::sleep(Duration::from_millis(10));
            let waited = tokio::time::timeout_at(
                stop.deadline(),
                group.run(0, || async { Ok::<_, Fail>(()) }),
            );
            assert!(waited.await.is_err(), "the limit is taken");
            assert_eq!(scheduler.stats().queued_jobs, 0);
            assert_eq!(scheduler.stats().in_flight, 1);
        };
        let (result, ()) = tokio::join!(blocker, waiter);
        assert!(result.is_ok());
        assert!(idle(&scheduler));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_granted_a_slot_and_dropped_frees_it() {
        let scheduler = scheduler(LimitConfig::Fixed(1));
        let group = scheduler.group("t").unwrap();
        let (finish, finished) = oneshot::channel::<()>();
        let mut blocker = Box::pin(group.run_once(0, async {
            finished.await.ok();
            Ok::<_, Fail>(())
        }));
        assert!(blocker.as_mut().now_or_never().is_none());
        let mut waiter = Box::pin(group.run(0, || async { Ok::<_, Fail>(()) }));
        assert!(waiter.as_mut().now_or_never().is_none());
        assert_eq!(scheduler.stats().queued_jobs, 1);

        finish.send(()).unwrap();
        assert!(blocker.now_or_never().unwrap().is_ok());
        // The blocker's slot went to the waiter, which has not run yet.
        let stats = scheduler.stats();
        assert_eq!((stats.in_flight, stats.queued_jobs), (1, 0));
        drop(waiter);
        assert!(idle(&scheduler));
    }

    #[tokio::test(start_paused = true)]
    async fn slots_are_freed_on_completion_cancellation_and_panic() {
        let scheduler = scheduler(LimitConfig::Fixed(2));

        let group = scheduler.group("t").unwrap();
        let result = group.run(0, || async { Ok::<_, Fail>(()) }).await;
        assert!(result.is_ok());
        assert!(idle(&scheduler));

        let mut running = Box::pin(group.run(0, futures::future::pending::<Result<(), Fail>>));
        assert!(running.as_mut().now_or_never().is_none());
        assert_eq!(scheduler.stats().in_flight, 1);
        drop(running);
        assert!(idle(&scheduler));

        let mut running = Box::pin(group.run(0, futures::future::pending::<Result<(), Fail>>));
        assert!(running.as_mut().now_or_never().is_none());
        group.cancel();
        assert!(matches!(running.await, Err(JobError::Cancelled)));
        assert!(idle(&scheduler));

        let group = scheduler.group("t").unwrap();
        let result = group
            .run(0, || async {
                panic!("boom");
                #[allow(unreachable_code)]
                Ok::<(), Fail>(())
            })
            .await;
        assert!(matches!(result, Err(JobError::Panicked { .. })));
        assert!(group.is_cancelled());
        assert!(idle(&scheduler));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_goes_through_the_limit_again() {
        let scheduler = Scheduler::new(SchedConfig {
            limit: LimitConfig::Fixed(1),
            retry: RetryConfig {
                // The first attempt alone pays for a retry.
                budget_ratio: 1.0,
                budget_per_sec: 0.0,
                seed: Some(7),
                ..RetryConfig::default()
            },
            ..SchedConfig::default()
        });
        let group = scheduler.group("t").unwrap();
        let mut attempts = 0;
        let result = group
            .run(0, || {
                attempts += 1;
                let class = Class::Transient { retry_after: None };
                let result = if attempts < 3 {
                    Err(Fail(class))
                } else {
                    Ok(())
                };
                async move { result }
            })
            .await;
        assert!(result.is_ok());
        let counters = scheduler.counters();
        assert_eq!((counters.calls, counters.retries), (3, 2));
        assert!(idle(&scheduler));
    }

    #[tokio::test(start_paused = true)]
    async fn the_per_request_strategy_caps_each_group() {
        let scheduler = scheduler(LimitConfig::PerRequest(2));
        let overall = Running::default();
        let per_group = [Running::default(), Running::default()];
        let groups = [scheduler.group("a").unwrap(), scheduler.group("a").unwrap()];
        let jobs = (0..12).map(|i| {
            let (group, mine) = (&groups[i % 2], &per_group[i % 2]);
            let overall = &overall;
            group.run(0, move || async move {
                let (_, result) = tokio::join!(
                    overall.call(Duration::from_millis(5)),
                    mine.call(Duration::from_millis(5))
                );
                result
            })
        });
        assert!(join_all(jobs).await.iter().all(Result::is_ok));
        assert_eq!(per_group.each_ref().map(Running::max), [2, 2]);
        assert_eq!(overall.max(), 4);
        assert!(idle(&scheduler));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_a_group_takes_out_a_forgotten_waiter() {
        let scheduler = scheduler(LimitConfig::Fixed(1));
        let first = scheduler.group("t").unwrap();
        let (finish, finished) = oneshot::channel::<()>();
        let mut blocker = Box::pin(first.run_once(0, async {
            finished.await.ok();
            Ok::<_, Fail>(())
        }));
        assert!(blocker.as_mut().now_or_never().is_none());

        let second = scheduler.group("t").unwrap();
        let mut waiter = Box::pin(second.run(0, || async { Ok::<_, Fail>(()) }));
        assert!(waiter.as_mut().now_or_never().is_none());
        // Its entry outlives the future, which never drops.
        std::mem::forget(waiter);
        assert_eq!(scheduler.stats().queued_jobs, 1);
        drop(second);
        assert_eq!(scheduler.stats().queued_jobs, 0);

        finish.send(()).unwrap();
        assert!(blocker.await.is_ok());
        assert!(idle(&scheduler));
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
