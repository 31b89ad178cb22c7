//! Active health checks: `GET /readyz` on every backend, every interval.
//!
//! A probe passes on a 2xx within the timeout. The verdicts feed
//! [`Health::record_check`](crate::health::Health::record_check) (rise/fall). Probes also
//! teach the balancer each backend's mode: from the `Bistro-Mode` header the waiter puts
//! on every response, or, while the mode is still unknown, from `GET /v1/waiter`'s
//! `"mode"` field. Each round probes the *current* backend table, so backends added
//! through the admin API are checked from the next round on.
//!
//! A failed probe says why ([`DownReason`]): refused (nothing listens: the process is
//! gone), timed out (hung or paused: the kernel still accepts its connections), a
//! `503` whose problem type says the waiter's store is unavailable or that it is
//! shutting down, or any other failure. When every backend is out because its store is
//! unavailable the round reports a *store outage*: one shared cause, not N faults
//! (the proxy's panic mode keeps forwarding meanwhile, see [`target`](crate::target)).
//! When a backend goes down, requests waiting on it are woken so that those that may
//! be sent again go elsewhere at once instead of waiting out their timeout.
//!
//! A probe that fails because of the balancer itself (out of file descriptors) says
//! nothing about the backend and is not recorded.
//!
//! Probes open a fresh connection each time: at four probes per backend and second the
//! cost is nil, and a fresh connection is what a new request would need.

use crate::backend::{Backend, Core};
use crate::config::{HealthConfig, ms};
use crate::health::DownReason;
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
        let table = shared.registry.snapshot();
        let mut round = JoinSet::new();
        for backend in table.backends() {
            round.spawn(check(backend.clone(), shared.clone(), config.clone()));
        }
        tokio::select! {
            () = async { while round.join_next().await.is_some() {} } => {}
            () = signalled(&mut shutdown) => return,
        }
        note_round(&shared, &table);
    }
}

/// Says once when the balancer enters panic mode and when it leaves it, and likewise
/// when every backend is out because its store is unavailable; the flags feed
/// `/metrics` and the admin API.
fn note_round(shared: &Shared, table: &crate::table::Table) {
    let now_ms = shared.clock.now_ms();
    let panic = shared.in_panic(table, now_ms);
    if shared.set_panic_seen(panic) {
        if panic {
            tracing::warn!(
                threshold_percent = shared.settings.panic_threshold_percent,
                "panic mode: too few backends are healthy; balancing over every backend not known to be gone"
            );
        } else {
            tracing::info!("panic mode over: enough backends are healthy again");
        }
    }
    let backends = table.backends();
    let outage = !backends.is_empty()
        && backends.iter().all(|b| {
            !b.core.health.is_available(now_ms)
                && b.core.health.reason() == DownReason::StoreUnavailable
        });
    if shared.set_store_outage(outage) {
        if outage {
            tracing::warn!(
                backends = backends.len(),
                "every waiter reports its store unavailable: a store outage, not waiter faults; \
                 forwarding to them anyway (panic mode) so they answer for themselves"
            );
        } else {
            tracing::info!("the store outage is over: waiters report ready again");
        }
    }
}

/// Probes one backend and records the verdict.
async fn check(backend: Backend, shared: Arc<Shared>, config: Arc<HealthConfig>) {
    let core = &backend.core;
    let timeout = ms(config.timeout_ms);
    let probe = tokio::time::timeout(timeout, get(core, &config.path)).await;
    let outcome = match &probe {
        Ok(Ok((status, mode, body))) => {
            if let Some(mode) = mode {
                core.learn_mode(*mode);
            }
            if status.is_success() {
                Ok(())
            } else {
                Err(reason_of(*status, body))
            }
        }
        Ok(Err(ProbeError::Connect(e))) if crate::error::is_local_exhaustion(e) => {
            tracing::warn!(backend = %core.id, error = %e, "health check skipped: the balancer is out of resources");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(backend = %core.id, error = %e, "health check failed");
            Err(match e {
                ProbeError::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    DownReason::Refused
                }
                _ => DownReason::Failing,
            })
        }
        Err(_) => {
            tracing::debug!(backend = %core.id, ?timeout, "health check timed out");
            Err(DownReason::Timeout)
        }
    };
    let ok = outcome.is_ok();
    let now_ms = shared.clock.now_ms();
    match core
        .health
        .record_check(outcome, config.rise, config.fall, now_ms)
    {
        Some(true) => {
            tracing::info!(backend = %core.id, "backend is up again (health checks pass)")
        }
        Some(false) => {
            tracing::warn!(backend = %core.id, reason = core.health.reason().as_str(), "backend is down (health checks fail)");
            // Requests waiting on it (for a connection slot or an answer) need not wait
            // out their timeouts: those that may be sent again go elsewhere now.
            backend.wake_waiters();
        }
        None => {}
    }
    if ok && core.mode_unknown() {
        match tokio::time::timeout(timeout, get(core, &config.info_path)).await {
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

/// Why a backend answered its readiness probe with `status`: the problem `type` of a
/// waiter's `/readyz` answer names the cause.
pub(crate) fn reason_of(status: StatusCode, body: &[u8]) -> DownReason {
    #[derive(serde::Deserialize)]
    struct Problem {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    let kind = serde_json::from_slice::<Problem>(body)
        .ok()
        .and_then(|p| p.kind)
        .unwrap_or_default();
    match kind.rsplit('/').next() {
        Some("store-unavailable") if status == StatusCode::SERVICE_UNAVAILABLE => {
            DownReason::StoreUnavailable
        }
        Some("shutting-down") => DownReason::ShuttingDown,
        _ => DownReason::Failing,
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
        .get(&bistro_proto::headers::MODE)
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
    fn the_readiness_problem_names_the_reason() {
        let store = br#"{"type":"https://bistro.dev/problems/store-unavailable","status":503}"#;
        assert_eq!(
            reason_of(StatusCode::SERVICE_UNAVAILABLE, store),
            DownReason::StoreUnavailable
        );
        let stopping = br#"{"type":"https://bistro.dev/problems/shutting-down"}"#;
        assert_eq!(
            reason_of(StatusCode::SERVICE_UNAVAILABLE, stopping),
            DownReason::ShuttingDown
        );
        assert_eq!(
            reason_of(StatusCode::INTERNAL_SERVER_ERROR, b"oops"),
            DownReason::Failing
        );
        assert_eq!(
            reason_of(StatusCode::INTERNAL_SERVER_ERROR, store),
            DownReason::Failing,
            "a store problem counts only as the 503 the waiter gives for it"
        );
    }

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
        assert_eq!(
            mode_from_json(br#"{"id":"w1","mode":"replicated"}"#),
            Some(Mode::Replicated)
        );
        assert_eq!(mode_from_json(br#"{"id":"w1"}"#), None);
        assert_eq!(mode_from_json(b"not json"), None);
    }
}
