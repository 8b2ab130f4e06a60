//! `corral bench`: measurements of corral itself.

pub(crate) mod compare;
pub(crate) mod connections;
mod figures;
pub(crate) mod fleet;
pub(crate) mod front;
pub(crate) mod herd;
mod plot;
pub(crate) mod reads;
mod sim;
pub(crate) mod tus;
pub(crate) mod upload;

use std::path::PathBuf;

use clap::Subcommand;

use crate::units::{ByteSize, Span};

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Run the scheduler's scenarios (knee, step, throttle, fairness,
    /// cancellation) against a simulated backend in virtual time, and print
    /// every figure with its target (with --markdown, as the tables of
    /// docs/BENCHMARKS.md). Takes a few seconds; no network.
    Sim(sim::SimArgs),

    /// Send a thundering herd of uploads to a running corral: many users
    /// who each upload one batch at the same moment and retry 429 and 5xx
    /// (after Retry-After when given), as upload clients do. Checks every acknowledged
    /// file's size and SHA-256 (and, with --verify-s3-endpoint, a sample
    /// read straight from S3), and prints outcomes, throughput, latency and
    /// corral's peak memory and tasks. Exits non-zero if any acknowledged
    /// file fails a check. Sends traffic only to --url (and --front).
    Herd(Box<HerdArgs>),

    /// Run a throttling S3 front that models a cloud backend's limits.
    ///
    /// A reverse proxy on 127.0.0.1 in front of a real S3 server
    /// (--upstream) with slots, a request rate, latency, bandwidth and
    /// injected faults.
    /// Requests over a limit are answered 503 SlowDown at once, never
    /// queued. Prints `front listening on http://127.0.0.1:PORT` first;
    /// GET /stats on it returns its counters as JSON, which are also printed
    /// on exit (after --duration, Ctrl-C or SIGTERM).
    Front(Box<front::FrontArgs>),

    /// The thundering herd against each limit strategy in turn, end to
    /// end: a real S3 server, the throttling front before it, and a
    /// `corral serve` per strategy. Prints one table and writes it, the
    /// runs as JSON and SVG plots to --out. A few minutes with the
    /// defaults; build with --release.
    Compare(Box<compare::CompareArgs>),

    /// Fixed limits 1 to 128, then adaptive, through the same herd and
    /// front: throughput and p99 per limit.
    Sweep(Box<compare::SweepArgs>),

    /// One client sending one batch (200 x 1 MiB), through corral and
    /// straight to the same backend, on the local disk and on S3 (no
    /// front): what corral's own path costs, as a ratio of times.
    Ingest(Box<compare::IngestArgs>),

    /// Read herds through the throttling front: many readers `GET` one
    /// cold object at once, then as many distinct objects at once. Prints
    /// the backend calls each herd cost (counted by the front) and its
    /// latency against an unloaded `GET` of the same run.
    Reads(Box<reads::ReadsArgs>),

    /// Resumable uploads (`/api/uploads`) with the real tus-js-client:
    /// throughput against @tus/server and rustus, cut and resume, a herd
    /// of tus clients through the throttling front, and the memory of
    /// idle uploads. Prints a table per figure, each with its target.
    Tus(Box<tus::TusArgs>),

    /// The command-line client, `corral upload`, on S3 (s3s-fs): its time
    /// for many 1 MiB files against `s5cmd cp` writing them straight to
    /// the same s3s-fs (median of alternating rounds), the bytes it sends
    /// in all for a large file cut at half way and resumed, and its peak
    /// memory for 10,000 small files. Every stored object is read back
    /// from S3 and hashed. Build with --release.
    Upload(Box<upload::UploadArgs>),

    /// A fleet: several `corral serve` instances on one bucket behind the
    /// throttling front, and HAProxy (Debian's, installed when missing)
    /// before them. The herd goes through the load balancer, spread
    /// evenly, with most users sent to two instances, and with one
    /// instance killed mid-run: files stored per second against the
    /// front's capacity, its 503s, and each instance's share of the
    /// backend calls. Then 10,000 connections on one instance, as `bench
    /// connections`. Build with --release.
    Fleet(Box<fleet::FleetArgs>),
    /// Many connections held open at once on one `corral serve` (local
    /// disk): idle keep-alive connections and slow uploads, 10,000 in all
    /// by default. Checks that every one is still served and counts
    /// errors, and prints corral's resident memory before, with the idle
    /// connections and with all of them, and its rise per idle
    /// connection. Takes under a minute; build with --release.
    Connections(Box<connections::ConnectionsArgs>),
}

#[derive(Debug, clap::Args)]
pub(crate) struct HerdArgs {
    /// Base URL of the running corral to load.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub(crate) url: String,

    /// Users uploading at once, one batch each.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub(crate) users: usize,

    /// Files in each user's batch.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub(crate) files: usize,

    /// Size of each file, such as 256KiB or 1MB.
    #[arg(long, default_value = "256KiB", value_name = "SIZE")]
    pub(crate) size: ByteSize,

    /// Attempts each user makes at most, the first included; 429, 5xx and
    /// connection errors are retried.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub(crate) max_attempts: u32,

    /// Longest wait before a retry, whatever Retry-After asks for.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub(crate) max_wait: Span,

    /// How long the whole herd may run; users not done by then are
    /// reported as unfinished.
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    pub(crate) deadline: Span,

    /// Seed of the file contents, the retry jitter and the S3 sample.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub(crate) seed: u64,

    /// How often corral's /metrics is read for its peak memory and tasks.
    #[arg(long, default_value = "250ms", value_name = "DURATION")]
    pub(crate) metrics_interval: Span,

    /// Base URL of a throttling S3 front; its GET /stats (JSON) is included
    /// in the report.
    #[arg(long, value_name = "URL")]
    pub(crate) front: Option<String>,

    /// S3 endpoint to read a sample of the stored files back from,
    /// independently of corral (path-style; credentials from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
    #[arg(long, value_name = "URL", requires = "verify_s3_bucket")]
    pub(crate) verify_s3_endpoint: Option<String>,

    /// Bucket corral stores in, for the S3 read-back.
    #[arg(long, value_name = "BUCKET", requires = "verify_s3_endpoint")]
    pub(crate) verify_s3_bucket: Option<String>,

    /// corral's store prefix in the bucket (`pfx` for
    /// --store s3://bucket/pfx), for the S3 read-back.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    pub(crate) verify_s3_prefix: String,

    /// S3 region, for the S3 read-back.
    #[arg(
        long,
        env = "AWS_REGION",
        default_value = "us-east-1",
        value_name = "REGION"
    )]
    pub(crate) verify_s3_region: String,

    /// Stored files to read back from S3, chosen by the seed.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub(crate) verify_sample: usize,

    /// Write the report as JSON to FILE too (`-`: to stdout, instead of the
    /// table).
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,

    /// Show no progress bar.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// Runs one `corral bench` command.
pub(crate) fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Sim(args) => sim::run(&args),
        BenchCommand::Herd(args) => herd::run(&args),
        BenchCommand::Front(args) => front::run(&args),
        BenchCommand::Compare(args) => compare::compare(&args),
        BenchCommand::Sweep(args) => compare::sweep(&args),
        BenchCommand::Ingest(args) => compare::ingest(&args),
        BenchCommand::Reads(args) => reads::run(&args),
        BenchCommand::Tus(args) => tus::run(&args),
        BenchCommand::Upload(args) => upload::run(&args),
        BenchCommand::Fleet(args) => fleet::run(&args),
        BenchCommand::Connections(args) => connections::run(&args),
    }
}
