//! [`run`]: serving the API until shutdown; [`door`]: where connections
//! come in, admitted or refused; [`socket`]: what hyper's connections are
//! given to read and write.

use std::future::Future;
use std::io;
use std::time::Duration;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use axum::http::{HeaderValue, header};
use http_body_util::BodyExt as _;
use tokio::sync::Notify;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tower::ServiceExt as _;

use crate::app::{AppState, router};
use crate::stats;

mod door;
mod socket;

use door::Door;
use socket::Socket;

/// How long cancelled requests get to answer before their connections are
/// dropped. More than a lingering close ([`socket::LINGER`]), so that a
/// cancelled request's `503` is not cut.
const LAST_CALL: Duration = Duration::from_secs(5);

/// How long a connection found in the listener's backlog at the end of the
/// drain gets to send its request.
const BACKLOG_COURTESY: Duration = COURTESY;

/// The most connections taken from the backlog at the end of the drain
/// (Linux's default `somaxconn`).
const MAX_BACKLOG: usize = 4096;

/// How long an idle connection gets, once stopping, to send a request that
/// may already be on its way (see `drain_connection`).
const COURTESY: Duration = Duration::from_secs(1);

/// The same for a connection that has not sent its first request yet: a
/// client connects to send one, and on a saturated machine its head may
/// take longer than [`COURTESY`] to arrive (measured: under four parallel
/// builds on 2 cores, 8 of 12 herd uploads that had connected just before
/// the signal were cut).
const FIRST_REQUEST_COURTESY: Duration = LAST_CALL;

/// The most bytes hyper reads ahead on one connection. Its default (about
/// 400 KiB) is the size of the chunks it hands up, and the memory each
/// connection keeps: with hundreds of uploads in progress that was the
/// largest part of the process's memory after the parser's buffers. 64 KiB
/// reads are still large enough to keep a connection at full speed.
const READ_BUFFER: usize = 64 << 10;

/// The largest request head (request line and headers) answered; larger
/// ones get `431`. nginx allows 32 KiB by default. The read buffer alone
/// does not bound it: hyper checks that only while a head is incomplete,
/// and one read can bring a whole larger head.
pub(crate) const MAX_HEAD: usize = 32 << 10;

/// Serves the API on `listener` until `shutdown` completes, then drains:
///
/// 1. the scheduler refuses new work: `/readyz` answers `503` at once,
///    new requests for files get `503` with `Retry-After` and
///    `Connection: close`, and the spool's workers start no new upload
///    (`/healthz` stays `200`), every answer closes its connection, and
///    idle connections are closed after a second's courtesy for a request
///    already on its way (5 s for a connection's first request). The
///    listener goes on accepting during the drain, one request per
///    connection, so that load balancers and clients are
///    told rather than refused a connection;
/// 2. requests in progress finish, for up to `shutdown_grace`;
/// 3. past that, the scheduler cancels whatever work is left: those
///    requests (an upload whose client is still sending included) answer
///    `503 shutting_down` at once and roll back, and their connections
///    close lingering, so that the client reads the answer (see
///    [`socket`]); a download still streaming gets at most 5 s more
///    before its connection is dropped;
/// 4. connections still waiting in the listener's backlog are accepted
///    and answered like the others of the drain, the listener closes, the
///    spool's workers stop what they are doing (what they did not store
///    stays spooled), and background cleanups of the store finish.
///
/// At most `max_connections` connections are served at once, idle ones
/// included, each holding its place until it ends; one beyond is answered
/// `503 too_many_connections` and closed, during the drain as well (see
/// [`door`]).
///
/// Connections are served by hyper directly (not `axum::serve`) to bound
/// their read buffers (64 KiB) and the time a client may take to send its
/// request head (`body_timeout`, against slowloris), and over a [`Socket`]
/// that answers heads hyper cannot parse in corral's JSON shape and closes
/// lingering.
///
/// # Errors
///
/// Fails if the listener fails.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let store = state.store.clone();
    let spool = state.spool.clone();
    let scheduler = state.scheduler.clone();
    let grace = state.config.shutdown_grace;
    let mut http = http1::Builder::new();
    http.max_buf_size(READ_BUFFER)
        .max_header_size(MAX_HEAD)
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.body_timeout);
    // Sampled until this function returns, the drain included.
    let _sampler = AbortOnDropHandle::new(tokio::spawn(stats::sample_every(state.clone())));
    let mut door = Door::new(state.connections.clone(), Arc::clone(&state.metrics));
    let app = router(state);
    let stopping = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (socket, place) = tokio::select! {
            admitted = door.next(&listener) => admitted,
            () = &mut shutdown => break,
        };
        let requests = Arc::new(Requests::default());
        let service = service(&app, &requests, &stopping);
        let socket = TokioIo::new(Socket::new(socket, Arc::clone(&requests)));
        let connection = http.serve_connection(socket, service);
        let stopping = stopping.clone();
        connections.spawn(async move {
            drain_connection(connection, requests, stopping).await;
            drop(place);
        });
    }
    scheduler.close();
    stopping.cancel();
    connections.close();
    let drained = connections.wait();
    let drain = async {
        let mut drained = std::pin::pin!(drained);
        if tokio::time::timeout(grace, &mut drained).await.is_err() {
            tracing::warn!(
                ?grace,
                "requests still running after the grace period: cancelling them"
            );
            scheduler.shutdown(Duration::ZERO).await;
            // Cancelled requests answer `503` and roll back at once, and
            // their connections close lingering (see `socket`); a download
            // streaming cannot be answered anew, so it gets a few seconds
            // more and is then left to close with the process.
            if tokio::time::timeout(LAST_CALL, &mut drained).await.is_err() {
                tracing::warn!("connections still open after cancelling: closing them");
            }
        }
    };
    let mut drain = std::pin::pin!(drain);
    // Connections opened during the drain get one answer (a 503, or the
    // health checks') and are closed, each within LAST_CALL. The drain does
    // not wait for them, but the process does before it exits: a refused
    // upload's body is still being read so that its client, still sending,
    // sees the 503 rather than a broken pipe (found under a saturated CPU,
    // where herd clients that connected just after the signal were cut).
    let late = TaskTracker::new();
    http.keep_alive(false);
    let serve_late = |(socket, place): (TcpStream, OwnedSemaphorePermit), within| {
        let requests = Arc::new(Requests::default());
        let service = service(&app, &requests, &stopping);
        let socket = TokioIo::new(Socket::new(socket, requests));
        let connection = http.serve_connection(socket, service);
        late.spawn(async move {
            let _ = tokio::time::timeout(within, connection).await;
            drop(place);
        });
    };
    loop {
        tokio::select! {
            () = &mut drain => break,
            admitted = door.next(&listener) => serve_late(admitted, LAST_CALL),
        }
    }
    // Connections the kernel completed but that were not accepted yet
    // would be reset when the listener closes: each gets its answer too,
    // if its request comes within a second (it was sent when the client
    // connected, or it is not coming). Only those already waiting: a
    // client connecting from now on finds the port closed.
    for socket in backlog(listener) {
        if let Some(admitted) = door.admit(socket) {
            serve_late(admitted, BACKLOG_COURTESY);
        }
    }
    late.close();
    late.wait().await;
    door.close().await;
    // Spooled jobs not done yet resume when the spool is opened again.
    if let Some(spool) = spool {
        spool.close().await;
    }
    store.close().await;
    Ok(())
}

/// The service of a connection whose requests `requests` counts: `app`,
/// with every answer made once `stopping` a connection's last.
fn service(
    app: &Router,
    requests: &Arc<Requests>,
    stopping: &CancellationToken,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    let (app, requests, stopping) = (app.clone(), Arc::clone(requests), stopping.clone());
    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        // The request is active until its answer is sent and its body is
        // done with: a body still being read, such as one drained after an
        // early answer, holds the connection open, or a client still
        // sending it would find it closed.
        let active = Arc::new(Active::new(&requests));
        let reading = Arc::clone(&active);
        let request = request.map(|body| {
            axum::body::Body::new(body.map_frame(move |frame| {
                let _reading = &reading;
                frame
            }))
        });
        let answer = app.clone().oneshot(request);
        let stopping = stopping.clone();
        async move {
            let mut response = answer.await?;
            // Once stopping, every answer is a connection's last.
            if stopping.is_cancelled() {
                let close = HeaderValue::from_static("close");
                response.headers_mut().insert(header::CONNECTION, close);
            }
            // The request is active until its answer is sent.
            Ok::<_, Infallible>(response.map(|body| {
                axum::body::Body::new(body.map_frame(move |frame| {
                    let _active = &active;
                    frame
                }))
            }))
        }
    })
}

/// The connections waiting in `listener`'s backlog (at most
/// [`MAX_BACKLOG`]), without waiting for more; the listener is closed.
/// Accepted by plain system calls: tokio's `accept` would see only the
/// connections its reactor has already been told of.
fn backlog(listener: TcpListener) -> Vec<TcpStream> {
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(error) => {
            tracing::debug!(%error, "cannot take the listener's backlog");
            return Vec::new();
        }
    };
    let mut waiting = Vec::new();
    for _ in 0..MAX_BACKLOG {
        let socket = match listener.accept() {
            Ok((socket, _)) => socket,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            // A connection reset while it waited, out of descriptors.
            Err(_) => continue,
        };
        let socket = socket
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(socket));
        if let Ok(socket) = socket {
            let _ = socket.set_nodelay(true);
            waiting.push(socket);
        }
    }
    waiting
}

/// A connection's requests.
#[derive(Debug, Default)]
struct Requests {
    /// How many have begun.
    started: AtomicU64,
    /// How many are being answered now (until their answer's body is sent
    /// and their own body is done with).
    active: AtomicUsize,
    /// Rings when none is active any more.
    idle: Notify,
}

/// Counts a request as active while it lives.
struct Active(Arc<Requests>);

impl Active {
    fn new(requests: &Arc<Requests>) -> Self {
        requests.started.fetch_add(1, Ordering::Relaxed);
        requests.active.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(requests))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Serves `connection` until it ends; when `stopping` fires first, winds it
/// down without cutting a client off:
///
/// - a request being answered is finished (its answer's body included);
///   an answer made once stopping says `Connection: close`, so the
///   connection ends after it;
/// - an idle connection gets [`COURTESY`] to send one more, and one that
///   has not sent its first request yet [`FIRST_REQUEST_COURTESY`]: a
///   request already on its way is answered (`503` with `Connection:
///   close`) rather than met by a closed socket; if none comes, the
///   connection is closed.
async fn drain_connection<I, S>(
    connection: http1::Connection<I, S>,
    requests: Arc<Requests>,
    stopping: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping.cancelled() => loop {
            let idle = requests.idle.notified();
            let mut idle = std::pin::pin!(idle);
            idle.as_mut().enable();
            if requests.active.load(Ordering::Relaxed) > 0 {
                tokio::select! {
                    result = connection.as_mut() => break result,
                    () = idle => continue,
                }
            }
            let started = requests.started.load(Ordering::Relaxed);
            let courtesy = match started {
                0 => FIRST_REQUEST_COURTESY,
                _ => COURTESY,
            };
            tokio::select! {
                result = connection.as_mut() => break result,
                () = tokio::time::sleep(courtesy) => {}
            }
            if requests.started.load(Ordering::Relaxed) == started {
                break Ok(());
            }
            // A request came, after the signal: its answer ends the
            // connection.
            break connection.await;
        },
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_backlog_is_taken_whole_without_waiting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // Completed by the kernel, never accepted.
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(address).unwrap())
            .collect();
        let taken = backlog(listener);
        assert_eq!(taken.len(), clients.len());
        assert!(taken.iter().all(|socket| socket.nodelay().unwrap()));
        // The listener is closed.
        assert!(std::net::TcpStream::connect(address).is_err());
    }
}
