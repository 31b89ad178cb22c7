//! Active health checks: `GET /readyz` on every backend, every interval.
//!
//! A probe passes on a 2xx within the timeout. The verdicts feed
//! [`Health::record_check`](crate::health::Health::record_check) (rise/fall). Probes also
//! teach the balancer each backend's mode: from the `Bistro-Mode` header the waiter puts
//! on every response, or, while the mode is still unknown, from `GET /v1/waiter`'s
//! `"mode"` field. Each round probes the *current* backend table, so backends added
//! through the admin API are checked from the next round on.
//!
//! Probes open a fresh connection each time: at one probe per backend every couple of
//! seconds the cost is nil, and a fresh connection is what a new request would need.

use crate::backend::Core;
use crate::config::{HealthConfig, ms};
use crate::server::signalled;
use crate::spec::Mode;
use crate::state::Shared;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Largest `/v1/waiter` body read.
const MAX_INFO_BODY: usize = 64 * 1024;

/// Runs health rounds until shutdown.
pub(crate) async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let config = Arc::new(shared.config.health.clone());
    if !config.active {
        return;
    }
    let mut tick = tokio::time::interval(ms(config.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = signalled(&mut shutdown) => return,
        }
        let mut round = JoinSet::new();
        for backend in shared.registry.snapshot().backends() {
            round.spawn(check(backend.core.clone(), config.clone()));
        }
        tokio::select! {
            () = async { while round.join_next().await.is_some() {} } => {}
            () = signalled(&mut shutdown) => return,
        }
    }
}

/// Probes one backend and records the verdict.
async fn check(core: Arc<Core>, config: Arc<HealthConfig>) {
    let timeout = ms(config.timeout_ms);
    let probe = tokio::time::timeout(timeout, get(&core, &config.path)).await;
    let ok = match &probe {
        Ok(Ok((status, mode, _))) => {
            if let Some(mode) = mode {
                core.learn_mode(*mode);
            }
            status.is_success()
        }
        Ok(Err(e)) => {
            tracing::debug!(backend = %core.id, error = %e, "health check failed");
            false
        }
        Err(_) => {
            tracing::debug!(backend = %core.id, ?timeout, "health check timed out");
            false
        }
    };
    match core.health.record_check(ok, config.rise, config.fall) {
        Some(true) => {
            tracing::info!(backend = %core.id, "backend is up again (health checks pass)")
        }
        Some(false) => tracing::warn!(backend = %core.id, "backend is down (health checks fail)"),
        None => {}
    }
    if ok && core.mode_unknown() {
        match tokio::time::timeout(timeout, get(&core, &config.info_path)).await {
            Ok(Ok((status, header_mode, body))) if status.is_success() => {
                if let Some(mode) = header_mode.or_else(|| mode_from_json(&body)) {
                    tracing::info!(backend = %core.id, %mode, "learned the backend's mode");
                    core.learn_mode(mode);
                }
            }
            Ok(Ok((status, _, _))) => {
                tracing::debug!(backend = %core.id, %status, "mode probe refused")
            }
            Ok(Err(e)) => tracing::debug!(backend = %core.id, error = %e, "mode probe failed"),
            Err(_) => tracing::debug!(backend = %core.id, "mode probe timed out"),
        }
    }
}

/// The `"mode"` field of a `/v1/waiter` answer.
pub(crate) fn mode_from_json(body: &[u8]) -> Option<Mode> {
    #[derive(serde::Deserialize)]
    struct Info {
        mode: Option<String>,
    }
    let info: Info = serde_json::from_slice(body).ok()?;
    Mode::from_wire(info.mode?.as_bytes())
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("body: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("request: {0}")]
    Request(#[from] http::Error),
}

/// `GET path` on a fresh connection: status, `Bistro-Mode` header, body.
async fn get(core: &Core, path: &str) -> Result<(StatusCode, Option<Mode>, Bytes), ProbeError> {
    let stream = TcpStream::connect(core.addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::trace!(error = %e, "health probe connection ended with an error");
        }
    });
    let request = Request::get(path)
        .header(header::HOST, core.addr.to_string())
        .header(header::USER_AGENT, "bistro-balancer-health")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let mode = response
        .headers()
        .get("bistro-mode")
        .and_then(|v| Mode::from_wire(v.as_bytes()));
    let body = Limited::new(response.into_body(), MAX_INFO_BODY)
        .collect()
        .await
        .map_err(ProbeError::Body)?;
    drop(sender);
    driver.abort();
    Ok((status, mode, body.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_is_read_from_the_waiter_info() {
        assert_eq!(
            mode_from_json(br#"{"id":"w1","mode":"stateful","sessions":3}"#),
            Some(Mode::Stateful)
        );
        assert_eq!(
            mode_from_json(br#"{"id":"w1","mode":"stateless"}"#),
            Some(Mode::Stateless)
        );
        assert_eq!(mode_from_json(br#"{"id":"w1"}"#), None);
        assert_eq!(mode_from_json(b"not json"), None);
    }
}
