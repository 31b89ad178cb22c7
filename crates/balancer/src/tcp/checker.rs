//! Active checks for TCP backends that have no HTTP twin: can we connect?
//!
//! A connect that succeeds within `health.timeout_ms` passes; the verdicts go through
//! the same rise/fall counting as the HTTP checks, in the same loop
//! ([`run_loop`](crate::checker::run_loop)): a refused connect takes the backend
//! down at once; a connect that fails for the balancer's own lack of descriptors is not
//! counted. The probe closes at once, so the
//! waiter sees a connection that leaves before its greeting (counted in its
//! `bistro_tcp_connections_total` like any other). Backends that share an id with an
//! HTTP backend are skipped: their health is the HTTP backend's.

use super::TcpProxy;
use crate::backend::Backend;
use crate::checker::{Attempt, Probe, run_loop};
use crate::health::DownReason;
use crate::table::Table;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Runs connect checks until `shutdown` is cancelled (not at all when `health.active` is off).
pub(crate) async fn run(proxy: Arc<TcpProxy>, shutdown: CancellationToken) {
    let clock = proxy.http.clock.clone();
    let config = proxy.http.config.health.clone();
    run_loop(Arc::new(Connect(proxy)), &config, clock, shutdown).await;
}

/// The TCP backends' probe: a plain connect.
struct Connect(Arc<TcpProxy>);

impl Probe for Connect {
    fn table(&self) -> Arc<Table> {
        self.0.registry.snapshot()
    }

    fn probes(&self, backend: &Backend) -> bool {
        self.0.twin(backend.id()).is_none()
    }

    async fn attempt(&self, backend: &Backend) -> Attempt {
        match TcpStream::connect(backend.core.addr).await {
            Ok(_) => Attempt::Pass,
            Err(e) if crate::error::is_local_exhaustion(&e) => Attempt::Skip,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Attempt::Fail(DownReason::Refused)
            }
            Err(_) => Attempt::Fail(DownReason::Failing),
        }
    }

    fn changed(&self, backend: &Backend, up: bool) {
        let core = &backend.core;
        if up {
            tracing::info!(backend = %core.id, "tcp backend is up again (connect checks pass)");
        } else {
            tracing::warn!(backend = %core.id, addr = %core.addr, "tcp backend is down (connect checks fail)");
        }
    }
}
