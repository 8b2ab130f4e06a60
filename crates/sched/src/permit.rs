//! Slots: the permit a running job holds, and dispatch, which hands the
//! slots that free up to waiting jobs.
//!
//! The slot a running job occupies is a [`Permit`] owned by the job's
//! future: completion, cancellation and panic all drop it, and dropping it
//! reports the call to the limit and the breaker and hands the slot to the
//! next job in fair order. A job that has to wait holds a [`Waiter`]
//! instead, which takes its entry out of the queue, or frees the slot it
//! was just granted, if the job is dropped first. So no slot is ever lost
//! to a job that went away, whatever it was doing.

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::limit::{Outcome, Sample};
use crate::metrics::Counters;
use crate::queue::EntryId;
use crate::retry::Class;
use crate::shared::{Grant, Shared, State};

/// A running job's slot; dropping it frees the slot and reports the call
/// to the limit and the breaker.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
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
    pub(crate) fn new(
        shared: &'a Shared,
        group: u64,
        cost: u64,
        grant: Grant,
        probe: bool,
    ) -> Self {
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

    /// The call succeeded: a measurement for the limit, an answer for the
    /// breaker.
    pub(crate) fn succeeded(&mut self) {
        self.outcome = Outcome::Success;
        self.answered = Some(true);
    }

    /// The call failed with `class`: a throttle is a loss to the limit;
    /// to the breaker, a permanent failure is still an answer.
    pub(crate) fn failed(&mut self, class: Class) {
        self.answered = Some(class == Class::Permanent);
        if let Class::Throttled { .. } = class {
            self.outcome = Outcome::Loss;
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let rtt = now - self.grant.dispatched;
        self.shared.counters.observe(self.outcome, rtt);
        let mut state = self.shared.lock();
        release(&mut state, self.group);
        if self.outcome == Outcome::Success {
            state.admission.on_success(now);
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
        dispatch(&mut state, now);
        // Only a shutdown waits for idleness, and it closes first.
        let idle = state.closed && state.in_flight == 0 && state.queue.len() == 0;
        drop(state);
        if idle {
            self.shared.idle.notify_waiters();
        }
    }
}

/// How a job gets its slot.
pub(crate) enum Start<'a> {
    /// At once.
    Now(Permit<'a>),
    /// After waiting in the queue.
    Queued(Waiter<'a>),
}

/// A queued job: takes its entry out of the queue if dropped while
/// waiting, and frees its slot if dropped just after being granted one.
pub(crate) struct Waiter<'a> {
    shared: &'a Shared,
    entry: EntryId,
    group: u64,
    cost: u64,
    receiver: Option<oneshot::Receiver<Grant>>,
    /// Whether the job is the breaker's probe.
    probe: bool,
}

impl<'a> Waiter<'a> {
    /// The job queued as `entry`, granted its slot through `receiver`.
    pub(crate) fn new(
        shared: &'a Shared,
        entry: EntryId,
        group: u64,
        cost: u64,
        receiver: oneshot::Receiver<Grant>,
        probe: bool,
    ) -> Self {
        Self {
            shared,
            entry,
            group,
            cost,
            receiver: Some(receiver),
            probe,
        }
    }

    /// Waits for the slot; `None` if the queue dropped the job's entry
    /// (its group was cancelled).
    pub(crate) async fn wait(mut self) -> Option<Permit<'a>> {
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

/// Whether a job of `group` may start now, as far as the limit and
/// the group's cap allow: the test `dispatch` makes before popping.
pub(crate) fn has_room(state: &mut State, group: u64) -> bool {
    state.in_flight < state.limiter.dispatch_limit()
        && state
            .limiter
            .per_group()
            .is_none_or(|cap| state.group_in_flight.get(&group).copied().unwrap_or(0) < cap)
}

/// Counts a job of `group` as in flight from `now`.
pub(crate) fn grant(state: &mut State, group: u64, now: Instant) -> Grant {
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
pub(crate) fn dispatch(state: &mut State, now: Instant) {
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
        let grant = grant(state, group, now);
        if waiter.send(grant).is_err() {
            // The receiver is gone without having taken its entry out,
            // which a waiter's drop always does first: unreachable in
            // practice, and harmless, since the slot is released here.
            release(state, group);
        }
    }
}

/// Counts a job of `group` out of flight.
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use futures::FutureExt;
    use futures::future::join_all;
    use tokio::sync::oneshot;

    use crate::testing::{Fail, Running, idle, scheduler};
    use crate::{Group, JobError, LimitConfig};

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
}
