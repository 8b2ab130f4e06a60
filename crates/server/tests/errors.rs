//! The README's error table, row by row: for each status and code it
//! lists, a request over a real socket that gets exactly that answer, with
//! the headers the row promises. The rows are read from `README.md`, so a
//! row without a case here, or a case the server answers otherwise, fails.

mod common;

use std::time::Duration;

use common::*;
use corral_sched::{QueueConfig, SchedConfig};
use corral_server::{Auth, ServerConfig, TenantSpec};
use corral_store::StoreConfig;
use corral_testkit::front::{Front, FrontConfig};
use reqwest::header::HeaderMap;
use reqwest::multipart::Form;
use tokio::io::AsyncWriteExt;

const TOKEN: &str = "corral_errors-token";

/// What the server answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    code: Option<String>,
    headers: HeaderMap,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Self::new(status, headers, &response.text().await.unwrap())
    }

    /// An answer read off a raw socket.
    fn parse(raw: &str) -> Self {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
        let mut lines = head.lines();
        let status = lines.next().and_then(|line| line.split(' ').nth(1));
        let status = status.and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut headers = HeaderMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let name = reqwest::header::HeaderName::from_bytes(name.trim().as_bytes());
                headers.insert(name.unwrap(), value.trim().parse().unwrap());
            }
        }
        Self::new(status, headers, body)
    }

    fn new(status: u16, headers: HeaderMap, body: &str) -> Self {
        let code = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|body| body["error"]["code"].as_str().map(str::to_owned));
        Self {
            status,
            code,
            headers,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }
}

/// The rows of the README's error table: status and code (`None` for an
/// answer without a body).
fn rows() -> Vec<(u16, Option<String>)> {
    let readme = include_str!("../../../README.md");
    let table = readme
        .split("### Errors")
        .nth(1)
        .expect("the README has an Errors section");
    let mut rows = Vec::new();
    for line in table.lines().skip_while(|line| !line.starts_with('|')) {
        let Some(line) = line.strip_prefix('|') else {
            break;
        };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Ok(status) = cells[0].parse::<u16>() else {
            // The head, and the line under it.
            continue;
        };
        let codes: Vec<String> = cells[1]
            .split(", ")
            .filter_map(|code| code.strip_prefix('`')?.strip_suffix('`'))
            .map(str::to_owned)
            .collect();
        if codes.is_empty() {
            rows.push((status, None));
        }
        rows.extend(codes.into_iter().map(|code| (status, Some(code))));
    }
    rows
}

fn upload_form(size: usize) -> Form {
    Form::new().part("file", file("f.bin", data(size, 1)))
}

async fn post(server: &Server, form: Form) -> Answer {
    let request = server.client.post(server.url("/api/files")).multipart(form);
    Answer::of(request.send().await.unwrap()).await
}

async fn get(server: &Server, path: &str) -> Answer {
    Answer::of(server.client.get(server.url(path)).send().await.unwrap()).await
}

async fn raw(server: &Server, head: &str, body: &[u8]) -> Answer {
    let mut socket = send_raw(server.addr, head, body).await;
    Answer::parse(&read_answer(&mut socket).await)
}

/// A server on local disk whose config `change` sets.
async fn server_with(change: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = ServerConfig::default();
    change(&mut config);
    Server::with(config, StoreConfig::default()).await
}

/// Gets the answer the README promises for `code`.
async fn provoke(status: u16, code: Option<&str>) -> Answer {
    match code {
        Some("bad_request") => {
            let server = Server::start().await;
            let head = "POST /api/files HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                        Content-Type: multipart/form-data\r\nContent-Length: 0\r\n\r\n";
            raw(&server, head, b"").await
        }
        Some("unknown_parameter") => {
            let server = Server::start().await;
            let request = server.client.post(server.url("/api/files?perfix=a"));
            Answer::of(request.multipart(upload_form(10)).send().await.unwrap()).await
        }
        Some("unknown_field") => {
            let server = Server::start().await;
            post(
                &server,
                Form::new()
                    .text("prefx", "a")
                    .part("file", file("f", data(10, 1))),
            )
            .await
        }
        Some("malformed_request") => {
            let server = Server::start().await;
            raw(&server, "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", b"").await
        }
        Some("invalid_key") => get(&Server::start().await, "/api/files?prefix=a/../b").await,
        Some("unauthorized") => {
            let auth = Auth::new(vec![tenant("acme", TOKEN)]).unwrap();
            let server = Server::with_auth(ServerConfig::default(), auth).await;
            get(&server, "/api/files").await
        }
        Some("not_found") => get(&Server::start().await, "/api/files/no/such/file").await,
        Some("no_route") => get(&Server::start().await, "/no/such/route").await,
        Some("method_not_allowed") => {
            let server = Server::start().await;
            let put = server.client.put(server.url("/api/files"));
            Answer::of(put.send().await.unwrap()).await
        }
        Some("slow_client") => {
            let server = server_with(|c| c.body_timeout = Duration::from_millis(500)).await;
            let head = "POST /api/files HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                        Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000\r\n\r\n";
            raw(&server, head, b"--b\r\n").await
        }
        Some("file_too_large") => {
            let server = server_with(|c| c.max_file_size = 100).await;
            post(&server, upload_form(1000)).await
        }
        Some("batch_too_large") => {
            let server = server_with(|c| c.max_batch_size = 100).await;
            post(&server, upload_form(1000)).await
        }
        Some("too_many_files") => {
            let server = server_with(|c| c.max_files = 1).await;
            let form = upload_form(10).part("file", file("g.bin", data(10, 2)));
            post(&server, form).await
        }
        Some("unsupported_media_type") => {
            let server = Server::start().await;
            let request = server.client.post(server.url("/api/files")).body("text");
            Answer::of(
                request
                    .header("content-type", "text/plain")
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
        Some("range_not_satisfiable") => {
            let server = Server::start().await;
            let (_, body) = server.upload(upload_form(10)).await;
            let key = body["files"][0]["key"].as_str().unwrap();
            let request = server.client.get(server.file_url(key));
            Answer::of(
                request
                    .header("range", "bytes=100-200")
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
        Some("headers_too_large") => {
            let server = Server::start().await;
            let junk = "j".repeat(40 << 10);
            let head = format!("GET /api/files HTTP/1.1\r\nHost: x\r\nX-Junk: {junk}\r\n\r\n");
            raw(&server, &head, b"").await
        }
        Some("overloaded") => {
            // A queue that holds nothing: every batch is refused.
            let store = Storage {
                sched: SchedConfig {
                    queue: QueueConfig {
                        max_jobs: 0,
                        max_bytes: 0,
                    },
                    ..SchedConfig::default()
                },
                ..Storage::default()
            };
            let server = Server::with(ServerConfig::default(), store).await;
            let answer = post(&server, upload_form(10)).await;
            // Counted once, by the gate that refused it.
            let metrics = server.client.get(server.url("/metrics")).send().await;
            let metrics = metrics.unwrap().text().await.unwrap();
            for (reason, count) in [("queue_full", 1), ("memory_spent", 0)] {
                let line = format!("corral_refusals_total{{reason=\"{reason}\"}} {count}\n");
                assert!(metrics.contains(&line), "{line} in:\n{metrics}");
            }
            answer
        }
        Some("tenant_busy") => {
            let spec = TenantSpec {
                max_upload_memory: Some(1 << 20),
                ..tenant("acme", TOKEN)
            };
            let server =
                Server::with_auth(ServerConfig::default(), Auth::new(vec![spec]).unwrap()).await;
            // One upload holds 900 KiB of the tenant's 1 MiB while it lasts.
            let head = format!(
                "POST /api/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n\r\n",
                900 << 10
            );
            let _holding = send_raw(server.addr, &head, b"--b\r\n").await;
            loop {
                let request = server
                    .client
                    .post(server.url("/api/files"))
                    .bearer_auth(TOKEN);
                let answer = Answer::of(
                    request
                        .multipart(upload_form(200 << 10))
                        .send()
                        .await
                        .unwrap(),
                )
                .await;
                if answer.status != 201 {
                    return answer;
                }
            }
        }
        Some("spool_full") => {
            let server = Server::with_spool(ServerConfig::default(), 1000, None).await;
            // A first batch holds 600 bytes of the spool while its body is
            // on its way; the second would fit an empty spool, not this one.
            let head = "POST /api/files HTTP/1.1\r\nHost: x\r\nPrefer: respond-async\r\n\
                        Content-Type: multipart/form-data; boundary=b\r\n\
                        Content-Length: 600\r\n\r\n";
            let _first = send_raw(server.addr, head, b"--b\r\n").await;
            for _ in 0..200 {
                if !server.spooled().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let request = server.client.post(server.url("/api/files"));
            let request = request
                .header("prefer", "respond-async")
                .multipart(upload_form(500));
            Answer::of(request.send().await.unwrap()).await
        }
        Some("spool_error") => {
            let server = Server::with_spool(ServerConfig::default(), 1 << 30, None).await;
            // The spool's directory becomes a file: no job can be spooled.
            let spool = server.spool_dir.as_ref().unwrap().path();
            std::fs::remove_dir_all(spool).unwrap();
            std::fs::write(spool, b"not a directory").unwrap();
            let request = server.client.post(server.url("/api/files"));
            let request = request
                .header("prefer", "respond-async")
                .multipart(upload_form(10));
            let answer = Answer::of(request.send().await.unwrap()).await;
            std::fs::remove_file(spool).unwrap();
            answer
        }
        Some("shutting_down") => {
            let server = Server::start().await;
            server.store.scheduler().close();
            post(&server, upload_form(10)).await
        }
        Some("too_many_connections") => {
            let server = server_with(|config| config.max_connections = 1).await;
            // Accepted first, it holds the one place.
            let _held = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            let head = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
            raw(&server, head, b"").await
        }
        Some("backend_unavailable") => {
            let s3 = corral_testkit::s3::S3Server::require();
            let front = Front::start(FrontConfig::new(s3.addr())).await.unwrap();
            let store = StoreConfig::default();
            let server = Server::on_s3_at(&front.endpoint(), ServerConfig::default(), store).await;
            // The backend goes away.
            front.shutdown().await;
            post(&server, upload_form(10)).await
        }
        Some("storage_error") => {
            let server = Server::start().await;
            // A file where the batch's directory must go: the local store
            // refuses the write for good.
            std::fs::create_dir_all(server.dir.path().join("anonymous")).unwrap();
            std::fs::write(server.dir.path().join("anonymous/blocked"), b"x").unwrap();
            let request = server.client.post(server.url("/api/files?prefix=blocked"));
            Answer::of(request.multipart(upload_form(10)).send().await.unwrap()).await
        }
        other => panic!("the README lists {status} {other:?}, which no case here provokes"),
    }
}

/// Only a bug makes a handler panic, so `internal_error` is provoked by a
/// route that panics, in `corral_server::app`'s unit tests
/// (`a_panicking_handler_answers_500_and_the_router_goes_on`).
const COVERED_BY_UNIT_TESTS: [&str; 1] = ["internal_error"];

#[tokio::test]
async fn every_row_of_the_readme_error_table_is_what_the_server_answers() {
    let rows = rows();
    assert!(rows.len() >= 20, "the table was not found whole: {rows:?}");
    let mut wrong = Vec::new();
    for (status, code) in &rows {
        if code
            .as_deref()
            .is_some_and(|code| COVERED_BY_UNIT_TESTS.contains(&code))
        {
            continue;
        }
        let answer = provoke(*status, code.as_deref()).await;
        let mut problems = Vec::new();
        if answer.status != *status || answer.code != *code {
            problems.push(format!("got {} {:?}", answer.status, answer.code));
        }
        let needs = match (status, code.as_deref()) {
            (401, _) => Some("www-authenticate"),
            (416, _) => Some("content-range"),
            (405, _) => Some("allow"),
            (429 | 503, _) => Some("retry-after"),
            _ => None,
        };
        if let Some(header) = needs
            && answer.header(header).is_none()
        {
            problems.push(format!("no {header}"));
        }
        let retry_after = answer.header("retry-after");
        match code.as_deref() {
            Some("spool_full") if retry_after != Some("10") => {
                problems.push(format!("Retry-After {retry_after:?}, not 10"));
            }
            Some("too_many_connections") if retry_after != Some("5") => {
                problems.push(format!("Retry-After {retry_after:?}, not 5"));
            }
            Some("shutting_down") if retry_after != Some("1") => {
                problems.push(format!("Retry-After {retry_after:?}, not 1"));
            }
            _ => {}
        }
        if !problems.is_empty() {
            wrong.push(format!("{status} {code:?}: {}", problems.join(", ")));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A request still running when the grace period ends is answered as one
/// refused during the drain: `503 shutting_down`, `Retry-After: 1`,
/// `Connection: close`; its message says it was cancelled.
#[tokio::test]
async fn a_request_cancelled_by_the_shutdown_answers_shutting_down() {
    // Parts of 1 MiB: the first is stored while the body streams, the next
    // after shutdown has cancelled every request.
    let server = Server::with(ServerConfig::default(), small_parts()).await;
    let head = format!(
        "POST /api/files HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n\r\n",
        (3 << 20) + 200
    );
    let start = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n";
    let mut body = start.to_vec();
    body.extend(data((1 << 20) + 100, 3));
    let calls = || server.store.scheduler().counters().calls;
    let before = calls();
    let mut socket = send_raw(server.addr, &head, &body).await;
    // Once its multipart upload has begun and its first part is stored:
    // two calls.
    while calls() < before + 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.store.scheduler().shutdown(Duration::ZERO).await;
    let _ = socket.write_all(&data(1 << 20, 4)).await;
    let raw = read_answer(&mut socket).await;
    let answer = Answer::parse(&raw);
    assert_eq!(answer.status, 503, "{raw}");
    assert_eq!(answer.code.as_deref(), Some("shutting_down"), "{raw}");
    assert_eq!(answer.header("retry-after"), Some("1"), "{raw}");
    assert_eq!(answer.header("connection"), Some("close"), "{raw}");
    assert!(raw.contains("was cancelled"), "{raw}");
    server.assert_nothing_left().await;
}
