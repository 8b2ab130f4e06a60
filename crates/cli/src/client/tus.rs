//! Large files over tus 1.0 at `/api/uploads`, resumable.
//!
//! The first chunk goes with the creation (`creation-with-upload`), the
//! rest in `PATCH`es of one chunk each. The upload's URL is written to the
//! journal as soon as the server gives it, so a run killed mid-file is
//! resumed by the next: a `HEAD` gives the server's offset, and only the
//! bytes past it are sent. The server keeps every byte that reached it,
//! even of a request cut off, so what is sent again is at most what was
//! in flight.
//!
//! The SHA-256 is the client's own: hashed as chunks are sent, and, for
//! bytes the server had before (a resumed upload, a request cut off
//! partway), read from disk again. When the last byte is in, the server's
//! record of the file (`HEAD /api/files/{key}`: `x-corral-sha256`) must
//! match it.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use base64::Engine as _;
use reqwest::header::{CONTENT_LENGTH, CONTENT_LOCATION, CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{Method, StatusCode, Url};
use sha2::{Digest as _, Sha256};

use super::api::{Refused, Server};
use super::batch::{Outcome, Stored};
use super::body::{self, Hashing};
use super::journal::{Journal, State};
use super::progress::Meter;
use super::walk::Source;

const TUS_RESUMABLE: &str = "Tus-Resumable";
const UPLOAD_OFFSET: &str = "Upload-Offset";
const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// One file's resumable upload.
pub(super) struct Upload<'a> {
    pub(super) server: &'a Server,
    pub(super) source: &'a Source,
    pub(super) journal: &'a Mutex<Journal>,
    /// Bytes per request.
    pub(super) chunk: u64,
    pub(super) meter: Meter,
    /// Told the offset the upload resumed from.
    pub(super) on_resume: &'a (dyn Fn(u64) + Sync),
}

/// Where an upload stands: its URL, the server's offset, and the hash of
/// the bytes before it.
struct At {
    url: Url,
    offset: u64,
    hasher: Sha256,
}

impl Upload<'_> {
    /// Sends the file, resuming the upload `started` (a URL from the
    /// journal) if the server still has it.
    pub(super) async fn run(&self, started: Option<&str>) -> Outcome {
        self.send(started).await.map_err(|e| format!("{e:#}"))
    }

    async fn send(&self, started: Option<&str>) -> anyhow::Result<Stored> {
        let size = self.source.size;
        let resumed = match started {
            Some(url) => self.resume(url).await?,
            None => None,
        };
        let (mut at, mut location) = match resumed {
            Some(at) => {
                (self.on_resume)(at.offset);
                (at, None)
            }
            None => self.create().await?,
        };
        let mut extra = 0;
        while at.offset < size {
            let len = self.chunk.min(size - at.offset);
            let hashing: Hashing = Arc::new(Mutex::new(at.hasher.clone()));
            let response = self
                .server
                .send(|| {
                    let body = body::file_range(
                        self.source.path.clone(),
                        at.offset,
                        len,
                        hashing.clone(),
                        self.meter.clone(),
                    );
                    Ok(self
                        .server
                        .request(Method::PATCH, at.url.clone())
                        .header(TUS_RESUMABLE, "1.0.0")
                        .header(UPLOAD_OFFSET, at.offset)
                        .header(CONTENT_TYPE, OFFSET_STREAM)
                        .header(CONTENT_LENGTH, len)
                        .body(body))
                })
                .await?;
            let status = response.status();
            let sent_to = at.offset + len;
            match status {
                StatusCode::NO_CONTENT | StatusCode::OK => {
                    let offset = offset(response.headers())?;
                    location = content_location(response.headers());
                    let hasher = take(&hashing);
                    self.advance(&mut at, offset, (offset == sent_to).then_some(hasher))
                        .await?;
                }
                StatusCode::CONFLICT | StatusCode::LOCKED => {
                    // Another offset than ours (a request cut off that the
                    // server kept part of), or the upload held: by a newer
                    // request, or by another instance (its lease, until
                    // the time `Retry-After` gives: an instance that died
                    // holding it holds it until then).
                    extra += 1;
                    let wait = self.server.retry.wait(extra, Some(response.headers()));
                    anyhow::ensure!(
                        extra <= self.server.retry.retries,
                        "{}",
                        Refused::read(response).await
                    );
                    if status == StatusCode::LOCKED {
                        tokio::time::sleep(wait).await;
                    }
                    let offset = self.head(&at.url).await?;
                    self.advance(&mut at, offset, None).await?;
                }
                _ => return Err(Refused::read(response).await.into()),
            }
        }
        let location = location
            .context("the server finished the upload without naming its file (Content-Location)")?;
        let sha256 = hex::encode(at.hasher.finalize());
        self.verify(&location, sha256).await
    }

    /// The upload at `url` if the server still has it (not finished,
    /// terminated or expired), with the hash of its bytes so far.
    async fn resume(&self, url: &str) -> anyhow::Result<Option<At>> {
        let url =
            Url::parse(url).with_context(|| format!("bad upload URL in the journal {url:?}"))?;
        let response = self.send_head(&url).await?;
        match response.status() {
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(None),
            status if status.is_success() => {
                let offset = offset(response.headers())?;
                let mut at = At {
                    url,
                    offset: 0,
                    hasher: Sha256::new(),
                };
                self.advance(&mut at, offset, None).await?;
                Ok(Some(at))
            }
            _ => Err(Refused::read(response).await.into()),
        }
    }

    /// Creates the upload with its first chunk, and records it in the
    /// journal; also the file's location if that chunk was all of it.
    async fn create(&self) -> anyhow::Result<(At, Option<String>)> {
        let size = self.source.size;
        let len = self.chunk.min(size);
        let hashing: Hashing = Arc::default();
        let name = base64::engine::general_purpose::STANDARD.encode(self.source.name());
        let url = self.server.url("api/uploads")?;
        let response = self
            .server
            .send_ok(|| {
                let body = body::file_range(
                    self.source.path.clone(),
                    0,
                    len,
                    hashing.clone(),
                    self.meter.clone(),
                );
                Ok(self
                    .server
                    .request(Method::POST, url.clone())
                    .header(TUS_RESUMABLE, "1.0.0")
                    .header("Upload-Length", size)
                    .header("Upload-Metadata", format!("filename {name}"))
                    .header(CONTENT_TYPE, OFFSET_STREAM)
                    .header(CONTENT_LENGTH, len)
                    .body(body))
            })
            .await?;
        let location = (response.headers().get(LOCATION))
            .and_then(|v| v.to_str().ok())
            .context("the server created the upload without a Location")?;
        let url = self.server.url(location)?;
        let offset = offset(response.headers())?;
        let file = content_location(response.headers());
        let mut at = At {
            url,
            offset: 0,
            hasher: Sha256::new(),
        };
        self.advance(&mut at, offset, (offset == len).then(|| take(&hashing)))
            .await?;
        Ok((at, file))
    }

    /// Moves `at` to the server's `offset`: with `hashed`, the hash of
    /// exactly the bytes up to it; else hashed again from disk.
    async fn advance(
        &self,
        at: &mut At,
        offset: u64,
        hashed: Option<Sha256>,
    ) -> anyhow::Result<()> {
        match hashed {
            Some(hasher) => at.hasher = hasher,
            None => {
                let (from, mut hasher) = if offset >= at.offset {
                    (at.offset, at.hasher.clone())
                } else {
                    (0, Sha256::new())
                };
                body::hash_range(&self.source.path, &mut hasher, from, offset).await?;
                at.hasher = hasher;
            }
        }
        at.offset = offset;
        let state = State::Started {
            upload: at.url.to_string(),
            offset,
        };
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        journal.record(self.source, state)
    }

    /// The server's offset of the upload at `url`.
    async fn head(&self, url: &Url) -> anyhow::Result<u64> {
        let response = self.send_head(url).await?;
        if !response.status().is_success() {
            return Err(Refused::read(response).await.into());
        }
        offset(response.headers())
    }

    /// The tus `HEAD` of the upload at `url`, answered as it is.
    async fn send_head(&self, url: &Url) -> anyhow::Result<reqwest::Response> {
        self.server
            .send(|| {
                Ok(self
                    .server
                    .request(Method::HEAD, url.clone())
                    .header(TUS_RESUMABLE, "1.0.0"))
            })
            .await
    }

    /// Checks the file the upload became (`location`, `/api/files/{key}`)
    /// against the size sent and the client's SHA-256.
    async fn verify(&self, location: &str, sha256: String) -> anyhow::Result<Stored> {
        let url = self.server.url(location)?;
        let response = self
            .server
            .send_ok(|| Ok(self.server.request(Method::HEAD, url.clone())))
            .await?;
        let headers = response.headers();
        let stored = (headers.get("x-corral-sha256"))
            .and_then(|v| v.to_str().ok())
            .context("the server's record of the file has no x-corral-sha256")?;
        // The header, not the body's length: a HEAD has no body.
        let length = (headers.get(CONTENT_LENGTH))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let encoded = location.strip_prefix("/api/files/").unwrap_or(location);
        let key = percent_encoding::percent_decode_str(encoded)
            .decode_utf8_lossy()
            .into_owned();
        anyhow::ensure!(
            length == Some(self.source.size),
            "the server stored {length:?} bytes of {} as {key}",
            self.source.size
        );
        anyhow::ensure!(
            stored == sha256,
            "SHA-256 mismatch: the server stored {key} as {stored}, the client sent {sha256}"
        );
        Ok(Stored { key, sha256 })
    }
}

/// The hash a body left in `hashing`.
fn take(hashing: &Hashing) -> Sha256 {
    std::mem::take(&mut *hashing.lock().unwrap_or_else(|e| e.into_inner()))
}

/// An answer's `Upload-Offset`.
fn offset(headers: &HeaderMap) -> anyhow::Result<u64> {
    (headers.get(UPLOAD_OFFSET))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("the server's answer has no Upload-Offset")
}

/// An answer's `Content-Location`: the file a finished upload became.
fn content_location(headers: &HeaderMap) -> Option<String> {
    (headers.get(CONTENT_LOCATION))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
