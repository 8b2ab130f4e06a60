//! A backend that goes down and comes back. corral answers `503
//! backend_unavailable` with `Retry-After`, never `500`; once its breaker
//! has found the backend down, `/readyz` and `/metrics` say so and requests
//! are refused without a call; asynchronous uploads are still spooled; and
//! when the backend is back, the breaker's probe finds it without traffic,
//! the spooled job is stored and uploads work again.

mod common;

use std::time::{Duration, Instant};

use common::Corral;
use corral_testkit::front::{Front, FrontConfig};
use corral_testkit::s3::S3Server;
use reqwest::multipart::{Form, Part};

/// An answer: status, `Retry-After`, body.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: String,
}

async fn upload(client: &reqwest::Client, url: &str, name: &str, asynchronous: bool) -> Answer {
    let form = Form::new().part(
        "file",
        Part::bytes(vec![7; 10_000]).file_name(name.to_owned()),
    );
    let mut request = client.post(format!("{url}/api/files")).multipart(form);
    if asynchronous {
        request = request.header("prefer", "respond-async");
    }
    answer(request.send().await.expect("corral answers")).await
}

async fn get(client: &reqwest::Client, url: &str) -> Answer {
    answer(client.get(url).send().await.expect("corral answers")).await
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().parse().unwrap());
    let body = response.text().await.unwrap();
    Answer {
        status,
        retry_after,
        body,
    }
}

/// Asserts `answer` is a `503 backend_unavailable` with a `Retry-After`.
fn assert_unavailable(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 503, "{what}: {}", answer.body);
    assert!(
        answer.body.contains("\"code\":\"backend_unavailable\""),
        "{what}: {}",
        answer.body
    );
    assert!(answer.retry_after.is_some_and(|s| s >= 1), "{what}");
}

#[test]
fn a_backend_that_goes_down_is_answered_503_and_found_again() {
    let s3 = S3Server::require();
    let bucket = s3.new_bucket("outage").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let front = runtime
        .block_on(Front::start(FrontConfig::new(s3.addr())))
        .unwrap();
    let port = front.addr().port();
    let corral = Corral::on_s3(&front.endpoint(), &bucket, &[]);
    let url = corral.url.clone();
    let client = reqwest::Client::new();
    runtime.block_on(async {
        assert_eq!(upload(&client, &url, "before.bin", false).await.status, 201);

        // The backend goes away: its port refuses connections.
        front.shutdown().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut failed = 0;
        loop {
            let answer = upload(&client, &url, "during.bin", false).await;
            assert_unavailable(&answer, "an upload while the backend is down");
            failed += 1;
            let ready = get(&client, &format!("{url}/readyz")).await;
            if ready.status == 503 {
                assert_unavailable(&ready, "/readyz");
                break;
            }
            assert!(Instant::now() < deadline, "the breaker never opened");
        }
        // Found down: refused without a call, and said in /metrics.
        let answer = upload(&client, &url, "refused.bin", false).await;
        assert_unavailable(&answer, "an upload once the breaker is open");
        let metrics = get(&client, &format!("{url}/metrics")).await.body;
        assert!(metrics.contains("\ncorral_backend_up 0\n"), "{metrics}");
        assert!(
            metrics.contains("\ncorral_backend_breaker_opened_total 1\n"),
            "{metrics}"
        );
        // An asynchronous upload is still taken, into the spool.
        let spooled = upload(&client, &url, "spooled.bin", true).await;
        assert_eq!(spooled.status, 202, "{}", spooled.body);
        let job: serde_json::Value = serde_json::from_str(&spooled.body).unwrap();
        let job = job["job"].as_str().unwrap().to_owned();

        // The backend comes back on the same port; the breaker's probe
        // finds it with no request to help.
        let mut config = FrontConfig::new(s3.addr());
        config.port = port;
        let front = Front::start(config).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(&client, &format!("{url}/readyz")).await.status != 200 {
            assert!(Instant::now() < deadline, "the backend was never found again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let metrics = get(&client, &format!("{url}/metrics")).await.body;
        assert!(metrics.contains("\ncorral_backend_up 1\n"), "{metrics}");
        assert_eq!(upload(&client, &url, "after.bin", false).await.status, 201);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = get(&client, &format!("{url}/api/jobs/{job}")).await.body;
            if state.contains("\"state\":\"done\"") {
                break;
            }
            assert!(Instant::now() < deadline, "the spooled job never finished: {state}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        front.shutdown().await;
        println!("outage: {failed} uploads answered 503 before the breaker opened, then refused at once; found again by the probe");
    });
    drop(corral);
}
