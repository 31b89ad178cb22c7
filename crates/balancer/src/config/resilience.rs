//! What protects the balancer and the waiters: health checks, ejection and panic mode,
//! retries, and the backend side's limits and timeouts (the client side's are in
//! [`ClientConfig`](super::ClientConfig)).
//!
//! | setting | default | HAProxy | nginx / Envoy |
//! |---|---|---|---|
//! | `upstream.connect_timeout_ms` | 2 s | `timeout connect` | `proxy_connect_timeout` |
//! | `upstream.response_timeout_ms` | 30 s | `timeout server` | `proxy_read_timeout` (to the head) |
//! | `upstream.body_idle_timeout_ms` | 30 s | `timeout server` | `proxy_read_timeout` (between reads) |
//! | `upstream.max_connections` | 128 per backend | `maxconn` on `server` | `max_conns` (per worker without a zone) |
//! | `upstream.max_queue` / `queue_timeout_ms` | 10 000 per worker / 5 s | `maxqueue` / `timeout queue` | `queue` (nginx Plus) |
//! | `health.interval_ms` / `timeout_ms` | 250 ms / 250 ms | `inter` / `timeout check` | `interval` / `timeout` (Envoy) |
//! | `health.max_ejection_percent` | 50 | — | `max_ejection_percent` (Envoy, 10) |
//! | `health.panic_threshold_percent` | 50 | — | `healthy_panic_threshold` (Envoy, 50) |

use super::positive;
use crate::error::ConfigError;
use serde::Deserialize;
use std::str::FromStr;

/// `[health]`: active checks, passive ejection, and what happens when too few backends
/// are healthy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Whether active checks run at all.
    pub active: bool,
    /// The readiness path probed with `GET` (200 = ready).
    pub path: String,
    /// The path answering `{"mode": "stateful"|"stateless"}`, probed while a backend's
    /// mode is unknown.
    pub info_path: String,
    /// Time between two checks of one backend. Short on purpose: with the default
    /// `timeout_ms` and `fall` a hung backend (a paused process, whose kernel still
    /// accepts connections) is taken out within 750 ms.
    pub interval_ms: u64,
    /// A check slower than this failed.
    pub timeout_ms: u64,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
    /// Consecutive connect failures or 5xx answers that eject a backend (0 disables).
    /// The balancer's own trouble (its file descriptors, its limits, its timeouts
    /// waiting for a connection slot) never counts.
    pub eject_after: u32,
    /// First ejection length; doubles with each ejection in a row.
    pub ejection_base_ms: u64,
    /// Longest ejection.
    pub ejection_max_ms: u64,
    /// Most backends passive ejection may hold out at once, as a share of all; at least
    /// one may always be ejected (as Envoy's `max_ejection_percent`).
    pub max_ejection_percent: u8,
    /// When fewer than this share of the (non-draining) backends are available, the
    /// balancer is in *panic mode* and balances over all of them, healthy or not,
    /// rather than answer 503 for everyone (as Envoy's `healthy_panic_threshold`). When
    /// every waiter fails together (their shared store is down) the waiters' own
    /// answers are more useful than the balancer's, and the first request after the
    /// cause is gone succeeds. 0 disables panic mode.
    pub panic_threshold_percent: u8,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            active: true,
            path: "/readyz".into(),
            info_path: "/v1/waiter".into(),
            interval_ms: 250,
            timeout_ms: 250,
            rise: 2,
            fall: 2,
            eject_after: 5,
            ejection_base_ms: 1_000,
            ejection_max_ms: 30_000,
            max_ejection_percent: 50,
            panic_threshold_percent: 50,
        }
    }
}

impl HealthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (field, path) in [
            ("health.path", &self.path),
            ("health.info_path", &self.info_path),
        ] {
            if !path.starts_with('/') || http::uri::PathAndQuery::from_str(path).is_err() {
                return Err(ConfigError::invalid(
                    field,
                    format!("{path:?} is not an absolute path"),
                ));
            }
        }
        positive("health.interval_ms", self.interval_ms)?;
        positive("health.timeout_ms", self.timeout_ms)?;
        positive("health.rise", u64::from(self.rise))?;
        positive("health.fall", u64::from(self.fall))?;
        positive("health.ejection_base_ms", self.ejection_base_ms)?;
        if self.ejection_max_ms < self.ejection_base_ms {
            return Err(ConfigError::invalid(
                "health.ejection_max_ms",
                "must be at least ejection_base_ms",
            ));
        }
        for (field, v) in [
            ("health.max_ejection_percent", self.max_ejection_percent),
            (
                "health.panic_threshold_percent",
                self.panic_threshold_percent,
            ),
        ] {
            if v > 100 {
                return Err(ConfigError::invalid(field, "must be 0 to 100"));
            }
        }
        Ok(())
    }
}

/// `[retry]`: when a failed request is sent again.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Most retries of one request.
    pub max_retries: u32,
    /// Retries allowed per request, on average (0.2 = at most 20% extra load).
    pub budget_ratio: f64,
    /// Retries always allowed per second and worker, so a quiet balancer can retry too.
    pub budget_min_per_sec: u32,
    /// Request bodies up to this size are buffered so a retryable request can be sent
    /// again; larger bodies are streamed and only retried when they never left.
    pub max_buffered_body: u64,
    /// Which requests are sent again after a failure that may have reached the backend.
    pub after_send: ResendPolicy,
}

/// Which requests may be sent again after they (maybe) reached a backend. Requests that
/// certainly never left are always eligible; these must be safe to repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResendPolicy {
    /// Idempotent methods (`GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`, `TRACE`) and
    /// requests carrying `Idempotency-Key`.
    #[default]
    Idempotent,
    /// Only requests carrying `Idempotency-Key`. Every resendable request keeps a copy
    /// of its headers until it is answered (about 5% of the proxy's CPU per request,
    /// measured); this mode spares that for plain `GET`s.
    IdempotencyKey,
    /// None.
    Never,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 2,
            budget_ratio: 0.2,
            budget_min_per_sec: 10,
            max_buffered_body: 64 * 1024,
            after_send: ResendPolicy::Idempotent,
        }
    }
}

impl RetryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.budget_ratio) {
            return Err(ConfigError::invalid(
                "retry.budget_ratio",
                "must be between 0 and 1",
            ));
        }
        if self.max_retries > 10 {
            return Err(ConfigError::invalid("retry.max_retries", "at most 10"));
        }
        Ok(())
    }
}

/// `[upstream]`: the backend side.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Time allowed to open a connection to a backend.
    pub connect_timeout_ms: u64,
    /// Time allowed for a backend's response head once the request is sent.
    pub response_timeout_ms: u64,
    /// Time a backend's response body may make no progress before the exchange is cut.
    pub body_idle_timeout_ms: u64,
    /// Most requests in flight to one backend at once, which bounds the connections
    /// open to it (plus `pool_max_idle` idle ones per worker). Split evenly over the
    /// worker threads, as nginx's `max_conns` is per worker without a shared zone. A
    /// waiter on two cores answers no faster with more in flight: measured here, 10 000
    /// clients through 128 slots were served faster than through 512, with 40 MiB less.
    pub max_connections: usize,
    /// Requests that may wait for a connection slot of one backend, per worker thread
    /// (not split: the kernel spreads clients over the workers unevenly, and a waiting
    /// request costs little), first come first served; beyond it, `503
    /// backend-queue-full` at once.
    pub max_queue: usize,
    /// How long a request may wait for a connection slot before `503
    /// backend-queue-full` with `Retry-After`.
    pub queue_timeout_ms: u64,
    /// Idle connections kept per backend and worker; more are closed.
    pub pool_max_idle: usize,
    /// Idle connections unused for this long are closed. Keep it below the backends'
    /// own idle timeout, so the balancer rarely reuses a connection the backend is closing.
    pub pool_idle_timeout_ms: u64,
    /// Largest response head (status line and headers) accepted from a backend; a
    /// larger one is a `502`. As nginx's `proxy_buffer_size`, but generous: the
    /// backends are the team's own.
    pub max_response_header_bytes: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_ms: 2_000,
            response_timeout_ms: 30_000,
            body_idle_timeout_ms: 30_000,
            max_connections: 128,
            max_queue: 10_000,
            queue_timeout_ms: 5_000,
            pool_max_idle: 64,
            pool_idle_timeout_ms: 15_000,
            max_response_header_bytes: 64 * 1024,
        }
    }
}

impl UpstreamConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("upstream.connect_timeout_ms", self.connect_timeout_ms)?;
        positive("upstream.response_timeout_ms", self.response_timeout_ms)?;
        positive("upstream.body_idle_timeout_ms", self.body_idle_timeout_ms)?;
        positive("upstream.max_connections", self.max_connections as u64)?;
        positive("upstream.queue_timeout_ms", self.queue_timeout_ms)?;
        if !(1024..=1024 * 1024).contains(&self.max_response_header_bytes) {
            return Err(ConfigError::invalid(
                "upstream.max_response_header_bytes",
                "must be between 1 KiB and 1 MiB",
            ));
        }
        positive("upstream.pool_idle_timeout_ms", self.pool_idle_timeout_ms)
    }

    /// Connection slots per worker for `workers` workers (at least one each).
    pub(crate) fn slots_per_worker(&self, workers: usize) -> usize {
        self.max_connections.div_ceil(workers.max(1)).max(1)
    }

    /// Queue places per worker.
    pub(crate) fn queue_per_worker(&self) -> usize {
        self.max_queue
    }
}
