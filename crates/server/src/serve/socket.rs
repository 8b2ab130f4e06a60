//! [`Socket`]: a connection's socket as hyper sees it, doing two things
//! hyper does not do itself.
//!
//! # Answers to requests hyper cannot parse, in corral's shape
//!
//! hyper answers a request head it cannot parse by itself, before any
//! service sees a request: `400` (a raw space in the path, a control
//! character, a header name that is not a token), `414` (a target longer
//! than it takes) or `431` (a head larger than `max_header_size`), each
//! with an empty body, and then closes the connection. It has no hook to
//! shape that answer (hyper 1.x, up to 1.12 at least: `Conn::on_parse_error`
//! writes `role::Server::on_error`'s head). So the socket recognises it:
//! while no request of the connection has reached the service, hyper
//! writes nothing but that answer, and the socket writes corral's JSON
//! error of the same status in its place (keeping hyper's `Date`). A head
//! that cannot be parsed after a first request on a kept-alive
//! connection is rare (a client that sends one good head sends the next
//! as well) and keeps hyper's empty answer.
//!
//! # A lingering close
//!
//! When hyper ends a connection it shuts the socket down. Closing a socket
//! whose client is still sending (an upload answered early, a request
//! cancelled when the shutdown's grace ran out) makes the kernel answer
//! with a reset, which can destroy the answer before the client read it.
//! Like nginx's lingering close, the socket instead shuts its write side
//! (the client sees the end of the answer), then reads and discards what
//! the client still sends until it closes its side, for at most
//! [`LINGER`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::{MAX_HEAD, Requests};
use crate::error::{self, ApiError};

/// The longest a closing connection reads what its client still sends.
/// Short: a client that reads answers while it sends (curl does) stops at
/// once, and the drain waits for connections that linger.
pub(super) const LINGER: Duration = Duration::from_secs(2);

/// A socket of a connection whose requests `requests` counts.
pub(super) struct Socket<T> {
    io: T,
    requests: Arc<Requests>,
    /// corral's answer in place of hyper's, as far as it is not written
    /// yet; after it, hyper writes nothing more.
    answer: Option<Vec<u8>>,
    written: usize,
    /// Set once hyper's answer was replaced: what hyper writes after it
    /// is dropped.
    replaced: bool,
    /// The lingering close, once begun.
    closing: Option<Closing>,
}

struct Closing {
    write_shut: bool,
    deadline: Pin<Box<Sleep>>,
}

impl<T> Socket<T> {
    pub(super) fn new(io: T, requests: Arc<Requests>) -> Self {
        Self {
            io,
            requests,
            answer: None,
            written: 0,
            replaced: false,
            closing: None,
        }
    }

    /// Whether what hyper writes now can only be its own answer to a head
    /// it could not parse: no request has reached the service yet.
    fn before_any_request(&self) -> bool {
        self.requests.started.load(Ordering::Relaxed) == 0
    }
}

/// The error of hyper's own answer `head` (its status), if it is one.
fn hyper_error(head: &[u8]) -> Option<ApiError> {
    let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let status = StatusCode::from_bytes(status).ok()?;
    match status {
        StatusCode::BAD_REQUEST => Some(ApiError::MalformedHead),
        StatusCode::URI_TOO_LONG => Some(ApiError::UriTooLong),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            Some(ApiError::HeadTooLarge { limit: MAX_HEAD })
        }
        _ => None,
    }
}

/// corral's answer for `error`, in place of hyper's `head`, whose `Date`
/// line it keeps.
fn answer(error: &ApiError, head: &[u8]) -> Vec<u8> {
    let date = String::from_utf8_lossy(head)
        .split("\r\n")
        .find(|line| line.to_ascii_lowercase().starts_with("date:"))
        .map(|line| format!("{line}\r\n"))
        .unwrap_or_default();
    error::raw_answer(error, &date)
}

impl<T: AsyncWrite + Unpin> Socket<T> {
    /// Writes what is left of corral's answer.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(answer) = &self.answer {
            let rest = &answer[self.written..];
            if rest.is_empty() {
                self.answer = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Socket<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Socket<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replaced {
            return Poll::Ready(Ok(buf.len()));
        }
        if this.before_any_request()
            && let Some(error) = hyper_error(buf)
        {
            tracing::debug!(
                code = error.code(),
                "answered a request head hyper could not parse"
            );
            this.answer = Some(answer(&error, buf));
            this.replaced = true;
            // Taken whole: the rest of corral's answer goes out on flush.
            let _ = this.poll_answer(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.replaced || self.before_any_request() {
            let first = bufs.iter().find(|buf| !buf.is_empty());
            return self.poll_write(cx, first.map_or(&[][..], |buf| &buf[..]));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// The lingering close (see the [module docs](self)).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        let this = &mut *self;
        let closing = this.closing.get_or_insert_with(|| Closing {
            write_shut: false,
            deadline: Box::pin(tokio::time::sleep(LINGER)),
        });
        if !closing.write_shut {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            closing.write_shut = true;
        }
        let mut discard = [0; 8 << 10];
        loop {
            if closing.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut discard);
            match ready!(Pin::new(&mut this.io).poll_read(cx, &mut buf)) {
                // The client closed its side, or failed: nothing to wait for.
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Ok(()) => {}
                Err(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Serves one connection over an in-memory pipe whose other end is
    /// returned; every request is answered `400` with an empty body.
    fn serve() -> (tokio::io::DuplexStream, Arc<Requests>) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let requests = Arc::new(Requests::default());
        let counted = Arc::clone(&requests);
        let service = hyper::service::service_fn(move |_| {
            counted.started.fetch_add(1, Ordering::Relaxed);
            async {
                let mut response = hyper::Response::new(String::new());
                *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
                Ok::<_, Infallible>(response)
            }
        });
        let socket = Socket::new(server, Arc::clone(&requests));
        // hyper's defaults: a target longer than 64 KiB is refused as such
        // before the head's size limit (corral's 32 KiB makes it `431`).
        let connection = http1::Builder::new().serve_connection(TokioIo::new(socket), service);
        tokio::spawn(connection);
        (client, requests)
    }

    async fn exchange(client: &mut tokio::io::DuplexStream, request: &str) -> String {
        client.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        String::from_utf8(answer).unwrap()
    }

    #[tokio::test]
    async fn hyper_answers_to_heads_it_cannot_parse_become_corral_errors() {
        for (request, status, code) in [
            (
                "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
                "400",
                "malformed_request",
            ),
            (
                "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
                "400",
                "malformed_request",
            ),
            (
                &format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(70_000)),
                "414",
                "uri_too_long",
            ),
        ] {
            let (mut client, _) = serve();
            let answer = exchange(&mut client, request).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{answer}"
            );
            let (head, body) = answer.split_once("\r\n\r\n").unwrap();
            assert!(head.contains("content-type: application/json"), "{head}");
            assert!(head.to_ascii_lowercase().contains("\r\ndate: "), "{head}");
            let body: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(body["error"]["code"], code, "{body}");
        }
    }

    #[tokio::test]
    async fn answers_of_the_service_are_never_replaced() {
        let (mut client, requests) = serve();
        let request = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let answer = exchange(&mut client, request).await;
        assert_eq!(requests.started.load(Ordering::Relaxed), 1);
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(answer.contains("content-length: 0\r\n"), "{answer}");
        assert!(!answer.contains("application/json"), "{answer}");
    }

    #[tokio::test(start_paused = true)]
    async fn closing_reads_what_the_client_still_sends_for_a_bounded_time() {
        let (mut client, _) = serve();
        // Answered, and the connection closed by the server, while the
        // client goes on sending and never closes its side.
        let request = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        client.write_all(request.as_bytes()).await.unwrap();
        let mut answer = vec![0; 1024];
        let n = client.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 400"));
        // The server's side still reads: more than the pipe holds is taken.
        for _ in 0..40 {
            client.write_all(&[b'x'; 4096]).await.unwrap();
        }
        let start = tokio::time::Instant::now();
        // Then the server lets go, no later than LINGER.
        while client.write_all(&[b'x'; 4096]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(start.elapsed() <= LINGER + Duration::from_millis(200));
    }
}
