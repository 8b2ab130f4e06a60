//! The upload page and the live view in headless Chromium (installed by
//! the testkit): the page at `/` uploads files picked in its file input,
//! with tus, and shows each one's key; the live view draws `/api/stats`,
//! and shows calls in flight while a herd uploads through a backend with
//! a round trip of 100 ms (the testkit's front before moto);
//! `examples/uppy` uploads with Uppy from npm's bundle (never a CDN).
//! Set `CORRAL_SCREENSHOTS` to a directory to get PNGs of both pages
//! (`docs/screenshots/` holds the ones the README shows).

mod common;

use std::time::Duration;

use common::*;
use corral_server::ServerConfig;
use corral_store::StoreConfig;
use corral_testkit::browser::Browser;
use serde::Deserialize;
use serde_json::json;

/// Opens `{origin}{path}`, and with `files` ({name, base64}) sets them on
/// `#files` and waits for every upload to show its key; then waits for
/// `waitFor` (a page expression) and reports the keys, the chart points and
/// the live view's outputs.
const SCRIPT: &str = r#"
import { launch, readInput, writeOutput } from './browser.mjs'
const input = await readInput()
const browser = await launch()
const page = await browser.newPage({ viewport: { width: 900, height: 900 } })
const console_ = []
page.on('console', (m) => console_.push(`${m.type()}: ${m.text()}`))
page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`))
await page.goto(`${input.origin}${input.path}`)
let keys = []
if (input.files.length > 0) {
  await page.setInputFiles('#files', input.files.map((f) => ({
    name: f.name, mimeType: 'application/octet-stream', buffer: Buffer.from(f.base64, 'base64'),
  })))
  await page.waitForFunction((n) => document.querySelectorAll('li.upload[data-state=stored]').length === n,
    input.files.length, { timeout: 60000 }).catch(() => {})
  keys = await page.$$eval('li.upload', (items) => items.map((li) => ({
    name: li.querySelector('.name').textContent, key: li.dataset.key ?? null, state: li.dataset.state,
    status: li.querySelector('.status').textContent })))
  await page.waitForFunction(() => document.querySelectorAll('#listing tbody tr').length > 0,
    null, { timeout: 10000 }).catch(() => {})
}
if (input.waitFor) await page.waitForFunction(input.waitFor, null, { timeout: 30000 }).catch(() => {})
const points = await page.$$eval('figure.chart', (fs) => fs.map((f) => Number(f.dataset.points)))
const outputs = await page.$$eval('output[data-key]', (os) => Object.fromEntries(os.map((o) => [o.dataset.key, o.textContent])))
const listed = await page.$$eval('#listing tbody tr', (rows) => rows.length)
if (input.screenshot) await page.screenshot({ path: input.screenshot, fullPage: true })
await browser.close()
writeOutput({ keys, points, outputs, listed, console: console_ })
"#;

#[derive(Debug, Deserialize)]
struct Report {
    keys: Vec<Shown>,
    points: Vec<u64>,
    outputs: std::collections::BTreeMap<String, String>,
    listed: usize,
    console: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Shown {
    name: String,
    key: Option<String>,
    state: String,
    status: String,
}

/// Where to write the screenshot `name`, if `CORRAL_SCREENSHOTS` asks for
/// them (an absolute path: the script runs elsewhere).
fn screenshot(name: &str) -> Option<String> {
    let dir = std::fs::canonicalize(std::env::var_os("CORRAL_SCREENSHOTS")?).unwrap();
    Some(dir.join(name).display().to_string())
}

async fn run(input: serde_json::Value) -> Report {
    let output = Browser::require()
        .run_script::<Report>(SCRIPT, &input, Duration::from_secs(120))
        .await
        .unwrap();
    output.value
}

#[tokio::test]
async fn the_page_uploads_the_files_picked_and_shows_where_each_is_stored() {
    use base64::Engine as _;
    let server = Server::start().await;
    let contents = [data(0, 1), data(300 << 10, 2), data(6 << 20, 3)];
    let names = ["empty.bin", "small.bin", "six mib.bin"];
    let files: Vec<_> = (names.iter().zip(&contents))
        .map(|(name, bytes)| {
            let base64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            json!({ "name": name, "base64": base64 })
        })
        .collect();
    let input = json!({
        "origin": server.url(""), "path": "/", "files": files, "waitFor": null,
        "screenshot": screenshot("upload.png"),
    });
    let report = run(input).await;
    assert_eq!(report.keys.len(), 3, "{report:#?}");
    for (shown, (name, bytes)) in report.keys.iter().zip(names.iter().zip(&contents)) {
        assert_eq!(
            (&shown.name[..], &shown.state[..]),
            (*name, "stored"),
            "{report:#?}"
        );
        let key = shown.key.as_deref().unwrap();
        assert!(key.ends_with(&format!("/{name}")), "{key}");
        assert!(shown.status.contains(key), "{shown:?}");
        // What the page names is what the store holds.
        let response = server.get(key).await;
        assert_eq!(response.status(), 200, "{key}");
        assert_eq!(
            sha256(&response.bytes().await.unwrap()),
            sha256(bytes),
            "{key}"
        );
    }
    assert_eq!(report.listed, 3, "{report:#?}");
    let errors: Vec<_> = report
        .console
        .iter()
        .filter(|l| l.starts_with("pageerror"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[tokio::test]
async fn the_live_view_draws_the_samples_of_api_stats() {
    let server = Server::start().await;
    // A few seconds of samples, and a call to count.
    let form = reqwest::multipart::Form::new().part("f", file("a.txt", b"hello".to_vec()));
    assert_eq!(server.upload(form).await.0, 201);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let input = json!({
        "origin": server.url(""), "path": "/live", "files": [],
        "waitFor": "[...document.querySelectorAll('figure.chart')].every((f) => Number(f.dataset.points) >= 2 || f.querySelector('output').textContent === '–')",
        "screenshot": null,
    });
    let report = run(input).await;
    assert_eq!(report.points.len(), 7, "{report:#?}");
    // The limit and in-flight chart has a point per sample and series.
    assert!(report.points[0] >= 4, "{report:#?}");
    let limit: u64 = report.outputs["limit"].parse().unwrap();
    assert!(limit >= 1, "{report:#?}");
    let in_flight: u64 = report.outputs["in_flight"].parse().unwrap();
    assert!(in_flight <= limit, "{report:#?}");
}

/// Serves `examples/uppy/index.html` and Uppy's `dist/` from npm (no
/// CDN), opens the page with `?endpoint=&uppy=`, drops one file into the
/// Dashboard, presses its upload button, and reports what the page lists.
const UPPY_EXAMPLE: &str = r#"
import { join } from 'node:path'
import { launch, readInput, serve, writeOutput } from './browser.mjs'
const input = await readInput()
const dist = join(process.cwd(), 'node_modules', 'uppy', 'dist')
const site = await serve({
  '/': { path: input.page, type: 'text/html; charset=utf-8' },
  '/uppy/uppy.min.mjs': { path: join(dist, 'uppy.min.mjs'), type: 'text/javascript' },
  '/uppy/uppy.min.css': { path: join(dist, 'uppy.min.css'), type: 'text/css' },
})
const browser = await launch()
const page = await browser.newPage()
const console_ = []
page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`))
const query = new URLSearchParams({ endpoint: input.endpoint, uppy: `${site.origin}/uppy` })
await page.goto(`${site.origin}/?${query}`)
await page.waitForFunction(() => window.uppy !== undefined, null, { timeout: 30000 })
await page.setInputFiles('.uppy-Dashboard-input >> nth=0', {
  name: input.name, mimeType: 'application/octet-stream', buffer: Buffer.from(input.base64, 'base64'),
})
await page.click('.uppy-StatusBar-actionBtn--upload')
await page.waitForFunction(() => document.querySelectorAll('#stored li').length > 0, null, { timeout: 60000 }).catch(() => {})
const stored = await page.$$eval('#stored li', (items) => items.map((li) => li.textContent))
await browser.close()
site.close()
writeOutput({ stored, console: console_ })
"#;

#[derive(Debug, Deserialize)]
struct UppyExample {
    stored: Vec<String>,
    console: Vec<String>,
}

#[tokio::test]
async fn the_uppy_example_uploads_a_file() {
    use base64::Engine as _;
    let server = Server::start().await;
    let bytes = data(700 << 10, 9);
    let page = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/uppy/index.html"
    );
    let input = json!({
        "page": std::fs::canonicalize(page).unwrap(),
        "endpoint": server.url("/api/uploads"),
        "name": "from-uppy.bin",
        "base64": base64::engine::general_purpose::STANDARD.encode(&bytes),
    });
    let report = Browser::require()
        .run_script::<UppyExample>(UPPY_EXAMPLE, &input, Duration::from_secs(120))
        .await
        .unwrap()
        .value;
    assert_eq!(report.stored.len(), 1, "{report:#?}");
    assert!(report.console.is_empty(), "{report:#?}");
    assert!(
        report.stored[0].starts_with("from-uppy.bin: "),
        "{report:#?}"
    );
    let expected = vec![("from-uppy.bin".to_owned(), sha256(&bytes))];
    assert_eq!(server.stored_files(None).await, expected);
}

/// Opens `/live` and reads what it shows every 100 ms for `ms`: the
/// in-flight counts and the limits shown, and the points drawn; then a
/// screenshot if asked.
const LIVE_WATCH: &str = r#"
import { launch, readInput, writeOutput } from './browser.mjs'
const input = await readInput()
const browser = await launch()
const page = await browser.newPage()
await page.goto(input.url)
const seen = { inFlight: [], limits: [] }
const until = Date.now() + input.ms
while (Date.now() < until) {
  const now = await page.$$eval('output[data-key]', (os) => Object.fromEntries(os.map((o) => [o.dataset.key, o.textContent])))
  if (now.in_flight !== '–') seen.inFlight.push(Number(now.in_flight))
  if (now.limit !== '–') seen.limits.push(now.limit)
  await new Promise((resolve) => setTimeout(resolve, 100))
}
const points = await page.$$eval('figure.chart', (fs) => fs.map((f) => Number(f.dataset.points)))
if (input.screenshot) await page.screenshot({ path: input.screenshot, fullPage: true })
await browser.close()
writeOutput({ inFlight: seen.inFlight, limits: [...new Set(seen.limits)], points })
"#;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LiveWatch {
    in_flight: Vec<u64>,
    limits: Vec<String>,
    points: Vec<u64>,
}

#[tokio::test]
async fn the_live_view_shows_calls_in_flight_while_a_herd_uploads() {
    use corral_testkit::front::{Front, FrontConfig};
    let s3 = corral_testkit::s3::S3Server::require();
    // A backend with a round trip of 100 ms, so calls stay in flight.
    let front = Front::start(FrontConfig {
        latency: Duration::from_millis(100),
        slots: Some(16),
        ..FrontConfig::new(s3.addr())
    })
    .await
    .unwrap();
    let server = Server::on_s3_at(
        &front.endpoint(),
        ServerConfig::default(),
        StoreConfig::default(),
    )
    .await;
    let server = &server;
    let herd = async {
        let uploads = (0..32).map(|i| async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
            while tokio::time::Instant::now() < deadline {
                let form = reqwest::multipart::Form::new()
                    .part("f", file(&format!("{i}.bin"), data(64 << 10, i)));
                server.upload(form).await;
            }
        });
        futures::future::join_all(uploads).await;
    };
    let input = json!({
        "url": server.url("/live"), "ms": 6000, "screenshot": screenshot("live.png"),
    });
    let watch =
        Browser::require().run_script::<LiveWatch>(LIVE_WATCH, &input, Duration::from_secs(60));
    let (watch, ()) = tokio::join!(watch, herd);
    let watch = watch.unwrap().value;
    assert!(watch.in_flight.iter().any(|&n| n > 0), "{watch:#?}");
    assert!(!watch.limits.is_empty(), "{watch:#?}");
    assert!(watch.points[0] > 0, "{watch:#?}");
    // What the page drew came from samples that saw the load too.
    let (_, stats) = json(server.call(reqwest::Method::GET, "/api/stats").await).await;
    let samples = stats["samples"].as_array().unwrap();
    assert!(
        samples.iter().any(|s| s["in_flight"].as_u64().unwrap() > 0),
        "{stats}"
    );
    assert!(
        samples
            .iter()
            .map(|s| s["calls"].as_u64().unwrap())
            .sum::<u64>()
            > 0
    );
}
