//! [`run`]: serving the API until shutdown.

use std::future::Future;
use std::io;

use tokio::net::TcpListener;

use crate::app::{AppState, router};

/// Serves the API on `listener` until `shutdown` completes, then stops
/// accepting connections, lets requests in progress finish, and waits for
/// background cleanups of the store.
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
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    store.close().await;
    Ok(())
}
