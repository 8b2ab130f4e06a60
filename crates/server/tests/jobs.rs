//! Asynchronous uploads (`Prefer: respond-async`) through a real socket:
//! `202` once spooled, stored by the workers, followed at `/api/jobs/{id}`.

use std::time::Duration;

use corral_server::{Auth, ServerConfig};
use reqwest::StatusCode;
use reqwest::multipart::Form;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

mod common;
use common::*;

const MIB: u64 = 1 << 20;

async fn post_async(server: &Server, form: Form) -> reqwest::Response {
    (server.client.post(server.url("/api/files")))
        .header("prefer", "respond-async")
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// Polls the job at `location` until it is no longer queued or uploading.
async fn finished_job(server: &Server, location: &str) -> Value {
    for _ in 0..400 {
        let response = server
            .client
            .get(server.url(location))
            .send()
            .await
            .unwrap();
        let (status, job) = json(response).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if job["state"] == "done" || job["state"] == "failed" {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the job at {location} did not finish in 10 s");
}

#[tokio::test]
async fn an_async_batch_is_answered_202_then_stored_by_the_workers() {
    let server = Server::with_spool(ServerConfig::default(), 64 * MIB, None).await;
    let files = [
        ("a.txt", data(1000, 1)),
        ("b.bin", data(300_000, 2)),
        ("a.txt", data(0, 3)),
    ];
    let mut form = Form::new();
    for (name, content) in &files {
        form = form.part("file", file(name, content.clone()));
    }
    let response = post_async(&server, form).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["preference-applied"], "respond-async");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (_, accepted) = json(response).await;
    assert_eq!(accepted["location"], location.as_str());
    assert_eq!(
        location,
        format!("/api/jobs/{}", accepted["job"].as_str().unwrap())
    );
    let announced = accepted["files"].as_array().unwrap();
    assert_eq!(announced.len(), 3);

    let job = finished_job(&server, &location).await;
    assert_eq!(job["state"], "done", "{job}");
    for ((name, content), (announced, stored)) in files
        .iter()
        .zip(announced.iter().zip(job["files"].as_array().unwrap()))
    {
        assert_eq!(stored["state"], "stored");
        assert_eq!(stored["key"], announced["key"]);
        assert_eq!(stored["name"], *name);
        assert_eq!(announced["sha256"], sha256(content).as_str());
        let read = server.get(announced["key"].as_str().unwrap()).await;
        assert_eq!(read.status(), StatusCode::OK);
        assert_eq!(read.bytes().await.unwrap(), *content);
    }
    // Repeated names are numbered as in a synchronous batch.
    assert!(
        announced[2]["key"]
            .as_str()
            .unwrap()
            .ends_with("/a (2).txt")
    );
    server.assert_nothing_spooled().await;

    // Without a spool preference the same request is synchronous.
    let (status, _) = server
        .upload(Form::new().part("file", file("c.txt", data(10, 4))))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    server.stop().await;
}

#[tokio::test]
async fn a_refused_async_batch_leaves_nothing_in_the_spool_or_the_store() {
    let config = ServerConfig {
        max_file_size: 100_000,
        body_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let server = Server::with_spool(config, 64 * MIB, None).await;
    // A file over the limit after a good one.
    let form = Form::new()
        .part("file", file("ok.txt", data(10, 1)))
        .part("file", file("big.bin", data(200_000, 2)));
    let response = post_async(&server, form).await;
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["file"], "big.bin");
    server.assert_nothing_spooled().await;

    // A client that goes away mid-body.
    let head = "POST /api/files HTTP/1.1\r\nHost: x\r\nPrefer: respond-async\r\n\
                Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n\
                --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.bin\"\r\n\r\n";
    let mut socket = send_raw(server.addr, head, &data(5000, 3)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.spooled().len(), 1, "the batch is being spooled");
    socket.shutdown().await.unwrap();
    drop(socket);
    server.assert_nothing_spooled().await;

    // A client that stops sending gets 408, and its batch is dropped.
    let mut socket = send_raw(server.addr, head, &data(5000, 3)).await;
    let answer = read_answer(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    server.assert_nothing_spooled().await;
    server.assert_nothing_left().await;
    server.stop().await;
}

#[tokio::test]
async fn a_full_spool_answers_429_while_reading() {
    // (Announced larger than the room left: 429 before the body, in the
    // error table of `errors.rs`; larger than the whole spool: 413, below.)
    let server = Server::with_spool(ServerConfig::default(), 100_000, None).await;
    // Streamed without a length: refused when the budget runs out.
    let chunks = futures::stream::iter(
        (0..5).map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(data(40_000, i)))),
    );
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(chunks)).file_name("s");
    let response = post_async(&server, Form::new().part("file", part)).await;
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_code(&body), "spool_full");
    server.assert_nothing_spooled().await;
    // What fits is taken.
    let response = post_async(
        &server,
        Form::new().part("file", file("fits", data(50_000, 2))),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    server.stop().await;
}

#[tokio::test]
async fn a_job_is_seen_only_by_its_tenant() {
    let auth = Auth::new(vec![tenant("acme", "t-acme"), tenant("zeta", "t-zeta")]).unwrap();
    let server = Server::with_spool(ServerConfig::default(), 64 * MIB, Some(auth)).await;
    let response = (server.client.post(server.url("/api/files")))
        .bearer_auth("t-acme")
        .header("prefer", "wait=10, respond-async")
        .multipart(Form::new().part("file", file("x", data(10, 1))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let get = |token: &'static str, path: String| {
        server
            .client
            .get(server.url(&path))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        get("t-acme", location.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    let other = get("t-zeta", location.clone()).await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let anonymous = server
        .client
        .get(server.url(&location))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    for id in [
        "nope",
        "../journal.redb",
        "01a209d8-bb56-7094-a688-ef17564959e1",
    ] {
        let response = get("t-acme", format!("/api/jobs/{id}")).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{id}");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_async_batch_larger_than_the_whole_spool_gets_413_not_a_retry_that_cannot_work() {
    let server = Server::with_spool(ServerConfig::default(), MIB, None).await;
    let form = Form::new().part("file", file("big.bin", data(2 << 20, 3)));
    let response = post_async(&server, form).await;
    assert!(response.headers().get("retry-after").is_none());
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "batch_too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("--spool-max"), "{message}");
    assert!(message.contains("respond-async"), "{message}");
    server.assert_nothing_spooled().await;
    // A batch that fits is still taken.
    let form = Form::new().part("file", file("small.bin", data(1000, 4)));
    assert_eq!(
        post_async(&server, form).await.status(),
        StatusCode::ACCEPTED
    );
    server.stop().await;
}
