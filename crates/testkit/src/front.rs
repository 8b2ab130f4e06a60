//! A throttling S3 front: an HTTP/1.1 reverse proxy between an S3 client and
//! a real S3 server that models a cloud backend's limits.
//!
//! moto and s3s-fs answer every request at once, as fast as the machine
//! allows, and never say no. A cloud backend has a finite number of requests
//! it serves at once, a request rate per prefix, a round-trip time, a
//! bandwidth, and it fails now and then. [`Front`] puts those limits back
//! between corral and the local server, so tests and benchmarks can see how
//! the scheduler behaves against them, while the objects really are stored.
//!
//! # What it does to a request
//!
//! Each request is first *admitted* or not:
//!
//! - at most [`FrontConfig::slots`] requests are served at once (`None`:
//!   unlimited). The count can change over time with a [`Schedule`], e.g.
//!   `"0s:16,60s:8"`;
//! - and/or a token bucket refills [`FrontConfig::rps`] tokens a second, up
//!   to [`FrontConfig::burst`] (by default `max(1, rps / 10)`), and each
//!   request takes one.
//!
//! A request that finds no free slot or no token is answered **at once**
//! with `503 SlowDown`, S3's own XML error. It is never queued: S3 does not
//! queue either, it tells the client to back off, and the point of the front
//! is to see whether the client does. A queue here would hide exactly the
//! behaviour under test (retries, backoff, concurrency limits) behind a
//! latency that no real backend has.
//!
//! An admitted request holds its slot until its response body has been sent
//! (or the client went away): first the [`FrontConfig::latency`], spread by
//! `± jitter` (a fraction, uniform), then the upstream's own time, then the
//! download. Request bodies share one [`FrontConfig::bandwidth`] cap, in
//! bytes a second, across all requests.
//!
//! # Faults
//!
//! [`Faults`] gives, for each admitted request, the probability of:
//!
//! - `error_500`, `error_503`: an immediate `500 InternalError` or
//!   `503 SlowDown`; the request is not forwarded;
//! - `stall`: the request is held for `stall_for`, holding its slot, before
//!   being served — a slow request that also occupies capacity;
//! - `reset`: the connection is dropped mid-request. A request with a body
//!   has about half its body read, is never forwarded and the connection is
//!   dropped; a request without one is forwarded and its response cut after
//!   about half its body (or before the head, when it has no body).
//!
//! - `delete_503`: a `503 SlowDown` for a delete (`DELETE` of an object or
//!   a multipart upload, or the `POST ?delete` of `DeleteObjects`, which
//!   `object_store` sends for every delete), rolled on top of the others:
//!   for tests of cleanups that meet a throttle;
//!
//! - `deny_path`: every request whose path contains the text is refused
//!   with `403 AccessDenied` (not a probability: a permanent error at a
//!   chosen key).
//!
//! The dice come from a [`fastrand::Rng`] seeded with [`FrontConfig::seed`],
//! rolled the same number of times for every admitted request, so a client
//! that sends its requests one at a time sees the same faults on every run.
//!
//! # Bodies that are not read
//!
//! A request answered without being forwarded (throttled, an injected error,
//! `/stats`) may still be sending its body. The answer goes out at once with
//! `Connection: close`, and the rest of the body is read and discarded
//! (up to 64 MiB, for up to 10 s) before the connection closes, so that a
//! client that writes its whole body before reading sees the `503` rather
//! than a broken pipe or a reset.
//!
//! # What it counts
//!
//! [`Front::stats`] returns [`Stats`]; `GET /stats` on the front's own
//! listener returns the same as JSON. Requests to the path `/stats` are the
//! front's own: they are never forwarded, take no slot and are not counted,
//! so a bucket named `stats` cannot be created, listed or deleted through
//! the front.
//!
//! # Proxying
//!
//! Method, path and query, headers — including the original `Host`, which
//! SigV4-checking servers such as s3s-fs verify — and bodies are forwarded
//! unchanged, streamed both ways without buffering. Hop-by-hop headers
//! (`Connection` and those it names, `Keep-Alive`, `Transfer-Encoding`, …)
//! are dropped and each side frames its own messages, as a proxy should.
//! An upstream that cannot be reached is answered `502`.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use corral_testkit::front::{Front, FrontConfig};
//! use corral_testkit::s3::S3Server;
//!
//! # async fn example() -> std::io::Result<()> {
//! let s3 = S3Server::require();
//! let front = Front::start(FrontConfig {
//!     slots: Some(16),
//!     latency: Duration::from_millis(100),
//!     jitter: 0.1,
//!     schedule: "0s:16,60s:8".parse().expect("a valid schedule"),
//!     ..FrontConfig::new(s3.addr())
//! })
//! .await?;
//! // Point the S3 client at `front.endpoint()` rather than `s3.endpoint()`.
//! println!("{:?}", front.stats());
//! front.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The front's own path; never forwarded.
const STATS_PATH: &str = "/stats";

/// How much of an unanswered request body is read before the connection
/// is closed on the rest (which the client then sees as a reset).
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// How long an unanswered request body is read before the connection is
/// closed on the rest.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// With a reset fault and no length known, how much passes before the cut.
const CUT_UNKNOWN: u64 = 64 * 1024;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

type BoxError = Box<dyn StdError + Send + Sync>;

/// The body of every response the front sends.
type OutBody = UnsyncBoxBody<Bytes, BoxError>;

/// How the front behaves. [`FrontConfig::new`] gives a transparent proxy;
/// set the fields to add limits.
#[derive(Debug, Clone, PartialEq)]
pub struct FrontConfig {
    /// The S3 server to forward to.
    pub upstream: SocketAddr,
    /// How many requests are served at once; `None` for no limit. A
    /// [`Schedule`] step overrides it from its offset on.
    pub slots: Option<usize>,
    /// Requests admitted per second, on average (a token bucket); `None`
    /// for no limit.
    pub rps: Option<f64>,
    /// The token bucket's size, at least 1; `None` for `max(1, rps / 10)`.
    /// Only with `rps`.
    pub burst: Option<f64>,
    /// Added to every admitted request, while it holds its slot.
    pub latency: Duration,
    /// The spread of `latency`, a fraction in `0..=1`: `0.1` is ±10 %.
    pub jitter: f64,
    /// The bytes per second of request bodies, shared by all requests;
    /// `None` for no limit.
    pub bandwidth: Option<u64>,
    /// Injected failures.
    pub faults: Faults,
    /// Slot counts that take effect at offsets from the start.
    pub schedule: Schedule,
    /// Seeds the random numbers for jitter and faults.
    pub seed: u64,
    /// The port to listen on, on 127.0.0.1; 0 for any free one. A front
    /// started again on the port of one that stopped is a backend that
    /// comes back.
    pub port: u16,
}

impl FrontConfig {
    /// A transparent front to `upstream`: no limits, latency or faults.
    pub fn new(upstream: SocketAddr) -> Self {
        Self {
            upstream,
            slots: None,
            rps: None,
            burst: None,
            latency: Duration::ZERO,
            jitter: 0.0,
            bandwidth: None,
            faults: Faults::default(),
            schedule: Schedule::default(),
            port: 0,
            seed: 0,
        }
    }

    fn validate(&self) -> io::Result<()> {
        let fraction = |value: f64| (0.0..=1.0).contains(&value);
        let problem = if self.rps.is_some_and(|rps| !(rps.is_finite() && rps > 0.0)) {
            "rps must be a positive number"
        } else if self.burst.is_some() && self.rps.is_none() {
            "burst needs rps"
        } else if self.burst.is_some_and(|b| !(b.is_finite() && b >= 1.0)) {
            "burst must be at least 1"
        } else if !fraction(self.jitter) {
            "jitter must be within 0..=1"
        } else if self.bandwidth == Some(0) {
            "bandwidth must be positive"
        } else if ![
            self.faults.error_500,
            self.faults.error_503,
            self.faults.reset,
            self.faults.stall,
            self.faults.delete_503,
        ]
        .into_iter()
        .all(fraction)
        {
            "fault probabilities must be within 0..=1"
        } else {
            return Ok(());
        };
        Err(io::Error::new(io::ErrorKind::InvalidInput, problem))
    }
}

/// Probabilities, each in `0..=1`, of injected failures for each admitted
/// request; see the module docs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Of an immediate `500 InternalError`.
    pub error_500: f64,
    /// Of an immediate `503 SlowDown`.
    pub error_503: f64,
    /// Of the connection being dropped mid-body.
    pub reset: f64,
    /// Of the request being held for `stall_for` before being served.
    pub stall: f64,
    /// Of a delete (`DELETE`, or `DeleteObjects`) being answered `503
    /// SlowDown`, besides `error_503`.
    pub delete_503: f64,
    /// How long a stalled request is held.
    pub stall_for: Duration,
    /// Requests whose path contains this text are refused with `403
    /// AccessDenied`, every time: a permanent error at a chosen object,
    /// for tests of what a failure in the middle of a batch leaves behind.
    pub deny_path: Option<String>,
}

/// Slot counts over time: each step `(offset, slots)` sets the number of
/// slots from `offset` after the front started, until the next step.
///
/// Parsed from `"0s:16,60s:8"`: comma-separated `offset:slots` pairs in
/// increasing order of offset, offsets with a unit of `ms`, `s`, `m` or `h`
/// (`500ms`, `1.5s`, `2m`). The empty string is the empty schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Sorted by offset.
    steps: Vec<(Duration, usize)>,
}

impl Schedule {
    /// A schedule of these steps, in any order.
    pub fn new(steps: impl IntoIterator<Item = (Duration, usize)>) -> Self {
        let mut steps: Vec<_> = steps.into_iter().collect();
        steps.sort_by_key(|&(offset, _)| offset);
        Self { steps }
    }

    /// The steps, sorted by offset.
    pub fn steps(&self) -> &[(Duration, usize)] {
        &self.steps
    }

    /// The slots set by the last step at or before `elapsed`; `None` before
    /// the first step.
    pub fn slots_at(&self, elapsed: Duration) -> Option<usize> {
        let after = self.steps.partition_point(|&(offset, _)| offset <= elapsed);
        after.checked_sub(1).map(|last| self.steps[last].1)
    }
}

impl FromStr for Schedule {
    type Err = ParseScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut steps: Vec<(Duration, usize)> = Vec::new();
        for entry in s.split(',') {
            let error = |reason: &'static str| ParseScheduleError {
                entry: entry.trim().to_owned(),
                reason,
            };
            let (offset, slots) = entry
                .split_once(':')
                .ok_or_else(|| error("expected `offset:slots`"))?;
            let offset = parse_duration(offset.trim())
                .ok_or_else(|| error("the offset is not a duration such as 500ms, 2s or 1m"))?;
            let slots = slots
                .trim()
                .parse()
                .map_err(|_| error("the slots are not a whole number"))?;
            if steps.last().is_some_and(|&(last, _)| last >= offset) {
                return Err(error("offsets must increase"));
            }
            steps.push((offset, slots));
        }
        Ok(Self { steps })
    }
}

/// `500ms`, `2s`, `1.5m`, `1h`.
fn parse_duration(s: &str) -> Option<Duration> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// Why a [`Schedule`] did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseScheduleError {
    entry: String,
    reason: &'static str,
}

impl fmt::Display for ParseScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad schedule entry {:?}: {}", self.entry, self.reason)
    }
}

impl StdError for ParseScheduleError {}

/// What the front has seen since it started. Requests to `/stats` are not
/// counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// S3 requests received.
    pub received: u64,
    /// Requests sent upstream.
    pub forwarded: u64,
    /// Requests sent upstream, by S3 operation ([`operation`]): what the
    /// calls a server makes are for.
    pub forwarded_by_operation: BTreeMap<&'static str, u64>,
    /// Requests answered `503 SlowDown` for want of a slot or a token
    /// (injected 503s are counted in `faults`).
    pub throttled: u64,
    /// Injected faults, by kind.
    pub faults: FaultStats,
    /// Requests the upstream failed: not reachable, or its response broke
    /// off.
    pub upstream_errors: u64,
    /// The most requests served at once (holding a slot).
    pub peak_concurrency: usize,
    /// Requests being served now (holding a slot).
    pub in_flight: usize,
    /// Seconds of slot time used by the requests that have ended: over
    /// `slots` x the elapsed time, how busy the backend was kept.
    pub busy_slot_seconds: f64,
    /// The slots in force now; `None` for unlimited.
    pub slots: Option<usize>,
}

/// Injected faults, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FaultStats {
    /// `500 InternalError` answers.
    pub error_500: u64,
    /// Injected `503 SlowDown` answers.
    pub error_503: u64,
    /// Connections dropped mid-body.
    pub reset: u64,
    /// Requests held for `stall_for`.
    pub stall: u64,
    /// Requests refused by `deny_path`.
    pub denied: u64,
    /// Deletes answered `503 SlowDown` by `delete_503`.
    pub delete_503: u64,
}

/// A running front, listening on 127.0.0.1.
///
/// Dropping it stops it: the listener, every connection and every upstream
/// connection end at their next poll. [`Front::shutdown`] also waits for
/// them to have ended.
pub struct Front {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Cancelled on drop; every task the front spawned ends when it is.
    token: CancellationToken,
    /// Every task the front spawned: the accept loop, connections, body
    /// drains and the upstream client's connections.
    tracker: TaskTracker,
}

impl Front {
    /// Binds 127.0.0.1 on a port the OS chooses and starts serving.
    ///
    /// Must be called within a tokio runtime, which the front's tasks then
    /// run on.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a config out of range (e.g. a probability above
    /// 1, or `burst` without `rps`), or the error of binding the port.
    pub async fn start(config: FrontConfig) -> io::Result<Self> {
        config.validate()?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, config.port)).await?;
        let addr = listener.local_addr()?;
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(Tracked {
            tracker: tracker.clone(),
            token: token.clone(),
        })
        .build(connector);
        let shared = Arc::new(Shared {
            upstream: config.upstream,
            latency: config.latency,
            jitter: config.jitter,
            limiter: Arc::new(Mutex::new(Limiter::new(&config, Instant::now()))),
            pacer: config.bandwidth.map(|rate| {
                Arc::new(Pacer {
                    rate,
                    next: Mutex::new(Instant::now()),
                })
            }),
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            faults: config.faults,
            counters: Arc::default(),
            client,
            token: token.clone(),
            tracker: tracker.clone(),
        });
        tracker.spawn(accept(listener, Arc::clone(&shared)));
        Ok(Self {
            addr,
            shared,
            token,
            tracker,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint for S3 clients, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it has seen so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops at once — open connections are dropped, in-flight requests
    /// fail — and waits until every task of the front has ended.
    pub async fn shutdown(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl fmt::Debug for Front {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Front")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Runs the upstream client's connection tasks as tasks of the front, so
/// they end with it.
#[derive(Clone)]
struct Tracked {
    tracker: TaskTracker,
    token: CancellationToken,
}

impl<F> hyper::rt::Executor<F> for Tracked
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        self.tracker
            .spawn(self.token.clone().run_until_cancelled_owned(future));
    }
}

/// What every connection of the front shares.
struct Shared {
    upstream: SocketAddr,
    latency: Duration,
    jitter: f64,
    faults: Faults,
    limiter: Arc<Mutex<Limiter>>,
    pacer: Option<Arc<Pacer>>,
    rng: Mutex<fastrand::Rng>,
    counters: Arc<Counters>,
    client: Client<HttpConnector, RequestBody>,
    token: CancellationToken,
    tracker: TaskTracker,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    throttled: AtomicU64,
    error_500: AtomicU64,
    error_503: AtomicU64,
    reset: AtomicU64,
    stall: AtomicU64,
    denied: AtomicU64,
    delete_503: AtomicU64,
    upstream_errors: AtomicU64,
    operations: Mutex<BTreeMap<&'static str, u64>>,
}

/// The S3 operation of a request, from its method and query (path-style:
/// a bucket's path has one segment, an object's more).
pub fn operation(method: &Method, path: &str, query: &str) -> &'static str {
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p == name || p.starts_with(&format!("{name}=")))
    };
    let object = path.trim_matches('/').contains('/');
    match *method {
        Method::PUT if has("partNumber") => "UploadPart",
        Method::PUT if object => "PutObject",
        Method::PUT => "CreateBucket",
        Method::POST if has("delete") => "DeleteObjects",
        Method::POST if has("uploads") => "CreateMultipartUpload",
        Method::POST if has("uploadId") => "CompleteMultipartUpload",
        Method::DELETE if has("uploadId") => "AbortMultipartUpload",
        Method::DELETE => "DeleteObject",
        Method::GET if has("uploads") => "ListMultipartUploads",
        Method::GET if object => "GetObject",
        Method::GET => "ListObjects",
        Method::HEAD if object => "HeadObject",
        Method::HEAD => "HeadBucket",
        _ => "other",
    }
}

/// Whether `request` deletes: `DELETE` (an object, a multipart upload), or
/// S3's `DeleteObjects` (`POST /{bucket}?delete`).
fn is_delete<B>(request: &Request<B>) -> bool {
    let method = request.method();
    let query = request.uri().query().unwrap_or_default();
    method == hyper::Method::DELETE
        || (method == hyper::Method::POST
            && query
                .split('&')
                .any(|p| p == "delete" || p.starts_with("delete=")))
}

fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one is whole.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The dice for one admitted request.
#[derive(Debug, PartialEq)]
struct Roll {
    latency: Duration,
    error_500: bool,
    error_503: bool,
    reset: bool,
    stall: bool,
    delete_503: bool,
}

impl Roll {
    /// Always rolls six times, so the sequence does not depend on which
    /// faults are enabled or hit.
    fn new(rng: &mut fastrand::Rng, latency: Duration, jitter: f64, faults: &Faults) -> Self {
        let spread = 1.0 + jitter * (2.0 * rng.f64() - 1.0);
        let mut hit = |p: f64| rng.f64() < p;
        Self {
            latency: latency.mul_f64(spread),
            error_500: hit(faults.error_500),
            error_503: hit(faults.error_503),
            reset: hit(faults.reset),
            stall: hit(faults.stall),
            delete_503: hit(faults.delete_503),
        }
    }
}

impl Shared {
    fn stats(&self) -> Stats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let c = &self.counters;
        let limiter = lock(&self.limiter);
        Stats {
            received: get(&c.received),
            forwarded: get(&c.forwarded),
            forwarded_by_operation: lock(&c.operations).clone(),
            throttled: get(&c.throttled),
            faults: FaultStats {
                error_500: get(&c.error_500),
                error_503: get(&c.error_503),
                reset: get(&c.reset),
                stall: get(&c.stall),
                denied: get(&c.denied),
                delete_503: get(&c.delete_503),
            },
            upstream_errors: get(&c.upstream_errors),
            peak_concurrency: limiter.peak,
            busy_slot_seconds: limiter.busy.as_secs_f64(),
            in_flight: limiter.in_use,
            slots: limiter.capacity(Instant::now()),
        }
    }

    fn roll(&self) -> Roll {
        Roll::new(
            &mut lock(&self.rng),
            self.latency,
            self.jitter,
            &self.faults,
        )
    }

    /// Answers without forwarding. If the client is still sending a body,
    /// the connection is closed after the answer, and the body drained
    /// meanwhile so that the client reads the answer rather than a reset.
    fn answer_early(&self, body: Incoming, mut response: Response<OutBody>) -> Response<OutBody> {
        if !body.is_end_stream() {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            let drain = tokio::time::timeout(DRAIN_TIME, drain(body));
            self.tracker
                .spawn(self.token.clone().run_until_cancelled_owned(drain));
        }
        response
    }

    fn stats_response(&self, request: Request<Incoming>) -> Response<OutBody> {
        let response = if matches!(*request.method(), Method::GET | Method::HEAD) {
            // Serializing plain numbers cannot fail.
            let json = serde_json::to_vec(&self.stats()).unwrap_or_default();
            respond(StatusCode::OK, "application/json", json)
        } else {
            let mut response = respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "/stats is the front's own; use GET\n",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        };
        self.answer_early(request.into_body(), response)
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        slot: Slot,
        cut: bool,
        request_id: &str,
    ) -> Result<Response<OutBody>, Reset> {
        let (mut parts, body) = request.into_parts();
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        parts.uri = match format!("http://{}{target}", self.upstream).parse::<Uri>() {
            Ok(uri) => uri,
            Err(_) => {
                let response = s3_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidURI",
                    "Couldn't parse the specified URI.",
                    request_id,
                );
                return Ok(self.answer_early(body, response));
            }
        };
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        // This side already said "continue" by reading the body.
        parts.headers.remove(header::EXPECT);

        let client_failed = Arc::new(AtomicBool::new(false));
        let body = RequestBody {
            inner: body,
            pacer: self.pacer.clone(),
            held: None,
            client_failed: Arc::clone(&client_failed),
        };
        bump(&self.counters.forwarded);
        let op = operation(
            &parts.method,
            parts.uri.path(),
            parts.uri.query().unwrap_or(""),
        );
        *lock(&self.counters.operations).entry(op).or_default() += 1;
        let response = match self.client.request(Request::from_parts(parts, body)).await {
            Ok(response) => response,
            // The client's own body broke off: nobody is left to answer.
            Err(_) if client_failed.load(Ordering::Relaxed) => return Err(Reset),
            Err(_) => {
                bump(&self.counters.upstream_errors);
                return Ok(s3_error(
                    StatusCode::BAD_GATEWAY,
                    "BadGateway",
                    "The front could not reach the S3 server behind it.",
                    request_id,
                ));
            }
        };
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let cut = if cut {
            if body.is_end_stream() {
                return Err(Reset);
            }
            Some(body.size_hint().exact().map_or(CUT_UNKNOWN, |n| n / 2))
        } else {
            None
        };
        let body = ResponseBody {
            inner: body,
            slot: Some(slot),
            cut,
            counters: Arc::clone(&self.counters),
        };
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }
}

/// Serves one request.
///
/// `Err` drops the connection without an answer: hyper closes it when the
/// service fails.
async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<OutBody>, Reset> {
    if request.uri().path() == STATS_PATH {
        return Ok(shared.stats_response(request));
    }
    let request_id = format!("{:016X}", bump(&shared.counters.received));
    let Some(slot) = Slot::try_acquire(&shared.limiter) else {
        bump(&shared.counters.throttled);
        let response = s3_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
            &request_id,
        );
        return Ok(shared.answer_early(request.into_body(), response));
    };

    let roll = shared.roll();
    let denied = (shared.faults.deny_path.as_deref())
        .is_some_and(|text| request.uri().path().contains(text));
    let injected = if denied {
        bump(&shared.counters.denied);
        Some((StatusCode::FORBIDDEN, "AccessDenied", "Access Denied"))
    } else if roll.error_500 {
        bump(&shared.counters.error_500);
        Some((
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
        ))
    } else if roll.error_503 {
        bump(&shared.counters.error_503);
        Some((
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        ))
    } else if roll.delete_503 && is_delete(&request) {
        bump(&shared.counters.delete_503);
        Some((
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        ))
    } else {
        None
    };
    if let Some((status, code, message)) = injected {
        let response = s3_error(status, code, message, &request_id);
        return Ok(shared.answer_early(request.into_body(), response));
    }

    if roll.stall {
        bump(&shared.counters.stall);
        tokio::time::sleep(shared.faults.stall_for).await;
    }
    tokio::time::sleep(roll.latency).await;

    if roll.reset {
        bump(&shared.counters.reset);
        if !request.body().is_end_stream() {
            read_part(request.into_body()).await;
            return Err(Reset);
        }
    }
    shared.forward(request, slot, roll.reset, &request_id).await
}

/// Accepts connections until the front is cancelled.
async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            () = shared.token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let serve = serve(stream, Arc::clone(&shared));
                shared
                    .tracker
                    .spawn(shared.token.clone().run_until_cancelled_owned(serve));
            }
            // Out of file descriptors, or a connection that died in the
            // backlog: let the former pass rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Serves one connection until it closes.
async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    // Nagle's algorithm only delays small answers such as the 503s.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| handle(Arc::clone(&shared), request));
    // A failed connection is the client's business, or an injected reset.
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Reads and discards up to [`DRAIN_LIMIT`] bytes of a body.
async fn drain(mut body: Incoming) {
    let mut read = 0;
    while read < DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            _ => return,
        }
    }
}

/// Reads about half of a body, for a reset fault.
async fn read_part(mut body: Incoming) {
    let half = body.size_hint().exact().map_or(CUT_UNKNOWN, |n| n / 2);
    let mut read = 0;
    loop {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
        if read >= half {
            return;
        }
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<OutBody> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An error as S3 words it.
fn s3_error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response<OutBody> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <Error><Code>{code}</Code><Message>{message}</Message>\
         <RequestId>{request_id}</RequestId></Error>"
    );
    let mut response = respond(status, "application/xml", body);
    if let Ok(id) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-amz-request-id", id);
    }
    response
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for name in named.iter().map(String::as_str).chain(HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// The service's failure: drop the connection without an answer.
#[derive(Debug)]
struct Reset;

impl fmt::Display for Reset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset by the front")
    }
}

impl StdError for Reset {}

/// Admission: slots in use, the slot count in force and the token bucket.
#[derive(Debug)]
struct Limiter {
    start: Instant,
    slots: Option<usize>,
    schedule: Schedule,
    bucket: Option<TokenBucket>,
    in_use: usize,
    peak: usize,
    /// Slot time used by requests that have ended.
    busy: Duration,
}

impl Limiter {
    fn new(config: &FrontConfig, now: Instant) -> Self {
        let bucket = config.rps.map(|rate| {
            let burst = config.burst.unwrap_or((rate / 10.0).max(1.0));
            TokenBucket {
                rate,
                burst,
                tokens: burst,
                updated: now,
            }
        });
        Self {
            start: now,
            slots: config.slots,
            schedule: config.schedule.clone(),
            bucket,
            in_use: 0,
            peak: 0,
            busy: Duration::ZERO,
        }
    }

    fn capacity(&self, now: Instant) -> Option<usize> {
        self.schedule
            .slots_at(now.saturating_duration_since(self.start))
            .or(self.slots)
    }

    /// Takes a slot and a token, or neither.
    fn try_acquire(&mut self, now: Instant) -> bool {
        if self.capacity(now).is_some_and(|slots| self.in_use >= slots) {
            return false;
        }
        if let Some(bucket) = &mut self.bucket
            && !bucket.try_take(now)
        {
            return false;
        }
        self.in_use += 1;
        self.peak = self.peak.max(self.in_use);
        true
    }
}

#[derive(Debug)]
struct TokenBucket {
    /// Tokens added per second.
    rate: f64,
    /// The most tokens it holds.
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One request's place in the [`Limiter`]. Held by the request from
/// admission until its response body has been sent or dropped; dropping it
/// frees the slot, however the request ended.
struct Slot {
    limiter: Arc<Mutex<Limiter>>,
    since: Instant,
}

impl Slot {
    fn try_acquire(limiter: &Arc<Mutex<Limiter>>) -> Option<Self> {
        let now = Instant::now();
        lock(limiter).try_acquire(now).then(|| Self {
            limiter: Arc::clone(limiter),
            since: now,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut limiter = lock(&self.limiter);
        limiter.in_use = limiter.in_use.saturating_sub(1);
        limiter.busy += self.since.elapsed();
    }
}

/// The bandwidth cap shared by all request bodies: each chunk books the
/// link for `len / rate` seconds after the chunks booked before it.
#[derive(Debug)]
struct Pacer {
    /// Bytes per second.
    rate: u64,
    /// When the link is free again.
    next: Mutex<Instant>,
}

impl Pacer {
    /// Books `len` bytes; returns when they will have passed.
    fn book(&self, len: usize) -> Instant {
        let now = Instant::now();
        let mut next = lock(&self.next);
        let start = (*next).max(now);
        *next = start + Duration::from_secs_f64(len as f64 / self.rate as f64);
        *next
    }
}

/// A request body on its way upstream, paced by the bandwidth cap.
struct RequestBody {
    inner: Incoming,
    pacer: Option<Arc<Pacer>>,
    /// A frame held back until the pacer lets it pass.
    held: Option<(Frame<Bytes>, Pin<Box<Sleep>>)>,
    /// Set when the client's side failed, so that the failed upstream
    /// request is not blamed on the upstream.
    client_failed: Arc<AtomicBool>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some((frame, mut sleep)) = this.held.take() {
            if sleep.as_mut().poll(cx).is_pending() {
                this.held = Some((frame, sleep));
                return Poll::Pending;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let (Some(pacer), Some(data)) = (&this.pacer, frame.data_ref()) {
                    let mut sleep = Box::pin(tokio::time::sleep_until(pacer.book(data.len())));
                    if sleep.as_mut().poll(cx).is_pending() {
                        this.held = Some((frame, sleep));
                        return Poll::Pending;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                this.client_failed.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(error)))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held = self
            .held
            .as_ref()
            .and_then(|(frame, _)| frame.data_ref())
            .map_or(0, |data| data.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

/// A response body on its way to the client. It holds the request's slot
/// until it ends or is dropped, and with a reset fault breaks off partway.
struct ResponseBody {
    inner: Incoming,
    slot: Option<Slot>,
    /// With a reset fault: how many more bytes pass before the break.
    cut: Option<u64>,
    counters: Arc<Counters>,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.cut == Some(0) {
            this.slot = None;
            return Poll::Ready(Some(Err(Reset.into())));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(mut frame)) => {
                if let (Some(cut), Some(data)) = (&mut this.cut, frame.data_mut()) {
                    let pass = (*cut).min(data.len() as u64);
                    // `pass` is at most `data.len()`, a usize.
                    data.truncate(pass as usize);
                    *cut -= pass;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                this.slot = None;
                bump(&this.counters.upstream_errors);
                Poll::Ready(Some(Err(error.into())))
            }
            None => {
                this.slot = None;
                if this.cut.is_some() {
                    Poll::Ready(Some(Err(Reset.into())))
                } else {
                    Poll::Ready(None)
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cut.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FrontConfig {
        FrontConfig::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 9)))
    }

    #[test]
    fn names_the_s3_operation_of_a_request() {
        let op = |method: Method, path, query| operation(&method, path, query);
        assert_eq!(op(Method::PUT, "/b/k/x.bin", ""), "PutObject");
        assert_eq!(
            op(Method::PUT, "/b/k", "partNumber=2&uploadId=u"),
            "UploadPart"
        );
        assert_eq!(op(Method::POST, "/b", "delete"), "DeleteObjects");
        assert_eq!(op(Method::POST, "/b/k", "uploads"), "CreateMultipartUpload");
        assert_eq!(
            op(Method::POST, "/b/k", "uploadId=u"),
            "CompleteMultipartUpload"
        );
        assert_eq!(
            op(Method::DELETE, "/b/k", "uploadId=u"),
            "AbortMultipartUpload"
        );
        assert_eq!(op(Method::GET, "/b", "list-type=2&prefix=p"), "ListObjects");
        assert_eq!(op(Method::HEAD, "/b/k", ""), "HeadObject");
    }

    #[test]
    fn parses_a_schedule() {
        let schedule: Schedule = "0s:16, 500ms:12,2s:8,1.5m:4,1h:0".parse().unwrap();
        assert_eq!(
            schedule.steps(),
            [
                (Duration::ZERO, 16),
                (Duration::from_millis(500), 12),
                (Duration::from_secs(2), 8),
                (Duration::from_secs(90), 4),
                (Duration::from_secs(3600), 0),
            ]
        );
        assert_eq!("".parse::<Schedule>().unwrap(), Schedule::default());
        assert_eq!(
            Schedule::new([(Duration::from_secs(60), 8), (Duration::ZERO, 16)]),
            "0s:16,60s:8".parse().unwrap()
        );
    }

    #[test]
    fn rejects_a_bad_schedule() {
        for bad in [
            "16",
            "0:16",
            "0s:-1",
            "0s:x",
            "1m:2,30s:1",
            "0s:1,0s:2",
            "s:1",
            "0s:1,",
            "2d:1",
        ] {
            let error = bad.parse::<Schedule>().unwrap_err();
            assert!(
                error.to_string().contains("bad schedule entry"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn a_schedule_step_holds_until_the_next() {
        let schedule: Schedule = "1s:4,3s:2".parse().unwrap();
        assert_eq!(schedule.slots_at(Duration::from_millis(999)), None);
        assert_eq!(schedule.slots_at(Duration::from_secs(1)), Some(4));
        assert_eq!(schedule.slots_at(Duration::from_millis(2999)), Some(4));
        assert_eq!(schedule.slots_at(Duration::from_secs(3)), Some(2));
        assert_eq!(schedule.slots_at(Duration::from_secs(1000)), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_schedule_changes_the_slot_count_over_time() {
        let limiter = Arc::new(Mutex::new(Limiter::new(
            &FrontConfig {
                slots: Some(3),
                schedule: "1s:2,2s:0,3s:1".parse().unwrap(),
                ..config()
            },
            Instant::now(),
        )));
        let take = || Slot::try_acquire(&limiter);

        // Before the first step, `slots` is in force.
        let held: Vec<Slot> = std::iter::from_fn(take).take(10).collect();
        assert_eq!(held.len(), 3);

        // Lowered below what is in use: nothing is admitted until enough
        // requests end.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(take().is_none());
        let mut held = held;
        held.pop();
        assert!(take().is_none(), "2 in use, 2 slots");
        held.pop();
        let one = take().expect("1 in use, 2 slots");

        tokio::time::advance(Duration::from_secs(1)).await;
        drop(one);
        drop(held);
        assert!(take().is_none(), "no slots at all");

        tokio::time::advance(Duration::from_secs(1)).await;
        let one = take().expect("1 slot");
        assert!(take().is_none());
        drop(one);
        assert!(take().is_some());
        assert_eq!(lock(&limiter).peak, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_bucket_refills_at_the_rate() {
        let limiter = Arc::new(Mutex::new(Limiter::new(
            &FrontConfig {
                rps: Some(5.0),
                burst: Some(2.0),
                ..config()
            },
            Instant::now(),
        )));
        // Slots are released at once: only tokens limit here.
        let admitted = || Slot::try_acquire(&limiter).is_some();

        assert!(admitted() && admitted(), "a full bucket of 2");
        assert!(!admitted());
        tokio::time::advance(Duration::from_millis(199)).await;
        assert!(!admitted());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(admitted(), "one token per 200 ms");
        assert!(!admitted());
        // A long pause refills the bucket to its burst, not beyond.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!((0..10).filter(|_| admitted()).count(), 2);
    }

    #[test]
    fn the_default_burst_is_a_tenth_of_the_rate_and_at_least_one() {
        let burst = |rps| {
            let limiter = Limiter::new(
                &FrontConfig {
                    rps: Some(rps),
                    ..config()
                },
                Instant::now(),
            );
            limiter.bucket.map(|b| b.burst)
        };
        assert_eq!(burst(5.0), Some(1.0));
        assert_eq!(burst(3500.0), Some(350.0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spreads_bytes_at_the_rate() {
        let pacer = Pacer {
            rate: 1000,
            next: Mutex::new(Instant::now()),
        };
        let start = Instant::now();
        assert_eq!(pacer.book(500), start + Duration::from_millis(500));
        assert_eq!(pacer.book(1000), start + Duration::from_millis(1500));
        // An idle link does not bank time.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(pacer.book(100), Instant::now() + Duration::from_millis(100));
    }

    #[test]
    fn the_same_seed_rolls_the_same_faults() {
        let faults = Faults {
            error_500: 0.1,
            error_503: 0.2,
            reset: 0.3,
            stall: 0.4,
            stall_for: Duration::ZERO,
            ..Faults::default()
        };
        let latency = Duration::from_millis(100);
        let rolls = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..200)
                .map(|_| Roll::new(&mut rng, latency, 0.1, &faults))
                .collect::<Vec<_>>()
        };
        let rolls_7 = rolls(7);
        assert_eq!(rolls_7, rolls(7));
        assert_ne!(rolls_7, rolls(8));
        for roll in &rolls_7 {
            assert!(
                (Duration::from_millis(90)..=Duration::from_millis(110)).contains(&roll.latency),
                "{roll:?}"
            );
        }
        let resets = rolls_7.iter().filter(|roll| roll.reset).count();
        assert!((30..=90).contains(&resets), "{resets} of 200 at 0.3");
    }

    #[test]
    fn certain_faults_always_hit_and_impossible_ones_never() {
        let mut rng = fastrand::Rng::with_seed(1);
        let always = Faults {
            error_500: 1.0,
            error_503: 1.0,
            reset: 1.0,
            stall: 1.0,
            stall_for: Duration::ZERO,
            delete_503: 1.0,
            ..Faults::default()
        };
        for _ in 0..100 {
            let roll = Roll::new(&mut rng, Duration::ZERO, 0.0, &always);
            assert!(roll.error_500 && roll.error_503 && roll.reset && roll.stall);
            assert!(roll.delete_503);
            let roll = Roll::new(&mut rng, Duration::ZERO, 0.0, &Faults::default());
            assert!(!(roll.error_500 || roll.error_503 || roll.reset || roll.stall));
            assert!(!roll.delete_503);
        }
    }

    #[test]
    fn rejects_out_of_range_configs() {
        let bad = [
            FrontConfig {
                rps: Some(0.0),
                ..config()
            },
            FrontConfig {
                burst: Some(2.0),
                ..config()
            },
            FrontConfig {
                rps: Some(1.0),
                burst: Some(0.5),
                ..config()
            },
            FrontConfig {
                jitter: 1.5,
                ..config()
            },
            FrontConfig {
                bandwidth: Some(0),
                ..config()
            },
            FrontConfig {
                faults: Faults {
                    reset: 2.0,
                    ..Faults::default()
                },
                ..config()
            },
        ];
        for config in bad {
            let error = config.validate().unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{config:?}");
        }
        assert!(config().validate().is_ok());
    }

    #[test]
    fn strips_hop_by_hop_headers_and_those_connection_names() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("host", "bucket.example:9000"),
            ("content-length", "5"),
            ("authorization", "AWS4-HMAC-SHA256 ..."),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<_> = headers.keys().map(|name| name.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-length", "host"]);
    }
}
