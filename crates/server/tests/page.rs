//! The upload page, the live view and their assets, as HTTP sees them
//! (content types, caching, `HEAD`, `405`), and `GET /api/stats` on a real
//! server whose sampler runs. The pages in a browser are tested by
//! `crates/cli/tests/page.rs`.

mod common;

use std::time::Duration;

use common::*;
use corral_server::{Auth, ServerConfig};
use reqwest::Method;
use reqwest::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
};
use serde_json::Value;

const HTML: &str = "text/html; charset=utf-8";

/// The `/assets/…` paths `html` loads.
fn assets_of(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for piece in html.split(attribute).skip(1) {
            let path = piece.split('"').next().unwrap();
            if path.starts_with("/assets/") {
                found.push(path.to_owned());
            }
        }
    }
    found
}

fn header<'a>(response: &'a reqwest::Response, name: &reqwest::header::HeaderName) -> &'a str {
    let value = response.headers().get(name);
    value
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_pages_and_every_asset_they_load_are_served_with_their_type_and_tag() {
    let server = Server::start().await;
    let mut loaded = Vec::new();
    for page in ["/", "/live"] {
        let response = server.call(Method::GET, page).await;
        assert_eq!(response.status(), 200, "{page}");
        assert_eq!(header(&response, &CONTENT_TYPE), HTML);
        assert_eq!(header(&response, &CACHE_CONTROL), "no-cache");
        assert!(header(&response, &CONTENT_SECURITY_POLICY).starts_with("default-src 'self'"));
        let html = response.text().await.unwrap();
        loaded.extend(assets_of(&html));
    }
    // The upload page's script, the live view's, the shared ones.
    for expected in ["/assets/upload.js", "/assets/live.js", "/assets/tus.min.js"] {
        assert!(loaded.iter().any(|path| path == expected), "{loaded:?}");
    }
    for path in &loaded {
        let response = server.call(Method::GET, path).await;
        assert_eq!(response.status(), 200, "{path}");
        let wanted = match path.rsplit('.').next().unwrap() {
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("{path}: an asset of type {other}"),
        };
        assert_eq!(header(&response, &CONTENT_TYPE), wanted, "{path}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert!(!response.bytes().await.unwrap().is_empty(), "{path}");
    }
    // The modules' own imports are served too.
    let upload = server.call(Method::GET, "/assets/upload.js").await;
    assert!(upload.text().await.unwrap().contains("from './format.js'"));
    let format = server.call(Method::GET, "/assets/format.js").await;
    assert_eq!(format.status(), 200);
}

#[tokio::test]
async fn the_vendored_client_is_served_as_it_was_packed_with_its_licence() {
    let server = Server::start().await;
    let response = server.call(Method::GET, "/assets/tus.min.js").await;
    let body = response.bytes().await.unwrap();
    // The SHA-256 the vendor directory's README records for 4.3.1.
    assert_eq!(
        sha256(&body),
        "8cbb1b63fccc3bba0ae73ad1deb160ce046c3750851d0c3e94921ae3ef070eb8"
    );
    let licence = server.call(Method::GET, "/assets/tus.LICENSE.txt").await;
    assert_eq!(header(&licence, &CONTENT_TYPE), "text/plain; charset=utf-8");
    assert!(licence.text().await.unwrap().starts_with("The MIT License"));
}

#[tokio::test]
async fn a_page_s_tag_answers_304_and_head_sends_the_headers_alone() {
    let server = Server::start().await;
    let page = server.call(Method::GET, "/").await;
    let tag = header(&page, &ETAG).to_owned();
    let length = page.bytes().await.unwrap().len();
    assert!(tag.starts_with('"') && tag.len() == 66, "{tag}");
    let again = (server.client.get(server.url("/")))
        .header(IF_NONE_MATCH, &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, &ETAG), tag);
    assert!(again.bytes().await.unwrap().is_empty());
    let stale = (server.client.get(server.url("/")))
        .header(IF_NONE_MATCH, "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);

    let head = server.call(Method::HEAD, "/").await;
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, &CONTENT_TYPE), HTML);
    assert_eq!(header(&head, &CONTENT_LENGTH), length.to_string());
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_pages_take_get_and_head_only_and_unknown_assets_are_404() {
    let server = Server::start().await;
    for (method, path) in [
        (Method::POST, "/"),
        (Method::PUT, "/live"),
        (Method::DELETE, "/assets/upload.js"),
    ] {
        let (status, body) = json(server.call(method.clone(), path).await).await;
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(error_code(&body), "method_not_allowed");
    }
    let response = server.call(Method::POST, "/").await;
    assert_eq!(response.headers()["allow"], "GET,HEAD");
    for path in [
        "/assets/nothing.js",
        "/assets/",
        "/assets/../Cargo.toml",
        "/index.html",
    ] {
        let (status, body) = json(server.call(Method::GET, path).await).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(error_code(&body), "no_route", "{path}");
    }
}

/// `/api/stats` once the sampler has taken `at_least` samples.
async fn stats_with(server: &Server, at_least: usize) -> Value {
    for _ in 0..100 {
        let (status, body) = json(server.call(Method::GET, "/api/stats").await).await;
        assert_eq!(status, 200, "{body}");
        if body["samples"].as_array().unwrap().len() >= at_least {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the sampler took fewer than {at_least} samples in 10 s");
}

const SAMPLE_FIELDS: [&str; 11] = [
    "t",
    "limit",
    "in_flight",
    "queued_jobs",
    "queued_bytes",
    "upload_waiting",
    "spool_bytes",
    "refusals",
    "calls",
    "latency_p50_ms",
    "latency_p99_ms",
];

fn assert_sample_shape(sample: &Value) {
    let fields: Vec<&str> = sample
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = SAMPLE_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(fields, expected, "{sample}");
}

#[tokio::test]
async fn stats_hold_the_current_reading_and_a_sample_a_second() {
    let server = Server::start().await;
    let stats = stats_with(&server, 2).await;
    assert_eq!(stats["interval_ms"], 1000);
    assert_eq!(stats["capacity"], 300);
    assert_sample_shape(&stats["now"]);
    let samples = stats["samples"].as_array().unwrap();
    for sample in samples {
        assert_sample_shape(sample);
        // The default adaptive limit is bounded; no spool here.
        assert!(sample["limit"].as_u64().unwrap() >= 1, "{sample}");
        assert_eq!(sample["spool_bytes"], Value::Null);
    }
    for pair in samples.windows(2) {
        let gap = pair[1]["t"].as_u64().unwrap() - pair[0]["t"].as_u64().unwrap();
        assert!(gap >= 500, "samples {gap} ms apart: {pair:?}");
    }
    let response = server.call(Method::GET, "/api/stats").await;
    assert_eq!(header(&response, &CACHE_CONTROL), "no-store");
}

#[tokio::test]
async fn stats_count_the_backend_calls_of_an_upload_and_their_latency() {
    let server = Server::start().await;
    let form = reqwest::multipart::Form::new().part("f", file("a.txt", b"hello".to_vec()));
    let (status, body) = server.upload(form).await;
    assert_eq!(status, 201, "{body}");
    let before = stats_with(&server, 1).await;
    // Every call counted once, in the sample of its second or in `now`.
    let stats = stats_with(&server, before["samples"].as_array().unwrap().len() + 1).await;
    let readings: Vec<&Value> = (stats["samples"].as_array().unwrap().iter())
        .chain([&stats["now"]])
        .collect();
    let calls: u64 = readings.iter().map(|s| s["calls"].as_u64().unwrap()).sum();
    assert!(calls >= 1, "{stats}");
    let timed = readings.iter().find(|s| !s["latency_p50_ms"].is_null());
    let timed = timed.unwrap_or_else(|| panic!("no latency: {stats}"));
    let (p50, p99) = (
        timed["latency_p50_ms"].as_f64().unwrap(),
        timed["latency_p99_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99, "{timed}");
}

#[tokio::test]
async fn stats_report_the_spool_when_there_is_one() {
    let server = Server::with_spool(ServerConfig::default(), 1 << 20, None).await;
    let stats = stats_with(&server, 0).await;
    assert_eq!(stats["now"]["spool_bytes"], 0);
}

#[tokio::test]
async fn stats_refuse_a_query_parameter() {
    let server = Server::start().await;
    let (status, body) = json(server.call(Method::GET, "/api/stats?window=60").await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "unknown_parameter");
}

#[tokio::test]
async fn under_auth_the_pages_and_stats_are_open_and_the_files_are_not() {
    let auth = Auth::new(vec![tenant("acme", "t-acme")]).unwrap();
    let server = Server::with_auth(ServerConfig::default(), auth).await;
    for path in ["/", "/live", "/assets/upload.js", "/api/stats"] {
        let response = server.call(Method::GET, path).await;
        assert_eq!(response.status(), 200, "{path}");
    }
    // What the page reads to learn that it needs a token.
    let (status, body) = json(server.call(Method::GET, "/api/files").await).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_code(&body), "unauthorized");
}
