//! Raw tus requests for the tests that cut uploads off: the protocol's
//! header, an upload's offset, a slow `PATCH`.

use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};

/// `size` bytes drawn from `seed`.
pub(crate) fn content(size: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0; size];
    fastrand::Rng::with_seed(seed).fill(&mut bytes);
    bytes
}

/// `request` with the tus protocol's version header.
pub(crate) fn tus(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request.header("tus-resumable", "1.0.0")
}

/// Creates an empty upload of `length` bytes at `server`; its path, as
/// `Location` gives it.
pub(crate) async fn create(client: &reqwest::Client, server: &str, length: usize) -> String {
    let created = tus(client.post(format!("{server}/api/uploads")))
        .header("upload-length", length.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    created.headers()["location"].to_str().unwrap().to_owned()
}

/// The upload at `url`'s offset, as `HEAD` answers it.
pub(crate) async fn offset(client: &reqwest::Client, url: &str) -> u64 {
    let head = tus(client.head(url)).send().await.unwrap();
    assert_eq!(head.status(), 200, "HEAD {url}: {:?}", head.headers());
    number(&head, "upload-offset")
}

/// The number in `response`'s `header`.
pub(crate) fn number(response: &reqwest::Response, header: &str) -> u64 {
    response.headers()[header]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Sends `bytes` from `offset` on, at about 2 MiB/s, until the server
/// answers or the connection breaks; the answer, if any.
pub(crate) async fn send_slowly(
    client: reqwest::Client,
    url: String,
    offset: u64,
    bytes: Vec<u8>,
) -> Option<reqwest::Response> {
    let chunks: Vec<Vec<u8>> = bytes.chunks(64 << 10).map(<[u8]>::to_vec).collect();
    let body = futures::stream::iter(chunks).then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Ok::<_, std::io::Error>(chunk)
    });
    let request = tus(client.patch(&url))
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", offset.to_string())
        .body(reqwest::Body::wrap_stream(body));
    request.send().await.ok()
}

/// Checks that `finished`, the answer of the request that completed an
/// upload through the corral at `base`, is a `204` naming a file that
/// holds `content`; `what` names the upload in a failure.
pub(crate) async fn assert_stored(
    client: &reqwest::Client,
    base: &str,
    finished: reqwest::Response,
    content: &[u8],
    what: &str,
) {
    let status = finished.status();
    let file = finished
        .headers()
        .get("content-location")
        .map(|file| file.to_str().unwrap().to_owned());
    assert_eq!(status, 204, "{what}: {}", finished.text().await.unwrap());
    let file = file.unwrap_or_else(|| panic!("{what}: no Content-Location"));
    let stored = client.get(format!("{base}{file}")).send().await.unwrap();
    assert_eq!(stored.status(), 200, "{what}: GET {file}");
    let bytes = stored.bytes().await.unwrap();
    assert_eq!(Sha256::digest(&bytes), Sha256::digest(content), "{what}");
}
