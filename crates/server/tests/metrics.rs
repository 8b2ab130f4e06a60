//! `GET /metrics` through a real socket: after real requests, the exposition
//! is Prometheus text whose numbers count them, labelled by route template.

use std::collections::{BTreeMap, HashMap};

use corral_sched::{SchedConfig, Scheduler};
use corral_server::{AppState, ServerConfig};
use corral_store::{Store, StoreConfig};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// One sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: the samples, and the type each `# TYPE` line gives.
#[derive(Debug)]
struct Exposition {
    samples: Vec<Sample>,
    types: HashMap<String, String>,
}

impl Exposition {
    /// Parses Prometheus text 0.0.4; panics on a line it cannot read.
    fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("a TYPE line has a type");
                let previous = types.insert(name.to_owned(), kind.to_owned());
                assert!(previous.is_none(), "two TYPE lines for {name}");
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                samples.push(parse_sample(line));
            }
        }
        Self { samples, types }
    }

    /// The value of the series `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        let mut found = self
            .samples
            .iter()
            .filter(|sample| sample.name == name && sample.labels == labels);
        let sample = found.next()?;
        assert!(found.next().is_none(), "{name} {labels:?} appears twice");
        Some(sample.value)
    }

    /// Every series named `name`.
    fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> {
        self.samples
            .iter()
            .filter(move |sample| sample.name == name)
    }
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inside) = rest.strip_prefix('{') {
        let mut chars = inside.char_indices();
        let mut key = String::new();
        loop {
            let (at, c) = chars
                .next()
                .unwrap_or_else(|| panic!("open {{ in {line:?}"));
            match c {
                '}' => {
                    rest = &inside[at + 1..];
                    break;
                }
                ',' => {}
                '=' => {
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "in {line:?}");
                    let mut value = String::new();
                    loop {
                        match chars.next().map(|(_, c)| c) {
                            Some('"') => break,
                            Some('\\') => match chars.next().map(|(_, c)| c) {
                                Some('n') => value.push('\n'),
                                Some(escaped @ ('\\' | '"')) => value.push(escaped),
                                other => panic!("bad escape {other:?} in {line:?}"),
                            },
                            Some(c) => value.push(c),
                            None => panic!("open quote in {line:?}"),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                c => key.push(c),
            }
        }
    }
    let value = rest.trim();
    let value = value
        .parse()
        .unwrap_or_else(|_| panic!("bad value {value:?} in {line:?}"));
    Sample {
        name,
        labels,
        value,
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_report_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = Scheduler::new(SchedConfig::default());
    let store = Store::open(
        dir.path().to_str().unwrap(),
        StoreConfig::default(),
        scheduler.clone(),
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(corral_server::run(
        listener,
        AppState::new(store, scheduler, ServerConfig::default()),
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");

    let form = Form::new().part(
        "file",
        Part::bytes(b"counted".to_vec()).file_name("hello.txt"),
    );
    let response = client
        .post(url("/api/files"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let key = body["files"][0]["key"].as_str().unwrap().to_owned();

    let response = client
        .get(url(&format!("/api/files/{key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"counted");

    let response = client.get(url("/no/such/route")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let response = client.get(url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "content type {content_type:?}"
    );
    let text = response.text().await.unwrap();
    let metrics = Exposition::parse(&text);

    // HTTP, by route template.
    assert_eq!(
        metrics
            .types
            .get("corral_http_requests_total")
            .map(String::as_str),
        Some("counter"),
        "{text}"
    );
    let post = [
        ("route", "/api/files"),
        ("method", "POST"),
        ("status", "201"),
    ];
    let requests = |labels: &[(&str, &str)]| {
        metrics
            .value("corral_http_requests_total", labels)
            .unwrap_or_else(|| panic!("no request count for {labels:?} in\n{text}"))
    };
    assert!(requests(&post) >= 1.0);
    assert!(
        requests(&[
            ("route", "/api/files/{*key}"),
            ("method", "GET"),
            ("status", "200")
        ]) >= 1.0
    );
    assert!(requests(&[("route", "unmatched"), ("method", "GET"), ("status", "404")]) >= 1.0);
    for sample in metrics.series("corral_http_requests_total") {
        let route = &sample.labels["route"];
        assert!(
            route != "/no/such/route" && !route.contains(&key),
            "a raw path became a label: {sample:?}"
        );
    }
    let posts_timed = metrics
        .value("corral_http_request_duration_seconds_count", &post)
        .unwrap();
    assert!(posts_timed >= 1.0);
    let posts_within_inf = metrics
        .value(
            "corral_http_request_duration_seconds_bucket",
            &[
                ("route", "/api/files"),
                ("method", "POST"),
                ("status", "201"),
                ("le", "+Inf"),
            ],
        )
        .unwrap();
    assert_eq!(posts_within_inf, posts_timed);

    // The scheduler.
    assert_eq!(
        metrics
            .types
            .get("corral_sched_calls_total")
            .map(String::as_str),
        Some("counter")
    );
    assert!(metrics.value("corral_sched_calls_total", &[]).unwrap() > 0.0);
    assert!(metrics.value("corral_sched_admitted_total", &[]).unwrap() > 0.0);
    // Nothing was refused or failed, so these are exactly zero (and a
    // counter wired to the wrong source, such as calls, would not be).
    for counter in [
        "corral_sched_rejected_total",
        "corral_sched_retries_total",
        "corral_sched_retry_budget_exhausted_total",
    ] {
        assert_eq!(metrics.value(counter, &[]), Some(0.0), "{counter}");
    }
    let limit = metrics.value("corral_sched_limit", &[]).unwrap();
    assert!(limit >= 1.0, "limit {limit}");
    // The server is idle while it is scraped.
    for gauge in [
        "corral_sched_in_flight",
        "corral_sched_queued_jobs",
        "corral_sched_queued_bytes",
    ] {
        assert_eq!(metrics.value(gauge, &[]), Some(0.0), "{gauge}");
    }
    let probing = metrics.value("corral_sched_probing", &[]).unwrap();
    assert!(probing == 0.0 || probing == 1.0, "probing {probing}");
    assert_eq!(
        metrics
            .types
            .get("corral_backend_call_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    let successes = metrics
        .value(
            "corral_backend_call_duration_seconds_count",
            &[("outcome", "success")],
        )
        .unwrap();
    assert!(successes > 0.0);
    for outcome in ["loss", "other"] {
        assert!(
            metrics
                .value(
                    "corral_backend_call_duration_seconds_count",
                    &[("outcome", outcome)]
                )
                .is_some(),
            "no {outcome} histogram"
        );
    }

    // The process.
    let rss = metrics
        .value("corral_process_resident_memory_bytes", &[])
        .unwrap();
    assert!(rss > 0.0);
    let tasks = metrics.value("corral_tokio_alive_tasks", &[]).unwrap();
    assert!(tasks > 0.0);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
