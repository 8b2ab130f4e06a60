//! [`BodyReader`]: the request body as the multipart parser reads it, with an
//! idle timeout, and a way to drain what the parser left unread.
//!
//! Answering an upload early (a file too large, a bad part) while the client
//! is still sending would close the connection with unread bytes in the
//! socket. The kernel then answers with a reset, which can destroy the
//! response before the client reads it. Like nginx's lingering close,
//! corral reads and discards a bounded amount of what remains first
//! ([`BodyReader::linger`]). A request refused before its body was touched
//! (`429`, `503`, a bad header) is answered at once with `Connection:
//! close`, and its body drained in the background under the same bounds
//! ([`refuse`]): the client reads the answer rather than a broken pipe.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::response::Response;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

/// Most bytes drained after an early answer.
const LINGER_BYTES: u64 = 16 << 20;
/// Longest time spent draining after an early answer, and the longest the
/// client may send nothing meanwhile: a client still sending steadily (on a
/// machine whose CPU is saturated, 6 MiB once took more than 2 s) is read
/// to the end, one that stops is not waited for.
const LINGER_TIME: Duration = Duration::from_secs(10);
const LINGER_IDLE: Duration = Duration::from_secs(2);

/// Why the body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The client sent nothing for the idle timeout.
    #[error("the client sent nothing for {0:?}")]
    Idle(Duration),
    /// The body's framing is broken: a chunk size that is not hex or
    /// overflows, a chunk without its line end.
    #[error("the body's chunked framing is malformed")]
    Malformed(#[source] axum::Error),
    /// The connection ended before the body did (shorter than its
    /// `Content-Length`, or without its last chunk).
    #[error("the body ended before it was complete")]
    Incomplete(#[source] axum::Error),
    /// The connection failed (usually: the client went away).
    #[error("reading the body failed")]
    Transport(#[source] axum::Error),
}

impl BodyError {
    /// Tells a client that sent a broken body from one that went away, by
    /// the I/O error hyper's decoder gives: `InvalidData` or `InvalidInput`
    /// for broken framing, `UnexpectedEof` for a body cut short.
    pub(crate) fn read(error: axum::Error) -> Self {
        use std::io::ErrorKind;
        let kind = corral_store::sources(&error)
            .find_map(|e| e.downcast_ref::<std::io::Error>().map(std::io::Error::kind));
        match kind {
            Some(ErrorKind::InvalidData | ErrorKind::InvalidInput) => Self::Malformed(error),
            Some(ErrorKind::UnexpectedEof) => Self::Incomplete(error),
            _ => Self::Transport(error),
        }
    }
}

/// The body stream. Clones share it: the parser reads through one clone and
/// the handler drains through another once the parser is done with it.
#[derive(Clone)]
pub(crate) struct BodyReader {
    state: Arc<Mutex<State>>,
}

struct State {
    stream: BodyDataStream,
    timeout: Duration,
    /// Fires when the client has sent nothing for `timeout`; pushed back by
    /// every chunk.
    idle: Pin<Box<Sleep>>,
    /// Whether a chunk was just handed out. The multipart parser reads
    /// until its source has nothing ready, which on a fast connection is
    /// never; answering `Pending` once after each chunk makes it take one
    /// chunk at a time, so its buffer holds about one chunk, not whatever
    /// the client managed to send.
    handed_out: bool,
    /// The rest of a chunk larger than [`PIECE`], handed out next.
    rest: Bytes,
}

/// The most bytes handed to the parser at once. The parser copies what it
/// is given into a buffer of its own that keeps its largest size for the
/// whole request; hyper hands up as much as it read, up to about 400 KiB.
/// Fed in pieces, the parser's buffer stays near one piece per upload in
/// progress (measured: 370 MB of parser buffers at the peak of 500 users
/// sending 10 x 256 KiB, before pieces).
const PIECE: usize = 64 << 10;

impl BodyReader {
    pub(crate) fn new(body: Body, timeout: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                stream: body.into_data_stream(),
                timeout,
                idle: Box::pin(tokio::time::sleep(timeout)),
                handed_out: false,
                rest: Bytes::new(),
            })),
        }
    }

    /// Reads and discards the rest of the body, up to a bounded number of
    /// bytes and a bounded time (see the [module docs](self)).
    pub(crate) async fn linger(mut self) {
        let drain = async {
            let mut drained = 0;
            while drained < LINGER_BYTES {
                // A client that goes quiet is not waited for, whatever the
                // reader's own idle timeout.
                match tokio::time::timeout(LINGER_IDLE, self.next()).await {
                    Ok(Some(Ok(chunk))) => drained += chunk.len() as u64,
                    Ok(Some(Err(_)) | None) | Err(_) => break,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    }
}

/// `response`, for a request whose `body` was never read: see the
/// [module docs](self).
pub(crate) fn refuse(body: Body, mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    // Bounded in bytes and time, within the drain's grace period.
    tokio::spawn(BodyReader::new(body, LINGER_IDLE).linger());
    response
}

impl Stream for BodyReader {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Never contended: the parser and the drain take turns.
        let mut state = self
            .state
            .lock()
            .expect("no reader panics holding the lock");
        let state = &mut *state;
        if std::mem::take(&mut state.handed_out) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if !state.rest.is_empty() {
            let piece = state.rest.split_to(PIECE.min(state.rest.len()));
            state.handed_out = true;
            return Poll::Ready(Some(Ok(piece)));
        }
        match state.stream.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(mut chunk))) => {
                let deadline = Instant::now() + state.timeout;
                state.idle.as_mut().reset(deadline);
                state.handed_out = true;
                if chunk.len() > PIECE {
                    state.rest = chunk.split_off(PIECE);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::read(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match state.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Idle(state.timeout)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
