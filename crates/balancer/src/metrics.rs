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
//! | `bistro_balancer_affinity_total` | outcome | hit, miss, issued, forged, expired, unknown, rerouted, lost |
//! | `bistro_balancer_retries_total` | | requests sent again |
//! | `bistro_balancer_retry_budget_exhausted_total` | | retries refused by the budget |
//! | `bistro_balancer_requests_total` | | requests received from clients |

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
}

const OUTCOMES: [(AffinityOutcome, &str); 8] = [
    (AffinityOutcome::Hit, "hit"),
    (AffinityOutcome::Miss, "miss"),
    (AffinityOutcome::Issued, "issued"),
    (AffinityOutcome::Forged, "forged"),
    (AffinityOutcome::Expired, "expired"),
    (AffinityOutcome::Unknown, "unknown"),
    (AffinityOutcome::Rerouted, "rerouted"),
    (AffinityOutcome::Lost, "lost"),
];

/// One worker's counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    affinity: [AtomicU64; 8],
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    requests: AtomicU64,
}

impl Counters {
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

    /// Renders the exposition document for `table` at `now_ms`.
    pub(crate) fn render(&self, table: &Table, now_ms: u64) -> String {
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
        );
        let metrics = Metrics::new(2);
        metrics.shard(0).affinity(AffinityOutcome::Hit);
        metrics.shard(1).affinity(AffinityOutcome::Hit);
        metrics.shard(1).affinity(AffinityOutcome::Forged);
        metrics.shard(0).retry();
        let text = metrics.render(&registry.load(), 1);
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
