//! `corral bench reads`: read herds through the throttling front.
//!
//! Two herds, each of `--clients` readers released at the same moment
//! against a `corral serve` on S3 behind the front:
//!
//! - **hot**: every reader `GET`s the same cold object. The backend calls
//!   it costs are the requests the front forwarded during the herd; with
//!   corral's single-flight and read cache (see `corral_store::hot`), one.
//! - **distinct**: each reader `GET`s an object of its own: exactly one
//!   forwarded call per read is the bar.
//!
//! Every body is compared with what was uploaded. Latencies are measured
//! per reader from the release to the last byte, retries of `429` and
//! `503` (after their `Retry-After`) included, and compared with the median
//! of unloaded `GET`s of other cold objects in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use corral_testkit::front::Front;

use super::compare::{Backend, Corral, S3};
use crate::units::ByteSize;

/// `corral bench reads`.
#[derive(Debug, clap::Args)]
// The shared `--slots`, in the words this command has always used.
#[command(mut_arg("slots", |slots| {
    slots.help("Requests the front serves at once; beyond, it answers 503 SlowDown")
}))]
pub(crate) struct ReadsArgs {
    /// Readers in each herd.
    #[arg(long, default_value_t = 1000)]
    pub(crate) clients: usize,
    /// Size of each object.
    #[arg(long, default_value = "256KiB")]
    pub(crate) size: ByteSize,
    #[command(flatten)]
    pub(crate) backend: Backend,
    /// More arguments for `corral serve`, one per flag.
    #[arg(long = "serve-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub(crate) serve_args: Vec<String>,
}

/// Unloaded `GET`s of distinct cold objects, for the baseline latency.
const BASELINE_READS: usize = 5;
/// Files per upload request while loading the objects.
const UPLOAD_BATCH: usize = 50;

/// One herd's outcome.
struct Herd {
    latencies: Vec<Duration>,
    /// Requests the front forwarded to S3 during the herd.
    forwarded: u64,
    /// Requests the front answered 503 during the herd.
    throttled: u64,
    /// Answers of 429 or 503 from corral, retried by the readers.
    retried: usize,
}

impl Herd {
    fn p(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }
}

pub(crate) fn run(args: &ReadsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let s3 = S3::start(args.backend.s3)?;
    let scratch = tempfile::Builder::new()
        .prefix("corral-reads")
        .tempdir_in(".")?;
    runtime.block_on(run_with(args, &s3, scratch.path()))
}

async fn run_with(args: &ReadsArgs, s3: &S3, scratch: &std::path::Path) -> anyhow::Result<()> {
    let bucket = s3.new_bucket()?;
    let front = args.backend.front(s3).await?;
    let store = s3.store(bucket, front.endpoint());
    let mut corral = Corral::start(&store, &args.serve_args, &scratch.join("corral.log"))?;
    corral.wait_ready().await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let size = usize::try_from(args.size.0)?;
    let objects = 1 + BASELINE_READS + args.clients;
    eprintln!(
        "uploading {objects} objects of {} through corral (front {} slots x {})",
        args.size, args.backend.slots, args.backend.latency
    );
    let keys = upload(&client, &corral.url, objects, size).await?;
    let (hot, rest) = keys.split_first().expect("at least one object");
    let (baseline_keys, distinct) = rest.split_at(BASELINE_READS);

    let mut unloaded = Vec::new();
    for (index, key) in baseline_keys.iter().enumerate() {
        let started = Instant::now();
        read(&client, &corral.url, key, &content(1 + index, size)).await?;
        unloaded.push(started.elapsed());
    }
    unloaded.sort();
    let unloaded = unloaded[unloaded.len() / 2];

    let readers: Vec<(String, usize)> = (0..args.clients).map(|_| (hot.clone(), 0)).collect();
    let hot_herd = herd(&client, &corral.url, &front, readers, size).await?;
    let readers = (distinct.iter().cloned())
        .zip(1 + BASELINE_READS..)
        .collect();
    let distinct_herd = herd(&client, &corral.url, &front, readers, size).await?;
    drop(corral);
    front.shutdown().await;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{} readers x {} through the front ({} slots x {}); unloaded GET (median of {BASELINE_READS}): {:.1} ms",
        args.clients,
        args.size,
        args.backend.slots,
        args.backend.latency,
        ms(unloaded)
    );
    for (name, herd) in [("hot", &hot_herd), ("distinct", &distinct_herd)] {
        println!(
            "{name:<9} backend calls {:>5} ({:.3} per read), 503s {:>4}, retried {:>4}, p50 {:>7.1} ms, p99 {:>7.1} ms = {:.2} x unloaded",
            herd.forwarded,
            herd.forwarded as f64 / args.clients as f64,
            herd.throttled,
            herd.retried,
            ms(herd.p(0.5)),
            ms(herd.p(0.99)),
            herd.p(0.99).as_secs_f64() / unloaded.as_secs_f64()
        );
    }
    println!("every body matched what was uploaded");
    Ok(())
}

/// The bytes of object `index`.
fn content(index: usize, size: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(index as u64);
    let mut bytes = vec![0; size];
    rng.fill(&mut bytes);
    bytes
}

/// Uploads `count` objects, [`content`] 0 to `count - 1`; their keys.
async fn upload(
    client: &reqwest::Client,
    url: &str,
    count: usize,
    size: usize,
) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::with_capacity(count);
    for first in (0..count).step_by(UPLOAD_BATCH) {
        let mut form = reqwest::multipart::Form::new();
        for index in first..(first + UPLOAD_BATCH).min(count) {
            let part = reqwest::multipart::Part::bytes(content(index, size))
                .file_name(format!("{index}.bin"));
            form = form.part("file", part);
        }
        let response = client
            .post(format!("{url}/api/files"))
            .multipart(form)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await.context("upload answer")?;
        let body: serde_json::Value = serde_json::from_slice(&body).context("upload answer")?;
        anyhow::ensure!(status.is_success(), "upload failed: {status} {body}");
        let files = body["files"].as_array().context("no files in the answer")?;
        for file in files {
            keys.push(file["key"].as_str().context("no key")?.to_owned());
        }
    }
    Ok(keys)
}

/// Releases one reader per `(key, content index)` at once; each reads its
/// key whole and checks it.
async fn herd(
    client: &reqwest::Client,
    url: &str,
    front: &Front,
    readers: Vec<(String, usize)>,
    size: usize,
) -> anyhow::Result<Herd> {
    let before = front.stats();
    let start = Arc::new(tokio::sync::Barrier::new(readers.len()));
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|(key, index)| {
            let (client, url, start) = (client.clone(), url.to_owned(), Arc::clone(&start));
            tokio::spawn(async move {
                let expected = content(index, size);
                start.wait().await;
                let started = Instant::now();
                let retried = read(&client, &url, &key, &expected).await?;
                anyhow::Ok((started.elapsed(), retried))
            })
        })
        .collect();
    let mut herd = Herd {
        latencies: Vec::new(),
        forwarded: 0,
        throttled: 0,
        retried: 0,
    };
    for task in tasks {
        let (latency, retried) = task.await??;
        herd.latencies.push(latency);
        herd.retried += retried;
    }
    let after = front.stats();
    herd.forwarded = after.forwarded - before.forwarded;
    herd.throttled = after.throttled - before.throttled;
    Ok(herd)
}

/// Reads `key` whole, retrying `429` and `503` after their `Retry-After`,
/// and checks it is `expected`; how many answers were retried.
async fn read(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    expected: &[u8],
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for retried in 0.. {
        let response = client.get(format!("{url}/api/files/{key}")).send().await?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::SERVICE_UNAVAILABLE
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{key}: still {status} after 120 s"
            );
            let wait = (response.headers().get("retry-after"))
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        anyhow::ensure!(status.is_success(), "{key}: {status}");
        let body = response.bytes().await?;
        anyhow::ensure!(body == expected, "{key}: the body differs from the upload");
        return Ok(retried);
    }
    unreachable!("the loop returns or fails")
}
