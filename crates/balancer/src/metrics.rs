//! The balancer's Prometheus metrics.
//!
//! Per-backend figures live with the backend (see [`backend`](crate::backend)); the
//! balancer-wide counters here are kept per worker, each worker on its own cache line,
//! and summed when `/metrics` is scraped. Families:
//!
//! | family | labels | meaning |
//! |---|---|---|
//! | `bistro_balancer_backend_requests_total` | backend | requests sent (each attempt) |
//! | `bistro_balancer_backend_errors_total` | backend | failed exchanges and 5xx answers |
//! | `bistro_balancer_backend_request_duration_seconds` | backend | send to end of body |
//! | `bistro_balancer_backend_active_connections` | backend | requests in flight |
//! | `bistro_balancer_backend_idle_connections` | backend | pooled idle connections |
//! | `bistro_balancer_backend_up` | backend | 1 when available |
//! | `bistro_balancer_backend_ejections_total` | backend | passive ejections |
//! | `bistro_balancer_backend_sessions_pinned` | backend | approximate pinned diners |
//! | `bistro_balancer_affinity_total` | outcome | hit, miss, issued, forged, expired, unknown, rerouted, lost, unavailable, failover |
//! | `bistro_balancer_retries_total` | | requests sent again |
//! | `bistro_balancer_retry_budget_exhausted_total` | | retries refused by the budget |
//! | `bistro_balancer_requests_total` | | requests received from clients |
//! | `bistro_balancer_backend_queued` | backend | requests waiting for a connection slot |
//! | `bistro_balancer_backend_slots_busy` | backend | connection slots in use |
//! | `bistro_balancer_backend_down_seconds` | backend | how long it has been unavailable (0 when available) |
//! | `bistro_balancer_timeouts_total` | kind | header, keep_alive, body, send, connect, response, upstream_body, queue |
//! | `bistro_balancer_refused_total` | reason | max_connections, per_ip_connections, session_rate, out_of_fds, queue_full |
//! | `bistro_balancer_accept_errors_total` | | failed accepts (out of file descriptors and the like) |
//! | `bistro_balancer_local_errors_total` | | the balancer's own failures reaching a backend (never blamed on it) |
//! | `bistro_balancer_panic_routed_total` | | requests balanced over every backend because too few were healthy |
//! | `bistro_balancer_client_connections` | | client connections open |
//! | `bistro_balancer_client_connections_max` | | the client-connection cap in force |
//! | `bistro_balancer_panic_mode` | | 1 while too few backends are healthy and all take traffic |
//! | `bistro_balancer_store_outage` | | 1 while every backend reports its store unavailable |

use crate::table::Table;
use bistro_metrics::Encoder;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What became of a request's affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AffinityOutcome {
    /// A valid token named an available backend.
    Hit = 0,
    /// No token on a sticky route.
    Miss,
    /// A new token was issued.
    Issued,
    /// Bad signature, wrong key or malformed.
    Forged,
    /// Genuine but too old.
    Expired,
    /// A valid token naming a backend this balancer does not know.
    Unknown,
    /// The pinned backend was gone and the diner was sent elsewhere.
    Rerouted,
    /// The pinned backend was gone and the diner got `session-lost`.
    Lost,
    /// The pinned backend was alive but unavailable; the diner was asked to retry.
    Unavailable,
    /// The pinned (replicated) backend was unavailable and the diner went to the
    /// backup its token names, which holds the session's copy.
    Failover,
    /// The diner's session was handed to another waiter (drain with handoff) and the
    /// request went there.
    Moved,
}

const OUTCOMES: [(AffinityOutcome, &str); 11] = [
    (AffinityOutcome::Hit, "hit"),
    (AffinityOutcome::Miss, "miss"),
    (AffinityOutcome::Issued, "issued"),
    (AffinityOutcome::Forged, "forged"),
    (AffinityOutcome::Expired, "expired"),
    (AffinityOutcome::Unknown, "unknown"),
    (AffinityOutcome::Rerouted, "rerouted"),
    (AffinityOutcome::Lost, "lost"),
    (AffinityOutcome::Unavailable, "unavailable"),
    (AffinityOutcome::Failover, "failover"),
    (AffinityOutcome::Moved, "moved"),
];

/// A timeout, by what timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timeout {
    /// A request head (slowloris), or a new connection that sent nothing.
    Header = 0,
    /// An idle keep-alive connection.
    KeepAlive,
    /// A request body (total time or minimum rate).
    Body,
    /// A client that does not read its response.
    Send,
    /// Connecting to a backend.
    Connect,
    /// A backend's response head.
    Response,
    /// A backend's response body stalled.
    UpstreamBody,
    /// Waiting for a connection slot.
    Queue,
}

const TIMEOUTS: [(Timeout, &str); 8] = [
    (Timeout::Header, "header"),
    (Timeout::KeepAlive, "keep_alive"),
    (Timeout::Body, "body"),
    (Timeout::Send, "send"),
    (Timeout::Connect, "connect"),
    (Timeout::Response, "response"),
    (Timeout::UpstreamBody, "upstream_body"),
    (Timeout::Queue, "queue"),
];

/// Why the balancer refused a connection or a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The client-connection cap.
    MaxConnections = 0,
    /// The per-IP connection cap.
    PerIpConnections,
    /// The per-IP session-creation rate.
    SessionRate,
    /// Out of file descriptors at accept.
    OutOfFds,
    /// A backend's queue was full.
    QueueFull,
}

const REFUSALS: [(Refusal, &str); 5] = [
    (Refusal::MaxConnections, "max_connections"),
    (Refusal::PerIpConnections, "per_ip_connections"),
    (Refusal::SessionRate, "session_rate"),
    (Refusal::OutOfFds, "out_of_fds"),
    (Refusal::QueueFull, "queue_full"),
];

/// One worker's counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    affinity: [AtomicU64; 11],
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    requests: AtomicU64,
    timeouts: [AtomicU64; 8],
    refusals: [AtomicU64; 5],
    accept_errors: AtomicU64,
    local_errors: AtomicU64,
    panic_routed: AtomicU64,
    /// TLS handshakes by [`Handshake`] outcome.
    handshakes: [AtomicU64; 4],
}

/// How a TLS handshake ended (`bistro_balancer_tls_handshakes_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// Done; the diner speaks HTTP/2.
    H2,
    /// Done; the diner speaks HTTP/1.1.
    Http1,
    /// The diner left, sent garbage, or offered nothing the balancer accepts.
    Failed,
    /// It did not finish within the header read timeout.
    TimedOut,
}

const HANDSHAKES: [(Handshake, &str); 4] = [
    (Handshake::H2, "h2"),
    (Handshake::Http1, "http1"),
    (Handshake::Failed, "failed"),
    (Handshake::TimedOut, "timeout"),
];

impl Counters {
    pub(crate) fn handshake(&self, outcome: Handshake) {
        self.handshakes[outcome as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn affinity(&self, outcome: AffinityOutcome) {
        self.affinity[outcome as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    pub(crate) fn budget_exhausted(&self) {
        self.budget_exhausted.fetch_add(1, Relaxed);
    }

    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    pub(crate) fn timeout(&self, kind: Timeout) {
        self.timeouts[kind as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn refused(&self, reason: Refusal) {
        self.refusals[reason as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn local_error(&self) {
        self.local_errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn panic_routed(&self) {
        self.panic_routed.fetch_add(1, Relaxed);
    }
}

/// Balancer-wide gauges read when `/metrics` is rendered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gauges {
    pub(crate) client_connections: usize,
    pub(crate) max_connections: usize,
    pub(crate) panic: bool,
    pub(crate) store_outage: bool,
}

/// All workers' counters.
#[derive(Debug)]
pub(crate) struct Metrics {
    shards: Box<[Counters]>,
}

impl Metrics {
    pub(crate) fn new(workers: usize) -> Metrics {
        Metrics {
            shards: (0..workers.max(1)).map(|_| Counters::default()).collect(),
        }
    }

    /// Worker `worker`'s counters.
    pub(crate) fn shard(&self, worker: usize) -> &Counters {
        &self.shards[worker % self.shards.len()]
    }

    fn sum(&self, f: impl Fn(&Counters) -> u64) -> u64 {
        self.shards.iter().map(f).sum()
    }

    /// The affinity counter for `outcome`, over all workers.
    pub(crate) fn affinity_total(&self, outcome: AffinityOutcome) -> u64 {
        self.sum(|c| c.affinity[outcome as usize].load(Relaxed))
    }

    /// Requests routed in panic mode, over all workers.
    pub(crate) fn panic_routed_total(&self) -> u64 {
        self.sum(|c| c.panic_routed.load(Relaxed))
    }

    /// The timeout counter for `kind`, over all workers.
    pub(crate) fn timeouts_total(&self, kind: Timeout) -> u64 {
        self.sum(|c| c.timeouts[kind as usize].load(Relaxed))
    }

    /// The refusal counter for `reason`, over all workers.
    pub(crate) fn refused_total(&self, reason: Refusal) -> u64 {
        self.sum(|c| c.refusals[reason as usize].load(Relaxed))
    }

    /// Renders the exposition document for `table` at `now_ms`.
    pub(crate) fn render(&self, table: &Table, now_ms: u64, gauges: Gauges) -> String {
        let backends = table.backends();
        let labels: Vec<[(&str, &str); 1]> =
            backends.iter().map(|b| [("backend", b.id())]).collect();
        let counter = |f: &dyn Fn(&crate::backend::Backend) -> u64| -> Vec<(&[(&str, &str)], u64)> {
            backends
                .iter()
                .zip(&labels)
                .map(|(b, l)| (&l[..], f(b)))
                .collect()
        };
        let gauge = |f: &dyn Fn(&crate::backend::Backend) -> f64| -> Vec<(&[(&str, &str)], f64)> {
            backends
                .iter()
                .zip(&labels)
                .map(|(b, l)| (&l[..], f(b)))
                .collect()
        };
        let mut enc = Encoder::new();
        enc.counter(
            "bistro_balancer_requests_total",
            "Requests received from clients.",
            &[(&[], self.sum(|c| c.requests.load(Relaxed)))],
        );
        enc.counter(
            "bistro_balancer_backend_requests_total",
            "Requests sent to each backend (each attempt counts).",
            &counter(&|b| b.requests()),
        );
        enc.counter(
            "bistro_balancer_backend_errors_total",
            "Failed exchanges and 5xx answers per backend.",
            &counter(&|b| b.errors()),
        );
        let histograms: Vec<(&[(&str, &str)], &bistro_metrics::Histogram)> = backends
            .iter()
            .zip(&labels)
            .map(|(b, l)| (&l[..], &b.core.latency))
            .collect();
        enc.histogram(
            "bistro_balancer_backend_request_duration_seconds",
            "Time from sending a request to the end of the backend's response body.",
            &histograms,
        );
        enc.gauge(
            "bistro_balancer_backend_active_connections",
            "Requests in flight to each backend.",
            &gauge(&|b| b.active() as f64),
        );
        enc.gauge(
            "bistro_balancer_backend_idle_connections",
            "Idle pooled connections to each backend.",
            &gauge(&|b| b.idle() as f64),
        );
        enc.gauge(
            "bistro_balancer_backend_up",
            "1 when the backend takes requests (up and not ejected).",
            &gauge(&|b| f64::from(u8::from(b.core.health.is_available(now_ms)))),
        );
        enc.counter(
            "bistro_balancer_backend_ejections_total",
            "Passive ejections of each backend.",
            &counter(&|b| b.core.health.ejections()),
        );
        enc.gauge(
            "bistro_balancer_backend_sessions_pinned",
            "Approximate diners pinned to each backend (cookies issued minus those seen cleared or moved).",
            &gauge(&|b| b.core.pinned() as f64),
        );
        let outcome_labels: Vec<[(&str, &str); 1]> = OUTCOMES
            .iter()
            .map(|(_, name)| [("outcome", *name)])
            .collect();
        let outcomes: Vec<(&[(&str, &str)], u64)> = OUTCOMES
            .iter()
            .zip(&outcome_labels)
            .map(|((o, _), l)| (&l[..], self.affinity_total(*o)))
            .collect();
        enc.counter(
            "bistro_balancer_affinity_total",
            "Affinity cookie outcomes.",
            &outcomes,
        );
        let handshake_labels: Vec<[(&str, &str); 1]> = HANDSHAKES
            .iter()
            .map(|(_, name)| [("result", *name)])
            .collect();
        let handshakes: Vec<(&[(&str, &str)], u64)> = HANDSHAKES
            .iter()
            .zip(&handshake_labels)
            .map(|((h, _), l)| {
                (
                    &l[..],
                    self.sum(|c| c.handshakes[*h as usize].load(Relaxed)),
                )
            })
            .collect();
        enc.counter(
            "bistro_balancer_tls_handshakes_total",
            "TLS handshakes with diners by result: the protocol agreed (h2, http1), failed, or timed out.",
            &handshakes,
        );
        enc.counter(
            "bistro_balancer_retries_total",
            "Requests sent again after a failure.",
            &[(&[], self.sum(|c| c.retries.load(Relaxed)))],
        );
        enc.counter(
            "bistro_balancer_retry_budget_exhausted_total",
            "Retries refused by the retry budget.",
            &[(&[], self.sum(|c| c.budget_exhausted.load(Relaxed)))],
        );
        enc.gauge(
            "bistro_balancer_backend_queued",
            "Requests waiting for a connection slot of each backend.",
            &gauge(&|b| b.queued() as f64),
        );
        enc.gauge(
            "bistro_balancer_backend_slots_busy",
            "Connection slots of each backend in use.",
            &gauge(&|b| b.slots_busy() as f64),
        );
        enc.gauge(
            "bistro_balancer_backend_down_seconds",
            "How long each backend has been unavailable (0 while available).",
            &gauge(&|b| b.core.health.down_for(now_ms) as f64 / 1000.0),
        );
        let labelled = |names: &[&'static str]| -> Vec<[(&'static str, &'static str); 1]> {
            names.iter().map(|n| [("kind", *n)]).collect()
        };
        let timeout_labels = labelled(&TIMEOUTS.map(|(_, n)| n));
        let timeouts: Vec<(&[(&str, &str)], u64)> = TIMEOUTS
            .iter()
            .zip(&timeout_labels)
            .map(|((k, _), l)| {
                let mut n = self.timeouts_total(*k);
                if *k == Timeout::UpstreamBody {
                    // Counted per backend, where the body knows it (see `body`).
                    n += backends.iter().map(|b| b.body_timeouts()).sum::<u64>();
                }
                (&l[..], n)
            })
            .collect();
        enc.counter(
            "bistro_balancer_timeouts_total",
            "Timeouts, by what timed out.",
            &timeouts,
        );
        let refusal_labels: Vec<[(&str, &str); 1]> =
            REFUSALS.iter().map(|(_, n)| [("reason", *n)]).collect();
        let refusals: Vec<(&[(&str, &str)], u64)> = REFUSALS
            .iter()
            .zip(&refusal_labels)
            .map(|((r, _), l)| (&l[..], self.refused_total(*r)))
            .collect();
        enc.counter(
            "bistro_balancer_refused_total",
            "Connections and requests the balancer refused itself, by reason.",
            &refusals,
        );
        enc.counter(
            "bistro_balancer_accept_errors_total",
            "Failed accepts (out of file descriptors and the like).",
            &[(&[], self.sum(|c| c.accept_errors.load(Relaxed)))],
        );
        enc.counter(
            "bistro_balancer_local_errors_total",
            "The balancer's own failures reaching a backend (never blamed on the backend).",
            &[(&[], self.sum(|c| c.local_errors.load(Relaxed)))],
        );
        enc.counter(
            "bistro_balancer_panic_routed_total",
            "Requests balanced over every backend because too few were healthy.",
            &[(&[], self.panic_routed_total())],
        );
        enc.gauge(
            "bistro_balancer_client_connections",
            "Client connections open.",
            &[(&[], gauges.client_connections as f64)],
        );
        enc.gauge(
            "bistro_balancer_client_connections_max",
            "The client-connection cap in force.",
            &[(&[], gauges.max_connections as f64)],
        );
        enc.gauge(
            "bistro_balancer_panic_mode",
            "1 while too few backends are healthy and every backend takes traffic.",
            &[(&[], f64::from(u8::from(gauges.panic)))],
        );
        enc.gauge(
            "bistro_balancer_store_outage",
            "1 while every backend reports its store unavailable.",
            &[(&[], f64::from(u8::from(gauges.store_outage)))],
        );
        enc.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BalancingConfig;
    use crate::spec::BackendSpec;
    use crate::table::Registry;

    #[test]
    fn renders_per_backend_and_affinity_families() {
        let registry = Registry::new(
            &[BackendSpec::new("w1", "127.0.0.1:1".parse().unwrap())],
            BalancingConfig::default(),
            2,
            crate::slots::Capacity::UNUSED,
        );
        let metrics = Metrics::new(2);
        metrics.shard(0).affinity(AffinityOutcome::Hit);
        metrics.shard(1).affinity(AffinityOutcome::Hit);
        metrics.shard(1).affinity(AffinityOutcome::Forged);
        metrics.shard(0).retry();
        metrics.shard(1).timeout(Timeout::Send);
        metrics.shard(0).refused(Refusal::SessionRate);
        let gauges = Gauges {
            client_connections: 3,
            max_connections: 10,
            panic: true,
            store_outage: false,
        };
        let text = metrics.render(&registry.load(), 1, gauges);
        assert!(
            text.contains("bistro_balancer_timeouts_total{kind=\"send\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("bistro_balancer_refused_total{reason=\"session_rate\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("bistro_balancer_panic_mode 1\n"), "{text}");
        assert!(
            text.contains("bistro_balancer_client_connections 3\n"),
            "{text}"
        );
        assert!(
            text.contains("bistro_balancer_affinity_total{outcome=\"hit\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("bistro_balancer_affinity_total{outcome=\"forged\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("bistro_balancer_retries_total 1\n"), "{text}");
        assert!(
            text.contains("bistro_balancer_backend_up{backend=\"w1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "bistro_balancer_backend_request_duration_seconds_count{backend=\"w1\"} 0\n"
            ),
            "{text}"
        );
    }
}
