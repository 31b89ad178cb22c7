//! The layer-4 proxy: whole TCP connections to the waiters' line-protocol ports.
//!
//! An HTTP balancer can look inside every request (cookies, affinity tokens, retries);
//! a TCP proxy sees only connections. So the unit of balancing here is the connection:
//! a backend is chosen when a client connects, and every byte of that connection goes
//! to it until one side closes ([`tokio::io::copy_bidirectional`]). For a stateful
//! waiter that is exactly right, because the order being taken lives in the connection;
//! across reconnects, `consistent_hash` on the client IP is the L4 form of stickiness.
//!
//! The machinery is the HTTP proxy's, reused rather than copied: the backends live in a
//! [`Registry`] of their own (one "worker"), selected by the same strategies with the
//! same `accept` filter, and carry the same [`Health`](crate::health::Health) state.
//! What counts as healthy is decided in [`TcpProxy::available`]:
//!
//! - a TCP backend whose id is also an HTTP backend *is* that waiter, so it follows the
//!   HTTP backend's health (active `/readyz` checks, passive ejection) and drain flag;
//! - any other TCP backend is probed with a plain connect by [`checker`];
//! - either way, `health.eject_after` failed connects in a row eject it for a backoff,
//!   and a failed connect is retried on another backend (nothing was sent yet, so
//!   that is always safe).
//!
//! Per-backend figures reuse the backend's counters: `active` is open tunnels,
//! `requests` is connections proxied, `errors` is failed connects. They are shown at
//! `GET /tcp/backends` and in `/metrics` ([`view`]).

mod checker;
mod tunnel;
mod view;

pub(crate) use checker::run as run_checker;
pub(crate) use tunnel::serve;
pub(crate) use view::{backends_json, render_metrics};

use crate::backend::Backend;
use crate::config::{BalancingConfig, TcpConfig, ms};
use crate::health::Ejection;
use crate::slots::Capacity;
use crate::state::Shared;
use crate::table::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The TCP proxy's state, shared by its accept loop, its checker and the admin API.
#[derive(Debug)]
pub(crate) struct TcpProxy {
    /// The TCP backends and their strategy.
    registry: Registry,
    /// The HTTP side, for the health of backends with the same id, and the clock.
    http: Arc<Shared>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    ejection: Ejection,
    /// Connections accepted from clients.
    accepted: AtomicU64,
    /// Connections closed because no backend could take them.
    unrouted: AtomicU64,
    /// Tunnels closed because neither side sent anything for `idle_timeout`.
    idle_timeouts: AtomicU64,
}

impl TcpProxy {
    /// The proxy for `config`, next to the HTTP side `http`.
    pub(crate) fn new(config: &TcpConfig, http: Arc<Shared>) -> TcpProxy {
        let balancing = BalancingConfig {
            strategy: config.strategy.kind(),
            // A custom strategy is the HTTP proxy's; connections follow tcp.strategy.
            custom: None,
            ..http.config.balancing.clone()
        };
        TcpProxy {
            registry: Registry::new(&config.backends, balancing, 1, Capacity::UNUSED),
            connect_timeout: ms(config.connect_timeout_ms),
            idle_timeout: ms(config.idle_timeout_ms),
            max_connections: config.max_connections,
            ejection: Ejection::from(&http.config.health),
            accepted: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
            idle_timeouts: AtomicU64::new(0),
            http,
        }
    }

    /// The HTTP backend with the same id, if any: the same waiter on its HTTP port.
    fn twin(&self, id: &str) -> Option<Backend> {
        self.http.registry.load().find(id).cloned()
    }

    /// Whether a new connection may go to `backend` at `now_ms` (see the module docs).
    pub(crate) fn available(&self, backend: &Backend, now_ms: u64) -> bool {
        let own = backend.core.health.is_available(now_ms) && !backend.core.is_draining();
        own && self
            .twin(backend.id())
            .is_none_or(|twin| twin.core.health.is_available(now_ms) && !twin.core.is_draining())
    }

    fn now_ms(&self) -> u64 {
        self.http.clock.now_ms()
    }
}
