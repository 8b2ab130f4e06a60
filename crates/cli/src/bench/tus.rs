//! `corral bench tus`: corral's resumable uploads (`/api/uploads`), driven
//! by the real tus-js-client ([`corral_testkit::node`]), in four figures,
//! each printed as a table of what was measured against its target.
//!
//! - **throughput**: files from tus-js-client to corral on the local disk,
//!   to @tus/server (Node, @tus/file-store) and to rustus (Rust, file
//!   storage), interleaved: each round runs the three, each on a fresh
//!   directory. The runner makes and hashes every file's bytes before its
//!   clock starts (`TusRun::prepare`): the clock times the uploads, not
//!   the client's generator. Every stored file is read back and hashed:
//!   corral's through `GET /api/files/{key}`, the others' from their
//!   directories.
//! - **resume**: large files, each cut partway by the client and resumed
//!   by a new `tus.Upload` through `findPreviousUploads()`, against corral
//!   on the local disk and on S3 (moto): every upload completes
//!   byte-identical, and the server keeps about what was sent before the
//!   cut.
//! - **herd**: many tus clients at once, corral on S3 through the
//!   throttling front (slots, latency, `503 SlowDown` beyond) before moto;
//!   once with each file's bytes in its creation request, once in a
//!   `PATCH` after an empty creation. The front counts what the backend
//!   was asked for, by S3 operation; every stored object is then read
//!   straight from moto (not through the front) and hashed.
//! - **idle**: many uploads created and half sent, then left idle: how
//!   much corral's resident memory (`VmRSS` of the `corral serve` child)
//!   rose over the idle server's.
//!
//! A figure over nothing (no file, no round, no request) is NaN and misses
//! its target.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use corral_testkit::front::Stats;
use corral_testkit::node::{self, TusClient, TusFile, TusNodeServer, TusReport, TusRun};
use corral_testkit::rustus::{Rustus, RustusConfig};
use futures::StreamExt as _;
use object_store::ObjectStoreExt as _;
use sha2::{Digest, Sha256};

use super::compare::{Backend, Corral, S3, Store};
use super::figures::{Cmp, Row, median, print_table, trim};
use crate::units::{ByteSize, Span};

/// What `corral bench tus` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Figure {
    /// corral's MiB/s against @tus/server's and rustus's.
    Throughput,
    /// Cut and resume, on the local disk and on S3.
    Resume,
    /// Many clients through the throttling front: calls per file, 503s.
    Herd,
    /// Memory of idle, half-sent uploads.
    Idle,
}

/// A tus server that corral's throughput is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Rival {
    /// @tus/server 2.4.5 with @tus/file-store (Node), installed with npm.
    TusNode,
    /// rustus 0.5.10, installed with `cargo install` on first use.
    Rustus,
    /// The same rustus with `--force-fsync`: durable as corral on the
    /// local disk, which `fsync`s each file and its directory.
    RustusFsync,
}

impl Rival {
    fn name(self) -> &'static str {
        match self {
            Self::TusNode => "@tus/server",
            Self::Rustus => "rustus",
            Self::RustusFsync => "rustus --force-fsync",
        }
    }

    /// The least corral's MiB/s must be, as a multiple of this server's;
    /// `None`: shown for reference.
    fn target(self) -> Option<f64> {
        match self {
            Self::TusNode => Some(1.5),
            Self::Rustus => Some(0.8),
            Self::RustusFsync => None,
        }
    }
}

/// `corral bench tus`.
#[derive(Debug, clap::Args)]
#[command(mut_arg("s3", |s3| s3.default_value("moto")))]
pub(crate) struct TusArgs {
    /// Figures to measure, in this order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,resume,herd,idle"
    )]
    pub(crate) figures: Vec<Figure>,

    /// Throughput: files uploaded to each server in a round.
    #[arg(long, default_value_t = 200)]
    pub(crate) files: usize,
    /// Throughput: size of each file.
    #[arg(long, default_value = "1MiB")]
    pub(crate) size: ByteSize,
    /// Throughput: uploads in flight at once.
    #[arg(long, default_value_t = 8)]
    pub(crate) concurrency: usize,
    /// Throughput: rounds, each running every server once.
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Throughput: the servers to compare corral with.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tus-node,rustus,rustus-fsync"
    )]
    pub(crate) against: Vec<Rival>,

    /// Resume: files, each cut once and resumed.
    #[arg(long, default_value_t = 20)]
    pub(crate) resume_files: usize,
    /// Resume: size of each file.
    #[arg(long, default_value = "20MiB")]
    pub(crate) resume_size: ByteSize,
    /// Resume: where each upload is cut, as a fraction of its file.
    #[arg(long, default_value_t = 0.4)]
    pub(crate) cut_at: f64,
    /// Resume: uploads in flight at once.
    #[arg(long, default_value_t = 4)]
    pub(crate) resume_concurrency: usize,

    /// Herd: tus clients uploading at once.
    #[arg(long, default_value_t = 500)]
    pub(crate) herd_clients: usize,
    /// Herd: files each client uploads, one after another.
    #[arg(long, default_value_t = 10)]
    pub(crate) herd_files: usize,
    /// Herd: size of each file.
    #[arg(long, default_value = "256KiB")]
    pub(crate) herd_size: ByteSize,
    /// The front and the S3 server under it (herd; the S3 server also for
    /// resume).
    #[command(flatten)]
    pub(crate) backend: Backend,

    /// Idle: uploads created, half sent and left open.
    #[arg(long, default_value_t = 1000)]
    pub(crate) idle_uploads: usize,
    /// Idle: the length each upload declares; half of it is sent.
    #[arg(long, default_value = "256KiB")]
    pub(crate) idle_size: ByteSize,

    /// Longest one run of tus-js-client may take; uploads unfinished then
    /// fail.
    #[arg(long, default_value = "10m")]
    pub(crate) timeout: Span,
    /// Where the servers' logs and data go (removed at the end unless
    /// --keep).
    #[arg(long, default_value = "bench-out/tus")]
    pub(crate) out: PathBuf,
    /// Keep the servers' logs and data.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Where the servers store on the "local disk" (throughput, resume,
    /// idle), in a fresh directory [default: in --out]. A directory on
    /// tmpfs (`/dev/shm`) takes the disk, and its `fsync`s, out of the
    /// measurement.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

/// What tus-js-client is told to retry besides its own choice, and after
/// what delays, in the herd: what a deployment behind an admission limit
/// configures. By default it retries 5xx, 409 and 423 after 0, 1, 3 and
/// 5 s, and gives up on a 429 at once.
const HERD_RETRY_STATUSES: [u16; 1] = [429];
const HERD_RETRY_DELAYS_S: [u64; 10] = [0, 1, 3, 5, 10, 10, 20, 20, 30, 30];

/// Files read back at once.
const READ_BACK: usize = 16;

pub(crate) fn run(args: &TusArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.files > 0 && args.rounds > 0 && args.resume_files > 0,
        "--files, --rounds and --resume-files must be at least 1"
    );
    anyhow::ensure!(
        args.herd_clients > 0 && args.herd_files > 0 && args.idle_uploads > 0,
        "--herd-clients, --herd-files and --idle-uploads must be at least 1"
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("tus-")
        .tempdir_in(&args.out)?;
    let data = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            Some(tempfile::Builder::new().prefix("tus-").tempdir_in(dir)?)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    eprintln!("installing tus-js-client and @tus/server (npm ci, first use only)");
    let client = TusClient::install().context("installing tus-js-client")?;
    let needs_s3 = args
        .figures
        .iter()
        .any(|f| matches!(f, Figure::Resume | Figure::Herd));
    let s3 = needs_s3.then(|| S3::start(args.backend.s3)).transpose()?;
    let bench = Bench {
        args,
        client,
        dir: scratch.path().to_path_buf(),
        data: data
            .as_ref()
            .map_or(scratch.path(), |d| d.path())
            .to_path_buf(),
        http: reqwest::Client::new(),
    };
    let (mut met, mut total) = (0, 0);
    for figure in &args.figures {
        let (title, rows) = runtime.block_on(async {
            match figure {
                Figure::Throughput => bench.throughput().await,
                Figure::Resume => bench.resume(s3.as_ref().expect("started above")).await,
                Figure::Herd => bench.herd(s3.as_ref().expect("started above")).await,
                Figure::Idle => bench.idle().await,
            }
        })?;
        let (m, t) = print_table(&title, &rows);
        met += m;
        total += t;
    }
    println!("\n{met} of {total} figures met their target.");
    if args.keep {
        println!("logs kept in {}", scratch.keep().display());
        if let Some(data) = data {
            println!("data kept in {}", data.keep().display());
        }
    }
    Ok(())
}

/// What every figure shares.
struct Bench<'a> {
    args: &'a TusArgs,
    client: TusClient,
    /// A fresh directory for this run's logs.
    dir: PathBuf,
    /// A fresh directory for what the servers store on the local disk.
    data: PathBuf,
    http: reqwest::Client,
}

/// `count` files of `size` bytes, file `i` made from seed `i + 1`.
fn generated(count: usize, size: u64) -> Vec<TusFile> {
    (0..count)
        .map(|i| TusFile::Generated {
            size,
            seed: seed(i),
        })
        .collect()
}

fn seed(index: usize) -> u32 {
    u32::try_from(index + 1).expect("fewer than 4 billion files")
}

/// The index in its run of a file the runner named `file-{i}.bin`.
fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix("file-")?
        .strip_suffix(".bin")?
        .parse()
        .ok()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What reading a run's files back found.
#[derive(Default)]
struct Checked {
    /// Files uploaded without error whose stored bytes hash to what was
    /// sent.
    identical: usize,
    /// Why the others are not, the first few.
    problems: Vec<String>,
}

impl Checked {
    fn problem(&mut self, problem: String) {
        if self.problems.len() < 5 {
            self.problems.push(problem);
        }
    }

    /// Compares the report of file `i` and what is stored with what was
    /// generated.
    fn file(&mut self, i: usize, report: &node::TusFileReport, size: u64, stored: Option<String>) {
        let expected = node::file_sha256(size, seed(i));
        if let Some(error) = &report.error {
            self.problem(format!("file-{i}: {error}"));
        } else if report.sha256.as_deref() != Some(&expected) {
            self.problem(format!("file-{i}: the runner sent other bytes"));
        } else if stored.as_deref() != Some(&expected) {
            let what = if stored.is_some() {
                "differs"
            } else {
                "is missing"
            };
            self.problem(format!("file-{i}: the stored file {what}"));
        } else {
            self.identical += 1;
        }
    }

    fn report(&self, label: &str) {
        for problem in &self.problems {
            eprintln!("   {label}: {problem}");
        }
    }
}

impl Bench<'_> {
    /// The throughput figure's run: the files' bytes made and hashed by
    /// the runner before its clock starts, so that the time is the
    /// uploads' (the same for every server).
    fn throughput_config(
        &self,
        endpoint: String,
        files: Vec<TusFile>,
        concurrency: usize,
    ) -> TusRun {
        TusRun {
            prepare: true,
            ..self.run_config(endpoint, files, concurrency)
        }
    }

    fn run_config(&self, endpoint: String, files: Vec<TusFile>, concurrency: usize) -> TusRun {
        TusRun {
            concurrency,
            timeout: self.args.timeout.0,
            ..TusRun::new(endpoint, files)
        }
    }

    async fn start_corral(&self, name: &str, store: &Store) -> anyhow::Result<Corral> {
        let mut corral = Corral::start(store, &[], &self.dir.join(format!("{name}.log")))?;
        corral.wait_ready().await?;
        Ok(corral)
    }

    /// `name` -> key of every file corral lists.
    async fn corral_files(&self, url: &str) -> anyhow::Result<HashMap<String, String>> {
        let mut names = HashMap::new();
        let mut cursor: Option<String> = None;
        loop {
            // Keys are made of characters a query may hold as they are.
            let after = cursor
                .as_deref()
                .map_or(String::new(), |c| format!("&cursor={c}"));
            let listing = format!("{url}/api/files?limit=1000{after}");
            let page = self.http.get(listing).send().await?.error_for_status()?;
            let page: serde_json::Value = serde_json::from_slice(&page.bytes().await?)?;
            for file in page["files"]
                .as_array()
                .context("a listing without files")?
            {
                let key = file["key"].as_str().context("a file without key")?;
                let name = key.rsplit('/').next().unwrap_or(key);
                names.insert(name.to_owned(), key.to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(names),
            }
        }
    }

    /// Reads back through corral's `GET /api/files/{key}` every file of
    /// `report` (files of `size`, named by the runner).
    async fn check_corral(
        &self,
        url: &str,
        report: &TusReport,
        size: u64,
    ) -> anyhow::Result<Checked> {
        let names = self.corral_files(url).await?;
        let hashes: Vec<Option<String>> = futures::stream::iter(0..report.files.len())
            .map(|i| {
                let key = names.get(&format!("file-{i}.bin")).cloned();
                async move {
                    let key = key?;
                    let response = self.http.get(format!("{url}/api/files/{key}")).send().await;
                    let body = response.ok()?.error_for_status().ok()?.bytes().await.ok()?;
                    Some(sha256_hex(&body))
                }
            })
            .buffered(READ_BACK)
            .collect()
            .await;
        let mut checked = Checked::default();
        for (i, (file, stored)) in report.files.iter().zip(hashes).enumerate() {
            checked.file(i, file, size, stored);
        }
        Ok(checked)
    }

    /// Reads back from disk every file of `report`, where `stored` says.
    fn check_dir(
        report: &TusReport,
        size: u64,
        stored: impl Fn(&str) -> Option<PathBuf>,
    ) -> Checked {
        let mut checked = Checked::default();
        for (i, file) in report.files.iter().enumerate() {
            let path = file.url.as_deref().and_then(&stored);
            let hash = path
                .and_then(|p| std::fs::read(p).ok())
                .map(|b| sha256_hex(&b));
            checked.file(i, file, size, hash);
        }
        checked
    }

    /// How many answers corral gave on `/api/uploads` routes, by status,
    /// from its `/metrics`; empty if they cannot be read.
    async fn upload_answers(&self, url: &str) -> BTreeMap<u16, u64> {
        let mut answers = BTreeMap::new();
        let metrics = self.http.get(format!("{url}/metrics")).send().await;
        let Ok(text) = async { metrics?.text().await }.await else {
            return answers;
        };
        for line in text.lines() {
            let Some(labels) = line.strip_prefix("corral_http_requests_total{") else {
                continue;
            };
            let Some((labels, count)) = labels.rsplit_once("} ") else {
                continue;
            };
            let label = |name: &str| {
                labels.split(',').find_map(|pair| {
                    let value = pair.strip_prefix(name)?.strip_prefix("=\"")?;
                    Some(value.trim_end_matches('"').to_owned())
                })
            };
            let route = label("route").unwrap_or_default();
            let status = label("status").and_then(|s| s.parse().ok());
            let count = count.trim().parse::<f64>().ok();
            if let (true, Some(status), Some(count)) =
                (route.starts_with("/api/uploads"), status, count)
            {
                *answers.entry(status).or_default() += count as u64;
            }
        }
        answers
    }

    async fn throughput(&self) -> anyhow::Result<(String, Vec<Row>)> {
        let args = self.args;
        let size = args.size.0;
        let files = generated(args.files, size);
        let mib = args.files as f64 * size as f64 / f64::from(1 << 20);
        if (args.against.iter()).any(|r| matches!(r, Rival::Rustus | Rival::RustusFsync)) {
            eprintln!("installing rustus (cargo install, first use only: several minutes)");
            let started = std::time::Instant::now();
            let binary = Rustus::install().context("installing rustus")?;
            eprintln!("   {} in {:.0?}", binary.display(), started.elapsed());
        }
        let mut names = vec!["corral"];
        names.extend(args.against.iter().map(|r| r.name()));
        // speeds[server][round], NaN for a round that failed a check.
        let mut speeds = vec![Vec::new(); names.len()];
        let mut identical = vec![0; names.len()];
        // What each run stored, kept until every run is over.
        let mut stored = Vec::new();
        for round in 0..args.rounds {
            for (server, name) in names.iter().enumerate() {
                let dir = self.data.join(format!("throughput-{round}-{server}"));
                eprintln!("== throughput round {}: {name}", round + 1);
                let (report, checked) = match server {
                    0 => {
                        let corral = self
                            .start_corral(&format!("throughput-{round}"), &Store::Dir(dir.clone()))
                            .await?;
                        let run = self.throughput_config(
                            format!("{}/api/uploads", corral.url),
                            files.clone(),
                            args.concurrency,
                        );
                        let report = self.client.run(&run).await?;
                        let checked = self.check_corral(&corral.url, &report, size).await?;
                        (report, checked)
                    }
                    _ => match args.against[server - 1] {
                        Rival::TusNode => {
                            let node = TusNodeServer::start(&dir)?;
                            let run = self.throughput_config(
                                node.endpoint(),
                                files.clone(),
                                args.concurrency,
                            );
                            let report = self.client.run(&run).await?;
                            let checked = Self::check_dir(&report, size, |url| node.stored(url));
                            (report, checked)
                        }
                        rival @ (Rival::Rustus | Rival::RustusFsync) => {
                            let config = RustusConfig {
                                max_body: size.max(1 << 20),
                                force_fsync: rival == Rival::RustusFsync,
                            };
                            let rustus = Rustus::start(&dir, &config)?;
                            let run = self.throughput_config(
                                rustus.endpoint(),
                                files.clone(),
                                args.concurrency,
                            );
                            let report = self.client.run(&run).await?;
                            let checked = Self::check_dir(&report, size, |url| rustus.stored(url));
                            (report, checked)
                        }
                    },
                };
                checked.report(name);
                let whole = checked.identical == args.files;
                let speed = mib / report.totals.elapsed.as_secs_f64();
                let speed = if whole { speed } else { f64::NAN };
                eprintln!(
                    "   {:.1} MiB/s, {} / {} byte-identical",
                    speed, checked.identical, args.files
                );
                speeds[server].push(speed);
                identical[server] += checked.identical;
                stored.push(dir);
            }
        }
        // Removed only now: on ext4 without a journal (this machine's), a
        // file created soon after others were removed costs more, the more
        // were (the inode allocator steps over inodes freed within the
        // last minute or more, one by one), so removing a server's files
        // between runs would slow the server run next, whichever it is.
        // See BENCHMARKS.md.
        for dir in stored {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let mut rows = Vec::new();
        for (server, name) in names.iter().enumerate() {
            rows.push(Row::all(
                format!("{name}: files stored and byte-identical"),
                identical[server],
                args.files * args.rounds,
            ));
        }
        for (server, name) in names.iter().enumerate() {
            let rounds: Vec<String> = speeds[server].iter().map(|s| format!("{s:.1}")).collect();
            rows.push(Row::info(
                format!("{name}: MiB/s, median (rounds {})", rounds.join(" ")),
                format!("{:.1}", median(&speeds[server])),
            ));
        }
        for (index, rival) in args.against.iter().enumerate() {
            let ratios: Vec<f64> = (speeds[0].iter().zip(&speeds[index + 1]))
                .map(|(corral, other)| corral / other)
                .collect();
            let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            let what = format!(
                "corral / {} MiB/s, median of rounds ({})",
                rival.name(),
                shown.join(" ")
            );
            rows.push(match rival.target() {
                Some(target) => Row::bound(what, median(&ratios), Cmp::AtLeast, target, "x"),
                None => Row::info(what, format!("{}x", trim(median(&ratios)))),
            });
        }
        let title = format!(
            "throughput: {} x {} from tus-js-client, {} at once, stored in {}, {} rounds",
            args.files,
            args.size,
            args.concurrency,
            args.data_dir.as_deref().unwrap_or(&args.out).display(),
            args.rounds
        );
        Ok((title, rows))
    }

    async fn resume(&self, s3: &S3) -> anyhow::Result<(String, Vec<Row>)> {
        let args = self.args;
        let size = args.resume_size.0;
        let mut rows = Vec::new();
        for backend in ["local disk", "S3"] {
            eprintln!("== resume: {backend}");
            let store = if backend == "S3" {
                s3.store(s3.new_bucket()?, s3.endpoint())
            } else {
                Store::Dir(self.data.join("resume"))
            };
            let corral = self
                .start_corral(&format!("resume-{backend}"), &store)
                .await?;
            let run = TusRun {
                cut_at: Some(args.cut_at),
                ..self.run_config(
                    format!("{}/api/uploads", corral.url),
                    generated(args.resume_files, size),
                    args.resume_concurrency,
                )
            };
            let report = self.client.run(&run).await?;
            let checked = self.check_corral(&corral.url, &report, size).await?;
            checked.report(backend);
            let resumed = report.files.iter().filter(|f| f.resumed).count();
            // Bytes sent before the cut that the server did not keep; a
            // file without both figures has no gap, and fails the row.
            let gaps: Vec<Option<i128>> = (report.files.iter())
                .map(|f| {
                    let sent = f.bytes_sent_before_cut?;
                    let kept = f.offset_at_cut?;
                    Some(i128::from(sent) - i128::from(kept))
                })
                .collect();
            let worst = if gaps.iter().all(Option::is_some) {
                gaps.iter().flatten().max().map_or(f64::NAN, |&g| g as f64)
            } else {
                f64::NAN
            };
            let beyond = gaps.iter().flatten().filter(|&&g| g < 0).count();
            let kept: Vec<String> = (report.files.iter().take(3))
                .map(|f| {
                    format!(
                        "{:?} of {:?}",
                        f.offset_at_cut.unwrap_or_default(),
                        f.bytes_sent_before_cut.unwrap_or_default()
                    )
                })
                .collect();
            eprintln!("   kept at the cut, first files: {}", kept.join(", "));
            rows.push(Row::all(
                format!("{backend}: uploads complete and byte-identical"),
                checked.identical,
                args.resume_files,
            ));
            rows.push(Row::all(
                format!("{backend}: uploads resumed from the server's offset"),
                resumed,
                args.resume_files,
            ));
            rows.push(Row::bound(
                format!("{backend}: worst gap, bytes sent before the cut - offset kept"),
                worst / 1024.0,
                Cmp::AtMost,
                256.0,
                " KiB",
            ));
            rows.push(Row::exactly(
                format!("{backend}: offsets kept beyond the bytes sent"),
                beyond,
                0,
            ));
            drop(corral);
        }
        let title = format!(
            "cut and resume: {} x {}, each cut at {} and resumed, {} at once",
            args.resume_files, args.resume_size, args.cut_at, args.resume_concurrency
        );
        Ok((title, rows))
    }

    async fn herd(&self, s3: &S3) -> anyhow::Result<(String, Vec<Row>)> {
        let args = self.args;
        let files = args.herd_clients * args.herd_files;
        let size = args.herd_size.0;
        let mut rows = Vec::new();
        for (with_data, label, calls_target) in [
            (true, "bytes in the creation", 1.1),
            // Issue 12's target: the state, the object, the delete (the
            // PATCH reaches the instance that created the upload, and puts
            // its lease off: see `corral_store`'s `resumable` module).
            (false, "empty creation + PATCH", 3.0),
        ] {
            eprintln!("== herd: {label}");
            let bucket = s3.new_bucket()?;
            let front = args.backend.front(s3).await?;
            let store = s3.store(bucket.clone(), front.endpoint());
            let corral = self
                .start_corral(&format!("herd-{with_data}"), &store)
                .await?;
            let run = TusRun {
                upload_data_during_creation: with_data,
                retry_statuses: HERD_RETRY_STATUSES.to_vec(),
                retry_delays: Some(
                    HERD_RETRY_DELAYS_S
                        .iter()
                        .map(|&s| Duration::from_secs(s))
                        .collect(),
                ),
                ..self.run_config(
                    format!("{}/api/uploads", corral.url),
                    generated(files, size),
                    args.herd_clients,
                )
            };
            let before = front.stats();
            let report = self.client.run(&run).await?;
            let after = front.stats();
            let answers = self.upload_answers(&corral.url).await;
            drop(corral);
            front.shutdown().await;
            let elapsed = report.totals.elapsed.as_secs_f64();
            eprintln!(
                "   {} of {files} uploaded in {elapsed:.1} s; reading every object back from S3",
                files - report.totals.failed
            );
            let stored = read_back_s3(s3, &bucket, files).await?;
            let mut checked = Checked::default();
            for (i, file) in report.files.iter().enumerate() {
                checked.file(i, file, size, stored.hashes.get(&i).cloned());
            }
            checked.report(label);
            let calls = Delta::of(&before, &after);
            let per_file = calls.forwarded as f64 / checked.identical as f64;
            let throttled = calls.throttled as f64 / calls.received as f64;
            rows.push(Row::all(
                format!("{label}: files stored, read back from S3, byte-identical"),
                checked.identical,
                files,
            ));
            rows.push(Row::exactly(
                format!("{label}: upload states left in the bucket"),
                stored.states,
                0,
            ));
            rows.push(Row::exactly(
                format!("{label}: files stored twice"),
                stored.duplicates,
                0,
            ));
            rows.push(Row::bound(
                format!(
                    "{label}: front 503s / requests ({} / {})",
                    calls.throttled, calls.received
                ),
                100.0 * throttled,
                Cmp::AtMost,
                2.0,
                "%",
            ));
            rows.push(Row::bound(
                format!("{label}: backend calls / file ({})", calls.forwarded),
                per_file,
                Cmp::AtMost,
                calls_target,
                "",
            ));
            for (operation, count) in &calls.by_operation {
                rows.push(Row::info(
                    format!("{label}: {operation} / file ({count})"),
                    format!("{:.3}", *count as f64 / checked.identical as f64),
                ));
            }
            let answers: Vec<String> = (answers.iter())
                .map(|(status, count)| format!("{status}: {count}"))
                .collect();
            rows.push(Row::info(
                format!("{label}: corral's answers on /api/uploads, by status"),
                answers.join(", "),
            ));
            rows.push(Row::info(
                format!("{label}: files/s (over {elapsed:.1} s)"),
                format!("{:.1}", checked.identical as f64 / elapsed),
            ));
        }
        let title = format!(
            "the herd: {} tus clients x {} files x {} through the front ({} slots x {}, 503 beyond), corral on S3 ({:?})",
            args.herd_clients,
            args.herd_files,
            args.herd_size,
            args.backend.slots,
            args.backend.latency,
            args.backend.s3
        );
        Ok((title, rows))
    }

    async fn idle(&self) -> anyhow::Result<(String, Vec<Row>)> {
        let args = self.args;
        let length = args.idle_size.0;
        let half = length / 2;
        eprintln!(
            "== idle: {} uploads, {half} of {length} bytes each",
            args.idle_uploads
        );
        let corral = self
            .start_corral("idle", &Store::Dir(self.data.join("idle")))
            .await?;
        let pid = corral.pid();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = memory(pid)?;
        let url = corral.url.clone();
        let body = node::file_bytes(half, 1);
        let opened: Vec<anyhow::Result<String>> = futures::stream::iter(0..args.idle_uploads)
            .map(|_| open_half(&self.http, &url, length, body.clone()))
            .buffer_unordered(32)
            .collect()
            .await;
        let mut locations = Vec::new();
        let mut problems = Vec::new();
        for opened in opened {
            match opened {
                Ok(location) => locations.push(location),
                Err(error) => problems.push(format!("{error:#}")),
            }
        }
        // Let what the requests held be freed before reading.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let loaded = memory(pid)?;
        let offsets: Vec<Option<u64>> = futures::stream::iter(&locations)
            .map(|location| {
                let head = self.http.head(format!("{url}{location}"));
                async move {
                    let response = head.header("Tus-Resumable", "1.0.0").send().await.ok()?;
                    header_u64(response.headers(), "upload-offset")
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let open = offsets.iter().filter(|&&o| o == Some(half)).count();
        for problem in problems.iter().take(5) {
            eprintln!("   {problem}");
        }
        let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
        let rise = loaded.rss as f64 - idle.rss as f64;
        let rows = vec![
            Row::all(
                format!("uploads open at offset {half} (HEAD after the idle read)"),
                open,
                args.idle_uploads,
            ),
            Row::info(
                "VmRSS of the idle server".to_owned(),
                format!("{:.1} MiB", mib(idle.rss)),
            ),
            Row::info(
                format!("VmRSS with {} idle uploads", locations.len()),
                format!("{:.1} MiB", mib(loaded.rss)),
            ),
            Row::info(
                "VmHWM (peak RSS) while opening them".to_owned(),
                format!("{:.1} MiB", mib(loaded.peak)),
            ),
            Row::bound(
                "rise of VmRSS over the idle server's",
                if open == args.idle_uploads {
                    rise / f64::from(1 << 20)
                } else {
                    f64::NAN
                },
                Cmp::Below,
                64.0,
                " MiB",
            ),
        ];
        let title = format!(
            "idle uploads' memory: {} uploads of {}, half sent, left idle (corral on the local disk)",
            args.idle_uploads, args.idle_size
        );
        Ok((title, rows))
    }
}

/// What the front saw between two of its stats.
struct Delta {
    received: u64,
    forwarded: u64,
    throttled: u64,
    by_operation: BTreeMap<&'static str, u64>,
}

impl Delta {
    fn of(before: &Stats, after: &Stats) -> Self {
        let by_operation = (after.forwarded_by_operation.iter())
            .map(|(op, n)| {
                let was = before.forwarded_by_operation.get(op).copied().unwrap_or(0);
                (*op, n - was)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        Self {
            received: after.received - before.received,
            forwarded: after.forwarded - before.forwarded,
            throttled: after.throttled - before.throttled,
            by_operation,
        }
    }
}

/// What is in a herd's bucket.
struct InBucket {
    /// SHA-256 of each file, by its index in the run.
    hashes: HashMap<usize, String>,
    /// Files found under two keys.
    duplicates: usize,
    /// Objects of uploads in progress (`.corral/uploads/`).
    states: usize,
}

/// Lists `bucket` straight from `s3` (not through the front) and reads
/// every file back.
async fn read_back_s3(s3: &S3, bucket: &str, files: usize) -> anyhow::Result<InBucket> {
    let store = super::compare::s3_direct(s3, bucket)?;
    let listed: Vec<_> = store.list(None).collect().await;
    let objects = listed.into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut found = InBucket {
        hashes: HashMap::new(),
        duplicates: 0,
        states: 0,
    };
    let mut keys = Vec::new();
    for object in &objects {
        let path = object.location.as_ref();
        if path.contains(".corral/uploads/") {
            found.states += 1;
        } else if let Some(i) = path.rsplit('/').next().and_then(index_of)
            && i < files
        {
            keys.push((i, object.location.clone()));
        }
    }
    let hashes: Vec<(usize, Option<String>)> = futures::stream::iter(keys)
        .map(|(i, location)| {
            let store = Arc::clone(&store);
            async move {
                let bytes = async { store.get(&location).await?.bytes().await }.await;
                (i, bytes.ok().map(|b| sha256_hex(&b)))
            }
        })
        .buffer_unordered(READ_BACK)
        .collect()
        .await;
    for (i, hash) in hashes {
        let Some(hash) = hash else { continue };
        if found.hashes.insert(i, hash).is_some() {
            found.duplicates += 1;
        }
    }
    Ok(found)
}

/// Creates an upload of `length` and sends `body` (its first half) in one
/// `PATCH`; the upload's path.
async fn open_half(
    http: &reqwest::Client,
    url: &str,
    length: u64,
    body: Vec<u8>,
) -> anyhow::Result<String> {
    let created = http
        .post(format!("{url}/api/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", length)
        .send()
        .await?;
    anyhow::ensure!(
        created.status() == reqwest::StatusCode::CREATED,
        "creation: {}",
        created.status()
    );
    let location = (created.headers().get("location"))
        .and_then(|l| l.to_str().ok())
        .context("a creation without Location")?
        .to_owned();
    let sent = body.len() as u64;
    let patched = http
        .patch(format!("{url}{location}"))
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", 0)
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(
        patched.status() == reqwest::StatusCode::NO_CONTENT,
        "PATCH: {}",
        patched.status()
    );
    let offset = header_u64(patched.headers(), "upload-offset");
    anyhow::ensure!(offset == Some(sent), "PATCH answered offset {offset:?}");
    Ok(location)
}

fn header_u64(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

/// A process's resident memory, from `/proc/PID/status`.
pub(super) struct Memory {
    /// `VmRSS`, in bytes.
    pub(super) rss: u64,
    /// `VmHWM`, the peak of `VmRSS`, in bytes.
    pub(super) peak: u64,
}

pub(super) fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = Path::new("/proc").join(pid.to_string()).join("status");
    let status = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .map(|n| n * 1024)
            .with_context(|| format!("no {field} in {}", path.display()))
    };
    Ok(Memory {
        rss: kib("VmRSS:")?,
        peak: kib("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runner_file_name_gives_its_index() {
        assert_eq!(index_of("file-42.bin"), Some(42));
        assert_eq!(index_of("file-x.bin"), None);
        assert_eq!(index_of("probe"), None);
    }
}
