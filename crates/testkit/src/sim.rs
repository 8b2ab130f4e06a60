//! A simulated storage backend, and scenarios that drive the real
//! scheduler against it in virtual time.
//!
//! The backend has a number of service slots (calls beyond them wait in
//! its own FIFO queue, as in a real store whose latency grows with load), a
//! latency with jitter, and an optional token bucket that answers "503
//! SlowDown" within 10 ms once exceeded. Slots and rate can change at given
//! times. Everything runs on a paused tokio clock, so a 6-minute scenario
//! takes a fraction of a second and the same seed gives the same figures.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_sched::{Class, Classify, JobError, LimitConfig, SchedConfig, Scheduler, Stats};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How the simulated backend behaves.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Calls served at once.
    pub slots: usize,
    /// Mean service time of a call.
    pub latency: Duration,
    /// Service times are uniform in `latency x [1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// A token bucket in calls per second, if the backend throttles.
    pub rate: Option<f64>,
    /// Whether a call that finds every slot busy is throttled at once
    /// (as the bench's front and S3's per-prefix limits do) instead of
    /// waiting in the queue.
    pub reject_when_busy: bool,
    /// Tokens the bucket holds at most.
    pub burst: f64,
    /// Changes at given times since the start.
    pub changes: Vec<(Duration, Change)>,
}

/// A change of the backend's capacity.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// The number of service slots becomes this.
    Slots(usize),
    /// The token bucket's rate becomes this.
    Rate(f64),
    /// The mean service time becomes this.
    Latency(Duration),
}

impl BackendConfig {
    /// `slots` slots of `latency` +-10%, no throttling.
    pub fn slots(slots: usize, latency: Duration) -> Self {
        Self {
            slots,
            latency,
            jitter: 0.1,
            rate: None,
            reject_when_busy: false,
            burst: 0.0,
            changes: Vec::new(),
        }
    }
}

/// The simulated backend's error: it throttled the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled;

impl Classify for Throttled {
    fn classify(&self) -> Class {
        Class::Throttled { retry_after: None }
    }
}

#[derive(Debug)]
struct BackendState {
    slots: usize,
    busy: usize,
    waiting: VecDeque<oneshot::Sender<()>>,
    rate: Option<f64>,
    tokens: f64,
    refilled: Instant,
    latency: Duration,
}

/// The simulated backend.
#[derive(Debug)]
pub struct Backend {
    config: BackendConfig,
    state: Mutex<BackendState>,
    rng: Mutex<fastrand::Rng>,
    /// Calls answered with a throttle.
    pub throttled: AtomicU64,
    /// Calls served.
    pub served: AtomicU64,
}

impl Backend {
    /// A backend following `config`, its jitter drawn from `seed`.
    pub fn new(config: BackendConfig, seed: u64) -> Arc<Self> {
        let state = BackendState {
            slots: config.slots,
            busy: 0,
            waiting: VecDeque::new(),
            rate: config.rate,
            tokens: config.burst,
            refilled: Instant::now(),
            latency: config.latency,
        };
        Arc::new(Self {
            config,
            state: Mutex::new(state),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            throttled: AtomicU64::new(0),
            served: AtomicU64::new(0),
        })
    }

    /// Applies the configured changes at their times; run it as a task.
    pub async fn follow_changes(self: Arc<Self>) {
        let start = Instant::now();
        for (at, change) in self.config.changes.clone() {
            tokio::time::sleep_until(start + at).await;
            let mut state = self.state.lock().unwrap();
            match change {
                Change::Slots(slots) => state.slots = slots,
                Change::Rate(rate) => state.rate = Some(rate),
                Change::Latency(latency) => state.latency = latency,
            }
            Self::admit(&mut state);
        }
    }

    fn admit(state: &mut BackendState) {
        while state.busy < state.slots {
            let Some(waiter) = state.waiting.pop_front() else {
                return;
            };
            if waiter.send(()).is_ok() {
                state.busy += 1;
            }
        }
    }

    /// Takes a token, if the backend throttles, and joins the slot queue;
    /// `None` if the bucket is empty, or every slot is busy and the backend
    /// rejects rather than queues.
    fn enter(&self) -> Option<oneshot::Receiver<()>> {
        let mut state = self.state.lock().unwrap();
        if let Some(rate) = state.rate {
            let now = Instant::now();
            let elapsed = (now - state.refilled).as_secs_f64();
            state.refilled = now;
            state.tokens = (state.tokens + elapsed * rate).min(self.config.burst.max(1.0));
            if state.tokens < 1.0 {
                return None;
            }
            state.tokens -= 1.0;
        }
        if self.config.reject_when_busy && state.busy >= state.slots {
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        state.waiting.push_back(sender);
        Self::admit(&mut state);
        Some(receiver)
    }

    /// One call: throttled at once if the bucket is empty (or every slot is
    /// busy, for a backend that rejects), else served after waiting for a
    /// slot.
    pub async fn call(&self) -> Result<(), Throttled> {
        let Some(slot) = self.enter() else {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            return Err(Throttled);
        };
        let release = SlotGuard(self);
        slot.await.expect("the backend never drops a waiter");
        let factor = 1.0 + self.config.jitter * (2.0 * self.rng.lock().unwrap().f64() - 1.0);
        let latency = self.state.lock().unwrap().latency;
        tokio::time::sleep(latency.mul_f64(factor)).await;
        self.served.fetch_add(1, Ordering::Relaxed);
        drop(release);
        Ok(())
    }
}

/// Frees a backend slot when the call ends or is dropped.
struct SlotGuard<'a>(&'a Backend);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap();
        state.busy -= 1;
        Backend::admit(&mut state);
    }
}

/// One finished backend call, as the simulation saw it.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// When it started, in seconds since the scenario's start.
    pub start: f64,
    /// How long it took.
    pub latency: Duration,
    /// Whether the backend served it (not throttled).
    pub ok: bool,
    /// Whether it retried an earlier attempt of the same job.
    pub retry: bool,
}

/// The limit at one moment.
#[derive(Debug, Clone, Copy)]
pub struct LimitSample {
    /// Seconds since the scenario's start.
    pub at: f64,
    /// The scheduler's state.
    pub stats: Stats,
}

/// Everything a scenario run recorded.
#[derive(Debug, Default)]
pub struct Record {
    /// How long clients kept submitting, in seconds: the windows a figure
    /// may be taken over lie within `[0, duration]`.
    pub duration: f64,
    /// Every backend call.
    pub calls: Vec<Call>,
    /// The limit every 100 ms.
    pub limits: Vec<LimitSample>,
    /// Starts that found more calls running than the limit allowed.
    pub breaches: u64,
    /// Calls the backend answered with a throttle, by its own count.
    pub throttled: u64,
    /// Jobs run to their end, whatever it was.
    pub jobs: u64,
    /// Jobs that ended without their value.
    pub lost: Lost,
    /// What the scheduler counted.
    pub scheduler: SchedulerCounts,
}

/// The jobs of a run that ended without their value, by how they ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// [`JobError::Failed`]: the scheduler gave up on the job (a permanent
    /// error, or its attempts or the retry budget spent).
    pub failed: u64,
    /// Another error after at least one call. Every call of the simulated
    /// backend that fails is a throttle, which the scheduler either gives
    /// up on ([`Lost::failed`]) or retries: so here a retry was decided and
    /// the job ended before its call, cancelled in its backoff or refused
    /// at its start (the breaker open, the queue full). Nothing outside a
    /// worker's job cancels its group, so no call is cut short.
    pub abandoned: u64,
    /// Another error before any call: refused or cancelled at once.
    pub refused: u64,
}

impl Lost {
    /// Counts a job that ended with `result` after `calls` calls.
    fn count<T, E>(&mut self, result: &Result<T, JobError<E>>, calls: u32) {
        match result {
            Ok(_) => {}
            Err(JobError::Failed { .. }) => self.failed += 1,
            Err(_) if calls > 0 => self.abandoned += 1,
            Err(_) => self.refused += 1,
        }
    }

    fn add(self, other: Self) -> Self {
        Self {
            failed: self.failed + other.failed,
            abandoned: self.abandoned + other.abandoned,
            refused: self.refused + other.refused,
        }
    }

    /// Every job lost, however.
    pub fn total(&self) -> u64 {
        self.failed + self.abandoned + self.refused
    }
}

/// What the scheduler counted over a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerCounts {
    /// Calls dispatched, retries included.
    pub dispatched: u64,
    /// Retries decided: counted when a failed attempt is given its backoff,
    /// before the retry's call is made.
    pub retries: u64,
    /// Retries refused by the budget.
    pub budget_exhausted: u64,
}

impl SchedulerCounts {
    /// The scheduler's counters now: the one place the simulation reads
    /// them.
    fn read(scheduler: &Scheduler) -> Self {
        let counters = scheduler.counters();
        Self {
            dispatched: counters.calls,
            retries: counters.retries,
            budget_exhausted: counters.budget_exhausted,
        }
    }
}

/// Watches calls for limit breaches and records them.
#[derive(Debug)]
pub struct Observer {
    start: Instant,
    scheduler: Scheduler,
    running: AtomicUsize,
    /// The largest limit seen at the current instant: a cut takes effect
    /// for new dispatches, while calls dispatched just before it at the
    /// same instant legitimately start above it.
    instant_limit: Mutex<(Instant, usize)>,
    breaches: AtomicU64,
    calls: Mutex<Vec<Call>>,
}

impl Observer {
    /// An observer of `scheduler`, timing from now.
    pub fn new(scheduler: Scheduler) -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            scheduler,
            running: AtomicUsize::new(0),
            instant_limit: Mutex::new((Instant::now(), 0)),
            breaches: AtomicU64::new(0),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn note_limit(&self) -> usize {
        let now = Instant::now();
        let limit = self.scheduler.stats().limit;
        let mut seen = self.instant_limit.lock().unwrap();
        if seen.0 == now {
            seen.1 = seen.1.max(limit);
        } else {
            *seen = (now, limit);
        }
        seen.1
    }

    /// One call through the backend, checked against the limit; `retry`
    /// says whether it repeats an earlier attempt.
    pub async fn call(&self, backend: &Backend, retry: bool) -> Result<(), Throttled> {
        let allowed = self.note_limit();
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        if running > allowed {
            self.breaches.fetch_add(1, Ordering::Relaxed);
        }
        let start = Instant::now();
        let result = backend.call().await;
        self.note_limit();
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.calls.lock().unwrap().push(Call {
            start: (start - self.start).as_secs_f64(),
            latency: start.elapsed(),
            ok: result.is_ok(),
            retry,
        });
        result
    }

    /// Records the scheduler's state every 100 ms until `end`.
    pub async fn sample_limits(&self, end: Instant) -> Vec<LimitSample> {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while Instant::now() < end {
            tick.tick().await;
            samples.push(LimitSample {
                at: (Instant::now() - self.start).as_secs_f64(),
                stats: self.scheduler.stats(),
            });
        }
        samples
    }

    /// The calls seen so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Starts that found more calls running than the limit allowed.
    pub fn breaches(&self) -> u64 {
        self.breaches.load(Ordering::Relaxed)
    }
}

/// A scenario: a backend, a strategy, and `workers` clients each running
/// one job after another for `duration`, enough to saturate the backend.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The backend.
    pub backend: BackendConfig,
    /// The scheduler's strategy.
    pub limit: LimitConfig,
    /// Concurrent clients.
    pub workers: usize,
    /// Bytes per job.
    pub cost: u64,
    /// How long clients keep submitting.
    pub duration: Duration,
    /// Seeds the backend's jitter and the scheduler's backoff.
    pub seed: u64,
}

/// Runs `scenario` on a fresh paused runtime and returns its record.
pub fn run(scenario: &Scenario) -> Record {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    runtime.block_on(simulate(scenario))
}

async fn simulate(scenario: &Scenario) -> Record {
    let mut config = SchedConfig {
        limit: scenario.limit,
        ..SchedConfig::default()
    };
    config.retry.seed = Some(scenario.seed);
    config.queue.max_jobs = scenario.workers * 2;
    let scheduler = Scheduler::new(config);
    let backend = Backend::new(scenario.backend.clone(), scenario.seed);
    let observer = Observer::new(scheduler.clone());
    let end = Instant::now() + scenario.duration;
    tokio::spawn(Arc::clone(&backend).follow_changes());
    let sampler = {
        let observer = Arc::clone(&observer);
        tokio::spawn(async move { observer.sample_limits(end).await })
    };
    let workers: Vec<_> = (0..scenario.workers)
        .map(|_| {
            let (scheduler, backend, observer) = (
                scheduler.clone(),
                Arc::clone(&backend),
                Arc::clone(&observer),
            );
            tokio::spawn(work(scheduler, backend, observer, scenario.cost, end))
        })
        .collect();
    let (mut jobs, mut lost) = (0, Lost::default());
    for worker in workers {
        let (its_jobs, its_lost) = worker.await.expect("workers do not panic");
        jobs += its_jobs;
        lost = lost.add(its_lost);
    }
    let limits = sampler.await.expect("the sampler does not panic");
    Record {
        duration: scenario.duration.as_secs_f64(),
        calls: observer.calls(),
        limits,
        breaches: observer.breaches(),
        throttled: backend.throttled.load(Ordering::Relaxed),
        jobs,
        lost,
        scheduler: SchedulerCounts::read(&scheduler),
    }
}

/// A client: one job of `cost` after another on `scheduler` against
/// `backend` until `end`; the jobs it ran and those it lost.
pub(crate) async fn work(
    scheduler: Scheduler,
    backend: Arc<Backend>,
    observer: Arc<Observer>,
    cost: u64,
    end: Instant,
) -> (u64, Lost) {
    let (mut jobs, mut lost) = (0, Lost::default());
    while Instant::now() < end {
        let group = scheduler
            .group("sim")
            .expect("the queue holds every worker");
        let mut attempts = 0;
        let job = || {
            attempts += 1;
            observer.call(&backend, attempts > 1)
        };
        let result = group.run(cost, job).await;
        jobs += 1;
        lost.count(&result, attempts);
    }
    (jobs, lost)
}

impl Record {
    /// The calls that started in `[from, to)`, or `None` if that window is
    /// not a window of the run (empty, reversed, or outside it): a figure
    /// over a window the run never had has no data, not a value of zero.
    fn window(&self, from: f64, to: f64) -> Option<impl Iterator<Item = &Call>> {
        let within = 0.0 <= from && from < to && to <= self.duration;
        within.then(|| {
            self.calls
                .iter()
                .filter(move |call| call.start >= from && call.start < to)
        })
    }

    /// Served calls per second that started in `[from, to)`; `NaN` if the
    /// window is not one of the run.
    pub fn goodput(&self, from: f64, to: f64) -> f64 {
        match self.window(from, to) {
            Some(calls) => calls.filter(|call| call.ok).count() as f64 / (to - from),
            None => f64::NAN,
        }
    }

    /// The `q`-quantile latency of served calls that started in
    /// `[from, to)`; `None` if no call was served in that window.
    pub fn latency_quantile(&self, from: f64, to: f64, q: f64) -> Option<Duration> {
        let mut latencies: Vec<Duration> = self
            .window(from, to)?
            .filter(|call| call.ok)
            .map(|call| call.latency)
            .collect();
        if latencies.is_empty() {
            return None;
        }
        latencies.sort();
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        Some(latencies[index])
    }

    /// Calls answered with a throttle, as the observer saw them.
    pub fn throttled_calls(&self) -> u64 {
        self.calls.iter().filter(|call| !call.ok).count() as u64
    }

    /// Calls that retried an earlier attempt, as the observer saw them.
    pub fn retry_calls(&self) -> u64 {
        self.calls.iter().filter(|call| call.retry).count() as u64
    }

    /// Throttled calls (the backend's count) that neither were retried
    /// (the observer's count) nor ended their job, `NaN` if there was no
    /// call: zero when the counts agree (see `Lost` for why every
    /// throttle must be one or the other), whichever way they differ.
    pub fn unaccounted_throttles(&self) -> f64 {
        if self.calls.is_empty() {
            return f64::NAN;
        }
        let accounted = self.retry_calls() + self.lost.failed + self.lost.abandoned;
        self.throttled.abs_diff(accounted) as f64
    }

    /// Throttled calls as a fraction of all calls started in `[from, to)`;
    /// `NaN` if none started.
    pub fn throttled_share(&self, from: f64, to: f64) -> f64 {
        self.share(from, to, |call| !call.ok)
    }

    /// Retries as a fraction of all calls started in `[from, to)`; `NaN` if
    /// none started.
    pub fn retry_share(&self, from: f64, to: f64) -> f64 {
        self.share(from, to, |call| call.retry)
    }

    fn share(&self, from: f64, to: f64, counted: impl Fn(&Call) -> bool) -> f64 {
        let Some(calls) = self.window(from, to) else {
            return f64::NAN;
        };
        let (mut all, mut matching) = (0, 0);
        for call in calls {
            all += 1;
            matching += usize::from(counted(call));
        }
        ratio(matching, all)
    }

    /// The first time from which a one-second window reaches `rate` served
    /// calls per second, searching from `after`.
    pub fn time_to_rate(&self, after: f64, rate: f64) -> Option<f64> {
        let mut t = after;
        let last = self.calls.last().map_or(0.0, |call| call.start);
        while t + 1.0 <= last {
            if self.goodput(t, t + 1.0) >= rate {
                return Some(t + 1.0 - after);
            }
            t += 0.1;
        }
        None
    }

    /// The limits of the 100 ms samples in `[from, to)`, outside probes.
    fn limits_within(&self, from: f64, to: f64) -> impl Iterator<Item = usize> {
        self.limits
            .iter()
            .filter(move |s| s.at >= from && s.at < to && !s.stats.probing)
            .map(|s| s.stats.limit)
    }

    /// The smallest and largest limit outside probes in `[from, to)`;
    /// `None` if no sample fell there.
    pub fn limit_range(&self, from: f64, to: f64) -> Option<(usize, usize)> {
        self.limits_within(from, to)
            .fold(None, |range, limit| match range {
                None => Some((limit, limit)),
                Some((lo, hi)) => Some((lo.min(limit), hi.max(limit))),
            })
    }

    /// The share of 100 ms samples in `[from, to)`, outside probes, whose
    /// limit lies in `[lo, hi]`; `NaN` if no sample fell there.
    pub fn limit_share_within(&self, from: f64, to: f64, lo: usize, hi: usize) -> f64 {
        let (mut all, mut within) = (0, 0);
        for limit in self.limits_within(from, to) {
            all += 1;
            within += usize::from((lo..=hi).contains(&limit));
        }
        ratio(within, all)
    }
}

/// `part / whole`, `NaN` when there is no whole: a figure over nothing
/// has no data, and fails.
pub fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        f64::NAN
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A run of `duration` seconds in which a call of 200 ms was served
    /// every `1 / rate` seconds, the limit sampled at `limit` every 100 ms.
    pub(crate) fn steady(duration: f64, rate: f64, limit: usize) -> Record {
        let calls = (0..(duration * rate) as usize)
            .map(|i| Call {
                start: i as f64 / rate,
                latency: Duration::from_millis(200),
                ok: true,
                retry: false,
            })
            .collect();
        let stats = Stats {
            limit,
            in_flight: limit,
            queued_jobs: 0,
            queued_bytes: 0,
            probing: false,
        };
        let limits = (0..(duration * 10.0) as usize)
            .map(|i| LimitSample {
                at: i as f64 / 10.0,
                stats,
            })
            .collect();
        Record {
            duration,
            calls,
            limits,
            ..Record::default()
        }
    }

    #[test]
    fn statistics_over_no_samples_have_no_value() {
        let record = steady(60.0, 50.0, 10);
        // A window of the run where nothing happened: no calls, no samples.
        let idle = Record {
            calls: Vec::new(),
            limits: Vec::new(),
            ..steady(60.0, 50.0, 10)
        };
        // Windows that are not the run's: past its end, reversed, empty.
        for (from, to) in [(60.0, 120.0), (30.0, 20.0), (10.0, 10.0)] {
            assert!(record.goodput(from, to).is_nan(), "[{from}, {to})");
            assert!(record.throttled_share(from, to).is_nan());
            assert!(record.retry_share(from, to).is_nan());
            assert_eq!(record.latency_quantile(from, to, 0.99), None);
            assert_eq!(record.limit_range(from, to), None);
            assert!(record.limit_share_within(from, to, 0, 100).is_nan());
        }
        // An idle window served nothing: that is a goodput of zero, but no
        // latency, no share of calls and no limit.
        assert_eq!(idle.goodput(0.0, 60.0), 0.0);
        assert!(idle.throttled_share(0.0, 60.0).is_nan());
        assert!(idle.retry_share(0.0, 60.0).is_nan());
        assert_eq!(idle.latency_quantile(0.0, 60.0, 0.99), None);
        assert_eq!(idle.limit_range(0.0, 60.0), None);
        assert!(idle.limit_share_within(0.0, 60.0, 0, 100).is_nan());
    }

    #[test]
    fn statistics_over_samples_are_measured() {
        let record = steady(60.0, 50.0, 10);
        assert_eq!(record.goodput(10.0, 20.0), 50.0);
        assert_eq!(record.throttled_share(10.0, 20.0), 0.0);
        assert_eq!(record.retry_share(10.0, 20.0), 0.0);
        assert_eq!(
            record.latency_quantile(10.0, 20.0, 0.99),
            Some(Duration::from_millis(200))
        );
        assert_eq!(record.limit_range(10.0, 20.0), Some((10, 10)));
        assert_eq!(record.limit_share_within(10.0, 20.0, 10, 13), 1.0);
    }
}
