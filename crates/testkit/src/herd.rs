//! A thundering herd: many simulated users who each send one batch of files
//! to a running corral at the same moment, and back off the way real upload
//! clients do when told to. `corral bench herd` runs it.
//!
//! # Why a herd
//!
//! corral's promise is that it stays up when everyone uploads at once: it
//! sheds what it cannot take with `429` and `Retry-After` instead of
//! falling over, and every file it acknowledges is stored intact. The
//! scheduler's scenarios ([`crate::scenario`]) check the limit in virtual
//! time; this checks the whole server, over real sockets, against the
//! clients it will meet. Those clients (tus-js-client, Uppy) retry a `429`
//! or a `5xx` (after the delay the server asked for, if it did), a few
//! times, and give up; so does each user here. A herd that all retries at the same second would
//! only move the stampede, so waits carry jitter.
//!
//! # What a user does
//!
//! User `u` sends one `POST /api/files`, `multipart/form-data`, with
//! [`HerdConfig::files`] parts named `file`, file names `u{u}-f{i}.bin`, of
//! [`HerdConfig::size`] bytes each. The content is pseudo-random, generated
//! from `(seed, user, file)` in 64 KiB chunks as the body is sent, so a herd
//! of 500 users of 10 files of 256 KiB never sits in memory; its SHA-256 is
//! computed as it is generated. On `429` or a `5xx` the user waits
//! `Retry-After` (capped at [`HerdConfig::max_wait`], plus up to 10% jitter)
//! or, without one, an exponential backoff with full jitter from 1 s, and
//! tries again, up to [`HerdConfig::max_attempts`] attempts in all. A
//! transport error (a reset connection) is an outcome of its own, retried
//! like a `503`. Any other status (a `4xx`) is final. On `201`, every file's size and
//! SHA-256 in the answer is checked against what was sent.
//!
//! # What is measured
//!
//! Outcomes of every attempt and of every user, attempts and retries,
//! throughput, latency percentiles of whole batches (first attempt to final
//! answer, waits included) and of single attempts, the peaks of corral's
//! `corral_process_resident_memory_bytes` and `corral_tokio_alive_tasks`
//! (polled from `GET /metrics` while the herd runs), and, when asked, a
//! sample of the stored objects read back directly from S3 and the stats of
//! a throttling S3 front. See [`Report`].
//!
//! # Bounds
//!
//! Every user makes at most `max_attempts` attempts; [`HerdConfig::deadline`]
//! stops the herd, and users still uploading or waiting then are reported
//! as unfinished. The checks after the herd (S3 reads, front stats) get at
//! most 60 s more. Requests go only to the given URLs: no proxy from the
//! environment, no redirects followed.

use crate::chain::chain;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, RetryConfig};
use reqwest::multipart::{Form, Part};
use reqwest::{Body, Client, header, redirect};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

/// Bytes of a file's content generated at a time.
const CHUNK: usize = 64 << 10;

/// The first ceiling of the exponential backoff used without `Retry-After`.
const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// The least jitter added to a `Retry-After` wait: a tenth of a 1 s wait is
/// too narrow to spread a herd.
const MIN_JITTER: Duration = Duration::from_millis(100);

/// How long the checks after the herd (S3 reads, front stats) may take.
const AFTER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one scrape of `/metrics` or `/stats` may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection to corral may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// S3 reads of the verification in flight at once.
const VERIFY_CONCURRENCY: usize = 8;

/// Verification failures listed by name in a report (all are counted).
const MAX_LISTED: usize = 20;

/// Characters of an error answer kept as its outcome's example.
const MAX_DETAIL: usize = 300;

/// A result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a herd could not run. What goes wrong while it runs (refusals,
/// resets, bad answers) is measured in the [`Report`] instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot describe a herd.
    #[error("invalid herd configuration: {0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The S3 client for verification could not be built.
    #[error("cannot set up the S3 client for verification")]
    S3(#[source] object_store::Error),
}

/// What herd to run against which corral.
#[derive(Debug, Clone)]
pub struct HerdConfig {
    /// corral's base URL, such as `http://127.0.0.1:8080`; uploads go to
    /// `{url}/api/files`, metrics are read from `{url}/metrics`.
    pub url: String,
    /// Users uploading at once, each one batch.
    pub users: usize,
    /// Files in each user's batch (at least 1).
    pub files: usize,
    /// Bytes of each file.
    pub size: u64,
    /// Attempts each user makes at most, the first included (at least 1).
    pub max_attempts: u32,
    /// The longest wait a `Retry-After` or the backoff may impose.
    pub max_wait: Duration,
    /// How long the herd may run; users still going then are unfinished.
    pub deadline: Duration,
    /// Seeds the file contents, the jitter and the verification sample.
    pub seed: u64,
    /// Read a sample of the stored objects back from S3, if set.
    pub verify: Option<Verify>,
    /// How often `GET /metrics` is polled while the herd runs (not zero).
    pub metrics_interval: Duration,
    /// Base URL of a throttling S3 front whose `GET /stats` answers JSON,
    /// read once the herd is done.
    pub front: Option<String>,
    /// Show a progress bar on stderr, if stderr is a terminal.
    pub progress: bool,
    /// Compute every file's SHA-256 before the clock starts, so that the
    /// client hashes nothing while it sends: for measuring corral's own
    /// cost against a writer that checks nothing. Otherwise each file is
    /// hashed as it is first sent.
    pub digests_first: bool,
}

impl Default for HerdConfig {
    /// 500 users of 10 files of 256 KiB against `http://127.0.0.1:8080`.
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".to_owned(),
            users: 500,
            files: 10,
            size: 256 << 10,
            max_attempts: 10,
            max_wait: Duration::from_secs(30),
            deadline: Duration::from_secs(600),
            seed: 1,
            verify: None,
            metrics_interval: Duration::from_millis(250),
            front: None,
            progress: false,
            digests_first: false,
        }
    }
}

impl HerdConfig {
    fn check(&self) -> Result<()> {
        let fail = |what: &str| Err(Error::Config(what.to_owned()));
        match reqwest::Url::parse(&self.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => return fail(&format!("{:?} is not an http:// URL", self.url)),
        }
        if self.users == 0 {
            return fail("a herd needs at least one user");
        }
        if self.files == 0 {
            return fail("a batch needs at least one file");
        }
        if self.max_attempts == 0 {
            return fail("each user needs at least one attempt");
        }
        if self.metrics_interval.is_zero() {
            return fail("the metrics poll interval must not be zero");
        }
        if let Some(verify) = &self.verify
            && (verify.endpoint.is_empty() || verify.bucket.is_empty())
        {
            return fail("S3 verification needs an endpoint and a bucket");
        }
        Ok(())
    }
}

/// Where and how to read stored objects back from S3, independently of
/// corral's read path.
///
/// corral stores the file with key `k` (as its `201` answer gives it) at
/// `{prefix}/{tenant}/{k}` in the bucket.
#[derive(Clone)]
pub struct Verify {
    /// The S3 endpoint, such as `http://127.0.0.1:9000` (path-style
    /// requests; plain HTTP allowed).
    pub endpoint: String,
    /// The bucket corral stores in.
    pub bucket: String,
    /// corral's store prefix within the bucket (`pfx` for
    /// `s3://bucket/pfx`); may be empty.
    pub prefix: String,
    /// The tenant the herd uploads as: `anonymous` while corral has no
    /// authentication.
    pub tenant: String,
    /// The S3 region.
    pub region: String,
    /// The access key id to read with.
    pub access_key_id: String,
    /// The secret access key to read with.
    pub secret_access_key: String,
    /// Stored objects to read back, chosen by the seed among all the
    /// acknowledged ones (all of them if fewer).
    pub sample: usize,
}

impl fmt::Debug for Verify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verify")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("tenant", &self.tenant)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("sample", &self.sample)
            .finish()
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// corral answered with this HTTP status.
    Status(u16),
    /// No answer: the connection failed or was reset.
    Transport,
}

impl Outcome {
    /// Whether a client retries after this: `429`, any `5xx` and transport
    /// errors, as tus-js-client does by default (it retries everything but
    /// a `4xx` other than `409`, `423` and `429`).
    pub fn is_retried(self) -> bool {
        matches!(self, Self::Status(429 | 500..=599) | Self::Transport)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(status) => write!(f, "{status}"),
            Self::Transport => f.write_str("transport"),
        }
    }
}

/// What a herd did and what it found.
///
/// Outcome maps are keyed by the status (`"201"`, `"429"`) or
/// `"transport"`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The corral the herd ran against.
    pub url: String,
    /// Users in the herd.
    pub users: usize,
    /// Users that reached a final outcome.
    pub users_finished: usize,
    /// Users still uploading or waiting when the deadline stopped the herd.
    pub users_unfinished: usize,
    /// Whether the deadline stopped the herd.
    pub deadline_reached: bool,
    /// Files in each batch.
    pub files_per_user: usize,
    /// Bytes of each file.
    pub file_size: u64,
    /// Files the users set out to upload: users x files.
    pub files_attempted: u64,
    /// Files acknowledged by a `201`.
    pub files_stored: u64,
    /// Acknowledged files whose size and SHA-256 in the answer match what
    /// was sent.
    pub files_verified: u64,
    /// Files of a `201` batch that were missing from the answer or whose
    /// size or SHA-256 differ from what was sent.
    pub files_failed_verification: u64,
    /// The first of those failures, described.
    pub failures: Vec<String>,
    /// Bytes acknowledged, as the answers give them.
    pub bytes_stored: u64,
    /// How every attempt ended.
    pub attempt_outcomes: BTreeMap<String, u64>,
    /// How every finished user's last attempt ended.
    pub final_outcomes: BTreeMap<String, u64>,
    /// The first error answer of each outcome other than `201`, cut short.
    pub error_examples: BTreeMap<String, String>,
    /// Attempts made, first attempts included.
    pub attempts: u64,
    /// Attempts after a user's first.
    pub retries: u64,
    /// Seconds from the herd's start to its last final outcome (or the
    /// deadline).
    pub duration_s: f64,
    /// Files acknowledged per second.
    pub files_per_s: f64,
    /// Megabytes (10^6 bytes) acknowledged per second.
    pub mb_per_s: f64,
    /// Whole batches: first attempt's start to final outcome, waits
    /// included.
    pub batch_latency: Latency,
    /// Single attempts: request sent to answer read.
    pub attempt_latency: Latency,
    /// The highest `corral_process_resident_memory_bytes` seen.
    pub peak_rss_bytes: Option<u64>,
    /// The highest `corral_tokio_alive_tasks` seen.
    pub peak_tasks: Option<u64>,
    /// Scrapes of `/metrics` that were read.
    pub metrics_scrapes: u64,
    /// Scrapes of `/metrics` that failed.
    pub metrics_errors: u64,
    /// The read-back from S3, if asked for.
    pub s3: Option<S3Check>,
    /// The front's `/stats`, verbatim, if a front was given and answered.
    pub front: Option<serde_json::Value>,
    /// Why the front's `/stats` could not be read.
    pub front_error: Option<String>,
}

impl Report {
    /// Whether any file corral acknowledged failed a check: a wrong size or
    /// SHA-256 in its answer, or a wrong or missing object in S3.
    pub fn verification_failed(&self) -> bool {
        self.files_failed_verification > 0 || self.s3.as_ref().is_some_and(|s3| s3.failed > 0)
    }
}

/// Latency percentiles (nearest rank), in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let rank = |p: f64| {
            let index = ((p * samples.len() as f64).ceil() as usize).saturating_sub(1);
            samples
                .get(index.min(samples.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Self {
            count: samples.len(),
            p50_ms: rank(0.50),
            p95_ms: rank(0.95),
            p99_ms: rank(0.99),
            max_ms: rank(1.0),
        }
    }
}

/// What reading a sample of the stored objects back from S3 found.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct S3Check {
    /// Objects chosen to be read.
    pub sampled: usize,
    /// Objects whose size and SHA-256 match what was sent.
    pub verified: usize,
    /// Objects missing, unreadable or different from what was sent.
    pub failed: usize,
    /// Objects not read in time.
    pub unchecked: usize,
    /// The first failures, described.
    pub failures: Vec<String>,
}

/// Runs the herd described by `config` and reports what happened.
///
/// # Errors
///
/// [`Error::Config`] for a configuration that cannot describe a herd,
/// [`Error::Client`] or [`Error::S3`] if a client cannot be built. Failures
/// of the herd itself (refusals, resets, bad answers, unreachable corral)
/// are not errors: they are counted in the report.
///
/// # Panics
///
/// If a user's task panics, which is a bug in this module.
pub async fn run(config: &HerdConfig) -> Result<Report> {
    config.check()?;
    let base = config.url.trim_end_matches('/');
    let client = Client::builder()
        .no_proxy()
        .redirect(redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(Error::Client)?;
    // Built before the herd, so a bad S3 setting fails at once.
    let s3 = config
        .verify
        .as_ref()
        .map(|verify| s3_store(verify).map(|store| (store, verify)))
        .transpose()?;

    let uploader = Arc::new(Uploader {
        client: client.clone(),
        upload_url: format!("{base}/api/files"),
        seed: config.seed,
        files: config.files,
        size: config.size,
        max_attempts: config.max_attempts,
        max_wait: config.max_wait,
    });
    // Filled before the clock starts, or by the first attempt that
    // generates each file whole.
    let digests: Vec<Vec<_>> = (0..config.users)
        .map(|user| {
            (0..config.files)
                .map(|file| match config.digests_first {
                    true => OnceLock::from(content_digest(config.seed, user, file, config.size)),
                    false => OnceLock::new(),
                })
                .map(Arc::new)
                .collect()
        })
        .collect();
    let progress = progress_bar(config);

    // The poller stops when `stop` is sent or dropped.
    let (stop, stopped) = oneshot::channel();
    let poller = tokio::spawn(poll_metrics(
        client.clone(),
        format!("{base}/metrics"),
        config.metrics_interval,
        stopped,
    ));

    let started = Instant::now();
    let deadline = tokio::time::sleep_until(started + config.deadline);
    tokio::pin!(deadline);
    let (events, mut received) = mpsc::unbounded_channel();
    // The set owns every user: dropping or aborting it stops them all.
    let mut users = JoinSet::new();
    for (user, digests) in digests.into_iter().enumerate() {
        users.spawn(Arc::clone(&uploader).user(user, digests, events.clone()));
    }
    drop(events);

    let mut tally = Tally::default();
    let deadline_reached = loop {
        tokio::select! {
            event = received.recv() => match event {
                Some(event) => {
                    tally.record(event);
                    tally.show(&progress);
                }
                // Every user has finished and dropped its sender.
                None => break false,
            },
            () = &mut deadline => break true,
        }
    };
    let duration = started.elapsed();
    users.abort_all();
    while let Some(joined) = users.join_next().await {
        if let Err(error) = joined
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }
    // Outcomes reached between the deadline and the abort still count.
    while let Ok(event) = received.try_recv() {
        tally.record(event);
    }
    progress.finish_and_clear();

    let _ = stop.send(());
    let peaks = match poller.await {
        Ok(peaks) => peaks,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Peaks::default(),
    };

    let s3 = match s3 {
        Some((store, verify)) => {
            Some(check_in_s3(store.as_ref(), verify, &mut tally.stored, config.seed).await)
        }
        None => None,
    };
    let (front, front_error) = match &config.front {
        Some(front) => match front_stats(&client, front).await {
            Ok(stats) => (Some(stats), None),
            Err(error) => (None, Some(error)),
        },
        None => (None, None),
    };

    Ok(tally.report(
        config,
        deadline_reached,
        duration,
        peaks,
        s3,
        front,
        front_error,
    ))
}

/// What every user shares.
#[derive(Debug)]
struct Uploader {
    client: Client,
    upload_url: String,
    seed: u64,
    files: usize,
    size: u64,
    max_attempts: u32,
    max_wait: Duration,
}

/// What a user tells the herd, as it happens.
#[derive(Debug)]
enum Event {
    Attempt {
        /// 1 for a user's first attempt.
        number: u32,
        outcome: Outcome,
        latency: Duration,
        /// An error answer's body or the transport error, for the report.
        detail: Option<String>,
    },
    Finished {
        outcome: Outcome,
        latency: Duration,
        checked: Checked,
    },
}

/// One attempt's answer.
#[derive(Debug)]
struct Answer {
    outcome: Outcome,
    retry_after: Option<Duration>,
    body: Vec<u8>,
    detail: Option<String>,
}

/// A `201` batch checked against what was sent.
#[derive(Debug, Default)]
struct Checked {
    stored: u64,
    bytes: u64,
    verified: u64,
    failed: u64,
    failures: Vec<String>,
    keys: Vec<StoredKey>,
}

/// An acknowledged file, with what was sent for it.
#[derive(Debug, Clone)]
struct StoredKey {
    user: usize,
    file: usize,
    key: String,
    size: u64,
    sha256: [u8; 32],
}

/// The body of a `201`.
#[derive(Debug, Deserialize)]
struct BatchAnswer {
    files: Vec<StoredFile>,
}

#[derive(Debug, Deserialize)]
struct StoredFile {
    key: String,
    name: String,
    size: u64,
    sha256: String,
}

impl Uploader {
    /// One user: attempts until a final outcome or `max_attempts`, then
    /// checks a `201`. Cancel safe: aborting it only stops its requests.
    async fn user(
        self: Arc<Self>,
        user: usize,
        digests: Vec<Arc<OnceLock<[u8; 32]>>>,
        events: mpsc::UnboundedSender<Event>,
    ) {
        let mut jitter = fastrand::Rng::with_seed(mix(self.seed, user as u64, u64::MAX));
        let started = Instant::now();
        let mut number = 0;
        let answer = loop {
            number += 1;
            let attempt_started = Instant::now();
            let mut answer = self.attempt(user, &digests).await;
            let _ = events.send(Event::Attempt {
                number,
                outcome: answer.outcome,
                latency: attempt_started.elapsed(),
                detail: answer.detail.take(),
            });
            if !answer.outcome.is_retried() || number >= self.max_attempts {
                break answer;
            }
            let wait = retry_delay(answer.retry_after, number, self.max_wait, &mut jitter);
            tokio::time::sleep(wait).await;
        };
        let latency = started.elapsed();
        let checked = if answer.outcome == Outcome::Status(201) {
            self.check(user, &answer.body, &digests)
        } else {
            Checked::default()
        };
        let _ = events.send(Event::Finished {
            outcome: answer.outcome,
            latency,
            checked,
        });
    }

    /// Sends the user's batch once, its content generated as it is sent.
    async fn attempt(&self, user: usize, digests: &[Arc<OnceLock<[u8; 32]>>]) -> Answer {
        let mut form = Form::new();
        for (file, digest) in digests.iter().enumerate() {
            let content = Content::new(self.seed, user, file, self.size, Arc::clone(digest));
            let body = Body::wrap_stream(futures::stream::iter(content));
            let part = Part::stream_with_length(body, self.size).file_name(file_name(user, file));
            form = form.part("file", part);
        }
        let response = match self
            .client
            .post(&self.upload_url)
            .multipart(form)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) => return Answer::transport(&error),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        match response.bytes().await {
            Ok(body) => {
                let detail = (status != 201).then(|| excerpt(&String::from_utf8_lossy(&body)));
                Answer {
                    outcome: Outcome::Status(status),
                    retry_after,
                    body: body.to_vec(),
                    detail,
                }
            }
            // A 201 whose body is lost cannot be checked: as good as no answer.
            Err(error) if status == 201 => Answer::transport(&error),
            Err(error) => Answer {
                outcome: Outcome::Status(status),
                retry_after,
                body: Vec::new(),
                detail: Some(excerpt(&chain(&error))),
            },
        }
    }

    /// Checks a `201` answer against what was sent.
    fn check(&self, user: usize, body: &[u8], digests: &[Arc<OnceLock<[u8; 32]>>]) -> Checked {
        let mut checked = Checked::default();
        let answer: BatchAnswer = match serde_json::from_slice(body) {
            Ok(answer) => answer,
            Err(error) => {
                checked.failed = self.files as u64;
                checked.failures.push(format!(
                    "user {user}: the 201 answer is not the expected JSON ({error}): {}",
                    excerpt(&String::from_utf8_lossy(body))
                ));
                return checked;
            }
        };
        for (file, digest) in digests.iter().enumerate() {
            let name = file_name(user, file);
            // Set by the attempt that sent the file whole, which a 201
            // implies; computed again only if the body was cut oddly.
            let sha256 = *digest.get_or_init(|| content_digest(self.seed, user, file, self.size));
            let Some(stored) = answer.files.iter().find(|stored| stored.name == name) else {
                checked.failed += 1;
                checked
                    .failures
                    .push(format!("{name}: missing from the 201 answer"));
                continue;
            };
            checked.stored += 1;
            checked.bytes += stored.size;
            let sent = hex::encode(sha256);
            if stored.size == self.size && stored.sha256.eq_ignore_ascii_case(&sent) {
                checked.verified += 1;
                checked.keys.push(StoredKey {
                    user,
                    file,
                    key: stored.key.clone(),
                    size: self.size,
                    sha256,
                });
            } else {
                checked.failed += 1;
                checked.failures.push(format!(
                    "{name} ({}): answered size {} sha256 {}, sent size {} sha256 {sent}",
                    stored.key, stored.size, stored.sha256, self.size
                ));
            }
        }
        checked
    }
}

impl Answer {
    fn transport(error: &reqwest::Error) -> Self {
        Self {
            outcome: Outcome::Transport,
            retry_after: None,
            body: Vec::new(),
            detail: Some(excerpt(&chain(error))),
        }
    }
}

/// How long to wait before attempt `attempt + 1`: the server's
/// `Retry-After` capped at `max_wait`, plus up to a tenth of it (at least
/// [`MIN_JITTER`]) of jitter; without one, full jitter over an exponential
/// ceiling that starts at [`BACKOFF_BASE`] and stops at `max_wait`.
fn retry_delay(
    retry_after: Option<Duration>,
    attempt: u32,
    max_wait: Duration,
    rng: &mut fastrand::Rng,
) -> Duration {
    match retry_after {
        Some(after) => {
            let after = after.min(max_wait);
            after + (after / 10).max(MIN_JITTER).mul_f64(rng.f64())
        }
        None => {
            let doublings = attempt.saturating_sub(1).min(20);
            let ceiling = BACKOFF_BASE.saturating_mul(1 << doublings).min(max_wait);
            ceiling.mul_f64(rng.f64())
        }
    }
}

/// `Retry-After` in seconds (an HTTP date is not understood: the backoff
/// applies).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(1e9)))
}

fn file_name(user: usize, file: usize) -> String {
    format!("u{user}-f{file}.bin")
}

/// The content of one file: pseudo-random bytes from `(seed, user, file)`,
/// generated [`CHUNK`] bytes at a time. The first generation of a file
/// that runs to its end records its SHA-256 in `digest`.
#[derive(Debug)]
struct Content {
    rng: fastrand::Rng,
    left: u64,
    /// `None` once the digest is known.
    hasher: Option<Sha256>,
    digest: Arc<OnceLock<[u8; 32]>>,
}

impl Content {
    fn new(
        seed: u64,
        user: usize,
        file: usize,
        size: u64,
        digest: Arc<OnceLock<[u8; 32]>>,
    ) -> Self {
        let mut content = Self {
            rng: fastrand::Rng::with_seed(mix(seed, user as u64, file as u64)),
            left: size,
            hasher: digest.get().is_none().then(Sha256::new),
            digest,
        };
        if size == 0 {
            content.finish();
        }
        content
    }

    fn finish(&mut self) {
        if let Some(hasher) = self.hasher.take() {
            let _ = self.digest.set(hasher.finalize().into());
        }
    }
}

impl Iterator for Content {
    type Item = Result<Vec<u8>, Infallible>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let len = self.left.min(CHUNK as u64) as usize;
        let mut chunk = vec![0; len];
        self.rng.fill(&mut chunk);
        self.left -= len as u64;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&chunk);
        }
        // At the last byte, not at the end of the stream: a body of known
        // length may never be polled past its last byte.
        if self.left == 0 {
            self.finish();
        }
        Some(Ok(chunk))
    }
}

/// The SHA-256 of a file's content, by one pass of its generator.
fn content_digest(seed: u64, user: usize, file: usize, size: u64) -> [u8; 32] {
    let digest = Arc::new(OnceLock::new());
    Content::new(seed, user, file, size, Arc::clone(&digest)).for_each(drop);
    *digest
        .get()
        .expect("a generator run to its end records its digest")
}

/// One seed from three numbers (splitmix64 steps), so neighbouring users and
/// files get unrelated streams.
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    splitmix(splitmix(splitmix(seed) ^ a) ^ b)
}

fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_DETAIL) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Everything the herd's events add up to.
#[derive(Debug, Default)]
struct Tally {
    attempt_outcomes: BTreeMap<Outcome, u64>,
    final_outcomes: BTreeMap<Outcome, u64>,
    error_examples: BTreeMap<Outcome, String>,
    attempt_latencies: Vec<Duration>,
    batch_latencies: Vec<Duration>,
    attempts: u64,
    retries: u64,
    finished: usize,
    files_stored: u64,
    files_verified: u64,
    files_failed: u64,
    bytes_stored: u64,
    failures: Vec<String>,
    stored: Vec<StoredKey>,
}

impl Tally {
    fn record(&mut self, event: Event) {
        match event {
            Event::Attempt {
                number,
                outcome,
                latency,
                detail,
            } => {
                self.attempts += 1;
                self.retries += u64::from(number > 1);
                *self.attempt_outcomes.entry(outcome).or_default() += 1;
                self.attempt_latencies.push(latency);
                if let Some(detail) = detail {
                    self.error_examples.entry(outcome).or_insert(detail);
                }
            }
            Event::Finished {
                outcome,
                latency,
                checked,
            } => {
                self.finished += 1;
                *self.final_outcomes.entry(outcome).or_default() += 1;
                self.batch_latencies.push(latency);
                self.files_stored += checked.stored;
                self.files_verified += checked.verified;
                self.files_failed += checked.failed;
                self.bytes_stored += checked.bytes;
                let room = MAX_LISTED.saturating_sub(self.failures.len());
                self.failures
                    .extend(checked.failures.into_iter().take(room));
                self.stored.extend(checked.keys);
            }
        }
    }

    fn show(&self, progress: &ProgressBar) {
        if progress.is_hidden() {
            return;
        }
        progress.set_position(self.finished as u64);
        progress.set_message(format!(
            "{} files stored, {} retries",
            self.files_stored, self.retries
        ));
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        self,
        config: &HerdConfig,
        deadline_reached: bool,
        duration: Duration,
        peaks: Peaks,
        s3: Option<S3Check>,
        front: Option<serde_json::Value>,
        front_error: Option<String>,
    ) -> Report {
        let seconds = duration.as_secs_f64();
        let per_second = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
        let by_name = |map: BTreeMap<Outcome, u64>| {
            map.into_iter()
                .map(|(outcome, n)| (outcome.to_string(), n))
                .collect()
        };
        Report {
            url: config.url.clone(),
            users: config.users,
            users_finished: self.finished,
            users_unfinished: config.users - self.finished,
            deadline_reached,
            files_per_user: config.files,
            file_size: config.size,
            files_attempted: (config.users * config.files) as u64,
            files_stored: self.files_stored,
            files_verified: self.files_verified,
            files_failed_verification: self.files_failed,
            failures: self.failures,
            bytes_stored: self.bytes_stored,
            attempt_outcomes: by_name(self.attempt_outcomes),
            final_outcomes: by_name(self.final_outcomes),
            error_examples: self
                .error_examples
                .into_iter()
                .map(|(outcome, example)| (outcome.to_string(), example))
                .collect(),
            attempts: self.attempts,
            retries: self.retries,
            duration_s: seconds,
            files_per_s: per_second(self.files_stored as f64),
            mb_per_s: per_second(self.bytes_stored as f64 / 1e6),
            batch_latency: Latency::of(self.batch_latencies),
            attempt_latency: Latency::of(self.attempt_latencies),
            peak_rss_bytes: peaks.rss,
            peak_tasks: peaks.tasks,
            metrics_scrapes: peaks.scrapes,
            metrics_errors: peaks.errors,
            s3,
            front,
            front_error,
        }
    }
}

fn progress_bar(config: &HerdConfig) -> ProgressBar {
    if !config.progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {pos}/{len} users done  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::new(config.users as u64).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The peaks of corral's gauges over the herd.
#[derive(Debug, Default)]
struct Peaks {
    rss: Option<u64>,
    tasks: Option<u64>,
    scrapes: u64,
    errors: u64,
}

impl Peaks {
    async fn scrape(&mut self, client: &Client, url: &str) {
        let text = async {
            client
                .get(url)
                .timeout(SCRAPE_TIMEOUT)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await
        };
        match text.await {
            Ok(text) => {
                self.scrapes += 1;
                let peak = |peak: Option<u64>, name| match (peak, gauge(&text, name)) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                self.rss = peak(self.rss, "corral_process_resident_memory_bytes");
                self.tasks = peak(self.tasks, "corral_tokio_alive_tasks");
            }
            Err(_) => self.errors += 1,
        }
    }
}

/// Scrapes `url` every `every` until `stop` fires (or its sender is
/// dropped), then once more.
async fn poll_metrics(
    client: Client,
    url: String,
    every: Duration,
    mut stop: oneshot::Receiver<()>,
) -> Peaks {
    let mut peaks = Peaks::default();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = ticks.tick() => peaks.scrape(&client, &url).await,
        }
    }
    peaks.scrape(&client, &url).await;
    peaks
}

/// The value of the unlabelled sample `name` in Prometheus text.
fn gauge(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            if fields.next()? != name {
                return None;
            }
            let value: f64 = fields.next()?.parse().ok()?;
            (value.is_finite() && value >= 0.0).then_some(value as u64)
        })
}

async fn front_stats(client: &Client, front: &str) -> Result<serde_json::Value, String> {
    let url = format!("{}/stats", front.trim_end_matches('/'));
    let body = async {
        client
            .get(&url)
            .timeout(SCRAPE_TIMEOUT)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await
    };
    let body = body
        .await
        .map_err(|error| format!("GET {url}: {}", chain(&error)))?;
    serde_json::from_slice(&body).map_err(|error| format!("GET {url}: not JSON: {error}"))
}

fn s3_store(verify: &Verify) -> Result<Arc<dyn ObjectStore>> {
    let store = AmazonS3Builder::new()
        .with_endpoint(&verify.endpoint)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_bucket_name(&verify.bucket)
        .with_region(&verify.region)
        .with_access_key_id(&verify.access_key_id)
        .with_secret_access_key(&verify.secret_access_key)
        .with_retry(RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            ..RetryConfig::default()
        })
        .build()
        .map_err(Error::S3)?;
    Ok(Arc::new(store))
}

/// Reads back a sample of `stored`, chosen by `seed`, and compares each
/// object with what was sent.
async fn check_in_s3(
    store: &dyn ObjectStore,
    verify: &Verify,
    stored: &mut [StoredKey],
    seed: u64,
) -> S3Check {
    // The same seed picks the same files, whatever order users finished in.
    stored.sort_unstable_by_key(|stored| (stored.user, stored.file));
    fastrand::Rng::with_seed(seed).shuffle(stored);
    let sample = &stored[..verify.sample.min(stored.len())];
    let mut check = S3Check {
        sampled: sample.len(),
        ..S3Check::default()
    };
    let reads = futures::stream::iter(sample)
        .map(|stored| async move {
            let path = object_path(verify, &stored.key);
            let read = read_object(store, &path).await;
            (stored, path, read)
        })
        .buffer_unordered(VERIFY_CONCURRENCY);
    let all = async {
        tokio::pin!(reads);
        while let Some((stored, path, read)) = reads.next().await {
            let failure = match read {
                Ok((size, sha256)) if size == stored.size && sha256 == stored.sha256 => None,
                Ok((size, sha256)) => Some(format!(
                    "{path}: size {size} sha256 {}, sent size {} sha256 {}",
                    hex::encode(sha256),
                    stored.size,
                    hex::encode(stored.sha256)
                )),
                Err(error) => Some(format!("{path}: {}", chain(&error))),
            };
            match failure {
                None => check.verified += 1,
                Some(failure) => {
                    check.failed += 1;
                    if check.failures.len() < MAX_LISTED {
                        check.failures.push(failure);
                    }
                }
            }
        }
    };
    if tokio::time::timeout(AFTER_TIMEOUT, all).await.is_err() {
        check.unchecked = check.sampled - check.verified - check.failed;
    }
    check
}

/// Where corral keeps the file it answered `key` for.
fn object_path(verify: &Verify, key: &str) -> Path {
    let parts = [verify.prefix.as_str(), verify.tenant.as_str(), key];
    let joined: Vec<&str> = parts
        .iter()
        .map(|part| part.trim_matches('/'))
        .filter(|part| !part.is_empty())
        .collect();
    Path::from(joined.join("/"))
}

async fn read_object(
    store: &dyn ObjectStore,
    path: &Path,
) -> Result<(u64, [u8; 32]), object_store::Error> {
    let mut stream = store.get(path).await?.into_stream();
    let mut hasher = Sha256::new();
    let mut size = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((size, hasher.finalize().into()))
}

impl fmt::Display for Report {
    /// A table for people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcomes = |map: &BTreeMap<String, u64>| {
            if map.is_empty() {
                return "none".to_owned();
            }
            map.iter()
                .map(|(outcome, n)| format!("{outcome}: {n}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let latency = |l: &Latency| {
            format!(
                "p50 {}  p95 {}  p99 {}  max {}  ({} samples)",
                millis(l.p50_ms),
                millis(l.p95_ms),
                millis(l.p99_ms),
                millis(l.max_ms),
                l.count
            )
        };
        writeln!(
            f,
            "herd of {} users x {} files x {} against {}",
            self.users,
            self.files_per_user,
            bytes(self.file_size),
            self.url
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, value: String| {
            writeln!(f, "  {name:<18}{value}")
        };
        let unfinished = if self.deadline_reached {
            format!("{} unfinished (deadline reached)", self.users_unfinished)
        } else {
            format!("{} unfinished", self.users_unfinished)
        };
        row(
            f,
            "users",
            format!("{} finished, {unfinished}", self.users_finished),
        )?;
        row(
            f,
            "files",
            format!(
                "{} attempted, {} stored, {} verified, {} failed verification",
                self.files_attempted,
                self.files_stored,
                self.files_verified,
                self.files_failed_verification
            ),
        )?;
        row(
            f,
            "requests",
            format!("{} attempts, {} retries", self.attempts, self.retries),
        )?;
        row(f, "attempt outcomes", outcomes(&self.attempt_outcomes))?;
        row(f, "final outcomes", outcomes(&self.final_outcomes))?;
        row(f, "duration", format!("{:.2} s", self.duration_s))?;
        row(
            f,
            "throughput",
            format!(
                "{:.1} files/s  {:.2} MB/s  ({} stored)",
                self.files_per_s,
                self.mb_per_s,
                bytes(self.bytes_stored)
            ),
        )?;
        row(f, "batch latency", latency(&self.batch_latency))?;
        row(f, "attempt latency", latency(&self.attempt_latency))?;
        let or_unknown = |value: Option<String>| value.unwrap_or_else(|| "unknown".to_owned());
        row(f, "peak RSS", or_unknown(self.peak_rss_bytes.map(bytes)))?;
        row(
            f,
            "peak tasks",
            or_unknown(self.peak_tasks.map(|n| n.to_string())),
        )?;
        row(
            f,
            "metrics scrapes",
            format!(
                "{} read, {} failed",
                self.metrics_scrapes, self.metrics_errors
            ),
        )?;
        if let Some(s3) = &self.s3 {
            row(
                f,
                "S3 read-back",
                format!(
                    "{} sampled: {} verified, {} failed, {} unchecked",
                    s3.sampled, s3.verified, s3.failed, s3.unchecked
                ),
            )?;
            for failure in &s3.failures {
                writeln!(f, "    {failure}")?;
            }
        }
        if let Some(front) = &self.front {
            row(f, "front", front.to_string())?;
        }
        if let Some(error) = &self.front_error {
            row(f, "front", format!("unavailable: {error}"))?;
        }
        if !self.error_examples.is_empty() {
            writeln!(f, "  first error answers")?;
            for (outcome, example) in &self.error_examples {
                writeln!(f, "    {outcome}: {example}")?;
            }
        }
        if !self.failures.is_empty() {
            writeln!(f, "  verification failures")?;
            for failure in &self.failures {
                writeln!(f, "    {failure}")?;
            }
        }
        Ok(())
    }
}

fn millis(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    match UNITS.iter().find(|(_, scale)| n >= *scale) {
        Some((unit, scale)) if n.is_multiple_of(*scale) => format!("{} {unit}", n / scale),
        Some((unit, scale)) => format!("{:.1} {unit}", n as f64 / *scale as f64),
        None => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_chunked_and_hashed_as_generated() {
        let size = 3 * CHUNK as u64 + 17;
        let digest = Arc::new(OnceLock::new());
        let chunks: Vec<Vec<u8>> = Content::new(7, 3, 2, size, Arc::clone(&digest))
            .map(|chunk| chunk.unwrap())
            .collect();
        let lengths: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(lengths, [CHUNK, CHUNK, CHUNK, 17]);
        let whole = chunks.concat();
        let expected: [u8; 32] = Sha256::digest(&whole).into();
        assert_eq!(digest.get(), Some(&expected));
        assert_eq!(content_digest(7, 3, 2, size), expected);

        // The same triple gives the same bytes; another file does not.
        let again: Vec<u8> = Content::new(7, 3, 2, size, Arc::new(OnceLock::new()))
            .flat_map(Result::unwrap)
            .collect();
        assert_eq!(again, whole);
        assert_ne!(content_digest(7, 3, 1, size), expected);
        assert_ne!(content_digest(7, 2, 2, size), expected);

        let empty: [u8; 32] = Sha256::digest(b"").into();
        assert_eq!(content_digest(1, 0, 0, 0), empty);
    }

    #[test]
    fn waits_honour_retry_after_capped_with_some_jitter() {
        let mut rng = fastrand::Rng::with_seed(1);
        let max = Duration::from_secs(30);
        for _ in 0..1000 {
            let wait = retry_delay(Some(Duration::from_secs(1)), 1, max, &mut rng);
            assert!(wait >= Duration::from_secs(1), "{wait:?}");
            assert!(wait <= Duration::from_millis(1100), "{wait:?}");
            let wait = retry_delay(Some(Duration::from_secs(100)), 1, max, &mut rng);
            assert!(wait >= max && wait <= max + max / 10, "{wait:?}");
        }
    }

    #[test]
    fn without_retry_after_the_backoff_is_full_jitter_under_a_doubling_ceiling() {
        let mut rng = fastrand::Rng::with_seed(2);
        let max = Duration::from_secs(30);
        for (attempt, ceiling) in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (40, 30)] {
            let waits: Vec<Duration> = (0..500)
                .map(|_| retry_delay(None, attempt, max, &mut rng))
                .collect();
            let ceiling = Duration::from_secs(ceiling);
            assert!(
                waits.iter().all(|wait| *wait <= ceiling),
                "attempt {attempt}"
            );
            // Spread over the whole range, not bunched at the ceiling.
            assert!(
                waits.iter().any(|wait| *wait < ceiling / 4),
                "attempt {attempt}"
            );
            assert!(
                waits.iter().any(|wait| *wait > ceiling * 3 / 4),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn parses_retry_after_seconds_only() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 2.5 "),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn reads_unlabelled_gauges_from_prometheus_text() {
        let text = "# HELP corral_tokio_alive_tasks live tasks\n\
                    # TYPE corral_tokio_alive_tasks gauge\n\
                    corral_tokio_alive_tasks 42\n\
                    corral_process_resident_memory_bytes 1.2345e7\n\
                    corral_sched_limit +Inf\n";
        assert_eq!(gauge(text, "corral_tokio_alive_tasks"), Some(42));
        assert_eq!(
            gauge(text, "corral_process_resident_memory_bytes"),
            Some(12_345_000)
        );
        assert_eq!(gauge(text, "corral_sched_limit"), None);
        assert_eq!(gauge(text, "corral_tokio"), None);
    }

    #[test]
    fn latency_percentiles_are_nearest_rank() {
        let samples = (1..=100).map(Duration::from_millis).collect();
        let latency = Latency::of(samples);
        assert_eq!(latency.count, 100);
        assert_eq!(latency.p50_ms, 50.0);
        assert_eq!(latency.p95_ms, 95.0);
        assert_eq!(latency.p99_ms, 99.0);
        assert_eq!(latency.max_ms, 100.0);
        assert_eq!(Latency::of(Vec::new()), Latency::default());
    }

    #[test]
    fn objects_live_under_prefix_and_tenant() {
        let mut verify = Verify {
            endpoint: "http://127.0.0.1:1".to_owned(),
            bucket: "b".to_owned(),
            prefix: "/pfx/".to_owned(),
            tenant: "anonymous".to_owned(),
            region: "us-east-1".to_owned(),
            access_key_id: "id".to_owned(),
            secret_access_key: "secret".to_owned(),
            sample: 1,
        };
        assert_eq!(
            object_path(&verify, "2026-01-01/x/u0-f0.bin").as_ref(),
            "pfx/anonymous/2026-01-01/x/u0-f0.bin"
        );
        verify.prefix.clear();
        assert_eq!(
            object_path(&verify, "d/x/a.bin").as_ref(),
            "anonymous/d/x/a.bin"
        );
        assert!(!format!("{verify:?}").contains("secret\""));
    }

    #[test]
    fn a_config_that_cannot_describe_a_herd_is_refused() {
        let good = HerdConfig::default();
        assert!(good.check().is_ok());
        for bad in [
            HerdConfig {
                url: "ftp://x".to_owned(),
                ..HerdConfig::default()
            },
            HerdConfig {
                files: 0,
                ..HerdConfig::default()
            },
            HerdConfig {
                max_attempts: 0,
                ..HerdConfig::default()
            },
            HerdConfig {
                metrics_interval: Duration::ZERO,
                ..HerdConfig::default()
            },
        ] {
            assert!(matches!(bad.check(), Err(Error::Config(_))), "{bad:?}");
        }
    }
}
