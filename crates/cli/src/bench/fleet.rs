//! `corral bench fleet`: several `corral serve` instances sharing one
//! bucket, behind a real load balancer, with nothing shared between them
//! but the bucket.
//!
//! One S3 server (s3s-fs or moto) and one throttling front before it (16
//! slots x 100 ms, `503 SlowDown` beyond), as in `corral bench compare`;
//! for each layout, a fresh bucket, a fresh front, N `corral serve` child
//! processes storing through it, and HAProxy before them
//! ([`corral_testkit::haproxy`], with the configuration `docs/DEPLOY.md`
//! shows). The herd ([`corral_testkit::herd`]) goes through HAProxy; every
//! file's SHA-256 in the answers is checked, and every stored object is
//! read back straight from S3. Each instance's `/metrics` are sampled
//! every 250 ms while it runs (`fleet-{layout}-timelines.json`).
//!
//! The layouts:
//!
//! - **even**: every instance has the same weight. Figures: files stored
//!   per second against the front's capacity in calls per second, the
//!   front's 503s, and each instance's share of the backend calls over the
//!   steady part of the run (its middle three fifths) against 1/N.
//! - **uneven**: HAProxy sends `--uneven-share` (80%) of new connections to
//!   the first two instances and the rest to the others: the busy
//!   instances must take the idle one's room, so files per second must
//!   hold.
//! - **kill**: every instance the same weight, and the last one is killed
//!   (`SIGKILL`) `--kill-after` (10 s) into the herd and left down. Its
//!   requests in progress fail (HAProxy answers `502`, or the connection
//!   breaks), the clients retry them through HAProxy, which stops sending
//!   to it within two failed checks; every file acknowledged must be in
//!   the bucket, and every user's batch stored in the end.
//!
//! Last, unless `--skip-connections`, the figure of `corral bench
//! connections` with its defaults: 10,000 connections, idle and slow
//! uploads, held on one instance.
//!
//! The instances do not know of each other: each one's adaptive limit
//! finds its share of the front from the latency and the `503`s it sees.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use corral_testkit::haproxy::{self, Haproxy, Server};
use corral_testkit::herd::{self, Report};

use super::compare::{Corral, HerdShape, S3, Sample, Shape, sample_metrics};
use super::connections::{self, ConnectionsArgs};
use super::figures::{Cmp, Row, print_table};
use crate::units::Span;

/// How HAProxy spreads the users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Layout {
    /// Every instance the same weight.
    Even,
    /// `--uneven-share` of the users to the first two instances.
    Uneven,
    /// Every instance the same weight; the last one killed mid-run.
    Kill,
}

/// `corral bench fleet`.
#[derive(Debug, clap::Args)]
pub(crate) struct FleetArgs {
    /// `corral serve` instances behind the load balancer.
    #[arg(long, default_value_t = 3)]
    pub(crate) instances: usize,
    /// The layouts to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "even,uneven,kill")]
    pub(crate) layouts: Vec<Layout>,
    /// In the uneven layout, the share of new connections HAProxy sends to
    /// the first two instances together.
    #[arg(long, default_value_t = 0.8)]
    pub(crate) uneven_share: f64,
    /// In the kill layout, how long into the herd the last instance is
    /// killed.
    #[arg(long, default_value = "10s")]
    pub(crate) kill_after: Span,
    /// Leave out the last figure: 10,000 connections held on one instance,
    /// as `corral bench connections` measures it with its defaults.
    #[arg(long)]
    pub(crate) skip_connections: bool,
    #[command(flatten)]
    pub(crate) shape: HerdShape,
}

/// Files per second at least this share of the front's capacity.
const GOODPUT: f64 = 0.85;
/// The front's 503s at most this share of the calls it received.
const THROTTLED: f64 = 0.02;
/// Each instance's share of the calls within this much of 1/N, relatively.
const SPREAD: f64 = 0.25;
/// The steady part of a run: from this share of its time to one minus it.
const RAMP: f64 = 0.2;

/// One layout's run.
struct Run {
    layout: Layout,
    weights: Vec<u32>,
    report: Report,
    front: corral_testkit::front::Stats,
    /// Each instance's `/metrics`, sampled every 250 ms.
    timelines: Vec<Vec<Sample>>,
}

pub(crate) fn run(args: &FleetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.instances >= 1, "a fleet needs at least one instance");
    anyhow::ensure!(
        !args.layouts.contains(&Layout::Uneven) || args.instances >= 3,
        "the uneven layout needs at least three instances"
    );
    anyhow::ensure!(
        !args.layouts.contains(&Layout::Kill) || args.instances >= 2,
        "the kill layout needs at least two instances"
    );
    anyhow::ensure!(
        args.uneven_share > 0.0 && args.uneven_share < 1.0,
        "--uneven-share is a share of the users, between 0 and 1"
    );
    let shape = args.shape.or(600, Duration::from_secs(300));
    std::fs::create_dir_all(&shape.out)
        .with_context(|| format!("cannot create {}", shape.out.display()))?;
    let haproxy = Haproxy::install().context("installing HAProxy")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let s3 = S3::start(shape.backend.s3)?;
    eprintln!(
        "S3 at {}; {} instances behind {}; {} users x {} files x {}; front {} slots x {}",
        s3.endpoint(),
        args.instances,
        haproxy.display(),
        shape.users,
        shape.files,
        shape.size,
        shape.backend.slots,
        shape.backend.latency,
    );
    let capacity = shape.backend.slots as f64 / shape.backend.latency.0.as_secs_f64();
    let (mut met, mut judged) = (0, 0);
    for &layout in &args.layouts {
        eprintln!("== {layout:?}");
        let run = runtime.block_on(run_one(&s3, layout, args, &shape))?;
        let (title, rows) = figures(&run, args, &shape, capacity);
        let (m, j) = print_table(&title, &rows);
        (met, judged) = (met + m, judged + j);
    }
    println!("\n{met} of {judged} figures of the herds met their target.");
    if !args.skip_connections {
        eprintln!("== 10,000 connections on one instance");
        connections::run(&connections_defaults(&shape.out)?)?;
    }
    Ok(())
}

/// `corral bench connections`' defaults, its output under `out`.
fn connections_defaults(out: &Path) -> anyhow::Result<ConnectionsArgs> {
    use clap::{Args as _, FromArgMatches as _};
    let command = ConnectionsArgs::augment_args(clap::Command::new("connections"));
    let out = out.join("connections");
    let matches = command.try_get_matches_from([
        OsStr::new("connections"),
        "--out".as_ref(),
        out.as_os_str(),
    ])?;
    Ok(ConnectionsArgs::from_arg_matches(&matches)?)
}

/// HAProxy's weight for each instance in `layout`: out of 100 in all,
/// rounded, at least 1.
fn weights(layout: Layout, instances: usize, uneven_share: f64) -> Vec<u32> {
    let share = |i: usize| match layout {
        Layout::Even | Layout::Kill => 1.0 / instances as f64,
        Layout::Uneven if i < 2 => uneven_share / 2.0,
        Layout::Uneven => (1.0 - uneven_share) / (instances - 2) as f64,
    };
    (0..instances)
        .map(|i| ((share(i) * 100.0).round() as u32).clamp(1, 256))
        .collect()
}

async fn run_one(s3: &S3, layout: Layout, args: &FleetArgs, shape: &Shape) -> anyhow::Result<Run> {
    let bucket = s3.new_bucket()?;
    let front = shape.backend.front(s3).await?;
    let store = s3.store(bucket.clone(), front.endpoint());
    let name = format!("{layout:?}").to_lowercase();
    let mut fleet = Vec::new();
    for i in 1..=args.instances {
        let log = shape.out.join(format!("fleet-{name}-{i}.log"));
        let mut corral = Corral::start(&store, &shape.serve_args, &log)?;
        corral.wait_ready().await?;
        fleet.push(corral);
    }
    let weights = weights(layout, args.instances, args.uneven_share);
    let servers: Vec<Server> = fleet
        .iter()
        .zip(&weights)
        .map(|(corral, &weight)| {
            let addr: SocketAddr = corral.url.trim_start_matches("http://").parse()?;
            Ok(Server { addr, weight })
        })
        .collect::<anyhow::Result<_>>()?;
    let balancer = Haproxy::start(&servers).context("starting HAProxy")?;
    std::fs::write(
        shape.out.join(format!("fleet-{name}-haproxy.cfg")),
        haproxy::config(balancer.addr(), &servers),
    )?;

    let mut stops = Vec::new();
    let mut samplers = Vec::new();
    for corral in &fleet {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        stops.push(stop);
        samplers.push(tokio::spawn(sample_metrics(corral.url.clone(), stopped)));
    }
    let killer = (layout == Layout::Kill).then(|| {
        let (pid, after) = (fleet[fleet.len() - 1].pid(), args.kill_after.0);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            eprintln!("   killed instance {pid} after {after:?}: {killed:?}");
        })
    });
    let sample = shape.users * shape.files;
    let herd = shape.herd(balancer.url(), s3, bucket, &front, sample);
    let report = herd::run(&herd).await?;
    if let Some(killer) = killer {
        killer.abort();
    }
    for stop in stops {
        let _ = stop.send(());
    }
    let mut timelines = Vec::new();
    for sampler in samplers {
        timelines.push(sampler.await.unwrap_or_default());
    }
    std::fs::write(
        shape.out.join(format!("fleet-{name}-timelines.json")),
        serde_json::to_vec(&timelines)?,
    )?;
    drop(balancer);
    drop(fleet);
    let stats = front.stats();
    front.shutdown().await;
    Ok(Run {
        layout,
        weights,
        report,
        front: stats,
        timelines,
    })
}

/// Each instance's calls over the steady part of a run of `duration_s`.
fn steady_calls(timelines: &[Vec<Sample>], duration_s: f64) -> Vec<f64> {
    let (from, to) = (duration_s * RAMP, duration_s * (1.0 - RAMP));
    let at = |timeline: &[Sample], t: f64| {
        // The last sample at or before `t`: counters only grow.
        timeline
            .iter()
            .take_while(|s| s.t_s <= t)
            .last()
            .map_or(f64::NAN, |s| s.calls)
    };
    timelines
        .iter()
        .map(|timeline| at(timeline, to) - at(timeline, from))
        .collect()
}

/// The mean of an instance's limit over the steady part.
fn steady_limit(timeline: &[Sample], duration_s: f64) -> f64 {
    let (from, to) = (duration_s * RAMP, duration_s * (1.0 - RAMP));
    let limits: Vec<f64> = timeline
        .iter()
        .filter(|s| s.t_s >= from && s.t_s <= to && s.limit.is_finite())
        .map(|s| s.limit)
        .collect();
    if limits.is_empty() {
        return f64::NAN;
    }
    limits.iter().sum::<f64>() / limits.len() as f64
}

fn figures(run: &Run, args: &FleetArgs, shape: &Shape, capacity: f64) -> (String, Vec<Row>) {
    let r = &run.report;
    let n = args.instances;
    let attempted = r.files_attempted as usize;
    let s3 = r.s3.as_ref();
    let goodput = r.files_stored as f64 / r.duration_s / capacity;
    let throttled = run.front.throttled as f64 / run.front.received.max(1) as f64;
    let calls = steady_calls(&run.timelines, r.duration_s);
    let total: f64 = calls.iter().sum();
    let mut rows = vec![
        Row::all(
            "files stored, SHA-256 checked in the answers",
            (r.files_stored - r.files_failed_verification) as usize,
            attempted,
        ),
        Row::all(
            "files read back from S3 and hashed",
            s3.map_or(0, |s3| s3.verified),
            attempted,
        ),
        Row::info(
            "files/s (front capacity in calls/s)",
            format!("{:.1} ({capacity:.0})", r.files_per_s),
        ),
        match run.layout {
            // One instance's work is done twice: a figure, not a target.
            Layout::Kill => Row::info(
                "files stored per second / front capacity",
                format!("{goodput:.3}"),
            ),
            Layout::Even | Layout::Uneven => Row::bound(
                "files stored per second / front capacity",
                goodput,
                Cmp::AtLeast,
                GOODPUT,
                "",
            ),
        },
        Row::bound(
            format!(
                "front 503s / calls it received ({} / {})",
                run.front.throttled, run.front.received
            ),
            throttled,
            Cmp::AtMost,
            THROTTLED,
            "",
        ),
        Row::info(
            "users' attempts, by answer",
            r.attempt_outcomes
                .iter()
                .map(|(outcome, count)| format!("{outcome}: {count}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Row::info(
            "backend calls / file stored",
            format!(
                "{:.3}",
                run.front.forwarded as f64 / r.files_stored.max(1) as f64
            ),
        ),
    ];
    for (i, (timeline, &weight)) in run.timelines.iter().zip(&run.weights).enumerate() {
        let share = calls[i] / total;
        let limit = steady_limit(timeline, r.duration_s);
        let i = i + 1;
        rows.push(match run.layout {
            Layout::Even => Row::bound(
                format!(
                    "instance {i}: |share of steady calls x {n} - 1| \
                     (share {share:.3}, weight {weight}, mean limit {limit:.1})"
                ),
                (share * n as f64 - 1.0).abs(),
                Cmp::AtMost,
                SPREAD,
                "",
            ),
            Layout::Uneven | Layout::Kill => Row::info(
                format!(
                    "instance {i}: share of steady calls (weight {weight}, mean limit {limit:.1})"
                ),
                format!("{share:.3}"),
            ),
        });
    }
    let title = format!(
        "fleet, {:?}: {} instances, {} users x {} files x {}, front {} slots x {}",
        run.layout,
        n,
        shape.users,
        shape.files,
        shape.size,
        shape.backend.slots,
        shape.backend.latency
    );
    (title, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uneven_layout_sends_its_share_to_the_first_two() {
        assert_eq!(weights(Layout::Even, 3, 0.8), [33, 33, 33]);
        assert_eq!(weights(Layout::Uneven, 3, 0.8), [40, 40, 20]);
        assert_eq!(weights(Layout::Uneven, 4, 0.8), [40, 40, 10, 10]);
    }

    fn sample(t_s: f64, calls: f64) -> Sample {
        Sample::at(t_s, calls)
    }

    #[test]
    fn the_connections_figure_runs_with_corral_bench_connections_defaults() {
        let args = connections_defaults(Path::new("bench-out")).unwrap();
        assert_eq!((args.connections, args.uploads), (10_000, 2_000));
        assert_eq!(args.out, Path::new("bench-out/connections"));
    }

    #[test]
    fn the_steady_calls_leave_out_the_ramps() {
        // 10 s, steady from 2 s to 8 s.
        let a = vec![
            sample(0.0, 0.0),
            sample(2.0, 5.0),
            sample(8.0, 65.0),
            sample(10.0, 70.0),
        ];
        let b = vec![
            sample(0.0, 0.0),
            sample(1.9, 1.0),
            sample(7.9, 31.0),
            sample(10.0, 40.0),
        ];
        assert_eq!(steady_calls(&[a, b], 10.0), [60.0, 30.0]);
    }
}
