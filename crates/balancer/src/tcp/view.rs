//! What operators see of the TCP proxy: `GET /tcp/backends` and its `/metrics` families.
//!
//! | family | labels | meaning |
//! |---|---|---|
//! | `bistro_balancer_tcp_connections` | backend | tunnels open now |
//! | `bistro_balancer_tcp_connections_total` | backend | tunnels opened |
//! | `bistro_balancer_tcp_connect_errors_total` | backend | failed connects to the backend |
//! | `bistro_balancer_tcp_backend_up` | backend | 1 when new connections may go there |
//! | `bistro_balancer_tcp_accepted_total` | | client connections accepted |
//! | `bistro_balancer_tcp_unrouted_total` | | client connections closed: no backend could take them |
//! | `bistro_balancer_tcp_idle_timeouts_total` | | tunnels closed after `tcp.idle_timeout_ms` without a byte |

use super::TcpProxy;
use crate::backend::Backend;
use crate::health::HealthState;
use crate::spec::Mode;
use bistro_metrics::Encoder;
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;

/// One TCP backend as the admin API shows it.
#[derive(Debug, Serialize)]
struct TcpBackendView {
    id: String,
    address: String,
    weight: u32,
    /// `up`, `down`, `ejected` or `draining`: whether new connections go there.
    health: &'static str,
    /// `http` (the HTTP backend with the same id) or `tcp-connect` (connect checks).
    health_from: &'static str,
    /// The waiter's mode, when its HTTP twin has learned it.
    mode: &'static str,
    connections: i64,
    connections_total: u64,
    connect_errors: u64,
}

fn view_of(proxy: &TcpProxy, b: &Backend, now_ms: u64) -> TcpBackendView {
    let twin = proxy.twin(b.id());
    let own = b.core.health.state(now_ms);
    let health = match (&twin, own) {
        (_, HealthState::Ejected) => "ejected",
        (Some(t), _) if t.core.is_draining() => "draining",
        (Some(t), _) => t.core.health.state(now_ms).as_str(),
        (None, state) if b.core.is_draining() && state == HealthState::Up => "draining",
        (None, state) => state.as_str(),
    };
    TcpBackendView {
        id: b.id().to_string(),
        address: b.core.addr.to_string(),
        weight: b.core.weight(),
        health,
        health_from: if twin.is_some() {
            "http"
        } else {
            "tcp-connect"
        },
        mode: twin
            .and_then(|t| t.core.mode())
            .or(b.core.mode())
            .map_or("unknown", Mode::as_str),
        connections: b.active(),
        connections_total: b.requests(),
        connect_errors: b.errors(),
    }
}

/// The body of `GET /tcp/backends`.
pub(crate) fn backends_json(proxy: &TcpProxy) -> Vec<u8> {
    let now_ms = proxy.now_ms();
    let table = proxy.registry.snapshot();
    let views: Vec<TcpBackendView> = table
        .backends()
        .iter()
        .map(|b| view_of(proxy, b, now_ms))
        .collect();
    serde_json::to_vec(&views).unwrap_or_default()
}

/// The TCP families, appended to the balancer's `/metrics`.
pub(crate) fn render_metrics(proxy: &TcpProxy) -> String {
    let now_ms = proxy.now_ms();
    let table = proxy.registry.snapshot();
    let backends = table.backends();
    let labels: Vec<[(&str, &str); 1]> = backends.iter().map(|b| [("backend", b.id())]).collect();
    let counter = |f: &dyn Fn(&Backend) -> u64| -> Vec<(&[(&str, &str)], u64)> {
        backends
            .iter()
            .zip(&labels)
            .map(|(b, l)| (&l[..], f(b)))
            .collect()
    };
    let gauge = |f: &dyn Fn(&Backend) -> f64| -> Vec<(&[(&str, &str)], f64)> {
        backends
            .iter()
            .zip(&labels)
            .map(|(b, l)| (&l[..], f(b)))
            .collect()
    };
    let mut enc = Encoder::new();
    enc.gauge(
        "bistro_balancer_tcp_connections",
        "TCP tunnels open to each backend.",
        &gauge(&|b| b.active() as f64),
    );
    enc.counter(
        "bistro_balancer_tcp_connections_total",
        "TCP tunnels opened to each backend.",
        &counter(&|b| b.requests()),
    );
    enc.counter(
        "bistro_balancer_tcp_connect_errors_total",
        "Failed connects to each TCP backend.",
        &counter(&|b| b.errors()),
    );
    enc.gauge(
        "bistro_balancer_tcp_backend_up",
        "1 when new TCP connections may go to the backend.",
        &gauge(&|b| f64::from(u8::from(proxy.available(b, now_ms)))),
    );
    enc.counter(
        "bistro_balancer_tcp_accepted_total",
        "TCP client connections accepted.",
        &[(&[], proxy.accepted.load(Relaxed))],
    );
    enc.counter(
        "bistro_balancer_tcp_idle_timeouts_total",
        "TCP tunnels closed because neither side sent a byte for the idle timeout.",
        &[(&[], proxy.idle_timeouts.load(Relaxed))],
    );
    enc.counter(
        "bistro_balancer_tcp_unrouted_total",
        "TCP client connections closed because no backend could take them.",
        &[(&[], proxy.unrouted.load(Relaxed))],
    );
    enc.finish()
}
