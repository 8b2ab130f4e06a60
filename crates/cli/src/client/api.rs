//! One corral server as a client sees it: its base URL, the token, and
//! the rule for retrying.
//!
//! Only overload is retried here: `429` and `503` are corral's refusals
//! of new work, made before a body is read, each with a `Retry-After`
//! that says when the work can be let in. A client that waits that long
//! helps the server out of its overload; one that retries at once feeds
//! it. The number of retries is bounded, so a server that stays
//! overloaded ends in a failure that says so rather than a client that
//! waits forever. A connection that breaks is retried under the same
//! bound (the server may have been restarted); every other answer is the
//! answer, and its JSON error (`{"error":{"code","message"}}`) is the
//! message a user sees.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

/// How overloaded answers and broken connections are retried.
#[derive(Debug, Clone, Copy)]
pub(super) struct RetryConfig {
    /// Retries of one request at most, after its first attempt.
    pub(super) retries: u32,
    /// The longest wait before a retry, whatever `Retry-After` asks.
    pub(super) max_wait: Duration,
}

impl RetryConfig {
    /// The wait before retry `attempt` (1 for the first): the answer's
    /// `Retry-After` in seconds when it has one, else 0.5 s doubled at
    /// each attempt; never above `max_wait`.
    pub(super) fn wait(&self, attempt: u32, headers: Option<&HeaderMap>) -> Duration {
        let asked = headers
            .and_then(|h| h.get(RETRY_AFTER))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let backoff = Duration::from_millis(500) * 2u32.saturating_pow(attempt.saturating_sub(1));
        asked.unwrap_or(backoff).min(self.max_wait)
    }
}

/// An answer that was not a success: the status and corral's JSON error.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {message}")]
pub(super) struct Refused {
    pub(super) status: StatusCode,
    /// corral's error code, such as `file_too_large` (empty when the body
    /// was not corral's JSON).
    pub(super) code: String,
    /// The server's message (the body's text when it was not JSON).
    pub(super) message: String,
    /// The file of a batch that caused it, when the server names one.
    pub(super) file: Option<String>,
}

impl Refused {
    /// Reads the error out of `response`, which is not a success.
    pub(super) async fn read(response: Response) -> Self {
        #[derive(Deserialize)]
        struct Body {
            error: Detail,
        }
        #[derive(Deserialize)]
        struct Detail {
            code: String,
            message: String,
            file: Option<String>,
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<Body>(&text) {
            Ok(body) => Self {
                status,
                code: body.error.code,
                message: body.error.message,
                file: body.error.file,
            },
            Err(_) => Self {
                status,
                code: String::new(),
                message: if text.trim().is_empty() {
                    status.canonical_reason().unwrap_or("no message").to_owned()
                } else {
                    text.trim().to_owned()
                },
                file: None,
            },
        }
    }
}

/// A corral server: where it is, the token, the HTTP client and the rule
/// for retrying. Cheap to clone (the client is shared).
#[derive(Debug, Clone)]
pub(super) struct Server {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    pub(super) retry: RetryConfig,
}

impl Server {
    /// The server at `url`, which must be an `http://` URL.
    ///
    /// # Errors
    ///
    /// A URL that does not parse, or is not http.
    pub(super) fn new(
        url: &str,
        token: Option<String>,
        retry: RetryConfig,
    ) -> anyhow::Result<Self> {
        let mut base = Url::parse(url).with_context(|| format!("bad server URL {url:?}"))?;
        anyhow::ensure!(
            base.scheme() == "http",
            "bad server URL {url:?}: only http:// is supported (put a TLS-terminating proxy \
             in front of corral for https)"
        );
        anyhow::ensure!(base.host().is_some(), "bad server URL {url:?}: no host");
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            base,
            token: token.filter(|t| !t.is_empty()),
            retry,
        })
    }

    /// The absolute URL of `path` (relative to the server's base, such as
    /// `api/files`), or of a path the server gave (`/api/uploads/ID`).
    pub(super) fn url(&self, path: &str) -> anyhow::Result<Url> {
        let path = path.strip_prefix('/').unwrap_or(path);
        self.base
            .join(path)
            .with_context(|| format!("bad path {path:?}"))
    }

    /// The base URL, for messages.
    pub(super) fn base(&self) -> &Url {
        &self.base
    }

    /// A request to `url` with the token.
    pub(super) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.header(AUTHORIZATION, format!("Bearer {token}")),
            None => request,
        }
    }

    /// Sends the request `make` builds, again after each `429`, `503` or
    /// broken connection (`make` builds it afresh, its body included),
    /// waiting as [`RetryConfig::wait`] says, at most `retries` times.
    /// `on_wait` is told of each wait.
    ///
    /// # Errors
    ///
    /// The last attempt's connection error. An answer is returned as it
    /// is, a refusal too, for the caller to read.
    pub(super) async fn send(
        &self,
        mut make: impl FnMut() -> anyhow::Result<RequestBuilder>,
    ) -> anyhow::Result<Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt > self.retry.retries;
            match make()?.send().await {
                Ok(response) if overloaded(response.status()) && !last => {
                    let wait = self.retry.wait(attempt, Some(response.headers()));
                    drop(response);
                    tokio::time::sleep(wait).await;
                }
                Ok(response) => return Ok(response),
                Err(error) if !last && !error.is_builder() => {
                    tokio::time::sleep(self.retry.wait(attempt, None)).await;
                }
                Err(error) => {
                    return Err(anyhow::Error::new(error)
                        .context(format!("cannot reach the corral server at {}", self.base)));
                }
            }
        }
    }

    /// Sends as [`Server::send`] does, and turns an answer that is not a
    /// success into a [`Refused`].
    ///
    /// # Errors
    ///
    /// As [`Server::send`], and the server's refusal.
    pub(super) async fn send_ok(
        &self,
        make: impl FnMut() -> anyhow::Result<RequestBuilder>,
    ) -> anyhow::Result<Response> {
        let response = self.send(make).await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(Refused::read(response).await.into())
        }
    }

    /// Checks, before any work, that the server answers and takes the
    /// token: one listing of at most one file.
    ///
    /// # Errors
    ///
    /// An unreachable server, or a refused token, each said plainly.
    pub(super) async fn check_access(&self) -> anyhow::Result<()> {
        let url = self.url("api/files?limit=1")?;
        let response = self
            .request(Method::GET, url)
            .send()
            .await
            .map_err(|error| {
                anyhow::Error::new(error)
                    .context(format!("cannot reach the corral server at {}", self.base))
            })?;
        match response.status() {
            status if status.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let refused = Refused::read(response).await;
                let what = if self.token.is_some() {
                    "the server refused the token (--token, CORRAL_TOKEN)"
                } else {
                    "the server wants a token (--token or CORRAL_TOKEN; see `corral token`)"
                };
                Err(anyhow::anyhow!("{what}: {refused}"))
            }
            StatusCode::NOT_FOUND => Err(anyhow::anyhow!(
                "{} does not look like a corral server: GET /api/files answered 404",
                self.base
            )),
            _ => Err(Refused::read(response).await.into()),
        }
    }
}

/// Whether `status` is corral's "not now": `429` or `503`.
fn overloaded(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_is_honoured_up_to_the_longest_wait() {
        let retry = RetryConfig {
            retries: 5,
            max_wait: Duration::from_secs(10),
        };
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry.wait(1, Some(&headers)), Duration::from_secs(3));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry.wait(1, Some(&headers)), Duration::from_secs(10));
        assert_eq!(retry.wait(1, None), Duration::from_millis(500));
        assert_eq!(retry.wait(3, None), Duration::from_secs(2));
        assert_eq!(retry.wait(30, None), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_refusal_names_the_file_corral_puts_inside_the_error() {
        let body = r#"{"error":{"code":"file_too_large","message":"file \"a.bin\": too large","file":"a.bin"}}"#;
        let response = http::Response::builder().status(413).body(body).unwrap();
        let refused = Refused::read(response.into()).await;
        assert_eq!(refused.code, "file_too_large");
        assert_eq!(refused.file.as_deref(), Some("a.bin"));
        assert_eq!(
            refused.to_string(),
            "413 Payload Too Large: file \"a.bin\": too large"
        );
        let response = http::Response::builder().status(502).body("").unwrap();
        let refused = Refused::read(response.into()).await;
        assert_eq!(refused.to_string(), "502 Bad Gateway: Bad Gateway");
    }

    #[test]
    fn a_server_url_must_be_http_with_a_host() {
        let retry = RetryConfig {
            retries: 0,
            max_wait: Duration::from_secs(1),
        };
        let error = Server::new("https://example.invalid", None, retry).unwrap_err();
        assert!(format!("{error:#}").contains("only http://"), "{error:#}");
        let error = Server::new("127.0.0.1:8080", None, retry).unwrap_err();
        assert!(format!("{error:#}").contains("bad server URL"), "{error:#}");
        let server = Server::new("http://127.0.0.1:1/base", None, retry).unwrap();
        assert_eq!(
            server.url("/api/uploads/x").unwrap().as_str(),
            "http://127.0.0.1:1/base/api/uploads/x"
        );
    }
}
