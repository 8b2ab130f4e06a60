//! [`run`]: serving the API until shutdown.

use std::future::Future;
use std::io;

use tokio::net::TcpListener;

use crate::app::{AppState, router};

/// How long cancelled requests get to answer before their connections are
/// dropped.
const LAST_CALL: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves the API on `listener` until `shutdown` completes, then drains:
///
/// 1. the scheduler refuses new work (new requests get `503`), and the
///    listener stops accepting connections;
/// 2. requests in progress finish, for up to `shutdown_grace`;
/// 3. past that, the scheduler cancels whatever work is left (those
///    requests get `503` and roll back), and the server waits for them at
///    most 5 s more before dropping the connections still open;
/// 4. background cleanups of the store finish.
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
    let scheduler = store.scheduler().clone();
    let grace = state.config.shutdown_grace;
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = {
        let scheduler = scheduler.clone();
        async move {
            shutdown.await;
            scheduler.close();
            let _ = stopping.send(());
        }
    };
    let serve = axum::serve(listener, router(state)).with_graceful_shutdown(signal);
    let mut serve = std::pin::pin!(serve.into_future());
    tokio::select! {
        result = &mut serve => result?,
        () = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(?grace, "requests still running after the grace period: cancelling them");
            scheduler.shutdown(std::time::Duration::ZERO).await;
            // Cancelled requests answer and roll back at once; a connection
            // that makes no backend call (a download streaming, an upload
            // trickling below a part) does not see the cancellation, so it
            // gets a few seconds more and is then dropped with the server.
            if tokio::time::timeout(LAST_CALL, serve).await.is_err() {
                tracing::warn!("connections still open after cancelling: closing them");
            }
        }
    }
    store.close().await;
    Ok(())
}
