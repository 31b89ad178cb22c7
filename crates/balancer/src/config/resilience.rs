//! What protects the balancer and the waiters: health checks, retries, limits and
//! timeouts on both sides.

use super::positive;
use crate::error::ConfigError;
use serde::Deserialize;
use std::str::FromStr;

/// `[health]`: active checks and passive ejection.
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
    /// Time between two checks of one backend.
    pub interval_ms: u64,
    /// A check slower than this failed.
    pub timeout_ms: u64,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
    /// Consecutive connect failures or 5xx answers that eject a backend (0 disables).
    pub eject_after: u32,
    /// First ejection length; doubles with each ejection in a row.
    pub ejection_base_ms: u64,
    /// Longest ejection.
    pub ejection_max_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            active: true,
            path: "/readyz".into(),
            info_path: "/v1/waiter".into(),
            interval_ms: 2_000,
            timeout_ms: 1_000,
            rise: 2,
            fall: 3,
            eject_after: 5,
            ejection_base_ms: 1_000,
            ejection_max_ms: 30_000,
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

/// `[client]`: limits protecting the balancer from its clients.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Time allowed to receive a complete request head, counted from the moment the
    /// connection starts waiting for one: it stops slowloris clients and is also the
    /// keep-alive idle timeout (hyper's header timer covers both).
    pub header_read_timeout_ms: u64,
    /// Largest request head (request line and headers); larger gets 431 and a close.
    pub max_header_bytes: usize,
    /// Largest request body; larger gets 413.
    pub max_body_bytes: u64,
    /// Most client connections open at once; beyond it the balancer stops accepting
    /// until one closes (the kernel's backlog holds the rest).
    pub max_connections: usize,
    /// Whether client connections are kept alive between requests.
    pub keep_alive: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            header_read_timeout_ms: 10_000,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            max_connections: 10_000,
            keep_alive: true,
        }
    }
}

impl ClientConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("client.header_read_timeout_ms", self.header_read_timeout_ms)?;
        if !(1024..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(ConfigError::invalid(
                "client.max_header_bytes",
                "must be 1 KiB to 1 MiB",
            ));
        }
        positive("client.max_connections", self.max_connections as u64)
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
    /// Idle connections kept per backend and worker; more are closed.
    pub pool_max_idle: usize,
    /// Idle connections unused for this long are closed. Keep it below the backends'
    /// own idle timeout, so the balancer rarely reuses a connection the backend is closing.
    pub pool_idle_timeout_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_ms: 2_000,
            response_timeout_ms: 30_000,
            pool_max_idle: 64,
            pool_idle_timeout_ms: 15_000,
        }
    }
}

impl UpstreamConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("upstream.connect_timeout_ms", self.connect_timeout_ms)?;
        positive("upstream.response_timeout_ms", self.response_timeout_ms)?;
        positive("upstream.pool_idle_timeout_ms", self.pool_idle_timeout_ms)
    }
}
