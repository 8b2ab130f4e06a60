//! tus 1.0.0 and the IETF draft at `/api/uploads`, status by status and
//! header by header, through a real socket: reqwest, or a socket written by
//! hand where reqwest would add or change the header under test (a chunked
//! body and its trailer, a body cut short). Each case runs on local disk and
//! on S3 (moto), unless it says otherwise.
//!
//! Concatenation (`Upload-Concat`) is not tested here: it is being built.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::*;
use corral_server::{Auth, ServerConfig};
use corral_store::StoreConfig;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const TUS_VERSION: &str = "1.0.0";
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
const PARTIAL_UPLOAD: &str = "application/partial-upload";
const UPLOADS: &str = "/api/uploads";
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Servers

/// A server on local disk and one on S3 (moto), both with `config`, for
/// `for server in both(config).await { ... }`.
async fn both(config: ServerConfig) -> [Server; 2] {
    [
        Server::with(config.clone(), parts()).await,
        Server::on_s3(config, parts()).await,
    ]
}

/// Parts of 5 MiB, the least S3 takes: small uploads stay in one tail,
/// and a 6 MiB upload opens a multipart upload.
fn parts() -> StoreConfig {
    StoreConfig {
        multipart_threshold: 5 * MIB,
        part_size: 5 * MIB,
        ..StoreConfig::default()
    }
}

/// Which backend `server` stores on, for assertion messages.
fn backend(server: &Server) -> &'static str {
    if server.bucket.is_some() {
        "s3"
    } else {
        "disk"
    }
}

// ---------------------------------------------------------------------------
// Requests

/// `method` on `path`, as a tus client sends it (`Tus-Resumable: 1.0.0`).
fn tus(server: &Server, method: Method, path: &str) -> RequestBuilder {
    (server.client.request(method, server.url(path))).header("tus-resumable", TUS_VERSION)
}

/// A creation of an upload of `length` bytes, or of a deferred length.
fn creation(server: &Server, length: Option<u64>) -> RequestBuilder {
    let request = tus(server, Method::POST, UPLOADS);
    match length {
        Some(length) => request.header("upload-length", length),
        None => request.header("upload-defer-length", "1"),
    }
}

/// Creates an upload of `length` bytes (`None`: deferred): its path.
async fn create(server: &Server, length: Option<u64>) -> String {
    let response = creation(server, length).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{}",
        backend(server)
    );
    location(&response)
}

/// An append of `bytes` at `offset`.
fn patch(server: &Server, upload: &str, offset: u64, bytes: &[u8]) -> RequestBuilder {
    (tus(server, Method::PATCH, upload))
        .header("content-type", OFFSET_OCTET_STREAM)
        .header("upload-offset", offset)
        .body(bytes.to_vec())
}

async fn head(server: &Server, upload: &str) -> Response {
    tus(server, Method::HEAD, upload).send().await.unwrap()
}

/// The upload's offset, as `HEAD` tells it.
async fn offset(server: &Server, upload: &str) -> u64 {
    let response = head(server, upload).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", backend(server));
    header(&response, "upload-offset").unwrap().parse().unwrap()
}

fn header<'r>(response: &'r Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

/// The answer's `Location`, a path under `/api/uploads/`.
fn location(response: &Response) -> String {
    let location = header(response, "location").expect("a Location");
    assert!(location.starts_with("/api/uploads/"), "{location}");
    location.to_owned()
}

/// A refusal's status, headers and JSON error code.
async fn refusal(response: Response) -> (StatusCode, HeaderMap, String) {
    let headers = response.headers().clone();
    let (status, body) = json(response).await;
    (status, headers, error_code(&body).to_owned())
}

fn base64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

fn sha1_checksum(bytes: &[u8]) -> String {
    format!("sha1 {}", base64(&sha1::Sha1::digest(bytes)))
}

fn sha256_checksum(bytes: &[u8]) -> String {
    format!("sha256 {}", base64(&sha2::Sha256::digest(bytes)))
}

// ---------------------------------------------------------------------------
// What the answers and the store must show

/// Asserts that `Upload-Expires` is an HTTP-date about the store's
/// `upload_expiry` (a day) from now.
fn assert_expires_a_day_ahead(response: &Response) {
    let value = header(response, "upload-expires").expect("an Upload-Expires");
    assert!(value.ends_with(" GMT"), "{value}");
    let expires = chrono::DateTime::parse_from_rfc2822(value).unwrap();
    let ahead = expires.timestamp() - chrono::Utc::now().timestamp();
    let expiry = StoreConfig::default().upload_expiry.as_secs() as i64;
    assert!((expiry - 60..=expiry + 1).contains(&ahead), "{value}");
}

/// Reads back the file that the answer's `Content-Location` names, checks
/// its bytes and its `x-corral-sha256`, and returns its key.
async fn assert_stored(server: &Server, answer: &Response, bytes: &[u8]) -> String {
    let location = header(answer, "content-location").expect("a Content-Location");
    let key = (location.strip_prefix("/api/files/"))
        .unwrap_or_else(|| panic!("{location}"))
        .to_owned();
    let file = server
        .client
        .get(server.url(location))
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), StatusCode::OK, "{location}");
    assert_eq!(
        header(&file, "x-corral-sha256"),
        Some(sha256(bytes).as_str())
    );
    assert!(file.bytes().await.unwrap() == bytes, "{location}");
    key
}

/// What is left of uploads in progress: their states and tails under
/// `.corral/uploads/`, and (on S3) the multipart uploads still open.
fn upload_leftovers(server: &Server) -> Vec<String> {
    if server.bucket.is_some() {
        let (objects, open) = server.s3_leftovers();
        let states = objects
            .into_iter()
            .filter(|key| key.contains(".corral/uploads/"));
        return states.chain(open).collect();
    }
    (server.files_on_disk().into_iter())
        .map(|path| path.display().to_string())
        .filter(|path| path.contains(".corral/uploads/"))
        .collect()
}

/// Asserts, within ten seconds, that no upload in progress is left.
async fn assert_no_upload_left(server: &Server) {
    for _ in 0..200 {
        if upload_leftovers(server).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("left of uploads: {:?}", upload_leftovers(server));
}

/// Asserts that the upload is gone: `404`, or `410` for one the server
/// remembers ending.
fn assert_gone(status: StatusCode, context: &str) {
    assert!(
        [StatusCode::NOT_FOUND, StatusCode::GONE].contains(&status),
        "{context}: {status}"
    );
}

// ---------------------------------------------------------------------------
// Raw HTTP, for what reqwest would not send

/// An answer read off a raw socket: its status and header lines.
struct RawAnswer {
    status: u16,
    head: String,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Reads an answer's status line and headers (not its body).
async fn read_head(socket: &mut TcpStream) -> RawAnswer {
    let mut bytes = Vec::new();
    let mut byte = [0; 1];
    let read = async {
        while !bytes.ends_with(b"\r\n\r\n") {
            if socket.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            bytes.push(byte[0]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    let head = String::from_utf8(bytes).unwrap();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    let status = status.unwrap_or_else(|| panic!("no status in {head:?}"));
    RawAnswer { status, head }
}

/// The head of a tus `PATCH` of `upload` at `offset`, with `headers`
/// (each line ending in `\r\n`).
fn raw_patch(server: &Server, upload: &str, offset: u64, headers: &str) -> String {
    format!(
        "PATCH {upload} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: {TUS_VERSION}\r\n\
         Content-Type: {OFFSET_OCTET_STREAM}\r\nUpload-Offset: {offset}\r\n\
         Connection: close\r\n{headers}\r\n",
        server.addr
    )
}

/// `data` as one chunk of a chunked body, then the last chunk and the
/// `trailers` (each line ending in `\r\n`).
fn chunked(data: &[u8], trailers: &str) -> Vec<u8> {
    let mut body = format!("{:x}\r\n", data.len()).into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n0\r\n{trailers}\r\n").as_bytes());
    body
}

// ---------------------------------------------------------------------------
// Tus-Resumable, Tus-Version, OPTIONS

#[tokio::test]
async fn every_tus_answer_says_tus_resumable_1_0_0_success_or_refusal() {
    for server in both(ServerConfig::default()).await {
        let created = creation(&server, Some(10)).send().await.unwrap();
        let upload = location(&created);
        let answers = [
            created,
            head(&server, &upload).await,
            patch(&server, &upload, 0, b"12345").send().await.unwrap(),
            patch(&server, &upload, 0, b"12345").send().await.unwrap(),
            (tus(&server, Method::PATCH, &upload))
                .header("upload-offset", 5)
                .body("x")
                .send()
                .await
                .unwrap(),
            head(&server, &unknown_upload()).await,
            tus(&server, Method::DELETE, &upload).send().await.unwrap(),
        ];
        let statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
        assert_eq!(
            statuses,
            [201, 200, 204, 409, 415, 404, 204],
            "{}",
            backend(&server)
        );
        for answer in &answers {
            let context = format!("{} {}", backend(&server), answer.status());
            assert_eq!(
                header(answer, "tus-resumable"),
                Some(TUS_VERSION),
                "{context}"
            );
        }
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn a_request_without_tus_resumable_or_with_another_version_is_412_with_tus_version() {
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(10)).await;
        let requests = [
            (Method::POST, UPLOADS),
            (Method::HEAD, upload.as_str()),
            (Method::PATCH, upload.as_str()),
            (Method::DELETE, upload.as_str()),
        ];
        for (method, path) in requests {
            for version in [None, Some("0.2.2")] {
                let mut request = server.client.request(method.clone(), server.url(path));
                if let Some(version) = version {
                    request = request.header("tus-resumable", version);
                }
                let request = (request.header("upload-length", 10))
                    .header("upload-offset", 0)
                    .header("content-type", OFFSET_OCTET_STREAM)
                    .body(vec![b'x'; 5]);
                let response = request.send().await.unwrap();
                let context = format!(
                    "{} {method} {path} Tus-Resumable {version:?}",
                    backend(&server)
                );
                assert_eq!(
                    response.status(),
                    StatusCode::PRECONDITION_FAILED,
                    "{context}"
                );
                assert_eq!(
                    header(&response, "tus-version"),
                    Some(TUS_VERSION),
                    "{context}"
                );
                assert_eq!(
                    header(&response, "tus-resumable"),
                    Some(TUS_VERSION),
                    "{context}"
                );
                if method != Method::HEAD {
                    let (_, _, code) = refusal(response).await;
                    assert_eq!(code, "unsupported_version", "{context}");
                }
            }
        }
        // None of them touched the upload.
        assert_eq!(offset(&server, &upload).await, 0);
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn options_needs_no_tus_resumable_and_advertises_version_extensions_size_and_algorithms() {
    let config = ServerConfig {
        tus_max_size: 1000,
        ..ServerConfig::default()
    };
    for server in both(config).await {
        for path in [UPLOADS, "/api/uploads/any-upload"] {
            // tus: a server ignores the version an OPTIONS request names.
            let request = server.client.request(Method::OPTIONS, server.url(path));
            let other = request
                .header("tus-resumable", "0.2.2")
                .send()
                .await
                .unwrap();
            assert_eq!(other.status(), StatusCode::NO_CONTENT, "{path}");
            let response = server.call(Method::OPTIONS, path).await;
            let context = format!("{} OPTIONS {path}", backend(&server));
            assert_eq!(response.status(), StatusCode::NO_CONTENT, "{context}");
            assert_eq!(
                header(&response, "tus-version"),
                Some(TUS_VERSION),
                "{context}"
            );
            assert_eq!(header(&response, "tus-max-size"), Some("1000"), "{context}");
            // tus: every answer but to an OPTIONS *request* says it.
            let resumable = header(&response, "tus-resumable");
            assert_eq!(resumable, Some(TUS_VERSION), "{context}");
            let extensions: Vec<&str> = header(&response, "tus-extension")
                .expect("a Tus-Extension")
                .split(',')
                .collect();
            for extension in [
                "creation",
                "creation-with-upload",
                "creation-defer-length",
                "expiration",
                "checksum",
                "checksum-trailer",
                "termination",
            ] {
                assert!(extensions.contains(&extension), "{context}: {extensions:?}");
            }
            let algorithms: Vec<&str> = header(&response, "tus-checksum-algorithm")
                .expect("a Tus-Checksum-Algorithm")
                .split(',')
                .collect();
            assert!(algorithms.contains(&"sha1"), "{context}: {algorithms:?}");
            assert!(algorithms.contains(&"sha256"), "{context}: {algorithms:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// creation

#[tokio::test]
async fn a_creation_answers_201_with_location_offset_zero_and_an_expiry_a_day_ahead() {
    for server in both(ServerConfig::default()).await {
        let response = creation(&server, Some(100)).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            backend(&server)
        );
        assert_eq!(header(&response, "upload-offset"), Some("0"));
        assert_expires_a_day_ahead(&response);
        let upload = location(&response);
        assert_eq!(offset(&server, &upload).await, 0);
    }
}

#[tokio::test]
async fn a_creation_with_both_or_neither_length_header_is_400() {
    for server in both(ServerConfig::default()).await {
        let both_lengths = (tus(&server, Method::POST, UPLOADS))
            .header("upload-length", 10)
            .header("upload-defer-length", "1");
        let neither = tus(&server, Method::POST, UPLOADS);
        for (request, expected) in [
            (both_lengths, "ambiguous_length"),
            (neither, "invalid_length"),
        ] {
            let (status, headers, code) = refusal(request.send().await.unwrap()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{}", backend(&server));
            assert_eq!(code, expected);
            assert_eq!(headers["tus-resumable"], TUS_VERSION);
        }
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn an_upload_length_over_tus_max_size_is_413_and_one_at_it_is_taken() {
    let config = ServerConfig {
        tus_max_size: 1000,
        ..ServerConfig::default()
    };
    for server in both(config).await {
        let response = creation(&server, Some(1001)).send().await.unwrap();
        let (status, headers, code) = refusal(response).await;
        assert_eq!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            backend(&server)
        );
        assert_eq!(code, "upload_too_large");
        assert_eq!(headers["tus-resumable"], TUS_VERSION);
        create(&server, Some(1000)).await;
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn upload_metadata_with_a_value_not_in_base64_or_a_repeated_key_is_400() {
    for server in both(ServerConfig::default()).await {
        for metadata in [
            "filename not-base64!",
            "filename cmVwb3J0LnR4dA==,filename b3RoZXIudHh0",
        ] {
            let request = creation(&server, Some(10)).header("upload-metadata", metadata);
            let (status, _, code) = refusal(request.send().await.unwrap()).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{} {metadata}",
                backend(&server)
            );
            assert_eq!(code, "invalid_metadata", "{metadata}");
        }
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn the_filename_and_filetype_in_upload_metadata_name_the_stored_file() {
    let metadata = format!(
        "filename {},filetype {}",
        base64(b"report.txt"),
        base64(b"text/plain")
    );
    let bytes = data(300, 1);
    for server in both(ServerConfig::default()).await {
        let request = creation(&server, Some(300)).header("upload-metadata", &metadata);
        let upload = location(&request.send().await.unwrap());
        let done = patch(&server, &upload, 0, &bytes).send().await.unwrap();
        assert_eq!(
            done.status(),
            StatusCode::NO_CONTENT,
            "{}",
            backend(&server)
        );
        let key = assert_stored(&server, &done, &bytes).await;
        assert!(key.ends_with("/report.txt"), "{key}");
        let file = server.head(&key).await;
        assert_eq!(header(&file, "content-type"), Some("text/plain"));
    }
}

// ---------------------------------------------------------------------------
// creation-with-upload

#[tokio::test]
async fn a_whole_file_sent_with_the_creation_is_stored_and_its_upload_is_over() {
    let bytes = data(1000, 2);
    for server in both(ServerConfig::default()).await {
        let request = (creation(&server, Some(1000)))
            .header("content-type", OFFSET_OCTET_STREAM)
            .body(bytes.clone());
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            backend(&server)
        );
        assert_eq!(header(&response, "upload-offset"), Some("1000"));
        assert_eq!(
            header(&response, "upload-expires"),
            None,
            "a complete upload does not expire"
        );
        assert_stored(&server, &response, &bytes).await;
        let upload = location(&response);
        assert_eq!(head(&server, &upload).await.status(), StatusCode::NOT_FOUND);
        assert_no_upload_left(&server).await;
    }
}

#[tokio::test]
async fn a_partial_body_sent_with_the_creation_sets_the_offset_and_patch_goes_on() {
    let bytes = data(300, 3);
    for server in both(ServerConfig::default()).await {
        let request = (creation(&server, Some(300)))
            .header("content-type", OFFSET_OCTET_STREAM)
            .body(bytes[..100].to_vec());
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            backend(&server)
        );
        assert_eq!(header(&response, "upload-offset"), Some("100"));
        assert_expires_a_day_ahead(&response);
        let upload = location(&response);
        assert_eq!(offset(&server, &upload).await, 100);
        let done = patch(&server, &upload, 100, &bytes[100..])
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&done, "upload-offset"), Some("300"));
        assert_stored(&server, &done, &bytes).await;
        assert_no_upload_left(&server).await;
    }
}

// ---------------------------------------------------------------------------
// HEAD

#[tokio::test]
async fn head_answers_200_uncached_with_offset_length_metadata_and_expiry() {
    // A key alone is a key with an empty value.
    let metadata = format!(
        "filename {},is_confidential,filetype {}",
        base64(b"a.bin"),
        base64(b"image/png")
    );
    for server in both(ServerConfig::default()).await {
        let request = creation(&server, Some(100)).header("upload-metadata", &metadata);
        let upload = location(&request.send().await.unwrap());
        patch(&server, &upload, 0, &data(40, 4))
            .send()
            .await
            .unwrap();
        let response = head(&server, &upload).await;
        assert_eq!(response.status(), StatusCode::OK, "{}", backend(&server));
        assert_eq!(header(&response, "tus-resumable"), Some(TUS_VERSION));
        assert_eq!(header(&response, "cache-control"), Some("no-store"));
        assert_eq!(header(&response, "upload-offset"), Some("40"));
        assert_eq!(header(&response, "upload-length"), Some("100"));
        assert_eq!(header(&response, "upload-defer-length"), None);
        assert_eq!(
            header(&response, "upload-metadata"),
            Some(metadata.as_str())
        );
        assert_expires_a_day_ahead(&response);
    }
}

#[tokio::test]
async fn head_of_an_upload_whose_length_is_deferred_says_upload_defer_length_1() {
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, None).await;
        let response = head(&server, &upload).await;
        assert_eq!(response.status(), StatusCode::OK, "{}", backend(&server));
        assert_eq!(header(&response, "upload-defer-length"), Some("1"));
        assert_eq!(header(&response, "upload-length"), None);
        assert_eq!(header(&response, "upload-offset"), Some("0"));
        assert_eq!(header(&response, "cache-control"), Some("no-store"));
    }
}

#[tokio::test]
async fn head_patch_and_delete_of_an_unknown_upload_are_404_without_an_offset() {
    for server in both(ServerConfig::default()).await {
        let unknown = &unknown_upload();
        let response = head(&server, unknown).await;
        assert_eq!(
            response.status(),
            StatusCode::NOT_FOUND,
            "{}",
            backend(&server)
        );
        assert_eq!(header(&response, "tus-resumable"), Some(TUS_VERSION));
        assert_eq!(header(&response, "upload-offset"), None);
        for request in [
            patch(&server, unknown, 0, b"abc"),
            tus(&server, Method::DELETE, unknown),
        ] {
            let (status, headers, code) = refusal(request.send().await.unwrap()).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{}", backend(&server));
            assert_eq!(code, "not_found");
            assert_eq!(headers["tus-resumable"], TUS_VERSION);
        }
        server.assert_still_serving().await;
    }
}

/// The path of an upload that was never created: an id as the server
/// makes them (a UUIDv7 of now), that it never made.
fn unknown_upload() -> String {
    format!("{UPLOADS}/{}", uuid::Uuid::now_v7())
}

#[tokio::test]
async fn an_upload_id_the_server_never_issues_is_404_not_410() {
    for server in both(ServerConfig::default()).await {
        let never = "/api/uploads/no-such-upload";
        let response = head(&server, never).await;
        assert_eq!(
            response.status(),
            StatusCode::NOT_FOUND,
            "{} HEAD",
            backend(&server)
        );
        let response = patch(&server, never, 0, b"abc").send().await.unwrap();
        let (status, _, code) = refusal(response).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{} PATCH", backend(&server));
        assert_eq!(code, "not_found");
    }
}

/// Local disk only: `Server::with_auth` serves from a directory.
#[tokio::test]
async fn another_tenants_upload_is_404_to_head_patch_and_delete() {
    const ACME: &str = "corral_acme-token";
    const ZETA: &str = "corral_zeta-token";
    let auth = Auth::new(vec![tenant("acme", ACME), tenant("zeta", ZETA)]).unwrap();
    let server = Server::with_auth(ServerConfig::default(), auth).await;
    let created = creation(&server, Some(10))
        .bearer_auth(ACME)
        .send()
        .await
        .unwrap();
    let upload = location(&created);
    let as_acme = |method| tus(&server, method, &upload).bearer_auth(ACME);
    let as_zeta = |method| tus(&server, method, &upload).bearer_auth(ZETA);

    let response = as_zeta(Method::HEAD).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let append = (as_zeta(Method::PATCH))
        .header("content-type", OFFSET_OCTET_STREAM)
        .header("upload-offset", 0)
        .body("12345");
    for request in [append, as_zeta(Method::DELETE)] {
        let (status, _, code) = refusal(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(code, "not_found");
    }
    let response = as_acme(Method::HEAD).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "upload-offset"), Some("0"));
}

// ---------------------------------------------------------------------------
// PATCH

#[tokio::test]
async fn patch_answers_204_with_the_new_offset_and_an_expiry() {
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(100)).await;
        let response = patch(&server, &upload, 0, &data(30, 5))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "{}",
            backend(&server)
        );
        assert_eq!(header(&response, "upload-offset"), Some("30"));
        assert_eq!(header(&response, "tus-resumable"), Some(TUS_VERSION));
        assert_expires_a_day_ahead(&response);
        let response = patch(&server, &upload, 30, &data(20, 6))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&response, "upload-offset"), Some("50"));
        assert_eq!(offset(&server, &upload).await, 50);
    }
}

#[tokio::test]
async fn a_patch_without_the_offset_octet_stream_content_type_is_415() {
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(100)).await;
        let text = untyped_patch(&server, &upload).header("content-type", "text/plain");
        for request in [untyped_patch(&server, &upload), text] {
            let (status, headers, code) = refusal(request.send().await.unwrap()).await;
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{}",
                backend(&server)
            );
            assert_eq!(code, "unsupported_media_type");
            assert_eq!(headers["tus-resumable"], TUS_VERSION);
        }
        assert_eq!(offset(&server, &upload).await, 0);
        server.assert_still_serving().await;
    }
}

/// A `PATCH` of five bytes at offset 0, without `Content-Type`.
fn untyped_patch(server: &Server, upload: &str) -> RequestBuilder {
    (tus(server, Method::PATCH, upload))
        .header("upload-offset", 0)
        .body("12345")
}

#[tokio::test]
async fn a_patch_without_or_with_a_malformed_upload_offset_is_400() {
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(100)).await;
        let request = (tus(&server, Method::PATCH, &upload))
            .header("content-type", OFFSET_OCTET_STREAM)
            .body("12345");
        let (status, _, code) = refusal(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}", backend(&server));
        assert_eq!(code, "invalid_offset");
        for value in ["-1", "ten", ""] {
            let request = (tus(&server, Method::PATCH, &upload))
                .header("content-type", OFFSET_OCTET_STREAM)
                .header("upload-offset", value)
                .body("12345");
            let (status, _, code) = refusal(request.send().await.unwrap()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "Upload-Offset {value:?}");
            assert_eq!(code, "invalid_offset", "Upload-Offset {value:?}");
        }
        assert_eq!(offset(&server, &upload).await, 0);
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn a_patch_at_another_offset_is_409_with_the_servers_offset() {
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(100)).await;
        patch(&server, &upload, 0, &data(10, 7))
            .send()
            .await
            .unwrap();
        for wrong in [0, 5, 11, 90] {
            let response = patch(&server, &upload, wrong, b"abc").send().await.unwrap();
            let (status, headers, code) = refusal(response).await;
            assert_eq!(
                status,
                StatusCode::CONFLICT,
                "{} at {wrong}",
                backend(&server)
            );
            assert_eq!(code, "offset_mismatch");
            assert_eq!(headers["upload-offset"], "10");
            assert_eq!(headers["tus-resumable"], TUS_VERSION);
        }
        assert_eq!(offset(&server, &upload).await, 10);
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn bytes_past_upload_length_are_413_and_leave_the_offset_where_it_was() {
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(10)).await;
        patch(&server, &upload, 0, b"1234").send().await.unwrap();

        // Past the length by Content-Length.
        let response = patch(&server, &upload, 4, &data(7, 8))
            .send()
            .await
            .unwrap();
        let (status, _, code) = refusal(response).await;
        assert_eq!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            backend(&server)
        );
        assert_eq!(code, "exceeds_length");
        assert_eq!(offset(&server, &upload).await, 4);

        // Past the length in a chunked body, which says no length before.
        let head = raw_patch(&server, &upload, 4, "Transfer-Encoding: chunked\r\n");
        let mut socket = send_raw(server.addr, &head, &chunked(&data(7, 9), "")).await;
        let answer = read_head(&mut socket).await;
        assert_eq!(answer.status, 413, "{}", answer.head);
        assert_eq!(answer.header("tus-resumable"), Some(TUS_VERSION));
        assert_eq!(offset(&server, &upload).await, 4);
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn a_deferred_length_is_set_by_a_patch_and_cannot_change_after() {
    let bytes = data(10, 10);
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, None).await;
        let declare = patch(&server, &upload, 0, &bytes[..4]).header("upload-length", 10);
        let response = declare.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "{}",
            backend(&server)
        );
        assert_eq!(header(&response, "upload-offset"), Some("4"));
        let response = head(&server, &upload).await;
        assert_eq!(header(&response, "upload-length"), Some("10"));
        assert_eq!(header(&response, "upload-defer-length"), None);

        let change = patch(&server, &upload, 4, &bytes[4..6]).header("upload-length", 12);
        let (status, _, code) = refusal(change.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(code, "length_changed");
        assert_eq!(offset(&server, &upload).await, 4);

        let done = patch(&server, &upload, 4, &bytes[4..])
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), StatusCode::NO_CONTENT);
        assert_stored(&server, &done, &bytes).await;
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn the_patch_that_reaches_the_length_stores_the_file_and_ends_the_upload() {
    // Two parts and a tail: the upload spans a multipart upload.
    let bytes = data(11 * MIB + 3, 11);
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(bytes.len() as u64)).await;
        let half = bytes.len() / 2;
        let first = patch(&server, &upload, 0, &bytes[..half])
            .send()
            .await
            .unwrap();
        assert_eq!(
            first.status(),
            StatusCode::NO_CONTENT,
            "{}",
            backend(&server)
        );
        assert_eq!(header(&first, "content-location"), None);
        let last = patch(&server, &upload, half as u64, &bytes[half..])
            .send()
            .await
            .unwrap();
        assert_eq!(last.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            header(&last, "upload-offset"),
            Some(bytes.len().to_string().as_str())
        );
        assert_eq!(
            header(&last, "upload-expires"),
            None,
            "a complete upload does not expire"
        );
        assert_stored(&server, &last, &bytes).await;
        assert_gone(head(&server, &upload).await.status(), backend(&server));
        assert_no_upload_left(&server).await;
    }
}

#[tokio::test]
async fn a_deferred_length_below_the_offset_is_400_and_one_over_tus_max_size_is_413() {
    let config = ServerConfig {
        tus_max_size: 1000,
        ..ServerConfig::default()
    };
    for server in both(config).await {
        let upload = create(&server, None).await;
        patch(&server, &upload, 0, &data(10, 24))
            .send()
            .await
            .unwrap();
        let below = patch(&server, &upload, 10, b"").header("upload-length", 5);
        let (status, _, code) = refusal(below.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}", backend(&server));
        assert_eq!(code, "length_below_offset");
        let over = patch(&server, &upload, 10, b"").header("upload-length", 1001);
        let (status, _, code) = refusal(over.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(code, "upload_too_large");
        // Bytes past the limit, the length still unknown.
        let past = patch(&server, &upload, 10, &data(991, 25));
        let (status, _, code) = refusal(past.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(code, "upload_too_large");
        let response = head(&server, &upload).await;
        assert_eq!(header(&response, "upload-offset"), Some("10"));
        assert_eq!(header(&response, "upload-defer-length"), Some("1"));
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn an_upload_of_zero_bytes_is_stored_by_its_creation() {
    for server in both(ServerConfig::default()).await {
        let response = creation(&server, Some(0)).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            backend(&server)
        );
        assert_eq!(header(&response, "upload-offset"), Some("0"));
        assert_stored(&server, &response, b"").await;
        let upload = location(&response);
        assert_gone(head(&server, &upload).await.status(), backend(&server));
        assert_no_upload_left(&server).await;
    }
}

#[tokio::test]
async fn an_expired_upload_is_410_to_head_and_patch() {
    let storage = StoreConfig {
        upload_expiry: Duration::from_secs(1),
        ..parts()
    };
    for server in [
        Server::with(ServerConfig::default(), storage.clone()).await,
        Server::on_s3(ServerConfig::default(), storage.clone()).await,
    ] {
        let upload = create(&server, Some(100)).await;
        patch(&server, &upload, 0, &data(10, 26))
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let response = head(&server, &upload).await;
        assert_eq!(response.status(), StatusCode::GONE, "{}", backend(&server));
        assert_eq!(header(&response, "tus-resumable"), Some(TUS_VERSION));
        let response = patch(&server, &upload, 10, b"abc").send().await.unwrap();
        let (status, _, code) = refusal(response).await;
        assert_eq!(status, StatusCode::GONE);
        assert_eq!(code, "gone");
        server.assert_still_serving().await;
    }
}

// ---------------------------------------------------------------------------
// checksum, checksum-trailer

#[tokio::test]
async fn a_right_sha1_or_sha256_upload_checksum_is_taken() {
    let bytes = data(200, 12);
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(200)).await;
        let sha1 = patch(&server, &upload, 0, &bytes[..100])
            .header("upload-checksum", sha1_checksum(&bytes[..100]));
        let response = sha1.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "{}",
            backend(&server)
        );
        assert_eq!(header(&response, "upload-offset"), Some("100"));
        let sha256 = patch(&server, &upload, 100, &bytes[100..])
            .header("upload-checksum", sha256_checksum(&bytes[100..]));
        let response = sha256.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_stored(&server, &response, &bytes).await;
    }
}

#[tokio::test]
async fn a_wrong_upload_checksum_is_460_and_the_offset_stays() {
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(200)).await;
        patch(&server, &upload, 0, &data(50, 13))
            .send()
            .await
            .unwrap();
        let sent = data(100, 14);
        for checksum in [
            sha1_checksum(b"other bytes"),
            sha256_checksum(b"other bytes"),
        ] {
            let request = patch(&server, &upload, 50, &sent).header("upload-checksum", &checksum);
            let (status, headers, code) = refusal(request.send().await.unwrap()).await;
            assert_eq!(status.as_u16(), 460, "{} {checksum}", backend(&server));
            assert_eq!(code, "checksum_mismatch");
            assert_eq!(headers["tus-resumable"], TUS_VERSION);
            assert_eq!(offset(&server, &upload).await, 50);
        }
        // The same bytes with their own checksum go in.
        let request =
            patch(&server, &upload, 50, &sent).header("upload-checksum", sha1_checksum(&sent));
        assert_eq!(
            request.send().await.unwrap().status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(offset(&server, &upload).await, 150);
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn an_upload_checksum_of_an_unknown_algorithm_is_400() {
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(100)).await;
        let request =
            patch(&server, &upload, 0, b"abc").header("upload-checksum", "crc32 NSRBwg==");
        let (status, _, code) = refusal(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}", backend(&server));
        assert_eq!(code, "unsupported_checksum_algorithm");
        assert_eq!(offset(&server, &upload).await, 0);
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn a_checksum_trailer_after_a_chunked_body_is_checked() {
    let headers = "Transfer-Encoding: chunked\r\nTrailer: Upload-Checksum\r\n";
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(200)).await;
        let sent = data(100, 15);

        let wrong = format!("Upload-Checksum: {}\r\n", sha1_checksum(b"other bytes"));
        let head = raw_patch(&server, &upload, 0, headers);
        let mut socket = send_raw(server.addr, &head, &chunked(&sent, &wrong)).await;
        let answer = read_head(&mut socket).await;
        assert_eq!(answer.status, 460, "{} {}", backend(&server), answer.head);
        assert_eq!(answer.header("tus-resumable"), Some(TUS_VERSION));
        assert_eq!(offset(&server, &upload).await, 0);

        let right = format!("Upload-Checksum: {}\r\n", sha256_checksum(&sent));
        let mut socket = send_raw(server.addr, &head, &chunked(&sent, &right)).await;
        let answer = read_head(&mut socket).await;
        assert_eq!(answer.status, 204, "{} {}", backend(&server), answer.head);
        assert_eq!(answer.header("upload-offset"), Some("100"));
        assert_eq!(offset(&server, &upload).await, 100);
        server.assert_still_serving().await;
    }
}

// ---------------------------------------------------------------------------
// termination

#[tokio::test]
async fn a_terminated_upload_answers_404_and_leaves_nothing_behind() {
    // Past one part: a multipart upload is open when it is terminated.
    let bytes = data(6 * MIB, 16);
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(8 * MIB as u64)).await;
        let response = patch(&server, &upload, 0, &bytes).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "{}",
            backend(&server)
        );

        let response = tus(&server, Method::DELETE, &upload).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&response, "tus-resumable"), Some(TUS_VERSION));

        // The server keeps no record of a terminated upload: 404, not 410.
        let response = head(&server, &upload).await;
        assert_gone(response.status(), "HEAD after DELETE");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let response = patch(&server, &upload, 6 * MIB as u64, b"more")
            .send()
            .await
            .unwrap();
        assert_gone(response.status(), "PATCH after DELETE");
        match server.bucket {
            Some(_) => server.assert_nothing_left_in_s3().await,
            None => server.assert_nothing_left().await,
        }
        server.assert_still_serving().await;
    }
}

// ---------------------------------------------------------------------------
// X-HTTP-Method-Override

#[tokio::test]
async fn a_post_with_x_http_method_override_patch_or_delete_works_as_that_method() {
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(100)).await;
        let append = (tus(&server, Method::POST, &upload))
            .header("x-http-method-override", "PATCH")
            .header("content-type", OFFSET_OCTET_STREAM)
            .header("upload-offset", 0)
            .body(data(25, 17));
        let response = append.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "{}",
            backend(&server)
        );
        assert_eq!(header(&response, "upload-offset"), Some("25"));
        assert_eq!(offset(&server, &upload).await, 25);

        let terminate =
            tus(&server, Method::POST, &upload).header("x-http-method-override", "DELETE");
        let response = terminate.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_gone(
            head(&server, &upload).await.status(),
            "HEAD after the override",
        );
        assert_no_upload_left(&server).await;
    }
}

// ---------------------------------------------------------------------------
// The IETF draft

/// `method` on `path` as a draft client at interop `version` sends it.
fn draft(server: &Server, version: u16, method: Method, path: &str) -> RequestBuilder {
    (server.client.request(method, server.url(path)))
        .header("upload-draft-interop-version", version)
}

#[tokio::test]
async fn the_draft_creates_reports_and_completes_an_upload_at_interop_6_and_8() {
    let bytes = data(300, 18);
    for server in both(ServerConfig::default()).await {
        for version in [6, 8] {
            let context = format!("{} interop {version}", backend(&server));
            let create = (draft(&server, version, Method::POST, UPLOADS))
                .header("upload-complete", "?0")
                .body(bytes[..100].to_vec());
            let response = create.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED, "{context}");
            assert_eq!(header(&response, "upload-offset"), Some("100"), "{context}");
            assert_eq!(
                header(&response, "upload-complete"),
                Some("?0"),
                "{context}"
            );
            assert_limit(&response, version);
            let upload = location(&response);

            let response = draft(&server, version, Method::HEAD, &upload)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NO_CONTENT, "{context}");
            assert_eq!(header(&response, "upload-offset"), Some("100"), "{context}");
            assert_eq!(
                header(&response, "upload-complete"),
                Some("?0"),
                "{context}"
            );
            assert_eq!(
                header(&response, "cache-control"),
                Some("no-store"),
                "{context}"
            );
            assert_limit(&response, version);

            let append = (draft(&server, version, Method::PATCH, &upload))
                .header("content-type", PARTIAL_UPLOAD)
                .header("upload-offset", 100)
                .header("upload-complete", "?1")
                .body(bytes[100..].to_vec());
            let response = append.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::NO_CONTENT, "{context}");
            assert_eq!(header(&response, "upload-offset"), Some("300"), "{context}");
            assert_eq!(
                header(&response, "upload-complete"),
                Some("?1"),
                "{context}"
            );
            assert_stored(&server, &response, &bytes).await;
            let response = draft(&server, version, Method::HEAD, &upload)
                .send()
                .await
                .unwrap();
            assert_gone(response.status(), &context);
        }
        assert_no_upload_left(&server).await;
    }
}

/// Asserts that an interop 8 answer carries `Upload-Limit` with `max-size`
/// (the server's `tus_max_size`, by default 5 GiB).
fn assert_limit(response: &Response, version: u16) {
    let limit = header(response, "upload-limit");
    if version == 8 {
        let limit = limit.expect("an Upload-Limit at interop 8");
        let max_size = format!("max-size={}", ServerConfig::default().tus_max_size);
        assert!(limit.split(", ").any(|item| item == max_size), "{limit}");
    }
}

#[tokio::test]
async fn a_draft_append_at_another_offset_is_409_with_the_offset() {
    for server in both(ServerConfig::default()).await {
        for version in [6, 8] {
            let create = (draft(&server, version, Method::POST, UPLOADS))
                .header("upload-complete", "?0")
                .body(data(50, 19));
            let upload = location(&create.send().await.unwrap());
            let append = (draft(&server, version, Method::PATCH, &upload))
                .header("content-type", PARTIAL_UPLOAD)
                .header("upload-offset", 20)
                .header("upload-complete", "?0")
                .body(data(10, 20));
            let (status, headers, code) = refusal(append.send().await.unwrap()).await;
            let context = format!("{} interop {version}", backend(&server));
            assert_eq!(status, StatusCode::CONFLICT, "{context}");
            assert_eq!(code, "offset_mismatch");
            assert_eq!(headers["upload-offset"], "50", "{context}");
            assert_eq!(
                headers["upload-draft-interop-version"],
                version.to_string().as_str()
            );
        }
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn a_draft_creation_with_upload_complete_stores_the_whole_file_at_once() {
    let bytes = data(500, 27);
    for server in both(ServerConfig::default()).await {
        for version in [6, 8] {
            let context = format!("{} interop {version}", backend(&server));
            let create = (draft(&server, version, Method::POST, UPLOADS))
                .header("upload-complete", "?1")
                .body(bytes.clone());
            let response = create.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED, "{context}");
            assert_eq!(header(&response, "upload-offset"), Some("500"), "{context}");
            assert_eq!(
                header(&response, "upload-complete"),
                Some("?1"),
                "{context}"
            );
            assert_limit(&response, version);
            location(&response);
            assert_stored(&server, &response, &bytes).await;
        }
        assert_no_upload_left(&server).await;
    }
}

// ---------------------------------------------------------------------------
// Slow and vanished clients

#[tokio::test]
async fn a_patch_that_goes_quiet_mid_body_keeps_what_arrived_after_the_body_timeout() {
    let config = ServerConfig {
        body_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    for server in both(config).await {
        let upload = create(&server, Some(1000)).await;
        let head = raw_patch(&server, &upload, 0, "Content-Length: 1000\r\n");
        // Half the body, then nothing, the socket left open.
        let mut socket = send_raw(server.addr, &head, &data(500, 21)).await;
        let answer = read_head(&mut socket).await;
        assert_eq!(answer.status, 408, "{} {}", backend(&server), answer.head);
        assert_eq!(answer.header("tus-resumable"), Some(TUS_VERSION));
        assert_eq!(offset(&server, &upload).await, 500);
        drop(socket);
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn a_patch_whose_connection_is_cut_mid_body_keeps_what_arrived() {
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(1000)).await;
        let head = raw_patch(&server, &upload, 0, "Content-Length: 1000\r\n");
        let mut socket = send_raw(server.addr, &head, &data(500, 22)).await;
        socket.flush().await.unwrap();
        // Let the bytes arrive before the connection goes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(socket);
        assert_eq!(offset(&server, &upload).await, 500, "{}", backend(&server));
        // And the upload goes on from there.
        let rest = patch(&server, &upload, 500, &data(500, 23))
            .send()
            .await
            .unwrap();
        assert_eq!(rest.status(), StatusCode::NO_CONTENT);
        assert!(header(&rest, "content-location").is_some());
        server.assert_still_serving().await;
    }
}

#[tokio::test]
async fn a_creation_cut_short_leaves_a_resumable_upload_or_nothing() {
    let config = ServerConfig {
        body_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    for server in both(config).await {
        let head = format!(
            "POST {UPLOADS} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: {TUS_VERSION}\r\n\
             Content-Type: {OFFSET_OCTET_STREAM}\r\nUpload-Length: 1000\r\n\
             Content-Length: 1000\r\nConnection: close\r\n\r\n",
            server.addr
        );
        let mut socket = send_raw(server.addr, &head, &data(500, 28)).await;
        let answer = read_head(&mut socket).await;
        assert_eq!(answer.status, 408, "{} {}", backend(&server), answer.head);
        match answer.header("location") {
            Some(upload) => assert_eq!(offset(&server, upload).await, 500),
            None => assert_no_upload_left(&server).await,
        }
    }
}

// ---------------------------------------------------------------------------
// Methods the upload routes do not take

#[tokio::test]
async fn a_get_on_the_upload_routes_is_405_naming_the_methods_they_take() {
    for server in both(ServerConfig::default()).await {
        let upload = create(&server, Some(10)).await;
        for path in [UPLOADS, upload.as_str()] {
            let response = tus(&server, Method::GET, path).send().await.unwrap();
            let context = format!("{} GET {path}", backend(&server));
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{context}"
            );
            assert_eq!(
                header(&response, "tus-resumable"),
                Some(TUS_VERSION),
                "{context}"
            );
            let allow = header(&response, "allow").expect("an Allow").to_owned();
            assert!(!allow.contains("GET"), "{context}: {allow}");
            let (_, body) = json(response).await;
            assert_eq!(error_code(&body), "method_not_allowed");
            let message = body["error"]["message"].as_str().unwrap();
            for method in allow.split(',').map(str::trim).filter(|m| *m != "OPTIONS") {
                assert!(
                    message.contains(method),
                    "{context}: {message} (Allow: {allow})"
                );
            }
            assert!(!message.contains("takes GET"), "{context}: {message}");
        }
    }
}
