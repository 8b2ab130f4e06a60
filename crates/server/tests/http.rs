//! The HTTP API through a real socket, with a real client (reqwest) or raw
//! TCP where the test must control exactly what is sent and when.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use corral_server::ServerConfig;
use corral_store::StoreConfig;
use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::*;

#[tokio::test]
async fn a_batch_of_three_files_round_trips() {
    let server = Server::with(ServerConfig::default(), small_parts()).await;
    let files = [
        ("notes.txt", data(1000, 1), Some("text/plain")),
        ("photo.jpg", data(300_000, 2), None),
        // Larger than the multipart threshold: stored in parts.
        (
            "archive.bin",
            data(3 * (1 << 20) + 17, 3),
            Some("application/x-custom"),
        ),
    ];
    let mut form = Form::new();
    for (name, content, mime) in &files {
        let mut part = file(name, content.clone());
        if let Some(mime) = mime {
            part = part.mime_str(mime).unwrap();
        }
        form = form.part("file", part);
    }
    let (status, body) = server.upload(form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let stored = body["files"].as_array().unwrap();
    assert_eq!(stored.len(), 3);
    for ((name, content, mime), entry) in files.iter().zip(stored) {
        assert_eq!(entry["name"], *name);
        assert_eq!(entry["size"], content.len());
        assert_eq!(entry["sha256"], sha256(content));
        let key = entry["key"].as_str().unwrap();
        assert!(key.ends_with(&format!("/{name}")), "{key}");

        let response = server.get(key).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        let expected_type = mime.unwrap_or("image/jpeg");
        assert_eq!(headers["content-type"], expected_type);
        assert_eq!(
            headers["content-length"],
            content.len().to_string().as_str()
        );
        assert_eq!(headers["etag"], format!("\"{}\"", sha256(content)).as_str());
        assert_eq!(headers["x-corral-sha256"], sha256(content).as_str());
        assert_eq!(response.bytes().await.unwrap(), content.as_slice());
    }
    server.stop().await;
}

#[tokio::test]
async fn a_200_mib_upload_streams_through_bounded_buffers() {
    const SIZE: usize = 200 << 20;
    const CHUNK: usize = 64 << 10;
    let server = Server::with(ServerConfig::default(), small_parts()).await;
    // The body is generated as it is sent: the test holds no copy either.
    let chunks = futures::stream::iter(
        (0..SIZE / CHUNK).map(|i| Ok::<_, std::io::Error>(Bytes::from(data(CHUNK, i as u64)))),
    );
    let mut expected = Sha256::new();
    for i in 0..SIZE / CHUNK {
        expected.update(data(CHUNK, i as u64));
    }
    let expected = hex::encode(expected.finalize());
    let part = Part::stream_with_length(reqwest::Body::wrap_stream(chunks), SIZE as u64)
        .file_name("big.bin");
    let (status, body) = server.upload(Form::new().part("file", part)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["files"][0]["size"], SIZE);
    assert_eq!(body["files"][0]["sha256"], expected);

    // The upload never held more than its 1 MiB buffer plus one chunk of
    // the body as the parser hands it out (about one of hyper's reads, at
    // most 400 KiB, plus what the parser kept of the previous one).
    let peak = server.store.buffers().peak();
    eprintln!("peak buffered during a 200 MiB upload: {peak} bytes");
    assert!(
        peak <= (1 << 20) + (800 << 10),
        "peak buffered {peak} bytes"
    );
    assert!(peak >= 1 << 20, "the gauge saw the buffer fill: {peak}");
    assert_eq!(server.store.buffers().current(), 0);

    // Read back as a stream and compare digests.
    let key = body["files"][0]["key"].as_str().unwrap();
    let mut response = server.get(key).await;
    let mut read = Sha256::new();
    let mut total = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        total += chunk.len();
        read.update(&chunk);
    }
    assert_eq!(total, SIZE);
    assert_eq!(hex::encode(read.finalize()), expected);
    server.stop().await;
}

/// The head of an upload whose multipart body, split at `boundary`, is
/// `length` bytes.
fn upload_head(boundary: &str, length: usize) -> String {
    format!(
        "POST /api/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; \
         boundary={boundary}\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// What the server answers on `socket` before it has been sent the body,
/// within 10 s.
async fn answer_before_body(socket: &mut TcpStream) -> String {
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut answer))
        .await
        .expect("the answer came without the body")
        .unwrap();
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

/// The seconds of a raw answer's `Retry-After`.
fn retry_after(answer: &str) -> u64 {
    let value = answer.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("retry-after").then_some(value)
    });
    let value = value.unwrap_or_else(|| panic!("no Retry-After in {answer}"));
    value.trim().parse().unwrap()
}

/// Sends a batch whose first file, `done.bin`, is complete and whose
/// second, `cut.bin`, is announced as `announced` bytes of which `sent`
/// are sent; returns the socket, to drop when the test wants the client
/// gone.
async fn start_cut_upload(addr: SocketAddr, announced: usize, sent: usize) -> TcpStream {
    let boundary = "cut-here";
    let first = multipart(boundary, &[("file", Some("done.bin"), &data(5000, 1))]);
    let first = &first[..first.len() - format!("--{boundary}--\r\n").len()];
    let head = upload_head(boundary, first.len() + announced);
    let mut socket = send_raw(addr, &head, first).await;
    let second = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
         filename=\"cut.bin\"\r\n\r\n"
    );
    socket.write_all(second.as_bytes()).await.unwrap();
    socket.write_all(&data(sent, 2)).await.unwrap();
    socket
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_nothing() {
    let server = Server::with(ServerConfig::default(), small_parts()).await;
    // The second file is announced as 8 MiB and cut after 3 MiB, so its
    // multipart upload is under way.
    let socket = start_cut_upload(server.addr, 8 << 20, 3 << 20).await;
    // Wait until the first file is stored and the second is being written,
    // so that there is something to clean up.
    for _ in 0..200 {
        let on_disk = server.files_on_disk();
        let named = |name: &str| on_disk.iter().any(|p| p.to_string_lossy().contains(name));
        if named("done.bin") && named("cut.bin") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let on_disk = server.files_on_disk();
    assert!(
        on_disk
            .iter()
            .any(|p| p.to_string_lossy().contains("cut.bin")),
        "the second upload never started: {on_disk:?}"
    );
    drop(socket);
    server.assert_nothing_left().await;
    // And the server goes on serving.
    server.assert_still_serving().await;
    server.stop().await;
}

#[tokio::test]
async fn a_file_over_the_limit_gets_413_and_the_batch_is_rolled_back() {
    let config = ServerConfig {
        max_file_size: 100_000,
        ..ServerConfig::default()
    };
    let server = Server::with(config, StoreConfig::default()).await;
    let form = Form::new()
        .part("file", file("fits.txt", data(50_000, 1)))
        .part("file", file("too-big.bin", data(150_000, 2)))
        .part("file", file("never-read.txt", data(10, 3)));
    let (status, body) = server.upload(form).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "file_too_large");
    assert_eq!(body["error"]["file"], "too-big.bin");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("too-big.bin") && message.contains("100000"),
        "{message}"
    );
    server.assert_nothing_left().await;
    server.stop().await;
}

#[tokio::test]
async fn a_batch_over_the_limit_gets_413_before_or_while_reading() {
    let config = ServerConfig {
        max_batch_size: 100_000,
        ..ServerConfig::default()
    };
    let server = Server::with(config, StoreConfig::default()).await;
    // With a Content-Length, refused before the body is read.
    let form = Form::new()
        .part("file", file("a.bin", data(60_000, 1)))
        .part("file", file("b.bin", data(60_000, 2)));
    let (status, body) = server.upload(form).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "batch_too_large");
    // Without one (chunked), refused when the count passes the limit; the
    // first file, already stored, is removed.
    let chunks = futures::stream::iter(
        (0..4).map(|i| Ok::<_, std::io::Error>(Bytes::from(data(30_000, i)))),
    );
    let form = Form::new()
        .part("file", file("first.bin", data(50_000, 1)))
        .part(
            "file",
            Part::stream(reqwest::Body::wrap_stream(chunks)).file_name("second.bin"),
        );
    let (status, body) = server.upload(form).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "batch_too_large");
    server.assert_nothing_left().await;
    server.stop().await;
}

#[tokio::test]
async fn too_many_files_get_413_and_no_files_get_400() {
    let config = ServerConfig {
        max_files: 2,
        ..ServerConfig::default()
    };
    let server = Server::with(config, StoreConfig::default()).await;
    let mut form = Form::new();
    for name in ["1.txt", "2.txt", "3.txt"] {
        form = form.part("file", file(name, b"x".to_vec()));
    }
    let (status, body) = server.upload(form).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "too_many_files");
    server.assert_nothing_left().await;

    // A form with a text field but no file: the field is what is wrong.
    let (status, body) = server.upload(Form::new().text("comment", "no files")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "unknown_field");
    server.stop().await;
}

#[tokio::test]
async fn malformed_bodies_get_400_and_wrong_types_415() {
    let server = Server::start().await;
    let post = |content_type: &'static str, body: &'static [u8]| {
        server
            .client
            .post(server.url("/api/files"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases: &[(&str, &[u8], StatusCode, &str)] = &[
        (
            "multipart/form-data",
            b"--x\r\n",
            StatusCode::BAD_REQUEST,
            "no boundary",
        ),
        (
            "multipart/form-data; boundary=x",
            b"garbage",
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\nabc",
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nno headers end",
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            "application/json",
            b"{}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "multipart/form-data",
        ),
        (
            "text/plain",
            b"hello",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "multipart/form-data",
        ),
    ];
    for (content_type, body, expected, words) in cases {
        let (status, answer) = json(post(content_type, body).await.unwrap()).await;
        assert_eq!(status, *expected, "{content_type} {body:?}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{message:?} lacks {words:?}");
    }
    server.assert_nothing_left().await;
    server.stop().await;
}

#[tokio::test]
async fn an_empty_file_is_stored_with_size_zero() {
    let server = Server::start().await;
    let (status, body) = server
        .upload(Form::new().part("f", file("empty.txt", vec![])))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["files"][0]["size"], 0);
    assert_eq!(body["files"][0]["sha256"], sha256(b""));
    let response = server.get(body["files"][0]["key"].as_str().unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-length"], "0");
    assert!(response.bytes().await.unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn hostile_file_names_become_safe_keys_inside_the_data_directory() {
    let server = Server::start().await;
    let names = [
        ("../../../etc/passwd", "passwd"),
        ("/etc/shadow", "shadow"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("tab\there.txt", "tab_here.txt"),
        ("a:b*c?d|e<f>g.txt", "a_b_c_d_e_f_g.txt"),
        ("%2e%2e%2fx.txt", "_2e_2e_2fx.txt"),
        ("..", "file"),
        (".hidden", "hidden"),
    ];
    let boundary = "b0undary";
    let parts: Vec<(&str, Option<&str>, &[u8])> = names
        .iter()
        .map(|(name, _)| ("file", Some(*name), b"payload".as_slice()))
        .collect();
    let body = multipart(boundary, &parts);
    let (status, body) = server.post_multipart(boundary, body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let stored = body["files"].as_array().unwrap();
    let root = server.dir.path().canonicalize().unwrap();
    let tenant_dir = root.join("anonymous");
    for ((sent, safe), entry) in names.iter().zip(stored) {
        let key = entry["key"].as_str().unwrap();
        assert_eq!(key.rsplit('/').next().unwrap(), *safe, "{sent:?}");
        assert_eq!(entry["name"], *sent);
        // The object is where the key says, under the tenant's directory.
        let path = tenant_dir.join(key).canonicalize().unwrap();
        assert!(path.starts_with(&tenant_dir), "{path:?}");
    }
    for path in server.files_on_disk() {
        let path = path.canonicalize().unwrap();
        assert!(
            path.starts_with(&tenant_dir) || path.starts_with(root.join(".corral/meta/anonymous")),
            "{path:?} written outside the tenant's prefix"
        );
    }
    let stored_so_far = server.files_on_disk().len();

    // NUL and other control characters cannot appear in a part's headers
    // at all: such a body is malformed, and nothing of it is kept.
    for name in [
        "nul\0byte.txt",
        "bell\u{7}.txt",
        "esc\u{1b}.txt",
        "cr\r.txt",
    ] {
        let body = multipart(
            boundary,
            &[
                ("file", Some("fine.txt"), b"ok"),
                ("file", Some(name), b"x"),
            ],
        );
        let (status, body) = server.post_multipart(boundary, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {body}");
        assert_eq!(
            server.files_on_disk().len(),
            stored_so_far,
            "{name:?} left a file"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn two_parts_with_the_same_name_get_distinct_keys() {
    let server = Server::start().await;
    let form = Form::new()
        .part("file", file("same.txt", b"one".to_vec()))
        .part("file", file("same.txt", b"two".to_vec()));
    let (status, body) = server.upload(form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = body["files"][0]["key"].as_str().unwrap();
    let second = body["files"][1]["key"].as_str().unwrap();
    assert_ne!(first, second);
    assert!(second.ends_with("/same (2).txt"), "{second}");
    assert_eq!(server.get(first).await.bytes().await.unwrap(), "one");
    assert_eq!(server.get(second).await.bytes().await.unwrap(), "two");
    // A second batch with the same name lands in a directory of its own.
    let form = Form::new().part("file", file("same.txt", b"three".to_vec()));
    let (_, again) = server.upload(form).await;
    let third = again["files"][0]["key"].as_str().unwrap();
    assert_ne!(third, first);
    assert!(third.ends_with("/same.txt"));
    server.stop().await;
}

#[tokio::test]
async fn a_prefix_places_the_batch_and_a_bad_one_is_refused() {
    let server = Server::start().await;
    let response = server
        .client
        .post(server.url("/api/files?prefix=invoices/2026"))
        .multipart(Form::new().part("f", file("a.pdf", b"%PDF".to_vec())))
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        body["files"][0]["key"]
            .as_str()
            .unwrap()
            .starts_with("invoices/2026/")
    );

    let form = Form::new()
        .text("prefix", "scans")
        .part("f", file("b.png", b"png".to_vec()));
    let (status, body) = server.upload(form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        body["files"][0]["key"]
            .as_str()
            .unwrap()
            .starts_with("scans/")
    );

    for prefix in ["../escape", "a/../../b", ".corral", "a//b"] {
        let url = format!("{}?prefix={prefix}", server.url("/api/files"));
        let form = Form::new().part("f", file("c.txt", b"c".to_vec()));
        let response = server
            .client
            .post(url)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let (status, body) = json(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{prefix}: {body}");
        assert_eq!(error_code(&body), "invalid_key");
    }
    // A prefix field after the first file would be ambiguous.
    let form = Form::new()
        .part("f", file("d.txt", b"d".to_vec()))
        .text("prefix", "late");
    let (status, body) = server.upload(form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_get_404_and_wrong_methods_405() {
    let server = Server::start().await;
    let response = server.call(Method::GET, "/nope").await;
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "no_route");
    let response = server.call(Method::PUT, "/api/files").await;
    assert_eq!(response.headers()["allow"], "POST,GET,HEAD");
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "method_not_allowed");
    let response = server.call(Method::POST, "/healthz").await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = server.call(Method::GET, "/healthz").await;
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn reading_deleting_and_bad_keys() {
    let server = Server::start().await;
    let (_, body) = server
        .upload(Form::new().part("f", file("x.txt", b"x".to_vec())))
        .await;
    let key = body["files"][0]["key"].as_str().unwrap().to_owned();

    // Sent by hand: an HTTP client would resolve the dot segments itself.
    for bad in [
        "%2e%2e/%2e%2e/etc/passwd",
        "a/%2E%2E/%2e%2e/b",
        "a/../../b",
        ".corral/meta/x",
        "a%00b",
        "a%5C..%5Cb",
    ] {
        let head = format!("GET /api/files/{bad} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = read_answer(&mut send_raw(server.addr, &head, b"").await).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad}: {answer}");
        assert!(answer.contains("\"invalid_key\""), "{bad}: {answer}");
    }
    let response = server.get("no/such/file.txt").await;
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["error"]["message"],
        "no file with key \"no/such/file.txt\""
    );

    let response = server.delete(&key).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.get(&key).await.status(), StatusCode::NOT_FOUND);
    let response = server.delete(&key).await;
    // Deletes are idempotent: deleting it again is no error.
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // The metadata went with the object.
    server.assert_nothing_left().await;
    server.stop().await;
}

#[tokio::test]
async fn ranges_conditional_requests_and_head() {
    let server = Server::start().await;
    let content = data(1000, 7);
    let (_, body) = server
        .upload(Form::new().part("f", file("r.bin", content.clone())))
        .await;
    let key = body["files"][0]["key"].as_str().unwrap();
    let url = server.file_url(key);
    let get = |range: &'static str| server.client.get(&url).header("range", range).send();

    let response = get("bytes=10-19").await.unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.headers()["content-range"], "bytes 10-19/1000");
    assert_eq!(response.headers()["content-length"], "10");
    assert_eq!(response.bytes().await.unwrap(), &content[10..20]);

    let response = get("bytes=-5").await.unwrap();
    assert_eq!(response.headers()["content-range"], "bytes 995-999/1000");
    assert_eq!(response.bytes().await.unwrap(), &content[995..]);

    let response = get("bytes=990-").await.unwrap();
    assert_eq!(response.bytes().await.unwrap(), &content[990..]);

    let response = get("bytes=1000-").await.unwrap();
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(response.headers()["content-range"], "bytes */1000");

    // Several ranges are not supported: the whole file is sent.
    let response = get("bytes=0-1,5-6").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), content);

    let response = server.get(key).await;
    let etag = response.headers()["etag"].clone();
    let if_none_match = |etag: &str| server.client.get(&url).header("if-none-match", etag).send();
    let response = if_none_match(etag.to_str().unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers()["etag"], etag);
    let response = if_none_match("\"something-else\"").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let response = server.head(key).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-length"], "1000");
    assert_eq!(response.headers()["etag"], etag);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert!(response.bytes().await.unwrap().is_empty());
    let response = server.head("no/such").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn listing_pages_through_every_file_in_key_order() {
    let server = Server::start().await;
    let mut form = Form::new();
    for name in ["e.txt", "a.txt", "c.txt", "b.txt", "d.txt"] {
        form = form.part("file", file(name, name.as_bytes().to_vec()));
    }
    let (_, body) = server.upload(form).await;
    let dir = body["files"][0]["key"]
        .as_str()
        .unwrap()
        .rsplit_once('/')
        .unwrap()
        .0
        .to_owned();
    let (_, other) = server
        .upload(Form::new().part("file", file("z.txt", b"z".to_vec())))
        .await;
    assert_eq!(other["files"].as_array().unwrap().len(), 1);

    let client = &server.client;
    let list = |query: String| {
        let url = format!("{}?{query}", server.url("/api/files"));
        async move { json(client.get(url).send().await.unwrap()).await }
    };
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = format!("prefix={dir}/&limit=2");
        if let Some(cursor) = &cursor {
            query.push_str(&format!("&cursor={}", urlencode(cursor)));
        }
        let (status, page) = list(query).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for entry in page["files"].as_array().unwrap() {
            keys.push(entry["key"].as_str().unwrap().to_owned());
            assert_eq!(entry["size"], 5);
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let names: Vec<&str> = keys.iter().map(|k| k.rsplit('/').next().unwrap()).collect();
    assert_eq!(names, ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"]);

    // Without a prefix, both batches; a string prefix matches part of a name.
    let (_, all) = list("limit=1000".into()).await;
    assert_eq!(all["files"].as_array().unwrap().len(), 6);
    assert!(all.get("next_cursor").is_none());
    let (_, some) = list(format!("prefix={dir}/c")).await;
    assert_eq!(some["files"].as_array().unwrap().len(), 1);

    for query in [
        "limit=0",
        "limit=1001",
        "limit=many",
        "cursor=../x",
        "prefix=a/../b/",
    ] {
        let (status, body) = list(query.into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    server.stop().await;
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'/' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_slow_client_gets_408_and_leaves_nothing() {
    let config = ServerConfig {
        body_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = Server::with(config, StoreConfig::default()).await;
    let boundary = "slow";
    let body = multipart(boundary, &[("file", Some("slow.txt"), &data(10_000, 1))]);
    let head = upload_head(boundary, body.len());
    // Send half the body, then nothing.
    let mut socket = send_raw(server.addr, &head, &body[..body.len() / 2]).await;
    let answer = read_answer(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"slow_client\""), "{answer}");
    assert!(
        answer.contains("slow.txt"),
        "the answer names the file: {answer}"
    );
    server.assert_nothing_left().await;
    server.stop().await;
}

#[tokio::test]
async fn a_request_head_over_32_kib_gets_431_and_the_server_goes_on() {
    let server = Server::start().await;
    let head = |filler: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Filler: {}\r\n\r\n",
            "a".repeat(filler)
        )
    };
    // Just under the limit: served.
    let mut socket = send_raw(server.addr, &head(30 << 10), b"").await;
    let answer = read_answer(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
    // Over it, even sent in one piece: refused.
    let mut socket = send_raw(server.addr, &head(100 << 10), b"").await;
    let answer = read_answer(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    server.assert_still_serving().await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_cut_off() {
    let config = ServerConfig {
        body_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = Server::with(config, StoreConfig::default()).await;
    // Slowloris: a request head begun and never finished.
    let mut socket = send_raw(server.addr, "POST /api/files HTTP/1.1\r\nHost: x\r\n", b"").await;
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer));
    assert!(closed.await.is_ok(), "the server kept the connection open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("HTTP/1.1 2"), "{answer}");
    // The server goes on serving.
    server.assert_still_serving().await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_an_upload_in_progress_finish() {
    let server = Server::with(ServerConfig::default(), small_parts()).await;
    let boundary = "drain";
    let body = multipart(boundary, &[("file", Some("late.bin"), &data(2 << 20, 9))]);
    let head = format!(
        "POST /api/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; \
         boundary={boundary}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (first, rest) = body.split_at(body.len() / 2);
    let mut socket = send_raw(server.addr, &head, first).await;
    // Make sure the server has the request before asking it to stop.
    for _ in 0..200 {
        if !server.files_on_disk().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let Server {
        stop,
        task,
        addr,
        dir,
        ..
    } = server;
    // A connection per request: kept-alive idle ones are closed at the
    // signal, as they should be.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let get = |path: &str| client.get(format!("http://{addr}{path}")).send();
    assert_eq!(get("/readyz").await.unwrap().status(), StatusCode::OK);
    stop.unwrap().send(()).unwrap();
    // Not ready from the signal on, but still alive, and still answering.
    let mut ready = true;
    for _ in 0..200 {
        ready = get("/readyz").await.unwrap().status() == StatusCode::OK;
        if !ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!ready, "/readyz stayed 200 after the signal");
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
    // New work is refused, with when to come back, on a closing connection.
    let form = Form::new().part("f", file("new.txt", b"new".to_vec()));
    let refused = client
        .post(format!("http://{addr}/api/files"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["connection"], "close");
    let (_, body) = json(refused).await;
    assert_eq!(body["error"]["code"], "shutting_down", "{body}");
    // The upload in progress finishes.
    socket.write_all(rest).await.unwrap();
    let answer = read_answer(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    task.unwrap().await.unwrap().unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after the drain"
    );
    drop(dir);
}

#[tokio::test]
async fn a_connection_whose_first_request_is_late_at_shutdown_is_answered_not_cut() {
    let server = Server::start().await;
    // Connected before the signal, its request still on its way (a client
    // on a saturated machine): more than an idle connection's second.
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    // Accepted before the signal: the server task (on this test's runtime)
    // runs while the test waits; else its loop may see the signal first
    // and leave the connection in the backlog, which is not this case.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let Server {
        stop, task, dir, ..
    } = server;
    stop.unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let head = "GET /api/files HTTP/1.1\r\nHost: x\r\n\r\n";
    socket.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("shutting_down"), "{answer}");
    task.unwrap().await.unwrap().unwrap();
    drop(dir);
}

/// A backend call that does not return until the gate lets it through.
async fn blocked_call(gate: std::sync::Arc<tokio::sync::Semaphore>) -> Result<(), Never> {
    gate.acquire().await.unwrap().forget();
    Ok(())
}

#[derive(Debug)]
enum Never {}

impl corral_sched::Classify for Never {
    fn classify(&self) -> corral_sched::Class {
        match *self {}
    }
}

#[tokio::test]
async fn an_overloaded_server_answers_429_with_retry_after_before_reading_the_body() {
    let mut storage = Storage::default();
    storage.sched.limit = corral_sched::LimitConfig::Fixed(1);
    storage.sched.queue.max_jobs = 2;
    let server = Server::with(ServerConfig::default(), storage).await;
    let scheduler = server.store.scheduler().clone();

    // Occupy the only slot and fill the queue with calls that hang.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let mut hanging = Vec::new();
    for _ in 0..3 {
        let (scheduler, gate) = (scheduler.clone(), gate.clone());
        hanging.push(tokio::spawn(async move {
            let group = scheduler.group("other-tenant").unwrap();
            group.run(0, || blocked_call(gate.clone())).await.unwrap();
        }));
        tokio::task::yield_now().await;
    }
    for _ in 0..100 {
        let stats = scheduler.stats();
        if stats.in_flight == 1 && stats.queued_jobs == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(scheduler.stats().queued_jobs, 2);

    // Announce 100 MiB and send none of it: the answer must not need it.
    let head = upload_head("b", 100 << 20);
    let mut socket = send_raw(server.addr, &head, b"").await;
    let answer = answer_before_body(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    let seconds = retry_after(&answer);
    assert!((1..=60).contains(&seconds), "Retry-After: {seconds}");
    assert!(answer.contains("\"overloaded\""), "{answer}");
    // Reads are refused the same way.
    let response = server.get("any/key").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

    // Once the backlog drains, uploads go through again.
    gate.add_permits(3);
    for task in hanging {
        task.await.unwrap();
    }
    server.assert_still_serving().await;
    assert_eq!(scheduler.counters().rejected, 2);
    server.stop().await;
}

#[tokio::test]
async fn uploads_beyond_the_memory_reserve_wait_their_turn_without_being_read() {
    // Room for one upload of 1 MiB + a 1 MiB chunk allowance.
    let config = ServerConfig {
        upload_memory: 2 << 20,
        ..ServerConfig::default()
    };
    let server = Server::with(config, small_parts()).await;
    let head = upload_head("b", 100 << 20);
    let first = send_raw(server.addr, &head, b"--b\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The second waits for memory rather than being refused.
    let waiting = {
        let server_client = server.client.clone();
        let url = server.url("/api/files");
        tokio::spawn(async move {
            let form = Form::new().part("f", file("waited.bin", data(3 << 20, 7)));
            server_client
                .post(url)
                .multipart(form)
                .send()
                .await
                .unwrap()
        })
    };
    let metrics = || async {
        let response = server.call(Method::GET, "/metrics").await;
        response.text().await.unwrap()
    };
    let mut seen_waiting = false;
    for _ in 0..100 {
        if metrics().await.contains("corral_upload_waiting 1") {
            seen_waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_waiting, "{}", metrics().await);
    assert!(!waiting.is_finished());
    // When the first upload ends, the waiting one gets its memory and is
    // stored.
    drop(first);
    let response = waiting.await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(metrics().await.contains("corral_upload_waiting 0"));
    server.stop().await;
}

#[tokio::test]
async fn uploads_beyond_the_memory_reserve_get_429_before_their_body_is_read() {
    // Each upload may buffer 1 MiB + a 1 MiB chunk allowance: room for two,
    // and 64 KiB more; no waiting room.
    let config = ServerConfig {
        upload_memory: (4 << 20) + (64 << 10),
        upload_queue: 0,
        ..ServerConfig::default()
    };
    let server = Server::with(config, small_parts()).await;
    let head = upload_head("b", 100 << 20);
    // Two uploads that announce 100 MiB and are slow to send it.
    let first = send_raw(server.addr, &head, b"--b\r\n").await;
    let second = send_raw(server.addr, &head, b"--b\r\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = send_raw(server.addr, &head, b"").await;
    let answer = answer_before_body(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    // No memory freed yet to estimate from: the default guess of 5 s,
    // spread over its second half.
    let seconds = retry_after(&answer);
    assert!((3..=5).contains(&seconds), "{answer}");
    // A client that writes its whole body before it reads (as most do)
    // still reads the 429: the refused body is drained, not cut off with a
    // reset that would destroy the answer.
    let body = [b"--b\r\n".as_slice(), &data(8 << 20, 9)].concat();
    let head = upload_head("b", body.len());
    let mut eager = send_raw(server.addr, &head, &body).await;
    let answer = read_answer(&mut eager).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    // A small upload reserves only its own size, and fits.
    let (status, body) = server
        .upload(Form::new().part("f", file("small.txt", b"tiny".to_vec())))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // When an upload ends, its reserve is free again.
    drop((first, second));
    let mut accepted = false;
    for _ in 0..100 {
        let form = Form::new().part("f", file("big.bin", data(3 << 20, 1)));
        if server.upload(form).await.0 == StatusCode::CREATED {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "the reserve was never given back");
    server.stop().await;
}

#[tokio::test]
async fn a_batch_with_a_40_mib_file_round_trips_through_s3() {
    // 8 MiB parts: the 40 MiB file is a multipart upload of five parts.
    let store_config = StoreConfig {
        multipart_threshold: 8 << 20,
        part_size: 8 << 20,
        ..StoreConfig::default()
    };
    let server = Server::on_s3(ServerConfig::default(), store_config).await;
    let files = [
        ("big.bin", data(40 << 20, 11)),
        ("a.txt", data(10, 12)),
        ("b.json", data(70_000, 13)),
    ];
    let mut form = Form::new();
    for (name, content) in &files {
        form = form.part("file", file(name, content.clone()));
    }
    let (status, body) = server.upload(form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for ((name, content), entry) in files.iter().zip(body["files"].as_array().unwrap()) {
        assert_eq!(entry["sha256"], sha256(content), "{name}");
        let response = server.get(entry["key"].as_str().unwrap()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["x-corral-sha256"],
            sha256(content).as_str()
        );
        assert_eq!(
            response.bytes().await.unwrap(),
            content.as_slice(),
            "{name}"
        );
    }
    let (_, listing) = json(server.call(Method::GET, "/api/files").await).await;
    assert_eq!(listing["files"].as_array().unwrap().len(), 3);
    server.stop().await;
}

/// A front before the test S3 server whose every call takes `latency`.
async fn slow_s3(latency: Duration) -> corral_testkit::front::Front {
    use corral_testkit::front::{Front, FrontConfig};
    let s3 = corral_testkit::s3::S3Server::require();
    let config = FrontConfig {
        latency,
        ..FrontConfig::new(s3.addr())
    };
    Front::start(config).await.unwrap()
}

#[tokio::test]
async fn a_batch_stores_its_files_while_the_next_ones_arrive_four_at_most() {
    // Every call takes half a second: files received meanwhile wait for
    // their own call only when four are under way.
    let front = slow_s3(Duration::from_millis(500)).await;
    let server = Server::on_s3_at(
        &front.endpoint(),
        ServerConfig::default(),
        StoreConfig::default(),
    )
    .await;
    let names: Vec<String> = (0..9).map(|i| format!("f{i}.txt")).collect();
    let mut form = Form::new();
    for (i, name) in names.iter().enumerate() {
        form = form.part("file", file(name, data(1000, i as u64)));
    }
    let before = front.stats().forwarded;
    let (status, body) = server.upload(form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // In the order sent, each with its own bytes.
    let files = body["files"].as_array().unwrap();
    let answered: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(answered, names);
    for (i, stored) in files.iter().enumerate() {
        assert_eq!(stored["sha256"], sha256(&data(1000, i as u64)));
    }
    let stats = front.stats();
    assert_eq!(stats.forwarded - before, 9, "one call a file: {stats:?}");
    assert_eq!(stats.peak_concurrency, 4, "{stats:?}");
    server.stop().await;
}

#[tokio::test]
async fn files_stored_while_the_next_arrive_hold_no_more_than_one_buffer() {
    let front = slow_s3(Duration::from_millis(300)).await;
    // Files just under the 1 MiB threshold: each is sent in one call,
    // holding its bytes until the call ends.
    let server = Server::on_s3_at(&front.endpoint(), ServerConfig::default(), small_parts()).await;
    let mut form = Form::new();
    for i in 0..5 {
        form = form.part("file", file(&format!("f{i}"), data(900 << 10, i)));
    }
    let (status, body) = server.upload(form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Within the same bound as one file's buffer and a chunk: the next
    // file waited for the call before it.
    let peak = server.store.buffers().peak();
    assert!(peak >= 900 << 10, "the gauge saw a file: {peak}");
    assert!(
        peak <= (1 << 20) + (800 << 10),
        "peak buffered {peak} bytes"
    );
    assert_eq!(server.store.buffers().current(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_batch_reads_on_only_while_the_backend_takes_its_files() {
    let front = slow_s3(Duration::from_millis(200)).await;
    // One call at a time: a file's call waits in the scheduler's queue
    // while the one before it is at the backend.
    let mut storage = Storage::default();
    storage.sched.limit = corral_sched::LimitConfig::Fixed(1);
    let server = Server::on_s3_at(&front.endpoint(), ServerConfig::default(), storage).await;
    const SIZE: usize = 700 << 10;
    let mut form = Form::new();
    for i in 0..8 {
        form = form.part("file", file(&format!("f{i}"), data(SIZE, i)));
    }
    let (status, body) = server.upload(form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // At most the file at the backend, the one queued behind it and the
    // one being received (plus a chunk), not the five that four calls
    // under way and the next file would hold.
    let peak = server.store.buffers().peak();
    assert!(peak >= 2 * SIZE, "files overlapped: {peak}");
    assert!(peak <= 3 * SIZE + (800 << 10), "peak buffered {peak} bytes");
    assert_eq!(front.stats().peak_concurrency, 1);
    server.stop().await;
}

#[tokio::test]
async fn an_s3_error_mid_batch_rolls_the_whole_batch_back() {
    use corral_testkit::front::{Faults, Front, FrontConfig};
    let s3 = corral_testkit::s3::S3Server::require();
    // S3 refuses one object of the batch, after a small file and a
    // multipart file before it were stored.
    let front = Front::start(FrontConfig {
        faults: Faults {
            deny_path: Some("poison".to_owned()),
            ..Faults::default()
        },
        ..FrontConfig::new(s3.addr())
    })
    .await
    .unwrap();
    let store_config = StoreConfig {
        multipart_threshold: 5 << 20,
        part_size: 5 << 20,
        ..StoreConfig::default()
    };
    let server = Server::on_s3_at(&front.endpoint(), ServerConfig::default(), store_config).await;
    let mut form = Form::new();
    for (name, content) in [
        ("a.txt", data(100, 1)),
        ("big.bin", data(12 << 20, 2)),
        ("poison.txt", data(100, 3)),
        ("c.txt", data(100, 4)),
    ] {
        form = form.part("file", file(name, content));
    }
    let (status, body) = server.upload(form).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["file"], "poison.txt", "{body}");
    assert_eq!(front.stats().faults.denied, 1, "refused once: not retried");
    // Nothing of the batch stays: not a.txt, not big.bin, no open upload.
    server.assert_nothing_left_in_s3().await;
    // And the server goes on serving.
    server.assert_still_serving().await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_gone_mid_multipart_leaves_no_object_and_no_open_upload_in_s3() {
    let store_config = StoreConfig {
        multipart_threshold: 5 << 20,
        part_size: 5 << 20,
        ..StoreConfig::default()
    };
    let server = Server::on_s3(ServerConfig::default(), store_config).await;
    let socket = start_cut_upload(server.addr, 40 << 20, 12 << 20).await;
    // Wait until S3 holds the first file and an open upload of the second.
    let mut seen = (Vec::new(), Vec::new());
    for _ in 0..200 {
        seen = server.s3_leftovers();
        if !seen.0.is_empty() && !seen.1.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        !seen.1.is_empty(),
        "no multipart upload was ever open: {seen:?}"
    );
    drop(socket);
    server.assert_nothing_left_in_s3().await;
    server.stop().await;
}
