//! The scheduler's scenarios and the figures each must reach, shared by
//! the scenario tests and `corral bench sim`.
//!
//! Every scenario runs the real scheduler against the simulated backend of
//! [`crate::sim`] in virtual time, so its figures are exact for a seed and
//! say nothing about wall-clock speed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use corral_sched::{AdaptiveConfig, JobError, LimitConfig, SchedConfig, Scheduler};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::sim::{
    Backend, BackendConfig, Change, Observer, Record, Scenario, Throttled, ratio, run, work,
};

/// The backend's mean latency in every scenario.
const LATENCY: Duration = Duration::from_millis(200);
/// Clients in the saturating scenarios: far more than any knee.
const WORKERS: usize = 200;
/// Bytes per job.
const COST: u64 = 64 << 10;

/// What a figure must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// At least this.
    AtLeast(f64),
    /// At most this.
    AtMost(f64),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match self {
            Self::AtLeast(bound) => format!(">= {bound}"),
            Self::AtMost(bound) => format!("<= {bound}"),
        };
        f.pad(&target)
    }
}

/// One measured figure and its target.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// What it measures.
    pub name: &'static str,
    /// The measured value; `NaN` if there was nothing to measure it over
    /// (an empty window, no samples, a zero denominator), or if what it
    /// times never happened.
    pub value: f64,
    /// What it must be.
    pub target: Target,
}

impl Figure {
    fn new(name: &'static str, value: f64, target: Target) -> Self {
        Self {
            name,
            value,
            target,
        }
    }

    /// The worst of `values`, one per window, for `target`: the lowest
    /// against a floor, the highest against a ceiling. `NaN` if any window
    /// has no data, or there is no window: one window without data fails
    /// the figure, which `f64::min` and `f64::max` would skip.
    fn worst(name: &'static str, values: impl IntoIterator<Item = f64>, target: Target) -> Self {
        let mut worst: Option<f64> = None;
        for value in values {
            if value.is_nan() {
                return Self::new(name, f64::NAN, target);
            }
            worst = Some(match (worst, target) {
                (None, _) => value,
                (Some(worst), Target::AtLeast(_)) => worst.min(value),
                (Some(worst), Target::AtMost(_)) => worst.max(value),
            });
        }
        Self::new(name, worst.unwrap_or(f64::NAN), target)
    }

    /// Whether the value meets the target. A figure with no data (`NaN`)
    /// never does.
    pub fn met(&self) -> bool {
        if self.value.is_nan() {
            return false;
        }
        match self.target {
            Target::AtLeast(bound) => self.value >= bound,
            Target::AtMost(bound) => self.value <= bound,
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.met() { "ok" } else { "MISSED" };
        let value = if self.value.is_nan() {
            "no data".to_owned()
        } else {
            format!("{:.3}", self.value)
        };
        write!(
            f,
            "{:<44} {value:>9}  {:<10} {verdict}",
            self.name, self.target
        )
    }
}

/// The figures of one scenario run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario's name.
    pub scenario: String,
    /// The seed it ran with.
    pub seed: u64,
    /// What it measured.
    pub figures: Vec<Figure>,
}

impl Outcome {
    /// The figures that missed their target.
    pub fn missed(&self) -> Vec<&Figure> {
        self.figures.iter().filter(|f| !f.met()).collect()
    }
}

/// The default adaptive limit, started at `initial`, with its floor
/// lowered to `initial` if that is below it (a cold start at 1).
///
/// # Panics
///
/// If `initial` is 0 or above the default range's top, 256.
fn adaptive(initial: usize) -> LimitConfig {
    let min = initial.min(AdaptiveConfig::default().min());
    let config = AdaptiveConfig::builder().min(min).initial(initial).build();
    LimitConfig::Adaptive(config.expect("the scenarios start within the default range"))
}

/// `count` as a figure's value, `NaN` if it counts among no calls.
fn count_among(count: u64, calls: usize) -> f64 {
    if calls == 0 { f64::NAN } else { count as f64 }
}

/// `latency` in units of `unit`, `NaN` without one.
fn in_units(latency: Option<Duration>, unit: Duration) -> f64 {
    latency.map_or(f64::NAN, |latency| {
        latency.as_secs_f64() / unit.as_secs_f64()
    })
}

/// The lowest and highest limit in `[from, to)`, `NaN` without samples.
fn limit_range(record: &Record, from: f64, to: f64) -> (f64, f64) {
    record
        .limit_range(from, to)
        .map_or((f64::NAN, f64::NAN), |(lo, hi)| (lo as f64, hi as f64))
}

/// Jobs that ended without their value, whatever the error: a job the
/// scheduler gave up on, and one cancelled or refused alike.
fn failed_for_good(record: &Record) -> Figure {
    Figure::new(
        "jobs failed for good",
        count_among(record.lost.total(), record.jobs as usize),
        Target::AtMost(0.0),
    )
}

/// Throttles that neither were retried nor ended their job: two counts
/// that cannot both be true (see [`Record::unaccounted_throttles`]).
fn unaccounted_throttles(record: &Record) -> Figure {
    Figure::new(
        "503s neither retried nor ending a job",
        record.unaccounted_throttles(),
        Target::AtMost(0.0),
    )
}

/// Runs `backend` for `duration`, saturated, under the adaptive limit from
/// its default start.
fn run_adaptive(backend: BackendConfig, duration: Duration, seed: u64) -> Record {
    run(&Scenario {
        backend,
        limit: adaptive(AdaptiveConfig::default().initial()),
        workers: WORKERS,
        cost: COST,
        duration,
        seed,
    })
}

/// Call starts above the limit among `calls` calls.
fn breaches(breaches: u64, calls: usize) -> Figure {
    Figure::new(
        "starts above the limit",
        count_among(breaches, calls),
        Target::AtMost(0.0),
    )
}

/// **knee**: 10 slots of 200 ms +-10%, saturated, 180 s, starting at limit
/// `initial` (at most 256, the default maximum).
pub fn knee(seed: u64, initial: usize) -> Outcome {
    let record = run(&Scenario {
        backend: BackendConfig::slots(10, LATENCY),
        limit: adaptive(initial),
        workers: WORKERS,
        cost: COST,
        duration: Duration::from_secs(180),
        seed,
    });
    Outcome {
        scenario: format!("knee, cold start at {initial}"),
        seed,
        figures: knee_figures(&record),
    }
}

/// The knee scenario's figures, from its record.
fn knee_figures(record: &Record) -> Vec<Figure> {
    let capacity = 10.0 / LATENCY.as_secs_f64();
    let (lo, hi) = limit_range(record, 60.0, 180.0);
    vec![
        Figure::new(
            "seconds to 95% of capacity",
            record
                .time_to_rate(0.0, 0.95 * capacity)
                .unwrap_or(f64::NAN),
            Target::AtMost(10.0),
        ),
        Figure::new(
            "steady goodput / capacity",
            record.goodput(60.0, 180.0) / capacity,
            Target::AtLeast(0.97),
        ),
        Figure::new(
            "steady p99 / unloaded latency",
            in_units(record.latency_quantile(60.0, 180.0, 0.99), LATENCY),
            Target::AtMost(1.3),
        ),
        Figure::new("steady limit, lowest", lo, Target::AtLeast(10.0)),
        Figure::new("steady limit, highest", hi, Target::AtMost(13.0)),
        breaches(record.breaches, record.calls.len()),
    ]
}

/// The knee scenario under `fixed:N`, for reference: the steady p99 over
/// the unloaded latency, and the steady goodput over capacity.
pub fn knee_fixed(seed: u64, limit: usize) -> (f64, f64) {
    let record = run(&Scenario {
        backend: BackendConfig::slots(10, LATENCY),
        limit: LimitConfig::Fixed(limit),
        workers: WORKERS,
        cost: COST,
        duration: Duration::from_secs(180),
        seed,
    });
    let capacity = 10.0 / LATENCY.as_secs_f64();
    (
        in_units(record.latency_quantile(60.0, 180.0, 0.99), LATENCY),
        record.goodput(60.0, 180.0) / capacity,
    )
}

/// **step**: 10 slots, down to 5 at 120 s, back to 10 at 240 s.
pub fn step(seed: u64) -> Outcome {
    let mut backend = BackendConfig::slots(10, LATENCY);
    backend.changes = vec![
        (Duration::from_secs(120), Change::Slots(5)),
        (Duration::from_secs(240), Change::Slots(10)),
    ];
    let record = run_adaptive(backend, Duration::from_secs(360), seed);
    let capacity = 10.0 / LATENCY.as_secs_f64();
    Outcome {
        scenario: "step, 10 -> 5 -> 10 slots".into(),
        seed,
        figures: vec![
            Figure::new(
                "p99 / unloaded from 10 s after the drop",
                in_units(record.latency_quantile(130.0, 240.0, 0.99), LATENCY),
                Target::AtMost(1.5),
            ),
            Figure::new(
                "goodput / capacity after the drop",
                record.goodput(130.0, 240.0) / (capacity / 2.0),
                Target::AtLeast(0.95),
            ),
            Figure::new(
                "seconds to 95% of capacity after the rise",
                record
                    .time_to_rate(240.0, 0.95 * capacity)
                    .unwrap_or(f64::NAN),
                Target::AtMost(10.0),
            ),
            breaches(record.breaches, record.calls.len()),
        ],
    }
}

/// **slowdown**: 10 slots whose latency doubles, 200 ms to 400 ms, at 60 s.
/// The knee stays at 10 calls; the limit must find it again rather than
/// read the slower calls as queueing for ever.
pub fn slowdown(seed: u64) -> Outcome {
    let mut backend = BackendConfig::slots(10, LATENCY);
    let slower = LATENCY * 2;
    backend.changes = vec![(Duration::from_secs(60), Change::Latency(slower))];
    let record = run_adaptive(backend, Duration::from_secs(180), seed);
    let capacity = 10.0 / slower.as_secs_f64();
    let (lo, hi) = limit_range(&record, 100.0, 180.0);
    Outcome {
        scenario: "slowdown, 200 -> 400 ms".into(),
        seed,
        figures: vec![
            Figure::new(
                "goodput / capacity from 40 s after",
                record.goodput(100.0, 180.0) / capacity,
                Target::AtLeast(0.95),
            ),
            Figure::new(
                "p99 / new unloaded latency",
                in_units(record.latency_quantile(100.0, 180.0, 0.99), slower),
                Target::AtMost(1.3),
            ),
            Figure::new("limit after, lowest", lo, Target::AtLeast(10.0)),
            Figure::new("limit after, highest", hi, Target::AtMost(13.0)),
            breaches(record.breaches, record.calls.len()),
        ],
    }
}

/// **throttle**: no slot limit, but a token bucket of 50 calls/s (25 from
/// 120 s) that answers "503 SlowDown" in 10 ms when empty.
pub fn throttle(seed: u64) -> Outcome {
    Outcome {
        scenario: "throttle, 50 -> 25 calls/s bucket".into(),
        seed,
        figures: throttle_figures(&throttle_record(seed)),
    }
}

/// The record of [`throttle`]'s run.
pub fn throttle_record(seed: u64) -> Record {
    let backend = BackendConfig {
        slots: 10_000,
        latency: LATENCY,
        jitter: 0.1,
        rate: Some(50.0),
        reject_when_busy: false,
        burst: 10.0,
        changes: vec![(Duration::from_secs(120), Change::Rate(25.0))],
    };
    run_adaptive(backend, Duration::from_secs(240), seed)
}

/// The throttle scenario's figures, from its record: each steady figure is
/// the worse of its two windows.
fn throttle_figures(record: &Record) -> Vec<Figure> {
    let steady = [(30.0, 120.0, 50.0), (150.0, 240.0, 25.0)];
    vec![
        Figure::worst(
            "steady goodput / bucket rate",
            steady.map(|(from, to, rate)| record.goodput(from, to) / rate),
            Target::AtLeast(0.95),
        ),
        Figure::worst(
            "steady 503s / calls",
            steady.map(|(from, to, _)| record.throttled_share(from, to)),
            Target::AtMost(0.02),
        ),
        Figure::worst(
            "steady retries / calls",
            steady.map(|(from, to, _)| record.retry_share(from, to)),
            Target::AtMost(0.10),
        ),
        failed_for_good(record),
        unaccounted_throttles(record),
        breaches(record.breaches, record.calls.len()),
    ]
}

/// **hard cap**: 16 slots of 100 ms, and a call that finds them all busy
/// is answered "503 SlowDown" in 10 ms, as the bench's throttling front
/// does (S3's request rates per prefix behave alike). Nothing queues at
/// the backend, so latency never rises: only 503s tell the limit.
pub fn hard_cap(seed: u64) -> Outcome {
    let record = hard_cap_record(seed);
    let capacity = 16.0 / 0.1;
    let (from, to) = (30.0, 180.0);
    Outcome {
        scenario: "hard cap, 16 slots, 503 beyond".into(),
        seed,
        figures: vec![
            Figure::new(
                "steady goodput / capacity",
                record.goodput(from, to) / capacity,
                Target::AtLeast(0.95),
            ),
            Figure::new(
                "steady 503s / calls",
                record.throttled_share(from, to),
                Target::AtMost(0.01),
            ),
            Figure::new(
                "503s / calls from the start",
                record.throttled_share(0.0, to),
                Target::AtMost(0.01),
            ),
            failed_for_good(&record),
            unaccounted_throttles(&record),
            breaches(record.breaches, record.calls.len()),
        ],
    }
}

/// The record of [`hard_cap`]'s run.
pub fn hard_cap_record(seed: u64) -> Record {
    let backend = BackendConfig {
        reject_when_busy: true,
        ..BackendConfig::slots(16, Duration::from_millis(100))
    };
    run_adaptive(backend, Duration::from_secs(180), seed)
}

/// **cold burst**: 510 users each send a batch of 10 files at the same
/// instant to a process that has just started, against the hard-capped
/// backend of [`hard_cap`]. A file is two calls (its object, then its
/// metadata), one after the other, and the first call of a batch that
/// fails for good fails the batch. A throttle asks corral to slow down,
/// which the limit does: no batch may fail for it.
pub fn cold_burst(seed: u64) -> Outcome {
    const USERS: usize = 510;
    const CALLS: usize = 20;
    paused_runtime().block_on(async {
        let mut config = SchedConfig::default();
        config.retry.seed = Some(seed);
        let scheduler = Scheduler::new(config);
        let backend = Backend::new(
            BackendConfig {
                reject_when_busy: true,
                ..BackendConfig::slots(16, Duration::from_millis(100))
            },
            seed,
        );
        let observer = Observer::new(scheduler.clone());
        let mut batches = JoinSet::new();
        for _ in 0..USERS {
            let group = scheduler.group("anonymous").expect("the queue has room");
            let (backend, observer) = (Arc::clone(&backend), Arc::clone(&observer));
            batches.spawn(async move {
                for call in 0..CALLS {
                    let cost = if call % 2 == 0 { 256 << 10 } else { 200 };
                    let mut attempts = 0;
                    let job = || {
                        attempts += 1;
                        observer.call(&backend, attempts > 1)
                    };
                    group.run(cost, job).await?;
                }
                Ok::<_, JobError<Throttled>>(())
            });
        }
        let started = Instant::now();
        let mut failed = 0;
        while let Some(batch) = batches.join_next().await {
            if batch.expect("batches do not panic").is_err() {
                failed += 1;
            }
        }
        let took = started.elapsed().as_secs_f64();
        let calls = observer.calls();
        let throttled = calls.iter().filter(|call| !call.ok).count();
        // The floor: every call served back to back in 16 slots.
        let floor = (USERS * CALLS) as f64 * 0.1 / 16.0;
        Outcome {
            scenario: "cold burst, 510 users x 10 files, hard cap 16".into(),
            seed,
            figures: vec![
                Figure::new("batches failed", failed as f64, Target::AtMost(0.0)),
                Figure::new(
                    "503s / calls",
                    ratio(throttled, calls.len()),
                    Target::AtMost(0.02),
                ),
                Figure::new("time / floor", took / floor, Target::AtMost(1.5)),
                breaches(observer.breaches(), calls.len()),
            ],
        }
    })
}

/// **fleet**: three processes, each with its own scheduler and nothing
/// shared but the backend of [`hard_cap`] (16 slots of 100 ms, 503
/// beyond), each kept busy by its own clients. None may starve while they
/// share it, and when two go quiet at 60 s the third must take their room
/// at once, not sit at its share.
pub fn fleet(seed: u64) -> Outcome {
    const INSTANCES: usize = 3;
    const WORKERS: usize = 60;
    const SHARED_UNTIL: f64 = 60.0;
    const END: f64 = 90.0;
    let capacity = 16.0 / 0.1;
    paused_runtime().block_on(async {
        let backend = Backend::new(
            BackendConfig {
                reject_when_busy: true,
                ..BackendConfig::slots(16, Duration::from_millis(100))
            },
            seed,
        );
        let start = Instant::now();
        let mut observers = Vec::new();
        let mut workers = JoinSet::new();
        for instance in 0..INSTANCES {
            let mut config = SchedConfig::default();
            config.retry.seed = Some(seed.wrapping_add(instance as u64));
            config.queue.max_jobs = WORKERS * 2;
            let scheduler = Scheduler::new(config);
            let observer = Observer::new(scheduler.clone());
            observers.push(Arc::clone(&observer));
            let until =
                start + Duration::from_secs_f64(if instance == 0 { END } else { SHARED_UNTIL });
            for _ in 0..WORKERS {
                let (scheduler, backend, observer) = (
                    scheduler.clone(),
                    Arc::clone(&backend),
                    Arc::clone(&observer),
                );
                workers.spawn(work(scheduler, backend, observer, COST, until));
            }
        }
        while let Some(worker) = workers.join_next().await {
            worker.expect("workers do not panic");
        }
        let calls: Vec<_> = observers.iter().map(|o| o.calls()).collect();
        let served = |calls: &[crate::sim::Call], from: f64, to: f64| {
            calls
                .iter()
                .filter(|c| c.ok && c.start >= from && c.start < to)
                .count() as f64
        };
        let (from, to) = (20.0, SHARED_UNTIL);
        let shares: Vec<f64> = calls.iter().map(|c| served(c, from, to)).collect();
        let total: f64 = shares.iter().sum();
        let spread = shares
            .iter()
            .map(|&s| (s / total * INSTANCES as f64 - 1.0).abs())
            .fold(f64::NAN, f64::max);
        let throttled = calls.iter().flatten().filter(|c| !c.ok).count();
        let all = calls.iter().map(Vec::len).sum::<usize>();
        let after = served(&calls[0], SHARED_UNTIL + 2.0, END) / (END - SHARED_UNTIL - 2.0);
        let breached = observers.iter().map(|o| o.breaches()).sum();
        Outcome {
            scenario: "fleet, 3 schedulers on one hard cap of 16".into(),
            seed,
            figures: vec![
                Figure::new(
                    "shared goodput / capacity",
                    total / (to - from) / capacity,
                    Target::AtLeast(0.9),
                ),
                Figure::new(
                    "largest gap between a share and a third, relative, while shared",
                    spread,
                    Target::AtMost(0.25),
                ),
                Figure::new("503s / calls", ratio(throttled, all), Target::AtMost(0.02)),
                Figure::new(
                    "goodput of the one left, from 2 s after / capacity",
                    after / capacity,
                    Target::AtLeast(0.9),
                ),
                breaches(breached, all),
            ],
        }
    })
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds")
}

/// **fairness**: tenant A queues 10,000 jobs; 5 s later tenant B queues 10.
/// B's jobs must all finish within twice the time its own work takes at
/// its fair share (half the capacity).
pub fn fairness(seed: u64) -> Outcome {
    paused_runtime().block_on(async {
        let mut config = SchedConfig::default();
        config.queue.max_jobs = 20_000;
        config.retry.seed = Some(seed);
        let scheduler = Scheduler::new(config);
        let backend = Backend::new(BackendConfig::slots(10, LATENCY), seed);
        let observer = Observer::new(scheduler.clone());
        let mut jobs = JoinSet::new();
        let heavy = Arc::new(scheduler.group("tenant-a").expect("the queue is empty"));
        for _ in 0..10_000 {
            let (group, backend, observer) = (
                Arc::clone(&heavy),
                Arc::clone(&backend),
                Arc::clone(&observer),
            );
            jobs.spawn(async move { group.run(COST, || observer.call(&backend, false)).await });
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let light = Arc::new(scheduler.group("tenant-b").expect("the queue has room"));
        let submitted = Instant::now();
        let mut light_jobs = JoinSet::new();
        for _ in 0..10 {
            let (group, backend, observer) = (
                Arc::clone(&light),
                Arc::clone(&backend),
                Arc::clone(&observer),
            );
            light_jobs
                .spawn(async move { group.run(COST, || observer.call(&backend, false)).await });
        }
        while let Some(done) = light_jobs.join_next().await {
            done.expect("jobs do not panic")
                .expect("the backend never fails here");
        }
        let took = submitted.elapsed().as_secs_f64();
        // Its own work at half the capacity: 10 jobs x 200 ms / 5 slots.
        let fair = 10.0 * LATENCY.as_secs_f64() / 5.0;
        let heavy_left = scheduler.stats().queued_jobs;
        jobs.abort_all();
        Outcome {
            scenario: "fairness, 10,000 jobs then 10".into(),
            seed,
            figures: vec![
                Figure::new(
                    "late tenant's time / its fair time",
                    took / fair,
                    Target::AtMost(2.0),
                ),
                Figure::new(
                    "jobs of the first tenant still queued",
                    heavy_left as f64,
                    Target::AtLeast(1000.0),
                ),
                breaches(observer.breaches(), observer.calls().len()),
            ],
        }
    })
}

/// **cancellation**: a request with 1,000 queued and 10 running jobs goes
/// away; within one scheduling step nothing of it is queued or running.
pub fn cancellation(seed: u64) -> Outcome {
    paused_runtime().block_on(async {
        let mut config = SchedConfig {
            limit: LimitConfig::Fixed(10),
            ..SchedConfig::default()
        };
        config.retry.seed = Some(seed);
        let scheduler = Scheduler::new(config);
        let backend = Backend::new(BackendConfig::slots(10, LATENCY), seed);
        let observer = Observer::new(scheduler.clone());
        let request = {
            let (scheduler, backend, observer) = (
                scheduler.clone(),
                Arc::clone(&backend),
                Arc::clone(&observer),
            );
            tokio::spawn(async move {
                let group = scheduler.group("tenant").expect("the queue is empty");
                let calls = (0..1010).map(|_| group.run(COST, || observer.call(&backend, false)));
                futures::future::join_all(calls).await
            })
        };
        // Let the request queue its jobs and start ten.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = scheduler.stats();
        request.abort();
        tokio::task::yield_now().await;
        let after = scheduler.stats();
        // Every slot is free again: a new request gets all ten at once.
        let group = scheduler.group("tenant").expect("the queue is empty");
        let started = Instant::now();
        let calls = (0..10).map(|_| group.run(COST, || observer.call(&backend, false)));
        futures::future::join_all(calls).await;
        let refill = started.elapsed().as_secs_f64() / (LATENCY.as_secs_f64() * 1.1);
        Outcome {
            scenario: "cancellation, 1,000 queued + 10 running".into(),
            seed,
            figures: vec![
                Figure::new(
                    "queued before",
                    before.queued_jobs as f64,
                    Target::AtLeast(1000.0),
                ),
                Figure::new(
                    "running before",
                    before.in_flight as f64,
                    Target::AtLeast(10.0),
                ),
                Figure::new(
                    "queued one step after",
                    after.queued_jobs as f64,
                    Target::AtMost(0.0),
                ),
                Figure::new(
                    "running one step after",
                    after.in_flight as f64,
                    Target::AtMost(0.0),
                ),
                Figure::new(
                    "next 10 jobs' time / one latency",
                    refill,
                    Target::AtMost(1.0),
                ),
            ],
        }
    })
}

/// Every scenario, each with `seeds`.
pub fn all(seeds: &[u64]) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for &seed in seeds {
        outcomes.push(knee(seed, 1));
        outcomes.push(knee(seed, 100));
        outcomes.push(step(seed));
        outcomes.push(slowdown(seed));
        outcomes.push(throttle(seed));
        outcomes.push(hard_cap(seed));
        outcomes.push(cold_burst(seed));
        outcomes.push(fleet(seed));
        outcomes.push(fairness(seed));
        outcomes.push(cancellation(seed));
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::tests::steady;

    #[test]
    fn a_figure_without_data_meets_no_target() {
        for target in [Target::AtLeast(0.0), Target::AtMost(0.0)] {
            let figure = Figure::new("nothing", f64::NAN, target);
            assert!(!figure.met());
            assert!(figure.to_string().contains("no data"), "{figure}");
            assert!(figure.to_string().ends_with("MISSED"), "{figure}");
        }
    }

    #[test]
    fn a_run_that_recorded_nothing_meets_no_target() {
        let empty = Record::default();
        for figure in knee_figures(&empty).iter().chain(&throttle_figures(&empty)) {
            assert!(figure.value.is_nan(), "{figure}");
            assert!(!figure.met(), "{figure}");
        }
    }

    #[test]
    fn a_window_without_samples_fails_the_worse_of_two_windows() {
        // The throttle's first steady window, 30 s to 120 s, is served at
        // its bucket's rate; in the second, 150 s to 240 s, no call starts.
        let mut record = steady(240.0, 50.0, 10);
        record.calls.retain(|call| call.start < 120.0);
        let figures = throttle_figures(&record);
        let figure = |name| figures.iter().find(|f| f.name == name).unwrap();
        let goodput = figure("steady goodput / bucket rate");
        assert_eq!(goodput.value, 0.0, "nothing served is a goodput of zero");
        assert!(!goodput.met());
        for name in ["steady 503s / calls", "steady retries / calls"] {
            assert!(figure(name).value.is_nan(), "{}", figure(name));
            assert!(!figure(name).met());
        }
    }

    #[test]
    fn a_steady_run_at_the_knee_meets_its_targets() {
        let record = steady(180.0, 50.0, 10);
        let figures = knee_figures(&record);
        assert!(figures.iter().all(Figure::met), "{figures:#?}");
    }
}
