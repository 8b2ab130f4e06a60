//! Scripts driving headless Chromium through `corral_testkit::browser`: a
//! page served from 127.0.0.1 runs, a request to another origin is seen
//! and, with no CORS headers in its answer, refused; a script that fails
//! is an error that says why.

use std::time::Duration;

use corral_testkit::ScriptError;
use corral_testkit::browser::{Browser, Error};
use serde_json::{Value, json};

/// Serves a page, and a second origin that answers without CORS headers;
/// the page fetches from both.
const TWO_ORIGINS: &str = r#"
import { launch, readInput, serve, watchNetwork, writeOutput } from './browser.mjs'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const input = await readInput()
const html = join(await mkdtemp(join(tmpdir(), 'corral-page-')), 'page.html')
await writeFile(html, `<title>${input.title}</title>`)
const site = await serve({ '/': { path: html, type: 'text/html' } })
const other = await serve({ '/data': { path: html, type: 'text/plain' } })
const browser = await launch()
const page = await browser.newPage()
const requests = await watchNetwork(page, site.origin)
await page.goto(`${site.origin}/`)
const fetched = async (url) =>
  page.evaluate((url) => fetch(url).then((r) => r.status, (e) => e.name), url)
const output = {
  title: await page.title(),
  agent: await page.evaluate(() => navigator.userAgent),
  sameOrigin: await fetched(`${site.origin}/`),
  otherOrigin: await fetched(`${other.origin}/data`),
  requests,
}
await browser.close()
writeOutput(output)
"#;

#[tokio::test]
async fn a_script_drives_a_page_and_sees_a_request_cors_refuses() {
    let browser = Browser::require();
    let output = browser
        .run_script::<Value>(
            TWO_ORIGINS,
            &json!({"title": "corral"}),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let value = output.value;
    assert_eq!(value["title"], "corral", "{value:#}\n{}", output.stderr);
    assert!(
        value["agent"].as_str().unwrap().contains("HeadlessChrome"),
        "{value:#}"
    );
    assert_eq!(value["sameOrigin"], 200, "{value:#}");
    // The answer came, but without Access-Control-Allow-Origin the page
    // may not read it.
    assert_eq!(value["otherOrigin"], "TypeError", "{value:#}");
    let requests = value["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 1, "{value:#}");
    assert_eq!(requests[0]["method"], "GET");
    let failure = requests[0]["failure"].as_str().unwrap();
    assert!(failure.contains("CORS"), "{failure}");
}

#[tokio::test]
async fn a_script_that_throws_is_an_error_with_its_stderr() {
    let error = Browser::require()
        .run_script::<Value>(
            "throw new Error('no such page')",
            &json!({}),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    match error {
        Error::Script(ScriptError::Failed { status, stderr, .. }) => {
            assert_eq!(status.code(), Some(1));
            assert!(stderr.contains("no such page"), "{stderr}");
        }
        other => panic!("{other:?}"),
    }
}
