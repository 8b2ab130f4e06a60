//! The throttling S3 front against a real S3 server (moto): it admits what
//! its limits allow, answers the rest `503 SlowDown` at once, injects the
//! faults it is told to, forwards everything else unchanged and counts it
//! all. Timing is never asserted as a speed: requests are held open to make
//! concurrency exact, and the counts say what happened.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corral_testkit::front::{Faults, Front, FrontConfig, Stats};
use corral_testkit::s3::{self, S3Server};
use futures::StreamExt;
use futures::future::join_all;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use reqwest::{Body, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// moto treats a request without `Authorization` as anonymous; it never
/// checks the signature.
const DUMMY_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
    Credential=corral-test/20260101/us-east-1/s3/aws4_request, \
    SignedHeaders=host, Signature=0";

const MIB: usize = 1024 * 1024;

fn to_moto() -> FrontConfig {
    FrontConfig::new(S3Server::require().addr())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    std::iter::repeat_with(|| rng.u8(..)).take(len).collect()
}

/// A PUT through the front, sent when awaited.
fn put<B: Into<Body>>(
    front: &Front,
    path: &str,
    body: B,
) -> impl Future<Output = reqwest::Result<reqwest::Response>> + use<B> {
    http()
        .put(format!("{}{path}", front.endpoint()))
        .header("authorization", DUMMY_AUTHORIZATION)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .send()
}

/// A GET through the front, sent when awaited.
fn get(
    front: &Front,
    path: &str,
) -> impl Future<Output = reqwest::Result<reqwest::Response>> + use<> {
    http()
        .get(format!("{}{path}", front.endpoint()))
        .header("authorization", DUMMY_AUTHORIZATION)
        .send()
}

/// What moto itself has, bypassing the front.
async fn moto(method: &'static str, path: String) -> s3::Response {
    tokio::task::spawn_blocking(move || {
        S3Server::require()
            .request(method, &path, &[], &[])
            .unwrap()
    })
    .await
    .unwrap()
}

/// An object_store client through the front, which surfaces every error.
fn store(front: &Front, bucket: &str) -> impl ObjectStore {
    AmazonS3Builder::new()
        .with_endpoint(front.endpoint())
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_bucket_name(bucket)
        .with_region(s3::REGION)
        .with_access_key_id(s3::ACCESS_KEY_ID)
        .with_secret_access_key(s3::SECRET_ACCESS_KEY)
        .with_retry(RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        })
        .build()
        .unwrap()
}

/// Waits (at most 5 s) until the stats satisfy `check`.
async fn stats_until(front: &Front, what: &str, check: impl Fn(&Stats) -> bool) -> Stats {
    for _ in 0..500 {
        let stats = front.stats();
        if check(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never {what}: {:?}", front.stats());
}

async fn assert_slow_down(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/xml");
    assert!(response.headers().contains_key("x-amz-request-id"));
    let body = response.text().await.unwrap();
    assert!(
        body.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>"#),
        "{body}"
    );
}

/// A PUT whose body is sent in two halves, the second when told to.
struct HeldPut {
    rest: mpsc::Sender<Bytes>,
    second: Bytes,
    response: tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
}

impl HeldPut {
    fn start(front: &Front, path: &str, content: &[u8]) -> Self {
        let (first, second) = content.split_at(content.len() / 2);
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        tx.try_send(Bytes::copy_from_slice(first)).unwrap();
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
        });
        let request = http()
            .put(format!("{}{path}", front.endpoint()))
            .header("authorization", DUMMY_AUTHORIZATION)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, content.len())
            .body(Body::wrap_stream(body));
        Self {
            rest: tx,
            second: Bytes::copy_from_slice(second),
            response: tokio::spawn(request.send()),
        }
    }

    async fn finish(self) -> reqwest::Response {
        self.rest.send(self.second).await.unwrap();
        drop(self.rest);
        self.response.await.unwrap().unwrap()
    }
}

#[tokio::test]
async fn requests_beyond_the_slots_get_slow_down_at_once_and_the_rest_round_trip() {
    let s3 = S3Server::require();
    let bucket = s3.new_bucket("front-slots").unwrap();
    let front = Front::start(FrontConfig {
        slots: Some(2),
        latency: Duration::from_millis(200),
        jitter: 0.1,
        ..to_moto()
    })
    .await
    .unwrap();

    // Two uploads hold both slots for as long as their bodies are unsent.
    let contents = [bytes(4 * MIB, 1), bytes(3 * MIB + 17, 2)];
    let held: Vec<HeldPut> = contents
        .iter()
        .enumerate()
        .map(|(i, content)| HeldPut::start(&front, &format!("/{bucket}/held-{i}"), content))
        .collect();
    stats_until(&front, "both slots taken", |s| s.in_flight == 2).await;

    // Eight more, bodies and all, are turned away without waiting for them.
    let rejected = join_all((0..8).map(|i| {
        put(
            &front,
            &format!("/{bucket}/rejected-{i}"),
            bytes(MIB, 10 + i),
        )
    }))
    .await;
    for response in rejected {
        assert_slow_down(response.unwrap()).await;
    }
    assert_eq!(front.stats().throttled, 8);

    for held in held {
        let response = held.finish().await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{:?}",
            response.text().await
        );
    }

    // The admitted ones are stored, byte for byte, and read back through the
    // front streamed; the rejected ones are not stored at all.
    for (i, content) in contents.iter().enumerate() {
        let path = format!("/{bucket}/held-{i}");
        assert_eq!(&moto("GET", path.clone()).await.ok().unwrap().body, content);
        let response = get(&front, &path).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut chunks = response.bytes_stream();
        let mut got = Vec::new();
        while let Some(chunk) = chunks.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert!(
            got == *content,
            "held-{i} differs after {} bytes",
            got.len()
        );
    }
    for i in 0..8 {
        assert_eq!(
            moto("HEAD", format!("/{bucket}/rejected-{i}")).await.status,
            404
        );
    }

    let stats = stats_until(&front, "all slots free", |s| s.in_flight == 0).await;
    // The two held uploads kept their slots while their bodies trickled in.
    assert!(stats.busy_slot_seconds > 0.0, "{stats:?}");
    assert_eq!(
        Stats {
            busy_slot_seconds: 0.0,
            ..stats
        },
        Stats {
            received: 12,
            forwarded: 4,
            forwarded_by_operation: [("GetObject", 2), ("PutObject", 2)].into(),
            throttled: 8,
            peak_concurrency: 2,
            in_flight: 0,
            slots: Some(2),
            ..Stats::default()
        }
    );
}

#[tokio::test]
async fn a_client_that_sends_its_whole_body_before_reading_still_reads_the_503() {
    let front = Front::start(FrontConfig {
        slots: Some(0),
        ..to_moto()
    })
    .await
    .unwrap();
    let addr = front.addr();
    // Like many simple clients: write everything, then read. Were the body
    // not drained, the front would close on unread data and the write would
    // fail with a broken pipe or a reset.
    let raw = tokio::task::spawn_blocking(move || {
        // More than the kernel buffers on both sides hold (32 MiB + 4 MiB).
        let body = vec![7; 48 * MIB];
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let head = format!(
            "PUT /bucket/big HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(&body)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        std::io::Result::Ok(String::from_utf8_lossy(&raw).into_owned())
    })
    .await
    .unwrap()
    .unwrap();
    assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("connection: close"),
        "{raw}"
    );
    assert!(raw.contains("<Code>SlowDown</Code>"), "{raw}");
    assert_eq!(front.stats().throttled, 1);
}

#[tokio::test]
async fn a_token_bucket_admits_about_its_burst_from_a_burst() {
    let bucket = S3Server::require().new_bucket("front-rps").unwrap();
    let front = Front::start(FrontConfig {
        rps: Some(5.0),
        burst: Some(1.0),
        ..to_moto()
    })
    .await
    .unwrap();

    let responses = join_all((0..10).map(|i| put(&front, &format!("/{bucket}/k{i}"), "x"))).await;
    let mut admitted = 0;
    for response in responses {
        let response = response.unwrap();
        if response.status() == StatusCode::OK {
            admitted += 1;
        } else {
            assert_slow_down(response).await;
        }
    }
    // One token to start with, and one more for each 200 ms the burst took
    // to arrive: a few milliseconds here, but leave room for a slow machine.
    assert!((1..=4).contains(&admitted), "{admitted} of 10 admitted");
    let stats = front.stats();
    assert_eq!(stats.throttled, 10 - admitted);
    assert_eq!(stats.forwarded, admitted);
    assert_eq!(stats.received, 10);
}

#[tokio::test]
async fn injected_errors_answer_every_request_and_forward_nothing() {
    let bucket = S3Server::require().new_bucket("front-errors").unwrap();
    let path = format!("/{bucket}/never");

    let front = Front::start(FrontConfig {
        faults: Faults {
            error_500: 1.0,
            ..Faults::default()
        },
        ..to_moto()
    })
    .await
    .unwrap();
    for _ in 0..3 {
        let response = put(&front, &path, bytes(MIB, 3)).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/xml");
        let body = response.text().await.unwrap();
        assert!(body.contains("<Code>InternalError</Code>"), "{body}");
    }
    let error = store(&front, &bucket)
        .put(&Path::from("never"), PutPayload::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(format!("{error}").contains("500"), "{error}");
    let stats = front.stats();
    assert_eq!((stats.faults.error_500, stats.forwarded), (4, 0));

    let front = Front::start(FrontConfig {
        faults: Faults {
            error_503: 1.0,
            ..Faults::default()
        },
        ..to_moto()
    })
    .await
    .unwrap();
    for _ in 0..3 {
        assert_slow_down(put(&front, &path, bytes(MIB, 4)).await.unwrap()).await;
    }
    let stats = front.stats();
    assert_eq!(
        (stats.faults.error_503, stats.throttled, stats.forwarded),
        (3, 0, 0)
    );
    assert_eq!(moto("HEAD", path).await.status, 404);
}

#[tokio::test]
async fn a_reset_breaks_the_connection_and_stores_nothing() {
    let bucket = S3Server::require().new_bucket("front-reset").unwrap();
    let existing = bytes(MIB, 5);
    let path = format!("/{bucket}/existing");
    let setup = tokio::task::spawn_blocking({
        let (path, existing) = (path.clone(), existing.clone());
        move || S3Server::require().request("PUT", &path, &[], &existing)
    });
    setup.await.unwrap().unwrap().ok().unwrap();
    let front = Front::start(FrontConfig {
        faults: Faults {
            reset: 1.0,
            ..Faults::default()
        },
        ..to_moto()
    })
    .await
    .unwrap();

    // An upload is cut off partway through its body and never forwarded.
    let error = put(&front, &format!("/{bucket}/cut"), bytes(2 * MIB, 6))
        .await
        .unwrap_err();
    assert!(error.is_request() || error.is_body(), "{error:?}");
    assert_eq!(moto("HEAD", format!("/{bucket}/cut")).await.status, 404);
    let error = store(&front, &bucket)
        .put(&Path::from("cut-too"), PutPayload::from(bytes(MIB, 7)))
        .await
        .unwrap_err();
    assert_eq!(
        moto("HEAD", format!("/{bucket}/cut-too")).await.status,
        404,
        "{error}"
    );

    // A download is cut off partway through the response body.
    let download = async {
        let response = get(&front, &path).await?;
        response.bytes().await
    };
    match download.await {
        Err(error) => assert!(
            error.is_body() || error.is_decode() || error.is_request(),
            "{error:?}"
        ),
        Ok(body) => panic!("a whole body of {} bytes came through", body.len()),
    }

    let stats = front.stats();
    assert_eq!((stats.faults.reset, stats.forwarded), (3, 1), "{stats:?}");
}

#[tokio::test]
async fn a_stall_holds_the_request_then_serves_it() {
    let bucket = S3Server::require().new_bucket("front-stall").unwrap();
    let stall_for = Duration::from_millis(300);
    let front = Front::start(FrontConfig {
        faults: Faults {
            stall: 1.0,
            stall_for,
            ..Faults::default()
        },
        ..to_moto()
    })
    .await
    .unwrap();
    let started = Instant::now();
    let response = put(&front, &format!("/{bucket}/slow"), "slow")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // A lower bound only: a sleep never ends early.
    assert!(started.elapsed() >= stall_for);
    let stats = front.stats();
    assert_eq!((stats.faults.stall, stats.forwarded), (1, 1));
    assert_eq!(moto("GET", format!("/{bucket}/slow")).await.body, b"slow");
}

#[tokio::test]
async fn stats_are_json_on_the_fronts_own_path_and_take_no_slot() {
    let bucket = S3Server::require().new_bucket("front-stats").unwrap();
    // The schedule overrides `slots` from 0 s: no request is ever admitted.
    let front = Front::start(FrontConfig {
        slots: Some(5),
        schedule: "0s:0,1h:5".parse().unwrap(),
        ..to_moto()
    })
    .await
    .unwrap();
    assert_slow_down(
        put(&front, &format!("/{bucket}/k"), bytes(MIB, 8))
            .await
            .unwrap(),
    )
    .await;

    let stats_url = format!("{}/stats", front.endpoint());
    for _ in 0..2 {
        let response = http().get(&stats_url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let json: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(json["received"], 1, "{json}");
        assert_eq!(json["throttled"], 1, "{json}");
        assert_eq!(json["forwarded"], 0, "{json}");
        assert_eq!(json["in_flight"], 0, "{json}");
        assert_eq!(json["slots"], 0, "{json}");
        assert_eq!(json["faults"]["reset"], 0, "{json}");
    }

    // Creating a bucket named "stats" is the front's business, not moto's.
    let response = http().put(&stats_url).body("x").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(moto("HEAD", "/stats".to_owned()).await.status, 404);
    assert_eq!(front.stats().received, 1);
}

#[tokio::test]
async fn forwards_host_path_query_and_end_to_end_headers_only() {
    // A bare upstream that records the request it receives.
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = Front::start(FrontConfig::new(upstream.local_addr().unwrap()))
        .await
        .unwrap();
    let recorded = tokio::spawn(async move {
        let (mut stream, _) = upstream.accept().await.unwrap();
        let mut raw = Vec::new();
        let mut buffer = [0; 4096];
        while !raw.ends_with(b"\r\n\r\nhello") {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&raw));
            raw.extend_from_slice(&buffer[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Upstream: yes\r\nKeep-Alive: timeout=5\r\nConnection: close\r\n\r\nok")
            .await
            .unwrap();
        String::from_utf8(raw).unwrap()
    });

    let response = http()
        .put(format!(
            "{}/bucket/a%20key?partNumber=1&uploadId=u",
            front.endpoint()
        ))
        .header(HOST, "bucket.s3.example:9000")
        .header("x-amz-meta-a", "b")
        .header("authorization", DUMMY_AUTHORIZATION)
        .header("connection", "x-private")
        .header("x-private", "1")
        .header("proxy-authorization", "secret")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-upstream"], "yes");
    assert!(!response.headers().contains_key("keep-alive"));
    assert_eq!(response.text().await.unwrap(), "ok");

    let raw = recorded.await.unwrap().to_ascii_lowercase();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    assert_eq!(
        lines.next(),
        Some("put /bucket/a%20key?partnumber=1&uploadid=u http/1.1")
    );
    let headers: Vec<&str> = lines.collect();
    for expected in [
        "host: bucket.s3.example:9000",
        "x-amz-meta-a: b",
        "content-length: 5",
        "authorization: aws4-hmac-sha256 credential=corral-test/20260101/us-east-1/s3/aws4_request, signedheaders=host, signature=0",
    ] {
        assert!(headers.contains(&expected), "{expected} not in {headers:?}");
    }
    for stripped in ["x-private", "proxy-authorization", "transfer-encoding"] {
        assert!(
            !headers
                .iter()
                .any(|h| h.starts_with(&format!("{stripped}:"))),
            "{stripped} forwarded: {headers:?}"
        );
    }
    assert_eq!(body, "hello");
}

#[tokio::test]
async fn object_store_round_trips_through_a_slow_front() {
    let bucket = S3Server::require().new_bucket("front-store").unwrap();
    let front = Front::start(FrontConfig {
        slots: Some(4),
        latency: Duration::from_millis(20),
        jitter: 0.5,
        bandwidth: Some(64 * MIB as u64),
        ..to_moto()
    })
    .await
    .unwrap();
    let store = store(&front, &bucket);

    let whole = bytes(5 * MIB + 3, 9);
    let path = Path::from("dir/whole");
    store
        .put(&path, PutPayload::from(whole.clone()))
        .await
        .unwrap();
    assert_eq!(
        store.get(&path).await.unwrap().bytes().await.unwrap(),
        whole
    );

    let parts = [bytes(5 * MIB, 10), bytes(MIB, 11)];
    let path = Path::from("dir/multipart");
    common::put_parts(&store, &path, &parts).await;
    assert_eq!(store.head(&path).await.unwrap().size, 6 * MIB as u64);
    assert_eq!(
        store.get(&path).await.unwrap().bytes().await.unwrap(),
        parts.concat()
    );

    let listed: Vec<_> = store
        .list(None)
        .map(|meta| meta.unwrap().location)
        .collect()
        .await;
    assert_eq!(listed.len(), 2, "{listed:?}");

    let stats = front.stats();
    assert_eq!(stats.forwarded, stats.received);
    assert_eq!((stats.throttled, stats.upstream_errors), (0, 0));
    assert!(stats.peak_concurrency <= 4);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_bad_gateway() {
    let gone: SocketAddr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let front = Front::start(FrontConfig::new(gone)).await.unwrap();
    let response = put(&front, "/bucket/key", "x").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(response.text().await.unwrap().contains("<Error>"));
    assert_eq!(front.stats().upstream_errors, 1);
}

#[tokio::test]
async fn shutdown_and_drop_close_the_port() {
    let front = Front::start(to_moto()).await.unwrap();
    let addr = front.addr();
    assert_eq!(get(&front, "/").await.unwrap().status(), StatusCode::OK);
    front.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let front = Front::start(to_moto()).await.unwrap();
    let addr = front.addr();
    drop(front);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{addr} still accepts connections after the front was dropped");
}

#[tokio::test]
async fn an_invalid_config_is_refused() {
    let error = Front::start(FrontConfig {
        jitter: 2.0,
        ..FrontConfig::new(SocketAddr::from(([127, 0, 0, 1], 9)))
    })
    .await
    .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}
