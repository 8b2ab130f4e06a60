//! [`Group`]: the jobs of one request, and how each of them runs.
//!
//! A request's backend calls live and die together: once one has failed
//! for good, or the request is gone, the others are wasted work, so a
//! group cancels them (errgroup semantics). What a request must leave
//! finished, such as publishing or rolling back an object, goes to a
//! [`detached`](Group::detached) group instead, which nothing cancels.
//! A job runs in the caller's own task: each attempt waits for a
//! [`Permit`] in fair order, and a failed attempt is retried with backoff
//! for as long as the job's `Persistence` allows.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::breaker::Admit;
use crate::error::JobError;
use crate::metrics::Counters;
use crate::permit::{self, Permit, Start, Waiter};
use crate::retry::{Class, Classify, backoff};
use crate::shared::Shared;

/// Bytes a job costs on top of its size: a tiny call is not free.
const JOB_OVERHEAD: u64 = 64 << 10;

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
    /// [`Scheduler::system_group`](crate::Scheduler::system_group) and
    /// [`Group::detached`]): never refused, not cancelled by its own
    /// failures, by a shutdown, or by the group it was detached from.
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
                    permit.succeeded();
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
            permit.failed(class);
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
    ///   ([`RetryConfig::max_attempts`](crate::RetryConfig::max_attempts))
    ///   and the budget pays for it.
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
            && let Some(retry_after) = state.admission.overloaded(&state.queue)
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
        if state.queue.len() == 0 && permit::has_room(&mut state, self.id) {
            // Served at once, with no entry and no channel, as pushing and
            // popping would.
            state.queue.pass(self.tenant, cost);
            let grant = permit::grant(&mut state, self.id, now);
            if first {
                state.budget.deposit(now);
            }
            return Ok(Start::Now(Permit::new(shared, self.id, cost, grant, probe)));
        }
        self.queued.store(true, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        let entry = state.queue.push(self.tenant, self.id, cost, sender);
        permit::dispatch(&mut state, now);
        drop(state);
        let waiter = Waiter::new(shared, entry, self.id, cost, receiver, probe);
        Ok(Start::Queued(waiter))
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

    /// A request's group of `tenant`: cancelled by its first failure and
    /// by a shutdown that gives up waiting.
    pub(crate) fn request(shared: &Arc<Shared>, tenant: u64) -> Group {
        Self::new(shared, tenant, shared.root.child_token(), false)
    }

    /// A group of `tenant` for work the process owes itself (see
    /// [`Scheduler::system_group`](crate::Scheduler::system_group)).
    pub(crate) fn system(shared: &Arc<Shared>, tenant: u64) -> Group {
        Self::new(shared, tenant, CancellationToken::new(), true)
    }

    fn new(shared: &Arc<Shared>, tenant: u64, token: CancellationToken, system: bool) -> Group {
        Group {
            shared: Arc::clone(shared),
            id: shared.next_group.fetch_add(1, Ordering::Relaxed),
            tenant,
            token,
            queued: AtomicBool::new(false),
            system,
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
    use std::sync::Mutex;

    use futures::future::join_all;

    use super::*;
    use crate::testing::{Fail, idle, scheduler};
    use crate::{LimitConfig, RetryConfig, SchedConfig, Scheduler};

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
}
