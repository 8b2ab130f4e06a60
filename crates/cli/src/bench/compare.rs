//! `corral bench compare` and `corral bench sweep`: the thundering herd
//! against each limit strategy in turn, end to end, in one run.
//!
//! For each strategy: a fresh bucket on a real S3 server on 127.0.0.1, a
//! fresh throttling front before it (so its counts are this run's), and a
//! `corral serve` child process (this same binary) storing through the
//! front with that `--concurrency`. The herd ([`corral_testkit::herd`])
//! uploads through corral, then reads a sample back straight from S3. While
//! it runs, corral's `/metrics` are sampled for the timeline plot. Then the
//! child is killed and the next strategy starts from scratch.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use corral_testkit::front::{Front, FrontConfig, Stats};
use corral_testkit::herd::{self, HerdConfig, Report, Verify};
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;

use super::plot::{self, Panel, Series};
use crate::units::{ByteSize, Span};

/// Which S3 server runs under the front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum S3Kind {
    /// s3s-fs: a Rust S3 server on files, data on tmpfs; fast. Installed
    /// with `cargo install` into the target directory on first use
    /// (about 3 minutes).
    S3s,
    /// moto: a Python S3 server, as the tests use; slower.
    Moto,
}

/// The S3 server under the front.
pub(super) enum S3 {
    S3s(corral_testkit::s3s::S3sFs),
    Moto(corral_testkit::s3::S3Server),
}

impl S3 {
    pub(super) fn start(kind: S3Kind) -> anyhow::Result<Self> {
        Ok(match kind {
            S3Kind::S3s => {
                eprintln!("starting s3s-fs (installed on first use: about 3 minutes)");
                Self::S3s(corral_testkit::s3s::S3sFs::start().context("starting s3s-fs")?)
            }
            S3Kind::Moto => {
                Self::Moto(corral_testkit::s3::S3Server::start().context("starting moto")?)
            }
        })
    }

    pub(super) fn addr(&self) -> std::net::SocketAddr {
        match self {
            Self::S3s(s3s) => s3s.addr(),
            Self::Moto(moto) => moto.addr(),
        }
    }

    pub(super) fn endpoint(&self) -> String {
        match self {
            Self::S3s(s3s) => s3s.endpoint(),
            Self::Moto(moto) => moto.endpoint(),
        }
    }

    pub(super) fn new_bucket(&self) -> anyhow::Result<String> {
        Ok(match self {
            Self::S3s(s3s) => s3s.new_bucket("bench")?,
            Self::Moto(moto) => moto.new_bucket("bench")?,
        })
    }

    pub(super) fn credentials(&self) -> (&'static str, &'static str) {
        use corral_testkit::{s3, s3s};
        match self {
            Self::S3s(_) => (s3s::ACCESS_KEY_ID, s3s::SECRET_ACCESS_KEY),
            Self::Moto(_) => (s3::ACCESS_KEY_ID, s3::SECRET_ACCESS_KEY),
        }
    }

    /// Where a `corral serve` stores in `bucket` of this server, reached
    /// at `endpoint` (the server's, or a front's before it).
    pub(super) fn store(&self, bucket: String, endpoint: String) -> Store {
        Store::S3 {
            bucket,
            endpoint,
            credentials: self.credentials(),
        }
    }
}

/// The S3 server and the throttling front before it, for the benches that
/// run `corral serve` through the front.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Backend {
    /// Requests the front serves at once; beyond, it answers 503 SlowDown
    /// at once, as S3 does.
    #[arg(long, default_value_t = 16)]
    pub(crate) slots: usize,
    /// Latency the front adds to each request (±10%).
    #[arg(long, default_value = "100ms")]
    pub(crate) latency: Span,
    /// The S3 server under the front.
    #[arg(long, value_enum, default_value = "s3s")]
    pub(crate) s3: S3Kind,
}

impl Backend {
    /// A throttling front before `s3`, as these flags set it.
    pub(super) async fn front(&self, s3: &S3) -> anyhow::Result<Front> {
        let config = FrontConfig {
            slots: Some(self.slots),
            latency: self.latency.0,
            jitter: 0.1,
            ..FrontConfig::new(s3.addr())
        };
        Ok(Front::start(config).await?)
    }
}

/// What every run shares.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HerdShape {
    /// Simulated users, each sending one batch at once [default: 500 for
    /// compare, 100 for sweep, 600 for fleet].
    #[arg(long)]
    pub(crate) users: Option<usize>,
    /// Files per user's batch.
    #[arg(long, default_value_t = 10)]
    pub(crate) files: usize,
    /// Size of each file.
    #[arg(long, default_value = "256KiB")]
    pub(crate) size: ByteSize,
    #[command(flatten)]
    pub(crate) backend: Backend,
    /// Longest a strategy's run may take; what is unfinished then is
    /// reported as such [default: 5m for compare and fleet, 60s for sweep, where
    /// `fixed:1` would take 200 s].
    #[arg(long)]
    pub(crate) deadline: Option<Span>,
    /// More arguments for every `corral serve`, one per flag, such as
    /// `--serve-arg=--upload-memory --serve-arg=128MiB`.
    #[arg(long = "serve-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub(crate) serve_args: Vec<String>,
    /// Where the table, JSON and plots go.
    #[arg(long, default_value = "bench-out")]
    pub(crate) out: PathBuf,
    /// No progress bar.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// `corral bench compare`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompareArgs {
    /// Strategies to run, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "per-request:3,unbounded,fixed:16,adaptive"
    )]
    pub(crate) strategies: Vec<String>,
    #[command(flatten)]
    pub(crate) shape: HerdShape,
}

/// `corral bench sweep`.
#[derive(Debug, clap::Args)]
pub(crate) struct SweepArgs {
    /// Fixed limits to run, then adaptive.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64,128")]
    pub(crate) limits: Vec<usize>,
    #[command(flatten)]
    pub(crate) shape: HerdShape,
}

/// `corral bench ingest`.
#[derive(Debug, clap::Args)]
pub(crate) struct IngestArgs {
    /// Files the one client sends, in one batch.
    #[arg(long, default_value_t = 200)]
    pub(crate) files: usize,
    /// Size of each file.
    #[arg(long, default_value = "1MiB")]
    pub(crate) size: ByteSize,
    /// Rounds, each a direct write then the same through corral; the
    /// ratio reported is the median of the rounds'.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// The S3 server to measure besides the local disk.
    #[arg(long, value_enum, default_value = "s3s")]
    pub(crate) s3: S3Kind,
}

/// One strategy's run.
#[derive(Debug, Serialize)]
struct Run {
    strategy: String,
    report: Report,
    front: Stats,
    /// Requests a second the front can serve: slots / latency.
    capacity_rps: f64,
    /// corral's `/metrics`, sampled every 250 ms.
    timeline: Vec<Sample>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Sample {
    pub(super) t_s: f64,
    pub(super) limit: f64,
    in_flight: f64,
    queued_jobs: f64,
    /// Storage calls made so far, retries included.
    pub(super) calls: f64,
    /// Backend call p99 over the last interval, in ms.
    backend_p99_ms: Option<f64>,
}

impl Sample {
    /// A sample with only a time and a count of calls, for tests.
    #[cfg(test)]
    pub(super) fn at(t_s: f64, calls: f64) -> Self {
        Self {
            t_s,
            limit: f64::NAN,
            in_flight: f64::NAN,
            queued_jobs: f64::NAN,
            calls,
            backend_p99_ms: None,
        }
    }
}

impl Run {
    fn throttled_share(&self) -> f64 {
        self.front.throttled as f64 / (self.front.received.max(1)) as f64
    }

    /// Calls served per second over the run, as a share of the front's
    /// capacity.
    fn goodput_share(&self) -> f64 {
        let served = self.front.forwarded as f64 / self.report.duration_s.max(1e-9);
        served / self.capacity_rps
    }

    /// Slot time the backend spent serving, as a share of all its slots
    /// over the run: how busy corral kept it.
    fn utilization(&self) -> f64 {
        let slots = self.front.slots.unwrap_or(1) as f64;
        self.front.busy_slot_seconds / (slots * self.report.duration_s.max(1e-9))
    }

    fn stored_share(&self) -> f64 {
        self.report.files_stored as f64 / (self.report.files_attempted.max(1)) as f64
    }
}

pub(crate) fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    let shape = args.shape.or(500, Duration::from_secs(300));
    let runs = run_all(&args.strategies, &shape)?;
    let table = table(&runs);
    print!("{table}");
    write_outputs(&args.shape, "compare", &runs, &table)?;
    if let Some(adaptive) = runs.iter().find(|r| r.strategy.starts_with("adaptive")) {
        let svg = timeline_plot(adaptive);
        std::fs::write(args.shape.out.join("compare-adaptive-timeline.svg"), svg)?;
    }
    std::fs::write(
        args.shape.out.join("compare-strategies.svg"),
        strategies_plot(&runs),
    )?;
    println!("wrote {}", args.shape.out.display());
    Ok(())
}

pub(crate) fn sweep(args: &SweepArgs) -> anyhow::Result<()> {
    let mut strategies: Vec<String> = args.limits.iter().map(|l| format!("fixed:{l}")).collect();
    strategies.push("adaptive".to_owned());
    let shape = args.shape.or(100, Duration::from_secs(60));
    let runs = run_all(&strategies, &shape)?;
    let table = table(&runs);
    print!("{table}");
    write_outputs(&args.shape, "sweep", &runs, &table)?;
    let best = runs
        .iter()
        .filter(|r| r.strategy.starts_with("fixed"))
        .max_by(|a, b| a.report.files_per_s.total_cmp(&b.report.files_per_s));
    if let (Some(best), Some(adaptive)) = (best, runs.last()) {
        println!(
            "best fixed: {} at {:.1} files/s, p99 {:.0} ms; adaptive: {:.1} files/s ({:.0}% of it), p99 {:.0} ms",
            best.strategy,
            best.report.files_per_s,
            best.report.batch_latency.p99_ms,
            adaptive.report.files_per_s,
            100.0 * adaptive.report.files_per_s / best.report.files_per_s.max(1e-9),
            adaptive.report.batch_latency.p99_ms
        );
    }
    Ok(())
}

/// Writes into `shape.out`, which [`run_all`] made.
fn write_outputs(shape: &HerdShape, name: &str, runs: &[Run], table: &str) -> anyhow::Result<()> {
    std::fs::write(shape.out.join(format!("{name}.txt")), table)?;
    let json = serde_json::to_string_pretty(runs)?;
    std::fs::write(shape.out.join(format!("{name}.json")), json)?;
    Ok(())
}

impl HerdShape {
    /// This shape, with `users` and `deadline` where it leaves them unset.
    pub(super) fn or(&self, users: usize, deadline: Duration) -> Shape {
        Shape {
            users: self.users.unwrap_or(users),
            deadline: self.deadline.map_or(deadline, |span| span.0),
            shape: self.clone(),
        }
    }
}

/// A [`HerdShape`] with every default filled in.
pub(super) struct Shape {
    pub(super) users: usize,
    pub(super) deadline: Duration,
    shape: HerdShape,
}

impl Shape {
    /// The herd this shape describes, sent to `url`, storing through
    /// `front` into `bucket` of `s3`, with `sample` objects read back.
    pub(super) fn herd(
        &self,
        url: String,
        s3: &S3,
        bucket: String,
        front: &Front,
        sample: usize,
    ) -> HerdConfig {
        let (key, secret) = s3.credentials();
        HerdConfig {
            url,
            users: self.users,
            files: self.files,
            size: self.size.0,
            deadline: self.deadline,
            verify: Some(Verify {
                endpoint: s3.endpoint(),
                bucket,
                prefix: "corral".to_owned(),
                tenant: "anonymous".to_owned(),
                region: corral_testkit::s3::REGION.to_owned(),
                access_key_id: key.to_owned(),
                secret_access_key: secret.to_owned(),
                sample,
            }),
            front: Some(front.endpoint()),
            progress: !self.quiet,
            ..HerdConfig::default()
        }
    }
}

impl std::ops::Deref for Shape {
    type Target = HerdShape;

    fn deref(&self) -> &HerdShape {
        &self.shape
    }
}

fn run_all(strategies: &[String], shape: &Shape) -> anyhow::Result<Vec<Run>> {
    std::fs::create_dir_all(&shape.out)
        .with_context(|| format!("cannot create {}", shape.out.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let s3 = S3::start(shape.backend.s3)?;
    eprintln!(
        "S3 at {}; {} users x {} files x {}; front {} slots x {}; corral's logs in {}",
        s3.endpoint(),
        shape.users,
        shape.files,
        shape.size,
        shape.backend.slots,
        shape.backend.latency,
        shape.out.display()
    );
    let mut runs = Vec::new();
    for strategy in strategies {
        eprintln!("== {strategy}");
        let run = runtime.block_on(run_one(&s3, strategy, shape))?;
        eprintln!(
            "   stored {}/{}, p99 {:.0} ms, {:.1} files/s, 503s {:.1}%",
            run.report.files_stored,
            run.report.files_attempted,
            run.report.batch_latency.p99_ms,
            run.report.files_per_s,
            100.0 * run.throttled_share()
        );
        runs.push(run);
    }
    Ok(runs)
}

async fn run_one(s3: &S3, strategy: &str, shape: &Shape) -> anyhow::Result<Run> {
    let bucket = s3.new_bucket()?;
    let front = shape.backend.front(s3).await?;
    let log = shape
        .out
        .join(format!("corral-{}.log", strategy.replace(':', "-")));
    let store = s3.store(bucket.clone(), front.endpoint());
    let args = [
        &["--concurrency".to_owned(), strategy.to_owned()],
        &shape.serve_args[..],
    ]
    .concat();
    let mut corral = Corral::start(&store, &args, &log)?;
    let url = corral.url.clone();
    corral.wait_ready().await?;

    let (stop, stopped) = tokio::sync::oneshot::channel();
    let sampler = tokio::spawn(sample_metrics(url.clone(), stopped));
    let report = herd::run(&shape.herd(url.clone(), s3, bucket, &front, 100)).await?;
    let _ = stop.send(());
    let timeline = sampler.await.unwrap_or_default();
    drop(corral);
    let stats = front.stats();
    front.shutdown().await;
    Ok(Run {
        strategy: strategy.to_owned(),
        report,
        front: stats,
        capacity_rps: shape.backend.slots as f64 / shape.backend.latency.0.as_secs_f64(),
        timeline,
    })
}

/// Where a `corral serve` child stores.
pub(super) enum Store {
    Dir(PathBuf),
    S3 {
        bucket: String,
        endpoint: String,
        credentials: (&'static str, &'static str),
    },
}

/// A `corral serve` child process; killed on drop.
pub(super) struct Corral {
    child: Child,
    pub(super) url: String,
    /// Held open so the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Corral {
    /// `corral serve` on `store`, with `args` after the common ones; its
    /// log goes to `log`.
    pub(super) fn start(
        store: &Store,
        args: &[String],
        log: &std::path::Path,
    ) -> anyhow::Result<Self> {
        // Beside the log, not in the working directory.
        let spool = log.with_extension("spool");
        let log_path = log;
        let log = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        command
            // A port of its own, bound by corral itself: one found free
            // here first could be taken before corral binds it.
            .args(["serve", "--listen", "127.0.0.1:0"])
            // Uploads here never outlive the run; moto also dates every
            // multipart upload in 2010.
            .args(["--orphan-sweep", "0s", "--shutdown-grace", "1s"])
            .arg("--spool-dir")
            .arg(&spool);
        match store {
            Store::Dir(dir) => {
                command.arg("--store").arg(dir);
            }
            Store::S3 {
                bucket,
                endpoint,
                credentials: (key, secret),
            } => {
                command
                    .arg("--store")
                    .arg(format!("s3://{bucket}/corral"))
                    .args(["--s3-endpoint", endpoint, "--s3-region", "us-east-1"])
                    .args(["--s3-path-style", "--s3-allow-http"])
                    .env("AWS_ACCESS_KEY_ID", key)
                    .env("AWS_SECRET_ACCESS_KEY", secret);
            }
        }
        let mut child = command
            .args(args)
            .env("CORRAL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting corral serve")?;
        // Its first line: `corral listening on http://ADDRESS, storing in …`.
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let Some(url) = line
            .strip_prefix("corral listening on ")
            .and_then(|rest| rest.split(',').next())
        else {
            let _ = child.kill();
            let status = child.wait()?;
            anyhow::bail!(
                "corral serve exited at startup ({status}): see {}",
                log_path.display()
            );
        };
        Ok(Self {
            child,
            url: url.to_owned(),
            _stdout: stdout,
        })
    }

    /// The child's process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("corral serve exited at startup: {status}");
            }
            let health = client.get(format!("{}/healthz", self.url)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "corral serve did not answer /healthz within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Corral {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples `/metrics` at once, every 250 ms, and once more at `stop`.
pub(super) async fn sample_metrics(
    url: String,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<Sample> {
    let mut sampler = Sampler {
        client: reqwest::Client::new(),
        url,
        started: Instant::now(),
        last_buckets: None,
        samples: Vec::new(),
    };
    loop {
        sampler.sample().await;
        tokio::select! {
            _ = &mut stop => {
                sampler.sample().await;
                return sampler.samples;
            }
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

struct Sampler {
    client: reqwest::Client,
    url: String,
    started: Instant,
    /// The call-latency histogram at the last sample.
    last_buckets: Option<Vec<(f64, f64)>>,
    samples: Vec<Sample>,
}

impl Sampler {
    async fn sample(&mut self) {
        let url = format!("{}/metrics", self.url);
        let Ok(response) = self.client.get(url).send().await else {
            return;
        };
        let Ok(text) = response.text().await else {
            return;
        };
        let metrics = Metrics::parse(&text);
        let buckets = metrics.histogram("corral_backend_call_duration_seconds");
        let p99 = (self.last_buckets.as_ref())
            .and_then(|last| quantile_of_delta(last, &buckets, 0.99))
            .map(|s| s * 1000.0);
        self.last_buckets = Some(buckets);
        self.samples.push(Sample {
            t_s: self.started.elapsed().as_secs_f64(),
            limit: metrics.value("corral_sched_limit"),
            in_flight: metrics.value("corral_sched_in_flight"),
            queued_jobs: metrics.value("corral_sched_queued_jobs"),
            calls: metrics.value("corral_sched_calls_total"),
            backend_p99_ms: p99,
        });
    }
}

/// Prometheus text, as `(name, labels, value)` lines.
struct Metrics(Vec<(String, String, f64)>);

impl Metrics {
    fn parse(text: &str) -> Self {
        let lines = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    value => value.parse().ok()?,
                };
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (name, labels.trim_end_matches('}')),
                    None => (series, ""),
                };
                Some((name.to_owned(), labels.to_owned(), value))
            })
            .collect();
        Self(lines)
    }

    /// The value of an unlabelled series (NaN if absent).
    fn value(&self, name: &str) -> f64 {
        self.0
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or(f64::NAN, |(_, _, v)| *v)
    }

    /// A histogram's cumulative buckets `(le, count)`, summed over its
    /// other labels.
    fn histogram(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for (_, labels, count) in self.0.iter().filter(|(n, _, _)| *n == bucket) {
            let Some(le) = labels
                .split(',')
                .find_map(|label| label.strip_prefix("le=\""))
                .map(|le| le.trim_end_matches('"'))
            else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, total)) => *total += count,
                None => buckets.push((le, *count)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

/// The `q` quantile (the upper bound of its bucket) of the observations
/// between two cumulative snapshots; `None` if there were none.
fn quantile_of_delta(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, count)| {
            let old = before.iter().find(|(b, _)| *b == le).map_or(0.0, |b| b.1);
            (le, count - old)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let bound = delta.iter().find(|(_, count)| *count >= q * total)?.0;
    // Beyond the last finite bucket: report that bucket's bound.
    Some(if bound.is_finite() {
        bound
    } else {
        delta.iter().rev().find(|(le, _)| le.is_finite())?.0
    })
}

fn table(runs: &[Run]) -> String {
    let mut out = String::new();
    out.push_str(
        "strategy        stored      verified  429s   p50 ms  p99 ms   files/s  backend calls  503s    goodput   busy  peak conc   peak RSS  tasks\n",
    );
    for run in runs {
        let r = &run.report;
        let s3 = r.s3.as_ref();
        let rejected = r.attempt_outcomes.get("429").copied().unwrap_or(0);
        out.push_str(&format!(
            "{:<15} {:>5}/{:<5} {:>4}/{:<4} {:>5} {:>8.0} {:>7.0} {:>9.1} {:>14} {:>5.1}% {:>8.1}% {:>5.1}% {:>9} {:>6} MiB {:>5}\n",
            run.strategy,
            r.files_stored,
            r.files_attempted,
            s3.map_or(0, |s| s.verified),
            s3.map_or(0, |s| s.sampled),
            rejected,
            r.batch_latency.p50_ms,
            r.batch_latency.p99_ms,
            r.files_per_s,
            run.front.received,
            100.0 * run.throttled_share(),
            100.0 * run.goodput_share(),
            100.0 * run.utilization(),
            run.front.peak_concurrency,
            r.peak_rss_bytes.unwrap_or(0) >> 20,
            r.peak_tasks.unwrap_or(0),
        ));
    }
    out.push_str(&format!(
        "stored: files answered 201 / attempted; verified: sample read back from S3 by SHA-256; \
         503s: front's SlowDown answers / backend calls; goodput: calls served per second / \
         front capacity ({:.0}/s); busy: slot time used / slots x run time\n",
        runs.first().map_or(0.0, |r| r.capacity_rps)
    ));
    out
}

fn timeline_plot(run: &Run) -> String {
    let series = |name: &str, f: fn(&Sample) -> Option<f64>| Series {
        name: name.to_owned(),
        points: run
            .timeline
            .iter()
            .filter_map(|s| Some((s.t_s, f(s)?)))
            .collect(),
    };
    let panels = [
        Panel {
            y_label: "backend calls".to_owned(),
            series: vec![
                series("limit", |s| Some(s.limit)),
                series("in flight", |s| Some(s.in_flight)),
            ],
        },
        Panel {
            y_label: "queued jobs".to_owned(),
            series: vec![series("queued", |s| Some(s.queued_jobs))],
        },
        Panel {
            y_label: "backend p99 (ms)".to_owned(),
            series: vec![series("p99", |s| s.backend_p99_ms)],
        },
    ];
    plot::lines(
        &format!("{}: limit, in flight, queue and backend p99", run.strategy),
        "seconds",
        &panels,
    )
}

fn strategies_plot(runs: &[Run]) -> String {
    let metric = |name: &str, f: fn(&Run) -> f64| {
        (
            name.to_owned(),
            runs.iter().map(|r| (r.strategy.clone(), f(r))).collect(),
        )
    };
    plot::bars(
        "strategies side by side",
        &[
            metric("request p99 (s)", |r| {
                r.report.batch_latency.p99_ms / 1000.0
            }),
            metric("files stored (%)", |r| 100.0 * r.stored_share()),
            metric("peak RSS (MiB)", |r| {
                r.report.peak_rss_bytes.unwrap_or(0) as f64 / f64::from(1 << 20)
            }),
        ],
    )
}

/// `corral bench ingest`: one client sending one batch, through corral and
/// straight to the same backend with `object_store`, alternating, on the
/// local disk and on S3.
pub(crate) fn ingest(args: &IngestArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let s3 = S3::start(args.s3)?;
    let scratch = tempfile::Builder::new()
        .prefix("corral-ingest")
        .tempdir_in(".")?;
    let bytes = args.files as u64 * args.size.0;
    println!(
        "one client, {} files x {} per round ({} MB); {} rounds, direct then through corral",
        args.files,
        args.size,
        bytes / 1_000_000,
        args.rounds
    );
    for backend in ["local disk", "s3"] {
        let mut ratios = Vec::new();
        let mut speeds = Vec::new();
        for round in 0..args.rounds {
            let (direct, store) = if backend == "s3" {
                let bucket = s3.new_bucket()?;
                let direct = s3_direct(&s3, &bucket)?;
                (direct, s3.store(bucket, s3.endpoint()))
            } else {
                let direct_dir = scratch.path().join(format!("direct-{round}"));
                let corral_dir = scratch.path().join(format!("corral-{round}"));
                std::fs::create_dir_all(&direct_dir)?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(&direct_dir)?
                    .with_fsync(true);
                let direct: Arc<dyn ObjectStore> = Arc::new(local);
                (direct, Store::Dir(corral_dir))
            };
            let direct_s = runtime.block_on(put_all(&*direct, args.files, args.size.0))?;
            let log = scratch.path().join(format!("corral-{round}.log"));
            let mut corral = Corral::start(&store, &[], &log)?;
            runtime.block_on(corral.wait_ready())?;
            let report = runtime.block_on(herd::run(&HerdConfig {
                url: corral.url.clone(),
                users: 1,
                files: args.files,
                size: args.size.0,
                // The direct writer checks nothing: time corral, not the
                // client's own checks.
                digests_first: true,
                ..HerdConfig::default()
            }))?;
            anyhow::ensure!(
                report.files_stored == args.files as u64,
                "corral stored {} of {} files: {report}",
                report.files_stored,
                args.files
            );
            ratios.push(report.duration_s / direct_s);
            speeds.push((
                bytes as f64 / direct_s / 1e6,
                bytes as f64 / report.duration_s / 1e6,
            ));
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        let speeds: Vec<String> = speeds
            .iter()
            .map(|(direct, corral)| format!("{direct:.0}/{corral:.0}"))
            .collect();
        println!(
            "{backend:<10}  corral time / direct time: median {median:.2} (rounds: {})  MB/s direct/corral: {}",
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            speeds.join(" ")
        );
    }
    Ok(())
}

/// The bucket on `s3`, reached straight, without corral.
pub(super) fn s3_direct(s3: &S3, bucket: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let (key, secret) = s3.credentials();
    let direct = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(s3.endpoint())
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id(key)
        .with_secret_access_key(secret)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()?;
    Ok(Arc::new(direct))
}

/// Puts `files` objects of `size` random bytes one after another, as one
/// client would; returns the seconds it took.
async fn put_all(store: &dyn ObjectStore, files: usize, size: u64) -> anyhow::Result<f64> {
    let mut rng = fastrand::Rng::with_seed(7);
    let started = Instant::now();
    for i in 0..files {
        let mut content = vec![0; usize::try_from(size)?];
        rng.fill(&mut content);
        let path = object_store::path::Path::from(format!("direct/{i}.bin"));
        store.put(&path, content.into()).await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_from_prometheus_text() {
        let text = "# HELP corral_sched_limit x\n# TYPE corral_sched_limit gauge\n\
                    corral_sched_limit 16\ncorral_sched_in_flight 3\n\
                    corral_backend_call_duration_seconds_bucket{outcome=\"success\",le=\"0.1\"} 90\n\
                    corral_backend_call_duration_seconds_bucket{outcome=\"success\",le=\"0.5\"} 99\n\
                    corral_backend_call_duration_seconds_bucket{outcome=\"success\",le=\"+Inf\"} 100\n\
                    corral_backend_call_duration_seconds_bucket{outcome=\"loss\",le=\"0.1\"} 10\n\
                    corral_backend_call_duration_seconds_bucket{outcome=\"loss\",le=\"0.5\"} 10\n\
                    corral_backend_call_duration_seconds_bucket{outcome=\"loss\",le=\"+Inf\"} 10\n";
        let metrics = Metrics::parse(text);
        assert_eq!(metrics.value("corral_sched_limit"), 16.0);
        assert_eq!(metrics.value("corral_sched_in_flight"), 3.0);
        assert!(metrics.value("absent").is_nan());
        let buckets = metrics.histogram("corral_backend_call_duration_seconds");
        assert_eq!(
            buckets,
            [(0.1, 100.0), (0.5, 109.0), (f64::INFINITY, 110.0)]
        );
        let none = [(0.1, 0.0), (0.5, 0.0), (f64::INFINITY, 0.0)];
        assert_eq!(quantile_of_delta(&none, &buckets, 0.5), Some(0.1));
        assert_eq!(quantile_of_delta(&none, &buckets, 0.99), Some(0.5));
        assert_eq!(quantile_of_delta(&buckets, &buckets, 0.99), None);
    }
}
