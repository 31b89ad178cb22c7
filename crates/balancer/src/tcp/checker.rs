//! Active checks for TCP backends that have no HTTP twin: can we connect?
//!
//! A connect that succeeds within `health.timeout_ms` passes; the verdicts go through
//! the same rise/fall counting as the HTTP checks (a refused connect takes the backend
//! down at once; a connect that fails for the balancer's own lack of descriptors is not
//! counted). The probe closes at once, so the
//! waiter sees a connection that leaves before its greeting (counted in its
//! `bistro_tcp_connections_total` like any other). Backends that share an id with an
//! HTTP backend are skipped: their health is the HTTP backend's.

use super::TcpProxy;
use crate::config::ms;
use crate::health::DownReason;
use crate::server::signalled;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Runs connect checks until shutdown (not at all when `health.active` is off).
pub(crate) async fn run(proxy: Arc<TcpProxy>, mut shutdown: watch::Receiver<bool>) {
    let config = proxy.http.config.health.clone();
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
        for backend in proxy.registry.snapshot().backends() {
            if proxy.twin(backend.id()).is_some() {
                continue;
            }
            let core = backend.core.clone();
            let (timeout, rise, fall) = (ms(config.timeout_ms), config.rise, config.fall);
            let clock = proxy.http.clock.clone();
            round.spawn(async move {
                let outcome = match tokio::time::timeout(timeout, TcpStream::connect(core.addr)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) if crate::error::is_local_exhaustion(&e) => return,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        Err(DownReason::Refused)
                    }
                    Ok(Err(_)) => Err(DownReason::Failing),
                    Err(_) => Err(DownReason::Timeout),
                };
                match core.health.record_check(outcome, rise, fall, clock.now_ms()) {
                    Some(true) => tracing::info!(backend = %core.id, "tcp backend is up again (connect checks pass)"),
                    Some(false) => tracing::warn!(backend = %core.id, addr = %core.addr, "tcp backend is down (connect checks fail)"),
                    None => {}
                }
            });
        }
        tokio::select! {
            () = async { while round.join_next().await.is_some() {} } => {}
            () = signalled(&mut shutdown) => return,
        }
    }
}
