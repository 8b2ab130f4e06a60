//! Dispatch overhead: what the scheduler costs per job over the plainest
//! way of bounding concurrency, a `tokio::sync::Semaphore`.
//!
//! Each measurement spawns [`JOBS`] tasks into a `JoinSet`, from a task on
//! a multi-threaded runtime (as a request handler would), and waits for
//! them all. Every task runs one no-op job under a limit of [`LIMIT`]:
//!
//! - `semaphore`: the baseline. The task takes an owned permit of an
//!   `Arc<Semaphore>` with [`LIMIT`] permits, does nothing, drops it.
//! - `scheduler/shared-group`: every task runs its job with
//!   `group.run(0, ..)` in one group made before the clock starts, on a
//!   scheduler with `LimitConfig::Fixed(LIMIT)`: the cost of dispatch
//!   alone, which the target of at most 1.2x the baseline is about. It is
//!   also a batch request's case: many jobs, one group.
//! - `scheduler/group-per-job`: the task opens its own group, as a
//!   one-call request does, and runs its job in it. On top of dispatch it
//!   pays for admission and for the group's cancellation scope (a child
//!   of the scheduler's token, made and dropped per group).
//!
//! A no-op job never yields while holding its slot, so at most one job per
//! worker thread is in flight and the limit is never reached: these three
//! measure the uncontended path, where every job is dispatched at once.
//!
//! The contended path is measured apart: [`BURSTS`] bursts, one after
//! another, each of [`BURST`] jobs submitted at once (spawned into a
//! `JoinSet` and joined) under a limit of [`CONTENDED_LIMIT`]. Each job
//! yields once while it holds its slot, so the others find the limit full
//! and queue behind it. A yield and not a sleep: a timer's millisecond
//! would be most of what is measured.
//!
//! - `contended/semaphore`: the baseline, an `Arc<Semaphore>` of
//!   [`CONTENDED_LIMIT`] permits; a job takes an owned permit, yields,
//!   drops it.
//! - `contended/scheduler`: a scheduler with
//!   `LimitConfig::Fixed(CONTENDED_LIMIT)`, a group per burst (a batch
//!   request), each job `group.run(0, ..)` that yields once. Waiting jobs
//!   go through the fair queue and are handed their slot by the job that
//!   frees it.
//!
//! Before measuring, one burst checks that jobs do queue on that path.
//!
//! Criterion measures the five one after the other. On a shared machine
//! the load drifts between them, so the bench then measures them again in
//! [`ROUNDS`] interleaved rounds and prints, per job and per path, the
//! median wall time and the median CPU time of the whole process (all
//! threads, from `/proc/self/task/*/schedstat`, which other processes'
//! load barely moves), and the median of each round's ratio to that path's
//! baseline:
//!
//! ```text
//! cargo bench -p corral-sched --bench dispatch
//! ```
//!
//! A filter that matches no benchmark (`-- nomatch`) skips criterion's
//! phase; the interleaved one still runs.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corral_sched::{Class, Classify, Group, LimitConfig, QueueConfig, SchedConfig, Scheduler};
use criterion::{Criterion, SamplingMode, Throughput};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Jobs per measurement on the uncontended path.
const JOBS: u64 = 1_000_000;
/// Jobs in flight at most on the uncontended path, for the scheduler and
/// the semaphore alike.
const LIMIT: usize = 64;
/// Jobs in flight at most on the contended path: far fewer than a burst.
const CONTENDED_LIMIT: usize = 4;
/// Jobs submitted at once on the contended path.
const BURST: u64 = 64;
/// Bursts per measurement on the contended path, one after another.
const BURSTS: u64 = 4096;
/// Measurements per benchmark in criterion's phase (its minimum).
const SAMPLES: usize = 10;
/// Rounds of the interleaved phase.
const ROUNDS: usize = 15;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bench {
    Semaphore,
    SharedGroup,
    GroupPerJob,
    ContendedSemaphore,
    ContendedScheduler,
}

/// The paths measured, each with its benches, its baseline first.
const PATHS: [(&str, &[Bench]); 2] = [
    (
        "uncontended",
        &[Bench::Semaphore, Bench::SharedGroup, Bench::GroupPerJob],
    ),
    (
        "contended",
        &[Bench::ContendedSemaphore, Bench::ContendedScheduler],
    ),
];

impl Bench {
    const ALL: [Self; 5] = [
        Self::Semaphore,
        Self::SharedGroup,
        Self::GroupPerJob,
        Self::ContendedSemaphore,
        Self::ContendedScheduler,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Semaphore => "semaphore",
            Self::SharedGroup => "scheduler/shared-group",
            Self::GroupPerJob => "scheduler/group-per-job",
            Self::ContendedSemaphore => "contended/semaphore",
            Self::ContendedScheduler => "contended/scheduler",
        }
    }

    /// Jobs in one measurement.
    fn jobs(self) -> u64 {
        match self {
            Self::Semaphore | Self::SharedGroup | Self::GroupPerJob => JOBS,
            Self::ContendedSemaphore | Self::ContendedScheduler => BURSTS * BURST,
        }
    }

    /// Runs one measurement on `runtime`, from one of its worker threads;
    /// returns the wall time its jobs took.
    fn measure(self, runtime: &Runtime) -> Duration {
        let jobs = self.jobs();
        let run = async move {
            match self {
                Self::Semaphore => semaphore(jobs).await,
                Self::SharedGroup => shared_group(jobs).await,
                Self::GroupPerJob => group_per_job(jobs).await,
                Self::ContendedSemaphore => contended_semaphore(BURSTS).await,
                Self::ContendedScheduler => contended_scheduler(BURSTS).await,
            }
        };
        runtime
            .block_on(runtime.spawn(run))
            .expect("a measurement does not panic")
    }
}

/// The error of a job that cannot fail.
#[derive(Debug)]
struct Never(Infallible);

impl Classify for Never {
    fn classify(&self) -> Class {
        match self.0 {}
    }
}

async fn semaphore(jobs: u64) -> Duration {
    let semaphore = Arc::new(Semaphore::new(LIMIT));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..jobs {
        set.spawn(semaphore_job(Arc::clone(&semaphore), async {
            black_box(());
        }));
    }
    join_all(set).await;
    start.elapsed()
}

/// A baseline job: `work` under an owned permit of `semaphore`.
async fn semaphore_job(semaphore: Arc<Semaphore>, work: impl Future<Output = ()>) {
    let permit = semaphore
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    work.await;
    drop(permit);
}

fn scheduler(limit: usize) -> Scheduler {
    Scheduler::new(SchedConfig {
        limit: LimitConfig::Fixed(limit),
        // The queue must not refuse what is measured.
        queue: QueueConfig {
            max_jobs: usize::MAX,
            max_bytes: u64::MAX,
        },
        ..SchedConfig::default()
    })
}

async fn shared_group(jobs: u64) -> Duration {
    let scheduler = scheduler(LIMIT);
    let group = Arc::new(scheduler.group("tenant").expect("the queue is empty"));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..jobs {
        let group = Arc::clone(&group);
        set.spawn(async move {
            group
                .run(0, || async {
                    black_box(());
                    Ok::<_, Never>(())
                })
                .await
                .expect("a no-op succeeds");
        });
    }
    join_all(set).await;
    start.elapsed()
}

async fn group_per_job(jobs: u64) -> Duration {
    let scheduler = scheduler(LIMIT);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..jobs {
        let scheduler = scheduler.clone();
        set.spawn(async move {
            let group = scheduler.group("tenant").expect("the queue is unbounded");
            group
                .run(0, || async {
                    black_box(());
                    Ok::<_, Never>(())
                })
                .await
                .expect("a no-op succeeds");
        });
    }
    join_all(set).await;
    start.elapsed()
}

async fn contended_semaphore(bursts: u64) -> Duration {
    let semaphore = Arc::new(Semaphore::new(CONTENDED_LIMIT));
    let start = Instant::now();
    for _ in 0..bursts {
        let mut set = JoinSet::new();
        for _ in 0..BURST {
            set.spawn(semaphore_job(
                Arc::clone(&semaphore),
                tokio::task::yield_now(),
            ));
        }
        join_all(set).await;
    }
    start.elapsed()
}

async fn contended_scheduler(bursts: u64) -> Duration {
    let scheduler = scheduler(CONTENDED_LIMIT);
    let start = Instant::now();
    for _ in 0..bursts {
        let group = Arc::new(scheduler.group("tenant").expect("the queue is unbounded"));
        scheduler_burst(&group, || ()).await;
    }
    start.elapsed()
}

/// One burst of the contended path through the scheduler: [`BURST`] jobs
/// of `group` submitted at once, each calling `on_slot` once it has its
/// slot, then yielding while it holds it.
async fn scheduler_burst(group: &Arc<Group>, on_slot: impl Fn() + Clone + Send + Sync + 'static) {
    let mut set = JoinSet::new();
    for _ in 0..BURST {
        let (group, on_slot) = (Arc::clone(group), on_slot.clone());
        set.spawn(async move {
            group
                .run(0, || {
                    on_slot();
                    async {
                        tokio::task::yield_now().await;
                        Ok::<_, Never>(())
                    }
                })
                .await
                .expect("a yield succeeds");
        });
    }
    join_all(set).await;
}

/// The most jobs seen waiting in the queue during one burst of the
/// contended path, read by each job when it has its slot: more than zero,
/// or the contended path is not what is measured.
fn queued_in_a_burst(runtime: &Runtime) -> usize {
    let scheduler = scheduler(CONTENDED_LIMIT);
    let group = Arc::new(scheduler.group("tenant").expect("the queue is unbounded"));
    let seen = Arc::new(AtomicUsize::new(0));
    let burst = async move {
        let on_slot = {
            let seen = Arc::clone(&seen);
            move || {
                seen.fetch_max(scheduler.stats().queued_jobs, Ordering::Relaxed);
            }
        };
        scheduler_burst(&group, on_slot).await;
        seen.load(Ordering::Relaxed)
    };
    runtime
        .block_on(runtime.spawn(burst))
        .expect("a burst does not panic")
}

async fn join_all(mut set: JoinSet<()>) {
    while let Some(joined) = set.join_next().await {
        joined.expect("a no-op does not panic");
    }
}

/// Criterion's phase: one iteration is one measurement.
fn criterion_phase(c: &mut Criterion, runtime: &Runtime) {
    let mut group = c.benchmark_group("dispatch");
    group
        .sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for bench in Bench::ALL {
        group.throughput(Throughput::Elements(bench.jobs()));
        group.bench_function(bench.name(), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| bench.measure(runtime)).sum());
        });
    }
    group.finish();
}

/// CPU time used so far by every thread of the process.
fn cpu_time() -> Option<Duration> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        // The first field is the time spent running, in nanoseconds.
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The interleaved phase: [`ROUNDS`] rounds, each measuring every bench
/// once; prints, per path, medians of the cost per job and of each
/// round's ratio to the path's baseline.
fn interleaved_phase(runtime: &Runtime) {
    // Per round, per bench of `Bench::ALL`: (wall, CPU) nanoseconds per job.
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let round: Vec<(f64, Option<f64>)> = Bench::ALL
            .into_iter()
            .map(|bench| {
                let per_job = |time: Duration| time.as_nanos() as f64 / bench.jobs() as f64;
                let cpu_before = cpu_time();
                let wall = bench.measure(runtime);
                let cpu = cpu_before.zip(cpu_time()).map(|(a, b)| per_job(b - a));
                (per_job(wall), cpu)
            })
            .collect();
        rounds.push(round);
    }
    let index = |bench: Bench| {
        Bench::ALL
            .iter()
            .position(|&b| b == bench)
            .expect("every bench is in ALL")
    };
    for (path, benches) in PATHS {
        let what = if path == "uncontended" {
            format!("{JOBS} no-op jobs per measurement, limit {LIMIT}")
        } else {
            format!(
                "{BURSTS} bursts of {BURST} jobs that yield once in their slot, limit {CONTENDED_LIMIT}"
            )
        };
        println!("\ndispatch overhead, {path} path: {what}, {ROUNDS} interleaved rounds, medians");
        println!(
            "  {:<24} {:>12} {:>8} {:>12} {:>8}",
            "", "wall ns/job", "ratio", "CPU ns/job", "ratio"
        );
        let baseline = index(benches[0]);
        for &bench in benches {
            let i = index(bench);
            let wall = median(rounds.iter().map(|round| round[i].0).collect());
            let wall_ratio = median(
                rounds
                    .iter()
                    .map(|round| round[i].0 / round[baseline].0)
                    .collect(),
            );
            let cpu: Option<Vec<(f64, f64)>> = rounds
                .iter()
                .map(|round| Some((round[i].1?, round[i].1? / round[baseline].1?)))
                .collect();
            let cpu = cpu.map_or_else(
                || "n/a".to_owned(),
                |cpu| {
                    let per_job = median(cpu.iter().map(|(per_job, _)| *per_job).collect());
                    let ratio = median(cpu.iter().map(|(_, ratio)| *ratio).collect());
                    format!("{per_job:>12.1} {ratio:>7.2}x")
                },
            );
            println!(
                "  {:<24} {wall:>12.1} {wall_ratio:>7.2}x {cpu}",
                bench.name()
            );
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .build()
        .expect("a runtime can be built");
    let queued = queued_in_a_burst(&runtime);
    assert!(
        queued > 0,
        "no job queued in a burst of the contended path: it measures nothing"
    );
    println!(
        "contended path: up to {queued} of a burst's {BURST} jobs seen queued behind the limit of {CONTENDED_LIMIT}"
    );
    let mut c = Criterion::default().configure_from_args();
    criterion_phase(&mut c, &runtime);
    c.final_summary();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // criterion then only checks that each bench runs.
    if std::env::args().any(|arg| arg == "--bench") {
        interleaved_phase(&runtime);
    }
}
