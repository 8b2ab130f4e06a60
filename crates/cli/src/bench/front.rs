//! `corral bench front`: the throttling S3 front of
//! [`corral_testkit::front`] as a command, to put a cloud backend's limits
//! between a `corral serve` (or any S3 client) and a local S3 server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use corral_testkit::front::{Faults, Front, FrontConfig, Schedule};

use crate::units::{ByteSize, Span};

#[derive(Debug, clap::Args)]
pub(crate) struct FrontArgs {
    /// Address of the S3 server to forward to, such as 127.0.0.1:9000.
    #[arg(long, value_name = "ADDR")]
    pub(crate) upstream: SocketAddr,

    /// Requests served at once: the backend's concurrency limit. Any more
    /// are answered 503 SlowDown at once. Unlimited if not given.
    #[arg(long, value_name = "N")]
    pub(crate) slots: Option<usize>,

    /// Requests admitted per second on average: the backend's request-rate
    /// limit (a token bucket). Any more are answered 503 SlowDown.
    /// Unlimited if not given.
    #[arg(long, value_name = "R")]
    pub(crate) rps: Option<f64>,

    /// Requests admitted at once above --rps: the token bucket's size, at
    /// least 1 (default: max(1, rps / 10)).
    #[arg(long, value_name = "B", requires = "rps")]
    pub(crate) burst: Option<f64>,

    /// Added to every admitted request while it holds its slot: the
    /// backend's round-trip time.
    #[arg(long, default_value = "0ms", value_name = "DURATION")]
    pub(crate) latency: Span,

    /// Spread of --latency, a fraction in 0..=1 (0.1 is ±10 %, uniform):
    /// the backend's variable response time.
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub(crate) jitter: f64,

    /// Bytes per second of request bodies, shared by all requests, such as
    /// 100MiB: the network's upload bandwidth. Unlimited if not given.
    #[arg(long, value_name = "SIZE")]
    pub(crate) bandwidth: Option<ByteSize>,

    /// Probability, per admitted request, of an immediate 500
    /// InternalError: the backend's transient server errors.
    #[arg(long = "error-500", default_value_t = 0.0, value_name = "P")]
    pub(crate) error_500: f64,

    /// Probability, per admitted request, of an immediate 503 SlowDown:
    /// throttling beyond the modelled limits.
    #[arg(long = "error-503", default_value_t = 0.0, value_name = "P")]
    pub(crate) error_503: f64,

    /// Probability, per admitted request, of its connection being dropped
    /// mid-request: a network failure or a backend node going away.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub(crate) reset: f64,

    /// Probability, per admitted request, of it being held for --stall-for
    /// before it is served, keeping its slot: a slow backend node.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub(crate) stall: f64,

    /// How long a stalled request is held (see --stall).
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub(crate) stall_for: Span,

    /// Probability, per admitted DELETE (an object's delete, a multipart
    /// upload's abort), of 503 SlowDown on top of --error-503: cleanups
    /// that meet throttles of their own.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub(crate) delete_503: f64,

    /// Refuse every request whose path contains TEXT with 403
    /// AccessDenied: a permanent error at a chosen object.
    #[arg(long, value_name = "TEXT")]
    pub(crate) deny_path: Option<String>,

    /// Slot counts over time, OFFSET:SLOTS from the start, such as
    /// 0s:16,60s:8: a backend whose capacity shrinks or grows under load.
    /// Overrides --slots from each offset on.
    #[arg(long, value_name = "SPEC")]
    pub(crate) schedule: Option<Schedule>,

    /// Seed of the jitter and fault dice: a client sending one request at
    /// a time sees the same faults on every run.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub(crate) seed: u64,

    /// Stop after this long (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "DURATION")]
    pub(crate) duration: Option<Span>,
}

/// Runs the front until `--duration` has passed or a signal arrives, then
/// prints its stats as JSON.
pub(crate) fn run(args: &FrontArgs) -> anyhow::Result<()> {
    let config = config(args);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(config, args.duration.map(|span| span.0)))
}

fn config(args: &FrontArgs) -> FrontConfig {
    FrontConfig {
        slots: args.slots,
        rps: args.rps,
        burst: args.burst,
        latency: args.latency.0,
        jitter: args.jitter,
        bandwidth: args.bandwidth.map(|size| size.0),
        faults: Faults {
            error_500: args.error_500,
            error_503: args.error_503,
            reset: args.reset,
            stall: args.stall,
            stall_for: args.stall_for.0,
            delete_503: args.delete_503,
            deny_path: args.deny_path.clone(),
        },
        schedule: args.schedule.clone().unwrap_or_default(),
        seed: args.seed,
        ..FrontConfig::new(args.upstream)
    }
}

async fn serve(config: FrontConfig, duration: Option<Duration>) -> anyhow::Result<()> {
    let upstream = config.upstream;
    let front = Front::start(config)
        .await
        .with_context(|| format!("cannot start the front to {upstream}"))?;
    // The first line of stdout, which scripts and tests wait for.
    println!("front listening on {}", front.endpoint());

    let elapsed = async {
        match duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = elapsed => {}
        result = shutdown_signal() => result?,
    }

    let stats = front.stats();
    front.shutdown().await;
    let json = serde_json::to_string_pretty(&stats).context("cannot write the stats as JSON")?;
    println!("{json}");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C"),
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::bench::BenchCommand;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["corral", "bench", "front"].iter().chain(args))
    }

    #[test]
    fn every_flag_reaches_the_config() {
        let cli = parse(&[
            "--upstream=127.0.0.1:9000",
            "--slots=4",
            "--rps=50",
            "--burst=5",
            "--latency=100ms",
            "--jitter=0.1",
            "--bandwidth=1MiB",
            "--error-500=0.01",
            "--error-503=0.02",
            "--reset=0.03",
            "--stall=0.04",
            "--stall-for=2s",
            "--deny-path=bad",
            "--schedule=0s:16,60s:8",
            "--seed=7",
            "--duration=1m",
        ])
        .unwrap();
        let Command::Bench(BenchCommand::Front(args)) = cli.command else {
            panic!("not bench front: {cli:?}");
        };
        let config = super::config(&args);
        assert_eq!(config.upstream, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.slots, Some(4));
        assert_eq!((config.rps, config.burst), (Some(50.0), Some(5.0)));
        assert_eq!(config.latency, std::time::Duration::from_millis(100));
        assert_eq!(config.jitter, 0.1);
        assert_eq!(config.bandwidth, Some(1 << 20));
        assert_eq!(config.faults.error_500, 0.01);
        assert_eq!(config.faults.error_503, 0.02);
        assert_eq!(config.faults.reset, 0.03);
        assert_eq!(config.faults.stall, 0.04);
        assert_eq!(config.faults.stall_for, std::time::Duration::from_secs(2));
        assert_eq!(config.faults.deny_path.as_deref(), Some("bad"));
        assert_eq!(config.schedule, "0s:16,60s:8".parse().unwrap());
        assert_eq!(config.seed, 7);
        assert_eq!(args.duration.map(|d| d.0.as_secs()), Some(60));
    }

    #[test]
    fn the_upstream_is_required_and_burst_needs_rps() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--upstream=127.0.0.1:9000", "--burst=5"]).is_err());
        assert!(parse(&["--upstream=127.0.0.1:9000", "--schedule=0s"]).is_err());
    }
}
