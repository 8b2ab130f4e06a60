//! The upload page at `/` in headless Chromium, with the server killed
//! (`kill -9`) and started again on the same port and data directory while
//! the page uploads: tus-js-client retries, asks the new process what it
//! kept, and finishes. Every file's key shown by the page is read back from
//! the store and hashed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::tus::content;
use corral_testkit::browser::Browser;
use sha2::{Digest, Sha256};

/// Opens the page, slows the page's uploads to 4 MiB/s (the DevTools
/// protocol's network emulation), picks the files, writes `marker` once the
/// largest is a quarter sent, and reports what each upload shows once all
/// are stored (or after a minute).
const SCRIPT: &str = r#"
import { writeFileSync } from 'node:fs'
import { launch, readInput, writeOutput } from './browser.mjs'
const input = await readInput()
const browser = await launch()
const page = await browser.newPage()
const session = await page.context().newCDPSession(page)
await session.send('Network.enable')
await session.send('Network.emulateNetworkConditions', {
  offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 4 * 1024 * 1024,
})
await page.goto(input.url)
await page.setInputFiles('#files', input.files.map((f) => ({
  name: f.name, mimeType: 'application/octet-stream', buffer: Buffer.from(f.base64, 'base64'),
})))
await page.waitForFunction(() => {
  const bars = [...document.querySelectorAll('li.upload progress')]
  return bars.some((bar) => bar.max > 1000000 && bar.value > bar.max / 4)
}, null, { timeout: 60000, polling: 50 })
writeFileSync(input.marker, 'quarter')
await page.waitForFunction((n) => document.querySelectorAll('li.upload[data-state=stored]').length === n,
  input.files.length, { timeout: 90000 }).catch(() => {})
const shown = await page.$$eval('li.upload', (items) => items.map((li) => ({
  name: li.querySelector('.name').textContent, key: li.dataset.key ?? null,
  state: li.dataset.state, status: li.querySelector('.status').textContent })))
await browser.close()
writeOutput(shown)
"#;

#[derive(Debug, serde::Deserialize)]
struct Shown {
    name: String,
    key: Option<String>,
    state: String,
    status: String,
}

/// `corral serve` on `addr`, storing in `dir`; once it says it listens.
fn start(addr: &str, dir: &Path) -> Child {
    let mut child = common::corral()
        .args(["serve", "--listen", addr, "--store"])
        .arg(dir.join("data"))
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("corral listening on"), "{line:?}");
    child
}

#[test]
fn the_page_s_uploads_survive_a_server_killed_and_restarted() {
    use base64::Engine as _;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A port of our own, free again for the server.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut corral = start(&addr, dir.path());
    let names = ["a.txt", "b.bin", "large.bin"];
    let contents = [content(5, 1), content(200 << 10, 2), content(24 << 20, 3)];
    let marker = dir.path().join("quarter");
    let files: Vec<_> = (names.iter().zip(&contents))
        .map(|(name, bytes)| {
            let base64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            serde_json::json!({ "name": name, "base64": base64 })
        })
        .collect();
    let input = serde_json::json!({
        "url": format!("http://{addr}/"), "files": files, "marker": marker,
    });
    let shown: Vec<Shown> = runtime.block_on(async {
        let browser = Browser::require();
        let run = browser.run_script::<Vec<Shown>>(SCRIPT, &input, Duration::from_secs(180));
        let restart = async {
            while !marker.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            corral.kill().unwrap();
            corral.wait().unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            corral = start(&addr, dir.path());
        };
        let (output, ()) = tokio::join!(run, restart);
        output.unwrap().value
    });
    assert_eq!(shown.len(), 3, "{shown:#?}");
    let client = reqwest::Client::new();
    for (shown, (name, bytes)) in shown.iter().zip(names.iter().zip(&contents)) {
        assert_eq!(
            (&shown.name[..], &shown.state[..]),
            (*name, "stored"),
            "{shown:?}"
        );
        let key = shown.key.as_deref().unwrap();
        let stored = runtime.block_on(async {
            let url = format!("http://{addr}/api/files/{key}");
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{key}");
            response.bytes().await.unwrap()
        });
        assert_eq!(
            hex::encode(Sha256::digest(&stored)),
            hex::encode(Sha256::digest(bytes)),
            "{key}: {}",
            shown.status
        );
    }
    corral.kill().unwrap();
    corral.wait().unwrap();
}
