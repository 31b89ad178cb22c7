//! Waiting for the operator to ask us to stop (Ctrl-C or SIGTERM).

use std::future::Future;

/// Registers for SIGINT and SIGTERM *now*, and returns a future that resolves when one
/// arrives.
///
/// Registration happens before the caller announces that it is listening, so a
/// supervisor that sends SIGTERM right after seeing that line gets a graceful shutdown,
/// not the default action of the signal (immediate death).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    #[cfg(unix)]
    let int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        #[cfg(unix)]
        {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
                },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!("cannot listen for SIGTERM/SIGINT ({e}); stop with SIGKILL");
                    std::future::pending::<()>().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!("cannot listen for Ctrl-C: {e}");
                std::future::pending::<()>().await;
            }
        }
    }
}
