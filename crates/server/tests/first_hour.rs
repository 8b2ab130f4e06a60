//! A newcomer's mistakes against a real server: each answer names the
//! cause and what to do instead.

mod common;

use common::*;
use reqwest::Method;
use reqwest::multipart::Form;

fn one_file() -> Form {
    Form::new().part("file", file("f.txt", b"hello".to_vec()))
}

/// `(status, code, message)` of a JSON error answer.
async fn error(response: reqwest::Response) -> (u16, String, String) {
    let (status, body) = json(response).await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    (
        status.as_u16(),
        error_code(&body).to_owned(),
        message.to_owned(),
    )
}

#[tokio::test]
async fn curl_upload_file_put_is_told_to_post_multipart_with_the_allowed_methods() {
    let server = Server::start().await;
    // `curl -T f.txt http://HOST/api/files/` sends `PUT /api/files/f.txt`.
    for path in ["/api/files", "/api/files/", "/api/files/f.txt"] {
        let request = server.client.put(server.url(path)).body("hello");
        let response = request.send().await.unwrap();
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        let (status, code, message) = error(response).await;
        assert_eq!(
            (status, code.as_str()),
            (405, "method_not_allowed"),
            "{path}"
        );
        assert!(allow.contains("GET"), "{path}: {allow}");
        assert!(
            message.contains("upload with POST multipart/form-data to /api/files"),
            "{path}: {message}"
        );
        assert!(
            message.contains("which takes GET, HEAD, "),
            "{path}: {message}"
        );
    }
    let response = server.call(Method::DELETE, "/healthz").await;
    let (status, _, message) = error(response).await;
    assert_eq!(status, 405);
    assert_eq!(
        message,
        "DELETE is not allowed on /healthz, which takes GET, HEAD"
    );
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn a_trailing_slash_reaches_the_route_without_it() {
    let server = Server::start().await;
    let request = server.client.post(server.url("/api/files/?prefix=docs"));
    let response = request.multipart(one_file()).send().await.unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, 201, "{body}");
    let key = body["files"][0]["key"].as_str().unwrap();
    assert!(key.starts_with("docs/"), "{key}");
    let listing = server.client.get(server.url("/api/files/")).send().await;
    let (status, body) = json(listing.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["files"][0]["key"], key);
    let response = server.client.get(server.url(&format!("/api/files/{key}/")));
    let response = response.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello");
}

#[tokio::test]
async fn a_misspelt_prefix_is_refused_with_the_right_name_and_nothing_is_stored() {
    let server = Server::start().await;
    // In the query.
    let request = server.client.post(server.url("/api/files?perfix=docs"));
    let response = request.multipart(one_file()).send().await.unwrap();
    let (status, code, message) = error(response).await;
    assert_eq!((status, code.as_str()), (400, "unknown_parameter"));
    assert!(
        message.contains(r#"unknown query parameter "perfix""#),
        "{message}"
    );
    assert!(message.contains(r#"did you mean "prefix"?"#), "{message}");
    assert!(
        message.contains(r#"POST /api/files takes "prefix""#),
        "{message}"
    );
    // In the form, before the file.
    let form = Form::new()
        .text("prefx", "docs")
        .part("file", file("f.txt", b"x".to_vec()));
    let response = server.client.post(server.url("/api/files")).multipart(form);
    let (status, code, message) = error(response.send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "unknown_field"));
    assert!(
        message.contains(r#"unknown form field "prefx""#),
        "{message}"
    );
    assert!(message.contains(r#"did you mean "prefix"?"#), "{message}");
    // In the form, after a first file: the batch is rolled back.
    let form = one_file().text("prefx", "docs");
    let response = server.client.post(server.url("/api/files")).multipart(form);
    let (status, code, _) = error(response.send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "unknown_field"));
    // A text part meant as a file (`curl -F file=<f.txt`): told to send a
    // filename.
    let form = Form::new().text("file", "hello");
    let response = server.client.post(server.url("/api/files")).multipart(form);
    let (status, code, message) = error(response.send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "unknown_field"));
    assert!(
        message.contains("each with a filename (curl -F file=@PATH)"),
        "{message}"
    );
    server.assert_nothing_left().await;
    let listing = server.client.get(server.url("/api/files")).send().await;
    let (_, body) = json(listing.unwrap()).await;
    assert_eq!(body["files"], serde_json::json!([]), "{body}");
}

#[tokio::test]
async fn every_api_route_refuses_a_query_parameter_it_does_not_take() {
    let server = Server::start().await;
    let (_, body) = server.upload(one_file()).await;
    let key = body["files"][0]["key"].as_str().unwrap().to_owned();
    let file = server.file_url(&key);
    let cases = [
        (
            Method::GET,
            format!("{}/api/files?limt=5", server.url("")),
            Some("limit"),
        ),
        (Method::GET, format!("{file}?download=1"), None),
        (Method::HEAD, format!("{file}?v=2"), None),
        (Method::DELETE, format!("{file}?force=1"), None),
        (Method::GET, server.url("/api/jobs/0?verbose=1"), None),
    ];
    for (method, url, close) in cases {
        let response = server
            .client
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{method} {url}");
        if method == Method::HEAD {
            continue;
        }
        let (_, code, message) = error(response).await;
        assert_eq!(code, "unknown_parameter", "{method} {url}");
        match close {
            Some(name) => assert!(
                message.contains(&format!("did you mean {name:?}?")),
                "{message}"
            ),
            None => assert!(message.ends_with("takes no query parameter"), "{message}"),
        }
    }
    // Nothing was deleted.
    assert_eq!(server.get(&key).await.status(), 200);
    // The accepted ones still pass.
    let listing = server.url("/api/files?prefix=&limit=5");
    assert_eq!(
        server.client.get(listing).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn a_raw_space_in_the_path_gets_a_json_answer_saying_to_percent_encode_it() {
    let server = Server::start().await;
    let mut socket = send_raw(
        server.addr,
        "GET /api/files/a b.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        b"",
    )
    .await;
    let answer = read_answer(&mut socket).await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], "malformed_request");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("percent-encode spaces"), "{message}");
    assert!(message.contains("%20"), "{message}");

    // A head larger than the limit (here a long URL) is JSON too.
    let head = format!(
        "GET /api/files?prefix={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(40 << 10)
    );
    let mut socket = send_raw(server.addr, &head, b"").await;
    let answer = read_answer(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(answer.contains(r#""code":"headers_too_large""#), "{answer}");
    assert!(answer.contains("larger than 32768 bytes"), "{answer}");
    server.assert_still_serving().await;
}
