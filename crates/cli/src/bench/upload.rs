//! `corral bench upload`: the command-line client (`corral upload`), as a
//! user runs it, in three figures.
//!
//! - **throughput**: `--files` x `--size` through `corral upload` to a
//!   `corral serve` on S3 (s3s-fs), against `s5cmd cp` writing the same
//!   files straight to the same s3s-fs; each in a fresh bucket, the two
//!   alternating which goes first, `--rounds` times; the median ratio of
//!   times. Each tool's time is its whole process, start to exit. Every
//!   object corral stored is then read straight from s3s-fs and hashed;
//!   s5cmd's are listed and their sizes checked.
//! - **resume**: one `--resume-size` file, the client killed once half of
//!   it has gone out, then run again: every byte the client sent, counted
//!   on the wire by a relay between it and corral, against the file's
//!   size; the stored object read back and hashed.
//! - **memory**: `--many-files` small files in one run: the client's
//!   peak resident memory (`VmHWM` of its process).
//!
//! A figure over nothing (no round, no byte) is NaN and misses its target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use object_store::{ObjectStore, ObjectStoreExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::compare::{Corral, S3, S3Kind, s3_direct};
use super::figures::median;
use super::tus::memory;
use crate::units::ByteSize;

/// `corral bench upload`.
#[derive(Debug, clap::Args)]
pub(crate) struct UploadArgs {
    /// Throughput: files in each run.
    #[arg(long, default_value_t = 200)]
    pub(crate) files: usize,
    /// Throughput: size of each file.
    #[arg(long, default_value = "1MiB")]
    pub(crate) size: ByteSize,
    /// Throughput: rounds, each running corral upload and s5cmd once.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// Resume: size of the file cut at half way and resumed.
    #[arg(long, default_value = "1GiB")]
    pub(crate) resume_size: ByteSize,
    /// Memory: files in the one run.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) many_files: usize,
    /// Memory: size of each of those files.
    #[arg(long, default_value = "4KiB")]
    pub(crate) many_size: ByteSize,
    /// Extra arguments for every `corral upload` run, such as
    /// `--client-arg=--parallel=8`.
    #[arg(long = "client-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub(crate) client_args: Vec<String>,
    /// Where the files, logs and data go (removed at the end).
    #[arg(long, default_value = "bench-out/upload")]
    pub(crate) out: PathBuf,
}

/// The targets of the issue.
const RATIO_TARGET: f64 = 1.3;
const RESUME_TARGET: f64 = 1.05;
const MEMORY_TARGET_MIB: f64 = 100.0;

/// Runs `corral bench upload`: prints each figure against its target, and
/// a `yes`/`no` line per integrity check. Fails if a check fails.
pub(crate) fn run(args: &UploadArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let scratch = tempfile::Builder::new()
        .prefix("upload")
        .tempdir_in(&args.out)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let s3 = S3::start(S3Kind::S3s)?;
    let s5cmd = corral_testkit::s5cmd::install().context("installing s5cmd")?;
    let mut checks = Vec::new();

    // Throughput.
    let dir = scratch.path().join("files");
    let files = write_files(&dir, args.files, args.size.0, 1)?;
    let mut ratios = Vec::new();
    let mut corral_ok = true;
    let mut s5cmd_ok = true;
    for round in 0..args.rounds {
        let mut corral_s = f64::NAN;
        let mut direct_s = f64::NAN;
        for turn in 0..2 {
            if (round + turn) % 2 == 0 {
                let bucket = s3.new_bucket()?;
                let started = Instant::now();
                let status = Command::new(&s5cmd)
                    .args(["--endpoint-url", &s3.endpoint(), "cp"])
                    .arg(format!("{}/*", dir.display()))
                    .arg(format!("s3://{bucket}/direct/"))
                    .env("AWS_ACCESS_KEY_ID", s3.credentials().0)
                    .env("AWS_SECRET_ACCESS_KEY", s3.credentials().1)
                    .env("AWS_REGION", "us-east-1")
                    .stdout(Stdio::null())
                    .status()?;
                direct_s = started.elapsed().as_secs_f64();
                let listed = runtime.block_on(sizes(&s3, &bucket, "direct"))?;
                s5cmd_ok &= status.success()
                    && listed.len() == files.len()
                    && listed.values().all(|&size| size == args.size.0);
            } else {
                let bucket = s3.new_bucket()?;
                let log = scratch.path().join(format!("corral-{round}.log"));
                let mut corral =
                    Corral::start(&s3.store(bucket.clone(), s3.endpoint()), &[], &log)?;
                runtime.block_on(corral.wait_ready())?;
                let state = scratch.path().join(format!("state-{round}"));
                let started = Instant::now();
                let output = client(&corral.url, &state, &dir, args).output()?;
                corral_s = started.elapsed().as_secs_f64();
                anyhow::ensure!(
                    output.status.success(),
                    "corral upload failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                let stored = stored_keys(&output.stdout)?;
                corral_ok &= runtime.block_on(read_back(&s3, &bucket, &stored, &files))?;
            }
        }
        ratios.push(corral_s / direct_s);
        println!(
            "round {}: corral upload {corral_s:.2} s, s5cmd cp {direct_s:.2} s",
            round + 1
        );
    }
    let ratio = median(&ratios);
    println!(
        "throughput: corral upload / s5cmd cp time, median of {}: {ratio:.2} (target at most {RATIO_TARGET}) {}",
        ratios.len(),
        met(ratio <= RATIO_TARGET)
    );
    checks.push(("corral: files stored and byte-identical", corral_ok));
    checks.push(("s5cmd: files stored", s5cmd_ok));

    // Resume.
    let big_dir = scratch.path().join("big");
    let big = write_files(&big_dir, 1, args.resume_size.0, 2)?;
    let bucket = s3.new_bucket()?;
    let log = scratch.path().join("corral-resume.log");
    let mut corral = Corral::start(&s3.store(bucket.clone(), s3.endpoint()), &[], &log)?;
    runtime.block_on(corral.wait_ready())?;
    let relay = runtime.block_on(Relay::start(&corral.url))?;
    let state = scratch.path().join("state-resume");
    let half = args.resume_size.0 / 2;
    let mut child = client(&relay.url, &state, &big_dir, args)
        .stdout(Stdio::null())
        .spawn()?;
    let started = Instant::now();
    // A client done before half (a small file) is simply not cut.
    while relay.sent() < half && child.try_wait()?.is_none() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "half the file was not sent within 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill()?;
    child.wait()?;
    let at_cut = relay.sent();
    let output = client(&relay.url, &state, &big_dir, args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "the resumed corral upload failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sent = relay.sent();
    let stored = stored_keys(&output.stdout)?;
    let resumed_ok = runtime.block_on(read_back(&s3, &bucket, &stored, &big))?;
    let sent_ratio = sent as f64 / args.resume_size.0 as f64;
    drop(corral);
    println!(
        "resume: {} file cut after {:.2} GiB on the wire, then resumed: {:.3} GiB sent in all, {sent_ratio:.3}x the file (target at most {RESUME_TARGET}x) {}",
        args.resume_size,
        at_cut as f64 / f64::from(1u32 << 30),
        sent as f64 / f64::from(1u32 << 30),
        met(sent_ratio <= RESUME_TARGET)
    );
    checks.push(("resumed file stored and byte-identical", resumed_ok));
    drop(big);
    std::fs::remove_dir_all(&big_dir)?;

    // Memory.
    let many_dir = scratch.path().join("many");
    let many = write_files(&many_dir, args.many_files, args.many_size.0, 3)?;
    let bucket = s3.new_bucket()?;
    let log = scratch.path().join("corral-many.log");
    let mut corral = Corral::start(&s3.store(bucket.clone(), s3.endpoint()), &[], &log)?;
    runtime.block_on(corral.wait_ready())?;
    let state = scratch.path().join("state-many");
    let mut child = client(&corral.url, &state, &many_dir, args)
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut { stdout }, &mut text).map(|_| text)
    });
    let mut peak_kib = 0u64;
    while child.try_wait()?.is_none() {
        peak_kib = peak_kib.max(memory(pid).map_or(0, |m| m.peak / 1024));
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait()?;
    let text = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))??;
    let stored = stored_keys(&text)?;
    let many_ok = status.success() && runtime.block_on(read_back(&s3, &bucket, &stored, &many))?;
    let peak_mib = if peak_kib == 0 {
        f64::NAN
    } else {
        peak_kib as f64 / 1024.0
    };
    println!(
        "memory: corral upload of {} x {}: peak RSS {peak_mib:.1} MiB (target below {MEMORY_TARGET_MIB} MiB) {}",
        args.many_files,
        args.many_size,
        met(peak_mib < MEMORY_TARGET_MIB)
    );
    checks.push(("many files stored and byte-identical", many_ok));

    for (what, ok) in &checks {
        println!("{what}: {}", met(*ok));
    }
    anyhow::ensure!(
        checks.iter().all(|(_, ok)| *ok),
        "an integrity check failed"
    );
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok { "yes" } else { "no" }
}

/// `corral upload DIR` (this binary) to `url`, with its journal in
/// `state` and the bench's --client-arg: JSON lines, no bars.
fn client(url: &str, state: &Path, dir: &Path, args: &UploadArgs) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the running binary"));
    command
        .args(["upload", "--json", "--quiet", "--server", url, "--state"])
        .arg(state)
        .arg(dir)
        .args(&args.client_args)
        .env_remove("CORRAL_TOKEN")
        .env_remove("CORRAL_URL");
    command
}

/// `files` random files of `size` bytes in `dir`; their SHA-256 by path.
fn write_files(
    dir: &Path,
    files: usize,
    size: u64,
    seed: u64,
) -> anyhow::Result<BTreeMap<PathBuf, String>> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut written = BTreeMap::new();
    let mut buf = vec![0; 1 << 20];
    for i in 0..files {
        let path = std::path::absolute(dir.join(format!("f{i:05}.bin")))?;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut hasher = Sha256::new();
        let mut left = size;
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64))?;
            rng.fill(&mut buf[..n]);
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])?;
            left -= n as u64;
        }
        file.flush()?;
        written.insert(path, hex::encode(hasher.finalize()));
    }
    Ok(written)
}

/// The `(path, key)` of every file a `corral upload --json` reported.
fn stored_keys(stdout: &[u8]) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut stored = Vec::new();
    for line in String::from_utf8_lossy(stdout).lines() {
        let value: serde_json::Value = serde_json::from_str(line)?;
        if let (Some(path), Some(key)) = (value["path"].as_str(), value["key"].as_str()) {
            stored.push((PathBuf::from(path), key.to_owned()));
        }
    }
    Ok(stored)
}

/// Whether every file of `files` was reported stored, and each object,
/// read straight from S3, hashes as its file does.
async fn read_back(
    s3: &S3,
    bucket: &str,
    stored: &[(PathBuf, String)],
    files: &BTreeMap<PathBuf, String>,
) -> anyhow::Result<bool> {
    if stored.len() != files.len() {
        return Ok(false);
    }
    let direct = s3_direct(s3, bucket)?;
    let checks = futures::stream::iter(stored)
        .map(|(path, key)| {
            let direct = direct.clone();
            async move {
                let object = format!("corral/anonymous/{key}");
                let bytes = direct.get(&object.as_str().into()).await?.bytes().await?;
                anyhow::Ok(files.get(path) == Some(&hex::encode(Sha256::digest(&bytes))))
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    Ok(checks.into_iter().all(|c| c.is_ok_and(|ok| ok)))
}

/// The size of every object under `prefix` in `bucket`, by key.
async fn sizes(s3: &S3, bucket: &str, prefix: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let direct: Arc<dyn ObjectStore> = s3_direct(s3, bucket)?;
    let mut listed = BTreeMap::new();
    let mut list = direct.list(Some(&prefix.into()));
    while let Some(meta) = list.next().await {
        let meta = meta?;
        listed.insert(meta.location.to_string(), meta.size);
    }
    Ok(listed)
}

/// A TCP relay before corral that counts every byte the client sends.
struct Relay {
    url: String,
    sent: Arc<AtomicU64>,
}

impl Relay {
    async fn start(upstream: &str) -> anyhow::Result<Self> {
        let upstream = upstream
            .strip_prefix("http://")
            .context("corral's URL is not http")?
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let up = async {
                        let mut buf = vec![0; 256 * 1024];
                        loop {
                            match from_client.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    counter.fetch_add(n as u64, Ordering::Relaxed);
                                    if to_server.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to_server.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                        let _ = to_client.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Ok(Self { url, sent })
    }

    /// Bytes the client sent so far, headers included.
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}
