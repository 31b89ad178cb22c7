//! Serving: the HTTP server plus the kitchen and the sweeper, with a graceful stop.
//!
//! The caller binds the listener (port 0 in tests) and decides when to stop (ctrl-c,
//! SIGTERM, a test's oneshot). On the stop signal the waiter reports not-ready, stops
//! accepting connections, closes idle keep-alive connections and lets requests in flight
//! finish, for at most `request_timeout` (each request is bounded by it anyway) plus a
//! second. Then the kitchen and the sweeper finish their current round and stop.

use crate::Waiter;
use crate::{kitchen, sweeper};
use std::future::{Future, IntoFuture};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// Serves HTTP on `listener` and runs the kitchen and the session sweeper until
/// `shutdown` resolves; then stops accepting, lets in-flight requests finish (bounded by
/// `request_timeout`), stops the background tasks and returns.
///
/// # Errors
/// When the listener's address cannot be read.
pub async fn run(
    listener: TcpListener,
    waiter: Waiter,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let kitchen = tokio::spawn(kitchen::run(waiter.clone(), stop_rx.clone()));
    let sweeper = tokio::spawn(sweeper::run(waiter.clone(), stop_rx));

    let (draining_tx, draining_rx) = oneshot::channel::<()>();
    let signalled = waiter.clone();
    let signal = async move {
        shutdown.await;
        signalled.begin_shutdown();
        tracing::info!("shutting down: accepting no new connections, finishing requests in flight");
        if draining_tx.send(()).is_err() {
            tracing::debug!("the server stopped before the shutdown signal");
        }
    };

    let config = waiter.config();
    tracing::info!(%addr, id = %config.id, mode = %config.mode, store = %config.store_url, "waiter listening");
    let serve = axum::serve(listener, waiter.router())
        .with_graceful_shutdown(signal)
        .into_future();
    tokio::pin!(serve);
    let served = tokio::select! {
        result = &mut serve => result,
        _ = draining_rx => {
            let grace = config.request_timeout + Duration::from_secs(1);
            match tokio::time::timeout(grace, &mut serve).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(?grace, "requests still in flight after the grace period; abandoning them");
                    Ok(())
                }
            }
        }
    };

    if stop_tx.send(true).is_err() {
        tracing::debug!("the background tasks had already stopped");
    }
    for (name, task) in [("kitchen", kitchen), ("sweeper", sweeper)] {
        if let Err(e) = task.await {
            tracing::error!(task = name, error = %e, "a background task failed");
        }
    }
    tracing::info!(id = %config.id, "waiter stopped");
    served
}
