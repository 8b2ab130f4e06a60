//! Tenants and bearer tokens, through a real socket: who may do what, and
//! where their files land.

use std::time::Duration;

use corral_server::{Auth, ServerConfig, TenantSpec, token_sha256};
use reqwest::StatusCode;
use reqwest::multipart::Form;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

mod common;
use common::*;

const ACME: &str = "corral_acme-token";
const ZETA: &str = "corral_zeta-token";

async fn two_tenants(acme: TenantSpec) -> Server {
    let auth = Auth::new(vec![acme, tenant("zeta", ZETA)]).unwrap();
    Server::with_auth(ServerConfig::default(), auth).await
}

/// Uploads one file as the holder of `token`.
async fn upload_as(server: &Server, token: &str, name: &str, len: usize) -> (StatusCode, Value) {
    let form = Form::new().part("file", file(name, data(len, 1)));
    let response = (server.client)
        .post(server.url("/api/files"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    json(response).await
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_and_change_nothing() {
    let server = two_tenants(tenant("acme", ACME)).await;
    let (status, body) = upload_as(&server, ACME, "kept.txt", 100).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let key = body["files"][0]["key"].as_str().unwrap().to_owned();
    let stored = server.files_on_disk();

    let requests = [
        ("GET", "/api/files".to_owned()),
        ("GET", format!("/api/files/{key}")),
        ("HEAD", format!("/api/files/{key}")),
        ("DELETE", format!("/api/files/{key}")),
        ("POST", "/api/files".to_owned()),
    ];
    // Each with whether the answer must say `invalid_token`.
    let credentials = [
        (None, false),
        (Some("Bearer wrong".to_owned()), true),
        // A hash from the auth file is not a token.
        (Some(format!("Bearer {}", token_sha256(ACME))), true),
        (Some(format!("Bearer {ZETA}x")), true),
        (Some("Basic YWNtZTpzZWNyZXQ=".to_owned()), false),
        (Some("Bearer".to_owned()), false),
    ];
    for (method, path) in &requests {
        for (authorization, invalid_token) in &credentials {
            let mut request = server
                .client
                .request(method.parse().unwrap(), server.url(path));
            if let Some(value) = authorization {
                request = request.header("authorization", value.as_str());
            }
            if *method == "POST" {
                let form = Form::new().part("file", file("sneaky.txt", data(100, 2)));
                request = request.multipart(form);
            }
            let response = request.send().await.unwrap();
            let context = format!("{method} {path} with {authorization:?}");
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{context}");
            let challenge = response.headers()["www-authenticate"].to_str().unwrap();
            assert!(
                challenge.starts_with("Bearer realm=\"corral\""),
                "{context}"
            );
            assert_eq!(
                challenge.contains("error=\"invalid_token\""),
                *invalid_token,
                "{context}: {challenge}"
            );
            if *method != "HEAD" {
                let (_, body) = json(response).await;
                assert_eq!(error_code(&body), "unauthorized", "{context}");
            }
        }
    }
    assert_eq!(server.files_on_disk(), stored, "nothing written or removed");
    // Health and readiness need no token; the tenant's file is still there.
    let health = server.client.get(server.url("/healthz")).send().await;
    assert_eq!(health.unwrap().status(), StatusCode::OK);
    let read = (server.client.get(server.file_url(&key)))
        .bearer_auth(ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_files_and_others_get_404() {
    let server = two_tenants(tenant("acme", ACME)).await;
    let (status, body) = upload_as(&server, ACME, "plan.txt", 1000).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let key = body["files"][0]["key"].as_str().unwrap().to_owned();
    assert!(!key.starts_with("acme/"), "keys are tenant-relative: {key}");
    // One file under acme's prefix, its metadata in its extended
    // attributes.
    let on_disk = server.files_on_disk();
    assert_eq!(on_disk.len(), 1, "{on_disk:?}");
    assert!(
        on_disk[0].starts_with(server.dir.path().join("acme")),
        "{on_disk:?}"
    );

    let send = |method: &str, path: String, token: &str| {
        (server
            .client
            .request(method.parse().unwrap(), server.url(&path)))
        .bearer_auth(token)
        .send()
    };
    // The same key, asked by zeta, is zeta's key: there is none, and
    // deleting it (idempotent) deletes nothing of acme's.
    for (method, status) in [
        ("GET", StatusCode::NOT_FOUND),
        ("HEAD", StatusCode::NOT_FOUND),
        ("DELETE", StatusCode::NO_CONTENT),
    ] {
        let response = send(method, format!("/api/files/{key}"), ZETA)
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{method}");
    }
    // Naming acme's root does not help: it is taken inside zeta's.
    let response = send("GET", format!("/api/files/acme/{key}"), ZETA).await;
    assert_eq!(response.unwrap().status(), StatusCode::NOT_FOUND);
    for traversal in ["../acme/", "..%2facme%2f", "%2e%2e/acme/"] {
        let response = send("GET", format!("/api/files/{traversal}{key}"), ZETA).await;
        let status = response.unwrap().status();
        assert!(
            [StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND].contains(&status),
            "{traversal}: {status}"
        );
    }
    let listing = |token| send("GET", "/api/files".to_owned(), token);
    let (_, zeta) = json(listing(ZETA).await.unwrap()).await;
    assert_eq!(zeta["files"].as_array().unwrap().len(), 0, "{zeta}");
    let (_, acme) = json(listing(ACME).await.unwrap()).await;
    assert_eq!(acme["files"][0]["key"], key.as_str(), "{acme}");

    // zeta's own upload lands under zeta/.
    let (status, _) = upload_as(&server, ZETA, "plan.txt", 10).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(server.dir.path().join("zeta").is_dir());
    // acme's file survived zeta's DELETE.
    let read = send("GET", format!("/api/files/{key}"), ACME)
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.bytes().await.unwrap(), data(1000, 1));
    server.stop().await;
}

#[tokio::test]
async fn a_tenant_is_held_to_its_own_batch_size() {
    let server = two_tenants(TenantSpec {
        max_batch_size: Some(64 << 10),
        ..tenant("acme", ACME)
    })
    .await;
    let (status, body) = upload_as(&server, ACME, "big.bin", 100 << 10).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_code(&body), "batch_too_large");
    assert!(body["error"]["message"].as_str().unwrap().contains("65536"));
    server.assert_nothing_left().await;
    // Without Content-Length, the limit holds while the body is read.
    let chunks = futures::stream::iter(
        (0..4).map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(data(32 << 10, i)))),
    );
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(chunks))
        .file_name("streamed.bin");
    let response = (server.client.post(server.url("/api/files")))
        .bearer_auth(ACME)
        .multipart(Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    server.assert_nothing_left().await;
    // Other tenants have the server's limit.
    let (status, _) = upload_as(&server, ZETA, "big.bin", 100 << 10).await;
    assert_eq!(status, StatusCode::CREATED);
    server.stop().await;
}

#[tokio::test]
async fn a_tenant_whose_uploads_hold_its_limit_gets_429_and_others_go_on() {
    let server = two_tenants(TenantSpec {
        max_upload_memory: Some(1 << 20),
        ..tenant("acme", ACME)
    })
    .await;
    // An upload of acme's that announces 900 KiB and sends only its head:
    // it holds 900 KiB of acme's 1 MiB while it lasts.
    let head = format!(
        "POST /api/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n\r\n",
        900 << 10
    );
    let mut holding = send_raw(server.addr, &head, b"--b\r\n").await;
    // Until the server has reserved its memory, a second upload may pass.
    let mut refused = None;
    for _ in 0..100 {
        let (status, body) = upload_as(&server, ACME, "second.bin", 200 << 10).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = refused.expect("acme's second upload refused while the first holds its bytes");
    assert_eq!(error_code(&body), "tenant_busy", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("1048576"), "{message}");
    // The answer carries Retry-After.
    let form = Form::new().part("file", file("third.bin", data(200 << 10, 3)));
    let response = (server.client.post(server.url("/api/files")))
        .bearer_auth(ACME)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    // zeta is not held back by acme.
    let (status, _) = upload_as(&server, ZETA, "other.bin", 200 << 10).await;
    assert_eq!(status, StatusCode::CREATED);
    // When acme's first upload ends, acme may upload again.
    holding.shutdown().await.unwrap();
    drop(holding);
    let mut stored = false;
    for _ in 0..100 {
        let (status, _) = upload_as(&server, ACME, "later.bin", 200 << 10).await;
        if status == StatusCode::CREATED {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stored, "acme's bytes were given back when its upload ended");
    server.stop().await;
}

/// Uploads one file asynchronously as the holder of `token`.
async fn upload_async_as(
    server: &Server,
    token: &str,
    name: &str,
    len: usize,
) -> reqwest::Response {
    let form = Form::new().part("file", file(name, data(len, 1)));
    (server.client.post(server.url("/api/files")))
        .bearer_auth(token)
        .header("prefer", "respond-async")
        .multipart(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tenant_whose_async_uploads_fill_its_share_of_the_spool_gets_429_and_others_go_on() {
    let auth = Auth::new(vec![
        TenantSpec {
            max_spooled_bytes: Some(1 << 20),
            ..tenant("acme", ACME)
        },
        tenant("zeta", ZETA),
    ])
    .unwrap();
    let server = Server::with_spool(ServerConfig::default(), 64 << 20, Some(auth)).await;
    // An asynchronous upload of acme's that announces 900 KiB and sends
    // only its head: it takes 900 KiB of acme's 1 MiB share at once.
    let head = format!(
        "POST /api/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\n\
         Prefer: respond-async\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n\r\n",
        900 << 10
    );
    let mut holding = send_raw(server.addr, &head, b"--b\r\n").await;
    let mut refused = None;
    for _ in 0..100 {
        let response = upload_async_as(&server, ACME, "second.bin", 200 << 10).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("acme's second upload refused while the first holds its share");
    assert_eq!(refused.headers()["retry-after"], "10");
    let (_, body) = json(refused).await;
    assert_eq!(error_code(&body), "tenant_busy", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("spool") && message.contains("1048576"),
        "{message}"
    );
    // zeta is not held back by acme's share.
    let response = upload_async_as(&server, ZETA, "other.bin", 200 << 10).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // When acme's first upload ends, its share is given back.
    holding.shutdown().await.unwrap();
    drop(holding);
    let mut accepted = false;
    for _ in 0..100 {
        let response = upload_async_as(&server, ACME, "later.bin", 200 << 10).await;
        if response.status() == StatusCode::ACCEPTED {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        accepted,
        "acme's share was given back when its upload ended"
    );
    server.stop().await;
}
