//! Hostile requests, table-driven, sent byte for byte over a real socket:
//! each gets its documented answer, nothing is written outside the
//! tenant's prefix, nothing half-done is left behind, and the server
//! answers a normal request right after each one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_server::{Auth, ServerConfig, token_sha256};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::*;

const ACME: &str = "corral_acme-token";
const ZETA: &str = "corral_zeta-token";
const BOUNDARY: &str = "hostile-boundary";

/// What a case must get back.
struct Expect {
    status: u16,
    /// The JSON error code, when the answer is corral's.
    code: Option<&'static str>,
}

const fn expect(status: u16, code: &'static str) -> Expect {
    Expect {
        status,
        code: Some(code),
    }
}

const fn status(status: u16) -> Expect {
    Expect { status, code: None }
}

struct Case {
    name: String,
    request: Vec<u8>,
    expect: Expect,
}

fn case(name: impl Into<String>, request: Vec<u8>, expect: Expect) -> Case {
    Case {
        name: name.into(),
        request,
        expect,
    }
}

/// A request head: `method target`, acme's token unless `headers` has an
/// Authorization, `Connection: close`, then `headers`.
fn head(method: &str, target: &str, headers: &str) -> String {
    let auth = if headers.to_ascii_lowercase().contains("authorization:") {
        String::new()
    } else {
        format!("Authorization: Bearer {ACME}\r\n")
    };
    format!(
        "{method} {target} HTTP/1.1\r\nHost: corral\r\n{auth}Connection: close\r\n{headers}\r\n"
    )
}

fn get(target: &str, headers: &str) -> Vec<u8> {
    head("GET", target, headers).into_bytes()
}

/// A `POST /api/files` of `body` with the test boundary and its length.
fn post(headers: &str, body: &[u8]) -> Vec<u8> {
    post_as(
        "multipart/form-data; boundary=hostile-boundary",
        headers,
        body,
    )
}

fn post_as(content_type: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let headers = format!(
        "Content-Type: {content_type}\r\nContent-Length: {}\r\n{headers}",
        body.len()
    );
    let mut request = head("POST", "/api/files", &headers).into_bytes();
    request.extend_from_slice(body);
    request
}

/// One part with raw `headers` (each ending in CRLF) and `content`.
fn raw_part(headers: &str, content: &[u8]) -> Vec<u8> {
    let mut part = format!("--{BOUNDARY}\r\n{headers}\r\n").into_bytes();
    part.extend_from_slice(content);
    part.extend_from_slice(b"\r\n");
    part
}

fn file_part(name: &str, content: &[u8]) -> Vec<u8> {
    raw_part(
        &format!("Content-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"),
        content,
    )
}

/// A chunked `POST /api/files`: one good chunk holding the start of a
/// file part, then `rest` as it is.
fn chunked(rest: &[u8]) -> Vec<u8> {
    let mut request = head(
        "POST",
        "/api/files",
        "Content-Type: multipart/form-data; boundary=hostile-boundary\r\n\
         Transfer-Encoding: chunked\r\n",
    )
    .into_bytes();
    let start = file_part("framed.bin", b"");
    request.extend_from_slice(format!("{:x}\r\n", start.len()).as_bytes());
    request.extend_from_slice(&start);
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(rest);
    request
}

fn closing() -> Vec<u8> {
    format!("--{BOUNDARY}--\r\n").into_bytes()
}

fn body(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut body = parts.concat();
    body.extend_from_slice(&closing());
    body
}

fn cases(existing: &str) -> Vec<Case> {
    let mut cases = vec![
        // Tokens.
        case(
            "no token",
            get("/api/files", "Authorization: \r\n"),
            expect(401, "unauthorized"),
        ),
        case(
            "absent token",
            b"GET /api/files HTTP/1.1\r\nHost: corral\r\nConnection: close\r\n\r\n".to_vec(),
            expect(401, "unauthorized"),
        ),
        case(
            "wrong token",
            get("/api/files", "Authorization: Bearer corral_guess\r\n"),
            expect(401, "unauthorized"),
        ),
        case(
            "the token's hash as a token",
            get(
                "/api/files",
                &format!("Authorization: Bearer {}\r\n", token_sha256(ACME)),
            ),
            expect(401, "unauthorized"),
        ),
        case(
            "basic credentials",
            get("/api/files", "Authorization: Basic YWNtZTpzZWNyZXQ=\r\n"),
            expect(401, "unauthorized"),
        ),
        case(
            "token in the query string",
            get(
                &format!("/api/files?access_token={ACME}"),
                "Authorization: \r\n",
            ),
            expect(401, "unauthorized"),
        ),
        case(
            "upload with a wrong token",
            {
                let body = body(&[file_part("x.txt", b"x")]);
                post("Authorization: Bearer nope\r\n", &body)
            },
            expect(401, "unauthorized"),
        ),
        case(
            "another tenant's key",
            get(
                &format!("/api/files/{existing}"),
                &format!("Authorization: Bearer {ZETA}\r\n"),
            ),
            expect(404, "not_found"),
        ),
        case(
            // Deletes are idempotent: 204 as for any absent key, and
            // acme's file stays (checked below, with everything left).
            "another tenant's key, deleted",
            head(
                "DELETE",
                &format!("/api/files/{existing}"),
                &format!("Authorization: Bearer {ZETA}\r\n"),
            )
            .into_bytes(),
            status(204),
        ),
        case(
            "another tenant's root named",
            get(
                &format!("/api/files/acme/{existing}"),
                &format!("Authorization: Bearer {ZETA}\r\n"),
            ),
            expect(404, "not_found"),
        ),
        // Keys.
        case(
            "dot-dot in a key",
            get("/api/files/../../etc/passwd", ""),
            expect(400, "invalid_key"),
        ),
        case(
            "encoded dot-dot in a key",
            get("/api/files/%2e%2e/%2e%2e/etc/passwd", ""),
            expect(400, "invalid_key"),
        ),
        case(
            "encoded slashes and dot-dot",
            get("/api/files/a%2f..%2f..%2fzeta%2fx", ""),
            expect(400, "invalid_key"),
        ),
        case(
            "dot-dot up into another tenant",
            get(&format!("/api/files/../zeta/{existing}"), ""),
            expect(400, "invalid_key"),
        ),
        case(
            "NUL in a key",
            get("/api/files/a%00b", ""),
            expect(400, "invalid_key"),
        ),
        case(
            "backslash traversal in a key",
            get("/api/files/..%5c..%5cwin.ini", ""),
            expect(400, "invalid_key"),
        ),
        case(
            "hidden metadata path as a key",
            get("/api/files/.corral/meta/acme/x", ""),
            expect(400, "invalid_key"),
        ),
        case(
            "a key over 1024 bytes",
            get(&format!("/api/files/{}", "k/".repeat(600)), ""),
            expect(400, "invalid_key"),
        ),
        case(
            "delete with encoded dot-dot",
            head("DELETE", "/api/files/%2e%2e%2fzeta", "").into_bytes(),
            expect(400, "invalid_key"),
        ),
        case(
            "listing prefix with dot-dot",
            get("/api/files?prefix=../zeta", ""),
            expect(400, "invalid_key"),
        ),
        case(
            "listing cursor with dot-dot",
            get("/api/files?cursor=%2e%2e%2fzeta%2fa", ""),
            expect(400, "invalid_key"),
        ),
        case(
            "listing limit not a number",
            get("/api/files?limit=-1", ""),
            expect(400, "bad_request"),
        ),
        // Range abuse: a syntax error or several ranges are ignored (the
        // whole file, as RFC 9110 allows); ranges outside the file are 416.
        case(
            "range past the end",
            get(
                &format!("/api/files/{existing}"),
                "Range: bytes=999999-\r\n",
            ),
            expect(416, "range_not_satisfiable"),
        ),
        case(
            "empty suffix range",
            get(&format!("/api/files/{existing}"), "Range: bytes=-0\r\n"),
            expect(416, "range_not_satisfiable"),
        ),
        case(
            "a thousand ranges",
            get(
                &format!("/api/files/{existing}"),
                &format!("Range: bytes={}0-1\r\n", "0-1,".repeat(1000)),
            ),
            status(200),
        ),
        case(
            "range of 2^64",
            get(
                &format!("/api/files/{existing}"),
                "Range: bytes=0-18446744073709551616\r\n",
            ),
            status(200),
        ),
        case(
            "range in another unit",
            get(&format!("/api/files/{existing}"), "Range: items=0-1\r\n"),
            status(200),
        ),
        // Bodies and their framing.
        case(
            "not multipart",
            post_as("text/plain", "", b"hello"),
            expect(415, "unsupported_media_type"),
        ),
        case(
            "multipart without a boundary",
            post_as("multipart/form-data", "", &body(&[file_part("a", b"a")])),
            expect(400, "bad_request"),
        ),
        case(
            "a boundary the body does not use",
            post_as(
                "multipart/form-data; boundary=other",
                "",
                &body(&[file_part("a", b"a")]),
            ),
            expect(400, "bad_request"),
        ),
        case(
            "no closing boundary",
            post("", &file_part("a.txt", b"a")),
            expect(400, "bad_request"),
        ),
        case("an empty body", post("", b""), expect(400, "bad_request")),
        case(
            "a text field and no file",
            post(
                "",
                &body(&[raw_part(
                    "Content-Disposition: form-data; name=\"note\"\r\n",
                    b"hi",
                )]),
            ),
            expect(400, "unknown_field"),
        ),
        case(
            "a part without Content-Disposition",
            post("", &body(&[raw_part("Content-Type: text/plain\r\n", b"x")])),
            expect(400, "bad_request"),
        ),
        case(
            "NUL in a part's file name",
            post("", &body(&[file_part("a\0b.txt", b"x")])),
            expect(400, "bad_request"),
        ),
        case(
            "a text field over 4 KiB",
            post(
                "",
                &body(&[raw_part(
                    "Content-Disposition: form-data; name=\"prefix\"\r\n",
                    &vec![b'a'; 5000],
                )]),
            ),
            expect(400, "bad_request"),
        ),
        case(
            "a prefix with dot-dot",
            post(
                "",
                &body(&[
                    raw_part(
                        "Content-Disposition: form-data; name=\"prefix\"\r\n",
                        b"../zeta",
                    ),
                    file_part("a.txt", b"a"),
                ]),
            ),
            expect(400, "invalid_key"),
        ),
        case(
            "a prefix after the files",
            post(
                "",
                &body(&[
                    file_part("a.txt", b"a"),
                    raw_part(
                        "Content-Disposition: form-data; name=\"prefix\"\r\n",
                        b"late",
                    ),
                ]),
            ),
            expect(400, "bad_request"),
        ),
        case(
            "a file over the file limit, after a good one",
            post(
                "",
                &body(&[
                    file_part("ok.txt", b"ok"),
                    file_part("big.bin", &[7; 300 << 10]),
                ]),
            ),
            expect(413, "file_too_large"),
        ),
        case(
            "an absurd Content-Length",
            {
                let mut request = head(
                    "POST",
                    "/api/files",
                    "Content-Type: multipart/form-data; boundary=hostile-boundary\r\n\
                     Content-Length: 1000000000000000\r\n",
                )
                .into_bytes();
                request.extend_from_slice(&file_part("a", b"a"));
                request
            },
            expect(413, "batch_too_large"),
        ),
        case(
            "a Content-Length over 2^64",
            head(
                "POST",
                "/api/files",
                "Content-Type: multipart/form-data; boundary=b\r\n\
                 Content-Length: 99999999999999999999999\r\n",
            )
            .into_bytes(),
            status(400),
        ),
        case(
            "two different Content-Lengths",
            head(
                "POST",
                "/api/files",
                "Content-Type: multipart/form-data; boundary=b\r\n\
                 Content-Length: 5\r\nContent-Length: 6\r\n",
            )
            .into_bytes(),
            status(400),
        ),
        // Broken chunked framing, after a first good chunk: 400, not the
        // 499 of a client gone (a regression).
        case(
            "a chunk size that is not hex",
            chunked(b"zz\r\nhello\r\n0\r\n\r\n"),
            expect(400, "bad_request"),
        ),
        case(
            "a chunk size that overflows",
            chunked(b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            expect(400, "bad_request"),
        ),
        case(
            "a chunk longer than its size",
            chunked(b"5\r\nhello, world\r\n0\r\n\r\n"),
            expect(400, "bad_request"),
        ),
        case(
            "10,000 tiny parts",
            post(
                "",
                &body(
                    &(0..10_000)
                        .map(|i| file_part(&format!("{i}"), b""))
                        .collect::<Vec<_>>(),
                ),
            ),
            expect(413, "too_many_files"),
        ),
        // Request heads.
        case(
            "a 40 KiB header",
            get(
                "/api/files",
                &format!("X-Junk: {}\r\n", "j".repeat(40 << 10)),
            ),
            expect(431, "headers_too_large"),
        ),
        case(
            "two hundred headers",
            get(
                "/api/files",
                &(0..200)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>(),
            ),
            expect(431, "headers_too_large"),
        ),
        case(
            "a 40 KiB target",
            get(&format!("/api/files/{}", "a".repeat(40 << 10)), ""),
            expect(431, "headers_too_large"),
        ),
        case(
            "a header with NUL",
            get("/api/files", "X-Bad: a\0b\r\n"),
            expect(400, "malformed_request"),
        ),
        case(
            "garbage instead of a request line",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n".to_vec(),
            expect(400, "malformed_request"),
        ),
        case(
            "an unknown method",
            head("BREW", "/api/files", "").into_bytes(),
            expect(405, "method_not_allowed"),
        ),
        case(
            "an unknown route",
            get("/api/../../etc/passwd", ""),
            expect(404, "no_route"),
        ),
    ];
    // Names that are made safe rather than refused: stored inside acme's
    // prefix under a clean name.
    for name in [
        "../../../etc/passwd",
        "..\\..\\windows\\win.ini",
        "%2e%2e%2fzeta%2fx",
        "/zeta/owned.txt",
        &"n".repeat(5000),
    ] {
        cases.push(case(
            format!("file name {:.40}", name),
            post("", &body(&[file_part(name, b"named")])),
            status(201),
        ));
    }
    cases
}

/// Sends `request` on a fresh connection and reads the answer's status and
/// body until the server closes the connection.
async fn exchange(server: &Server, request: &[u8]) -> (u16, String) {
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    // A server that answers before reading the whole request may close
    // while it is still being written; the answer is what counts.
    let _ = socket.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut answer));
    let _ = read
        .await
        .expect("the server answers and closes within 20 s");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

fn under(path: &Path, roots: &[&Path]) -> bool {
    roots.iter().any(|root| path.starts_with(root))
}

#[tokio::test]
async fn every_hostile_request_gets_its_answer_and_leaves_nothing_behind() {
    let auth = Auth::new(vec![tenant("acme", ACME), tenant("zeta", ZETA)]).unwrap();
    let config = ServerConfig {
        max_file_size: 256 << 10,
        body_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let server = Server::with_auth(config, auth).await;
    // One file of acme's for the cases that read or aim at it.
    let response = (server.client.post(server.url("/api/files")))
        .bearer_auth(ACME)
        .multipart(reqwest::multipart::Form::new().part("file", file("mine.txt", data(100, 1))))
        .send()
        .await
        .unwrap();
    let (_, created) = json(response).await;
    let existing = created["files"][0]["key"].as_str().unwrap().to_owned();
    let files_before = server.files_on_disk().len();

    let cases = cases(&existing);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut stored = 0;
    for case in &cases {
        let (status, answer) = exchange(&server, &case.request).await;
        let code_ok = case
            .expect
            .code
            .is_none_or(|code| answer.contains(&format!("\"code\":\"{code}\"")));
        if status != case.expect.status || !code_ok {
            failures.push(format!(
                "{}: expected {} {:?}, got {:.300}",
                case.name, case.expect.status, case.expect.code, answer
            ));
        }
        if status == 201 {
            stored += 1;
            let (_, json) = answer.split_once("\r\n\r\n").unwrap();
            let json: serde_json::Value = serde_json::from_str(json).unwrap();
            let key = json["files"][0]["key"].as_str().unwrap();
            assert!(
                key.split('/')
                    .all(|segment| segment != ".." && !segment.is_empty()),
                "{}: {key}",
                case.name
            );
        }
        // The server answers a normal request right after.
        let health = server.client.get(server.url("/healthz")).send().await;
        assert_eq!(
            health.map(|r| r.status()).ok(),
            Some(StatusCode::OK),
            "after {}",
            case.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Slow clients: a request head never finished, and a body that stops.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /api/files HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer));
    assert!(closed.await.is_ok(), "an unfinished head is cut off");
    let mut request = post("", &body(&[file_part("slow.bin", &[1; 1000])]));
    request.truncate(request.len() - 500);
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    trickle.write_all(&request).await.unwrap();
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), trickle.read_to_string(&mut answer));
    let _ = read.await.expect("a stalled body is answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A body shorter than its Content-Length, the client's side closed
    // after it: 400, not 499 (a regression).
    let mut short = TcpStream::connect(server.addr).await.unwrap();
    short.write_all(&request).await.unwrap();
    short.shutdown().await.unwrap();
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), short.read_to_string(&mut answer));
    let _ = read.await.expect("a short body is answered");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"code\":\"bad_request\""), "{answer}");

    // Nothing outside acme's prefix, and only the files that were stored:
    // each one file, its metadata in its extended attributes, or for the
    // longest name a document beside it (see the README).
    let root = server.dir.path();
    let meta = root.join(".corral/meta");
    let roots = [root.join("acme"), meta.join("acme")];
    let roots: Vec<&Path> = roots.iter().map(|p| p.as_path()).collect();
    let objects = |on_disk: &[PathBuf]| on_disk.iter().filter(|p| !p.starts_with(&meta)).count();
    let mut on_disk = Vec::new();
    for _ in 0..100 {
        on_disk = server.files_on_disk();
        if objects(&on_disk) == files_before + stored {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(objects(&on_disk), files_before + stored, "{on_disk:#?}");
    for path in &on_disk {
        assert!(under(path, &roots), "{path:?} is outside acme's prefix");
        if let Ok(document) = path.strip_prefix(&meta) {
            let object = root.join(document.to_str().unwrap().strip_suffix(".json").unwrap());
            assert!(on_disk.contains(&object), "{path:?} documents no object");
        }
    }
    println!(
        "R4: {} hostile requests and 2 slow clients, each with its documented answer; \
         {stored} stored under safe names inside the tenant's prefix, nothing else written",
        cases.len()
    );
    server.stop().await;
}
