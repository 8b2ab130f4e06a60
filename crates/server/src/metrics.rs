//! `GET /metrics`: what the process is doing, in the Prometheus text format
//! (version 0.0.4), and the middleware that counts HTTP requests.
//!
//! Three sources feed one [`Registry`] per [`AppState`](crate::AppState), not
//! a global one, so several servers in one process (the tests) never mix
//! their numbers:
//!
//! - HTTP requests, counted by [`track`] as they are answered. They are
//!   labelled by the *route template* that matched (`/api/files/{*key}`),
//!   never the raw path: every file key would otherwise become a time series
//!   of its own, and Prometheus's memory grows with the number of series.
//!   Requests no route matches share the label `unmatched`; methods outside
//!   the standard nine share `other`, for the same reason.
//! - The scheduler of backend calls. `corral-sched` keeps its numbers in
//!   plain atomics and knows nothing of any metrics crate; a collector reads
//!   them at each scrape, so they are never copied, never stale and never
//!   counted twice.
//! - The process: resident memory and tokio's live tasks, read at each
//!   scrape.
//!
//! `prometheus-client` writes OpenMetrics, whose text differs from
//! Prometheus text 0.0.4 in a few places: a counter's `# HELP`/`# TYPE`
//! lines name it without its `_total` suffix, infinity is written `inf`,
//! and the exposition ends with `# EOF`. [`to_prometheus_text`] makes those
//! lines conform, so that strict 0.0.4 parsers read the counters as counters.
//!
//! `corral_sched_limit` is `+Inf` when the limit is unbounded, which keeps
//! `corral_sched_in_flight / corral_sched_limit` meaningful (0) rather than
//! making the series vanish.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use corral_sched::{CounterSnapshot, LATENCY_BUCKETS, Scheduler};
use corral_store::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet, text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::admission::connection::Connections;
use crate::admission::refusal::Refusal;
use crate::app::AppState;
use crate::memory::MemoryGate;

/// The `Content-Type` of Prometheus text 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `route` label of requests no route matched.
const UNMATCHED: &str = "unmatched";

/// Upper bounds of the request-duration buckets, in seconds. An upload holds
/// its request open while the whole batch streams in, so the buckets reach
/// into minutes.
const REQUEST_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The labels of every HTTP series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    /// The matched route template, or [`UNMATCHED`].
    route: String,
    /// A standard method, or `other`.
    method: &'static str,
    status: u16,
}

type DurationFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// The label of a refusal: which gate refused (see [`crate::admission`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

/// Everything `/metrics` reports. Shared by the middleware and the handler.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: DurationFamily,
    refusals: Family<RefusalLabels, Counter>,
}

impl Metrics {
    /// Metrics of a server over `store` and `scheduler`, with no request
    /// counted yet.
    pub(crate) fn new(
        store: Store,
        scheduler: Scheduler,
        upload_memory: Arc<MemoryGate>,
        open_uploads: Arc<AtomicUsize>,
        connections: Connections,
    ) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: DurationFamily = Family::new_with_constructor(request_histogram);
        let mut registry = Registry::default();
        registry.register(
            "corral_http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        registry.register(
            "corral_http_request_duration_seconds",
            "Time from a request's arrival to its response head (a download's body streams after)",
            durations.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        for reason in Refusal::REASONS {
            // Every reason from zero, so that a rate can be taken at once.
            drop(refusals.get_or_create(&RefusalLabels { reason }));
        }
        registry.register(
            "corral_refusals",
            "New work refused (429 or 503 with Retry-After), by the gate that refused it",
            refusals.clone(),
        );
        registry.register_collector(Box::new(SchedCollector {
            store,
            scheduler,
            upload_memory,
        }));
        registry.register_collector(Box::new(ProcessCollector));
        registry.register_collector(Box::new(UploadsCollector(open_uploads)));
        registry.register_collector(Box::new(ConnectionsCollector(connections)));
        Self {
            registry,
            requests,
            durations,
            refusals,
        }
    }

    /// Counts one answered request.
    fn record(&self, labels: &RequestLabels, elapsed: Duration) {
        self.requests.get_or_create(labels).inc();
        self.durations
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one refusal of new work.
    pub(crate) fn count_refusal(&self, refusal: &Refusal) {
        let reason = refusal.reason();
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Refusals of new work counted so far, of every reason.
    pub(crate) fn refusals_total(&self) -> u64 {
        (Refusal::REASONS.iter())
            .map(|&reason| self.refusals.get_or_create(&RefusalLabels { reason }).get())
            .sum()
    }

    /// The exposition, in Prometheus text 0.0.4.
    fn render(&self) -> String {
        let mut openmetrics = String::new();
        // The text encoder fails only when its writer fails (a `String`
        // never does) or when a value does not fit its type (every value
        // here is a u64 or an f64); `to_prometheus_text` only writes to a
        // `String`.
        text::encode_registry(&mut openmetrics, &self.registry)
            .and_then(|()| to_prometheus_text(&openmetrics))
            .expect("encoding u64 and f64 values into a String cannot fail")
    }
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// `GET /metrics`.
pub(crate) async fn scrape(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

/// Middleware: counts each request and times it to its response head.
/// A request whose future is dropped before it is answered (its connection
/// died) is not counted.
pub(crate) async fn track(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method());
    let start = Instant::now();
    let response = next.run(request).await;
    let labels = RequestLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    metrics.record(&labels, start.elapsed());
    if let Some(refusal) = response.extensions().get::<Refusal>() {
        metrics.count_refusal(refusal);
    }
    response
}

/// The `method` label: a standard method, or `other` for extension methods,
/// which a client may invent without limit.
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    STANDARD
        .iter()
        .find(|(standard, _)| standard == method)
        .map_or("other", |(_, label)| label)
}

/// Reads the scheduler's state and counters at each scrape.
#[derive(Debug)]
struct SchedCollector {
    store: Store,
    scheduler: Scheduler,
    upload_memory: Arc<MemoryGate>,
}

impl Collector for SchedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let scheduler = &self.scheduler;
        let stats = scheduler.stats();
        // usize::MAX stands for "no limit".
        let limit = match stats.limit {
            usize::MAX => f64::INFINITY,
            limit => limit as f64,
        };
        encode(
            &mut encoder,
            "corral_sched_limit",
            "The limit on backend calls in flight now; +Inf when unbounded.",
            &ConstGauge::new(limit),
        )?;
        let gauges = [
            (
                "corral_sched_in_flight",
                "Backend calls in flight.",
                stats.in_flight as u64,
            ),
            (
                "corral_sched_queued_jobs",
                "Jobs waiting for a slot.",
                stats.queued_jobs as u64,
            ),
            (
                "corral_sched_queued_bytes",
                "Bytes of the jobs waiting for a slot.",
                stats.queued_bytes,
            ),
            (
                "corral_sched_probing",
                "1 while the adaptive limit probes the no-load latency (the limit is then briefly lowered), else 0.",
                u64::from(stats.probing),
            ),
            (
                "corral_backend_up",
                "1 while the storage backend answers; 0 while the circuit breaker holds it for down and refuses work with 503.",
                u64::from(scheduler.health() == corral_sched::Health::Up),
            ),
        ];
        for (name, help, value) in gauges {
            encode(&mut encoder, name, help, &ConstGauge::new(value))?;
        }
        let memory = &self.upload_memory;
        let uploads = [
            (
                "corral_upload_memory_reserved_bytes",
                "Upload memory reserved by uploads in progress.",
                memory.reserved(),
            ),
            (
                "corral_upload_waiting",
                "Uploads waiting for upload memory.",
                memory.waiting() as u64,
            ),
            (
                "corral_upload_buffered_bytes",
                "Bytes held in upload buffers now (within the reserved memory).",
                self.store.buffers().current() as u64,
            ),
        ];
        for (name, help, value) in uploads {
            encode(&mut encoder, name, help, &ConstGauge::new(value))?;
        }

        let counters = scheduler.counters();
        let totals = [
            (
                "corral_sched_admitted",
                "Groups of calls let in.",
                counters.admitted,
            ),
            (
                "corral_sched_rejected",
                "Groups of calls refused because the queue was full.",
                counters.rejected,
            ),
            (
                "corral_sched_calls",
                "Backend calls dispatched, retries included.",
                counters.calls,
            ),
            ("corral_sched_retries", "Retries made.", counters.retries),
            (
                "corral_sched_retry_budget_exhausted",
                "Retries not made because the retry budget was empty.",
                counters.budget_exhausted,
            ),
            (
                "corral_sched_unavailable",
                "Groups and calls refused because the storage backend was down.",
                counters.unavailable,
            ),
            (
                "corral_backend_breaker_opened",
                "Times the circuit breaker found the storage backend down.",
                counters.breaker_opened,
            ),
        ];
        for (name, help, value) in totals {
            encode(&mut encoder, name, help, &ConstCounter::new(value))?;
        }

        encode_call_durations(&mut encoder, &counters)
    }
}

/// `corral_backend_call_duration_seconds`, one histogram per outcome.
fn encode_call_durations(
    encoder: &mut DescriptorEncoder,
    counters: &CounterSnapshot,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(
        "corral_backend_call_duration_seconds",
        "Latency of backend calls, by outcome: success; loss (throttled or timed out); other (failed otherwise or cancelled).",
        None,
        MetricType::Histogram,
    )?;
    let outcomes = [
        ("success", &counters.latency_success),
        ("loss", &counters.latency_loss),
        ("other", &counters.latency_other),
    ];
    for (outcome, histogram) in outcomes {
        let cumulative = histogram.cumulative();
        let count = cumulative.last().copied().unwrap_or(0);
        let labels = [("outcome", outcome)];
        metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                histogram.sum().as_secs_f64(),
                count,
                &per_bucket(&cumulative),
                None,
            )?;
    }
    Ok(())
}

/// `(upper bound, observations)` per bucket of [`LATENCY_BUCKETS`] then
/// `+Inf`, from the scheduler's cumulative counts (the encoder adds them up
/// again).
fn per_bucket(cumulative: &[u64]) -> Vec<(f64, u64)> {
    let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
    let mut below = 0;
    bounds
        .zip(cumulative)
        .map(|(bound, &total)| {
            let count = total.saturating_sub(below);
            below = total;
            (bound, count)
        })
        .collect()
}

/// Resumable uploads open on this instance, read at each scrape.
#[derive(Debug)]
struct UploadsCollector(Arc<AtomicUsize>);

impl Collector for UploadsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        encode(
            &mut encoder,
            "corral_resumable_uploads_open",
            "Resumable uploads this instance created that have not finished, been terminated or expired.",
            &ConstGauge::new(self.0.load(Ordering::Relaxed) as u64),
        )
    }
}

/// Connections open and their limit, read at each scrape.
#[derive(Debug)]
struct ConnectionsCollector(Connections);

impl Collector for ConnectionsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        encode(
            &mut encoder,
            "corral_http_connections",
            "HTTP connections open now, idle keep-alive connections and the one scraping included.",
            &ConstGauge::new(self.0.open() as u64),
        )?;
        encode(
            &mut encoder,
            "corral_http_connections_limit",
            "Most HTTP connections served at once (--max-connections); beyond, 503 too_many_connections.",
            &ConstGauge::new(self.0.limit() as u64),
        )
    }
}

/// Resident memory and tokio's live tasks, read at each scrape. A value the
/// platform cannot give (no `/proc`, no runtime) is left out.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        if let Some(bytes) = resident_memory_bytes() {
            encode(
                &mut encoder,
                "corral_process_resident_memory_bytes",
                "Resident memory of the process, in bytes.",
                &ConstGauge::new(bytes),
            )?;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tasks = runtime.metrics().num_alive_tasks() as u64;
            encode(
                &mut encoder,
                "corral_tokio_alive_tasks",
                "Tasks alive in the tokio runtime that serves the request.",
                &ConstGauge::new(tasks),
            )?;
        }
        Ok(())
    }
}

fn encode(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// The resident set size, from `VmRSS` in `/proc/self/status` (Linux). It is
/// given in kB, so the page size does not matter; it is the same count as
/// the second field of `/proc/self/statm`.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_rss_bytes(&status)
}

fn vm_rss_bytes(status: &str) -> Option<u64> {
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = value.trim().strip_suffix("kB")?.trim_end().parse().ok()?;
    kib.checked_mul(1024)
}

/// Rewrites the OpenMetrics text of `prometheus-client` as Prometheus text
/// 0.0.4: a counter's `# HELP` and `# TYPE` lines name it with its `_total`
/// suffix, as its samples do; infinities are `+Inf` and `-Inf`; `# EOF`
/// and `# UNIT` lines go. No metric here has exemplars or timestamps, which
/// 0.0.4 could not carry either.
fn to_prometheus_text(openmetrics: &str) -> Result<String, fmt::Error> {
    fn descriptor(text: &mut String, keyword: &str, rest: &str, counter: bool) -> fmt::Result {
        let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        let suffix = if counter { "_total" } else { "" };
        writeln!(text, "# {keyword} {name}{suffix} {tail}")
    }

    let is_counter = |type_line: &str| type_line.ends_with(" counter");
    let mut text = String::with_capacity(openmetrics.len());
    let mut lines = openmetrics.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // prometheus-client writes each TYPE line right after its HELP.
            let counter = lines
                .peek()
                .and_then(|next| next.strip_prefix("# TYPE "))
                .is_some_and(is_counter);
            descriptor(&mut text, "HELP", rest, counter)?;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            descriptor(&mut text, "TYPE", rest, is_counter(rest))?;
        } else if line.starts_with('#') || line.is_empty() {
            continue;
        } else {
            // The value is the last field: a label value may hold spaces,
            // but it comes before.
            let (series, value) = line.rsplit_once(' ').unwrap_or((line, ""));
            let value = match value {
                "inf" => "+Inf",
                "-inf" => "-Inf",
                value => value,
            };
            writeln!(text, "{series} {value}")?;
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_with_total_and_writes_infinity() {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("demo_requests", "Requests", requests.clone());
        requests
            .get_or_create(&RequestLabels {
                route: "/a b".to_owned(),
                method: "GET",
                status: 200,
            })
            .inc();
        registry.register("demo_limit", "Limit", ConstGauge::new(f64::INFINITY));
        let histogram = Histogram::new([1.0]);
        histogram.observe(0.5);
        registry.register("demo_seconds", "Time", histogram);

        let mut openmetrics = String::new();
        text::encode(&mut openmetrics, &registry).unwrap();
        assert_eq!(
            to_prometheus_text(&openmetrics).unwrap(),
            "# HELP demo_requests_total Requests.\n\
             # TYPE demo_requests_total counter\n\
             demo_requests_total{route=\"/a b\",method=\"GET\",status=\"200\"} 1\n\
             # HELP demo_limit Limit.\n\
             # TYPE demo_limit gauge\n\
             demo_limit +Inf\n\
             # HELP demo_seconds Time.\n\
             # TYPE demo_seconds histogram\n\
             demo_seconds_sum 0.5\n\
             demo_seconds_count 1\n\
             demo_seconds_bucket{le=\"1.0\"} 1\n\
             demo_seconds_bucket{le=\"+Inf\"} 1\n",
        );
    }

    #[test]
    fn per_bucket_undoes_the_cumulative_counts() {
        let mut cumulative = vec![0; LATENCY_BUCKETS.len() + 1];
        // One observation in the second bucket, two in +Inf.
        for total in &mut cumulative[1..] {
            *total = 1;
        }
        *cumulative.last_mut().unwrap() = 3;
        let buckets = per_bucket(&cumulative);
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(buckets[1], (LATENCY_BUCKETS[1], 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 2)));
        assert_eq!(buckets.iter().map(|(_, count)| count).sum::<u64>(), 3);
    }

    #[test]
    fn vm_rss_is_read_in_kilobytes() {
        let status = "Name:\tcorral\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_bytes(status), Some(1234 * 1024));
        assert_eq!(vm_rss_bytes("Name:\tcorral\n"), None);
    }

    #[test]
    fn extension_methods_share_one_label() {
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        let invented = Method::from_bytes(b"FROBNICATE").unwrap();
        assert_eq!(method_label(&invented), "other");
    }
}
