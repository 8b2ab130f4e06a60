//! Small files, many to a request: one `multipart/form-data` `POST
//! /api/files`, each file streamed from disk and hashed as it is sent.
//!
//! A batch is all-or-nothing on the server. When the server names the
//! file that failed it (a file too large, say), that file fails and the
//! rest are sent again without it; any other refusal fails the whole
//! batch with the server's message.

use std::sync::Arc;

use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha2::Digest as _;

use super::api::{Refused, Server};
use super::body::{self, Hashing};
use super::progress::Meter;
use super::walk::Source;

/// A file the server stored and the client checked: its key, and the
/// SHA-256 both sides agree on.
#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub(super) key: String,
    pub(super) sha256: String,
}

/// What became of one file: stored, or why not.
pub(super) type Outcome = Result<Stored, String>;

/// The answer to a batch.
#[derive(Deserialize)]
struct Answer {
    files: Vec<AnsweredFile>,
}

#[derive(Deserialize)]
struct AnsweredFile {
    key: String,
    size: u64,
    sha256: String,
}

/// Sends `files` in one batch under `prefix`; the outcome of each, in
/// order.
pub(super) async fn send(
    server: &Server,
    files: &[Source],
    prefix: &str,
    meter: &Meter,
) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; files.len()];
    let mut pending: Vec<usize> = (0..files.len()).collect();
    while !pending.is_empty() {
        let mut hashers: Vec<Hashing> = Vec::new();
        let make = || {
            let mut url = server.url("api/files")?;
            if !prefix.is_empty() {
                url.query_pairs_mut().append_pair("prefix", prefix);
            }
            hashers = pending.iter().map(|_| Arc::default()).collect();
            let mut form = Form::new();
            for (&i, hasher) in pending.iter().zip(&hashers) {
                let file = &files[i];
                let body = body::file_range(
                    file.path.clone(),
                    0,
                    file.size,
                    hasher.clone(),
                    meter.clone(),
                );
                let part = Part::stream_with_length(body, file.size).file_name(file.name());
                form = form.part("file", part);
            }
            Ok(server.request(Method::POST, url).multipart(form))
        };
        let response = match server.send(make).await {
            Ok(response) => response,
            Err(error) => {
                let message = format!("{error:#}");
                for &i in &pending {
                    outcomes[i] = Some(Err(message.clone()));
                }
                break;
            }
        };
        if response.status() == StatusCode::CREATED {
            let answer = match response.bytes().await {
                Ok(body) => serde_json::from_slice::<Answer>(&body).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let digests = hashers.iter().map(|h| {
                let hasher = std::mem::take(&mut *h.lock().unwrap_or_else(|e| e.into_inner()));
                hex::encode(hasher.finalize())
            });
            let digests: Vec<String> = digests.collect();
            match answer {
                Ok(answer) if answer.files.len() == pending.len() => {
                    for ((&i, got), sha256) in pending.iter().zip(answer.files).zip(digests) {
                        outcomes[i] = Some(check(&files[i], got, sha256));
                    }
                }
                Ok(answer) => {
                    let message = format!(
                        "the server answered for {} files of a batch of {}",
                        answer.files.len(),
                        pending.len()
                    );
                    for &i in &pending {
                        outcomes[i] = Some(Err(message.clone()));
                    }
                }
                Err(error) => {
                    let message = format!("the server's answer does not read: {error}");
                    for &i in &pending {
                        outcomes[i] = Some(Err(message.clone()));
                    }
                }
            }
            break;
        }
        let refused = Refused::read(response).await;
        let named = (refused.file.as_deref()).and_then(|name| {
            (pending.iter().position(|&i| files[i].name() == name)).filter(|_| pending.len() > 1)
        });
        match named {
            Some(at) => {
                let i = pending.remove(at);
                outcomes[i] = Some(Err(refused.to_string()));
            }
            None => {
                for &i in &pending {
                    outcomes[i] = Some(Err(refused.to_string()));
                }
                break;
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err("not sent".to_owned())))
        .collect()
}

/// The server's record of `file` against what the client read and sent.
fn check(file: &Source, got: AnsweredFile, sha256: String) -> Outcome {
    if got.size != file.size {
        return Err(format!(
            "the server stored {} bytes of {} as {}",
            got.size, file.size, got.key
        ));
    }
    if got.sha256 != sha256 {
        return Err(format!(
            "SHA-256 mismatch: the server stored {} as {}, the client sent {sha256}",
            got.key, got.sha256
        ));
    }
    Ok(Stored {
        key: got.key,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Sha256;

    fn empty_sha256() -> String {
        hex::encode(Sha256::digest(b""))
    }

    #[test]
    fn a_stored_file_must_match_in_size_and_digest() {
        let file = Source {
            path: "/x/a.txt".into(),
            size: 0,
            mtime_ns: 0,
        };
        let got = |size, sha256: &str| AnsweredFile {
            key: "k/a.txt".into(),
            size,
            sha256: sha256.into(),
        };
        let ok = check(&file, got(0, &empty_sha256()), empty_sha256()).unwrap();
        assert_eq!(ok.key, "k/a.txt");
        let short = check(&file, got(1, &empty_sha256()), empty_sha256()).unwrap_err();
        assert!(short.contains("stored 1 bytes of 0"), "{short}");
        let bad = check(&file, got(0, "00"), empty_sha256()).unwrap_err();
        assert!(bad.starts_with("SHA-256 mismatch"), "{bad}");
    }
}
