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
//! worker thread is in flight and the limit is never reached: this measures
//! the uncontended path, where every job is dispatched at once.
//!
//! Criterion measures the three one after the other. On a shared machine
//! the load drifts between them, so the bench then measures them again in
//! [`ROUNDS`] interleaved rounds and prints, per job, the median wall time
//! and the median CPU time of the whole process (all threads, from
//! `/proc/self/task/*/schedstat`, which other processes' load barely
//! moves), and the median of each round's ratio to the baseline:
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
use std::time::{Duration, Instant};

use corral_sched::{Class, Classify, LimitConfig, QueueConfig, SchedConfig, Scheduler};
use criterion::{Criterion, SamplingMode, Throughput};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Jobs per measurement.
const JOBS: u64 = 1_000_000;
/// Jobs in flight at most, for the scheduler and the semaphore alike.
const LIMIT: usize = 64;
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
}

impl Bench {
    const ALL: [Self; 3] = [Self::Semaphore, Self::SharedGroup, Self::GroupPerJob];

    fn name(self) -> &'static str {
        match self {
            Self::Semaphore => "semaphore",
            Self::SharedGroup => "scheduler/shared-group",
            Self::GroupPerJob => "scheduler/group-per-job",
        }
    }

    /// Runs `jobs` jobs on `runtime`, from one of its worker threads;
    /// returns the wall time they took.
    fn measure(self, runtime: &Runtime, jobs: u64) -> Duration {
        let run = async move {
            match self {
                Self::Semaphore => semaphore(jobs).await,
                Self::SharedGroup => shared_group(jobs).await,
                Self::GroupPerJob => group_per_job(jobs).await,
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
        let semaphore = Arc::clone(&semaphore);
        set.spawn(async move {
            let permit = semaphore
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            black_box(());
            drop(permit);
        });
    }
    join_all(set).await;
    start.elapsed()
}

fn scheduler() -> Scheduler {
    Scheduler::new(SchedConfig {
        limit: LimitConfig::Fixed(LIMIT),
        // Nothing waits here, but the queue must not be what is measured.
        queue: QueueConfig {
            max_jobs: usize::MAX,
            max_bytes: u64::MAX,
        },
        ..SchedConfig::default()
    })
}

async fn shared_group(jobs: u64) -> Duration {
    let scheduler = scheduler();
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
    let scheduler = scheduler();
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

async fn join_all(mut set: JoinSet<()>) {
    while let Some(joined) = set.join_next().await {
        joined.expect("a no-op does not panic");
    }
}

/// Criterion's phase: one iteration is one measurement of [`JOBS`] jobs.
fn criterion_phase(c: &mut Criterion, runtime: &Runtime) {
    let mut group = c.benchmark_group("dispatch");
    group
        .sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(JOBS));
    for bench in Bench::ALL {
        group.bench_function(bench.name(), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| bench.measure(runtime, JOBS)).sum());
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
/// once; prints medians of the cost per job and of the ratios.
fn interleaved_phase(runtime: &Runtime) {
    let per_job = |time: Duration| time.as_nanos() as f64 / JOBS as f64;
    // Per round, per bench: (wall, CPU) nanoseconds per job.
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let round: Vec<(f64, Option<f64>)> = Bench::ALL
            .into_iter()
            .map(|bench| {
                let cpu_before = cpu_time();
                let wall = bench.measure(runtime, JOBS);
                let cpu = cpu_before.zip(cpu_time()).map(|(a, b)| per_job(b - a));
                (per_job(wall), cpu)
            })
            .collect();
        rounds.push(round);
    }
    println!(
        "\ndispatch overhead: {JOBS} no-op jobs per measurement, limit {LIMIT}, \
         {ROUNDS} interleaved rounds, medians"
    );
    println!(
        "  {:<24} {:>12} {:>8} {:>12} {:>8}",
        "", "wall ns/job", "ratio", "CPU ns/job", "ratio"
    );
    for (i, bench) in Bench::ALL.into_iter().enumerate() {
        let wall = median(rounds.iter().map(|round| round[i].0).collect());
        let wall_ratio = median(rounds.iter().map(|round| round[i].0 / round[0].0).collect());
        let cpu: Option<Vec<(f64, f64)>> = rounds
            .iter()
            .map(|round| Some((round[i].1?, round[i].1? / round[0].1?)))
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

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .build()
        .expect("a runtime can be built");
    let mut c = Criterion::default().configure_from_args();
    criterion_phase(&mut c, &runtime);
    c.final_summary();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // criterion then only checks that each bench runs.
    if std::env::args().any(|arg| arg == "--bench") {
        interleaved_phase(&runtime);
    }
}
