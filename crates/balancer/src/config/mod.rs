//! [`BalancerConfig`]: everything the balancer can be told, with safe defaults.
//!
//! The configuration is one TOML document (every field optional) so a lab scenario can
//! carry it verbatim; the CLI layers `--backend` flags ([`parse_backend_flag`]) and the
//! `BISTRO_AFFINITY_KEY` variable ([`BalancerConfig::apply_env`]) on top. Unknown fields
//! are rejected: a typo in a timeout must not silently leave the default in place.
//!
//! Durations are whole milliseconds in fields named `*_ms`, sizes are bytes.
//!
//! ```
//! use bistro_balancer::{BalancerConfig, LostPolicy, StrategyKind};
//! let config = BalancerConfig::from_toml(r#"
//!     [[backends]]
//!     id = "w1"
//!     address = "127.0.0.1:7001"
//!
//!     [balancing]
//!     strategy = "power_of_two_choices"
//!
//!     [[routes]]
//!     prefix = "/v1"
//!     on_session_lost = "redispatch"
//! "#).unwrap();
//! assert_eq!(config.balancing.strategy, StrategyKind::PowerOfTwoChoices);
//! assert_eq!(config.routes[0].on_session_lost, LostPolicy::Redispatch);
//! assert_eq!(config.health.path, "/readyz");
//! ```
//!
//! [`parse_backend_flag`]: crate::parse_backend_flag

mod client;
mod resilience;
mod routing;
mod tcp;
mod tls;

pub use client::{Cidr, ClientConfig};
pub use resilience::{HealthConfig, ResendPolicy, RetryConfig, UpstreamConfig};
pub use routing::{
    AffinityConfig, BalancingConfig, HashKey, LostPolicy, RouteConfig, Stickiness, StrategyKind,
};
pub use tcp::{TcpConfig, TcpStrategy};
pub use tls::{MAX_HSTS_AGE_SECS, TlsConfig};

use crate::clock::Clock;
use crate::error::ConfigError;
use crate::spec::BackendSpec;
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;

/// The environment variable the CLI reads the affinity key from.
pub const AFFINITY_KEY_ENV: &str = "BISTRO_AFFINITY_KEY";

/// Shortest accepted affinity key, in bytes.
pub const MIN_KEY_LEN: usize = 16;

/// The whole balancer configuration. See the module docs for the TOML shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalancerConfig {
    /// Proxy worker threads, each a current-thread runtime with its own listener and
    /// connection pool (thread-per-core). `0` means one per available core.
    pub workers: usize,
    /// How long a shutdown waits for in-flight requests before closing what is left.
    pub shutdown_grace_ms: u64,
    /// The backends known at start (more can be added through the admin API).
    pub backends: Vec<BackendSpec>,
    /// How a backend is chosen for a request without affinity.
    pub balancing: BalancingConfig,
    /// Per-path stickiness rules; the longest matching prefix wins, and paths no route
    /// matches use `sticky = "auto"`, `on_session_lost = "auto"`.
    pub routes: Vec<RouteConfig>,
    /// The affinity cookie and its signing key.
    pub affinity: AffinityConfig,
    /// Active health checks and passive ejection.
    pub health: HealthConfig,
    /// Retries and their budget.
    pub retry: RetryConfig,
    /// Limits on the client (diner) side.
    pub client: ClientConfig,
    /// Timeouts and pooling on the backend (waiter) side.
    pub upstream: UpstreamConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// The layer-4 proxy to the waiters' line-protocol ports (runs only with a TCP
    /// listener).
    pub tcp: TcpConfig,
    /// TLS and HTTP/2 towards diners (off unless a certificate is set).
    pub tls: TlsConfig,
    /// The time the balancer decides by (ejection backoff, affinity token expiry, drain
    /// deadlines): the system clock unless a test or a simulation sets a
    /// [`ManualClock`](crate::ManualClock)'s. Not part of the TOML document.
    #[serde(skip)]
    pub clock: Clock,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            workers: 0,
            shutdown_grace_ms: 30_000,
            backends: Vec::new(),
            balancing: BalancingConfig::default(),
            routes: Vec::new(),
            affinity: AffinityConfig::default(),
            health: HealthConfig::default(),
            retry: RetryConfig::default(),
            client: ClientConfig::default(),
            upstream: UpstreamConfig::default(),
            admin: AdminConfig::default(),
            tcp: TcpConfig::default(),
            tls: TlsConfig::default(),
            clock: Clock::system(),
        }
    }
}

impl BalancerConfig {
    /// Parses and validates a TOML document.
    ///
    /// # Errors
    /// [`ConfigError::Toml`] for syntax, unknown or mistyped fields; the other variants
    /// for values out of range (see [`BalancerConfig::validate`]).
    pub fn from_toml(s: &str) -> Result<Self, ConfigError> {
        let config: BalancerConfig = toml::from_str(s)?;
        config.validate()?;
        Ok(config)
    }

    /// Takes the affinity key from `BISTRO_AFFINITY_KEY` when the configuration has none.
    pub fn apply_env(&mut self) {
        if self.affinity.key.is_none()
            && let Ok(key) = std::env::var(AFFINITY_KEY_ENV)
            && !key.is_empty()
        {
            self.affinity.key = Some(key);
        }
    }

    /// The number of worker threads `run` will start.
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Checks every value the types alone do not constrain.
    ///
    /// # Errors
    /// The first invalid value found, naming its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers > 1024 {
            return Err(ConfigError::invalid(
                "workers",
                "at most 1024 (0 means one per core)",
            ));
        }
        let mut ids = HashSet::new();
        for b in &self.backends {
            b.validate()?;
            if !ids.insert(b.id.as_str()) {
                return Err(ConfigError::DuplicateBackend(b.id.clone()));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            if !r.prefix.starts_with('/') {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].prefix"),
                    "must start with '/'",
                ));
            }
        }
        self.balancing.validate()?;
        self.affinity.validate()?;
        self.health.validate()?;
        self.retry.validate()?;
        self.client.validate()?;
        self.upstream.validate()?;
        self.tcp.validate()?;
        self.tls.validate()?;
        self.admin.control_addr()?;
        Ok(())
    }
}

pub(crate) fn positive(field: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        Err(ConfigError::invalid(field, "must be greater than 0"))
    } else {
        Ok(())
    }
}

/// `[admin]`: the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token required on every admin request when set; mandatory when the admin
    /// listener is not on a loopback address.
    pub token: Option<String>,
    /// `Host` values accepted besides the admin listener's own address (and
    /// `localhost:PORT` when it is on loopback), e.g. `admin.internal:8081` behind a
    /// name. Any other `Host`, or an `Origin` naming another site, is refused with 403:
    /// a web page open in an operator's browser must not reach the admin API (DNS
    /// rebinding, cross-site requests).
    pub allowed_hosts: Vec<String>,
    /// The waiters' group secret (their `--peer-secret`): the balancer sends it to a
    /// draining waiter's handoff endpoints, which require it. Without it a drain counts
    /// sessions through `GET /v1/waiter` and cannot hand them off.
    pub peer_secret: Option<String>,
    /// Where `bistro up`'s control endpoint listens (`http://127.0.0.1:PORT`): the
    /// admin API's `POST /control/{id}/{kill|pause|resume|restart}` is passed on to it,
    /// with the admin token, so the dashboard can put faults on the waiters `bistro up`
    /// started. Unset (the default), those requests answer `404`.
    pub control_url: Option<String>,
}

impl AdminConfig {
    /// The control endpoint's address, from [`AdminConfig::control_url`].
    ///
    /// # Errors
    /// [`ConfigError`] when the URL is not `http://IP:PORT` (no name to resolve, no
    /// TLS: the control endpoint is a loopback listener of the same machine).
    pub fn control_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let Some(url) = &self.control_url else {
            return Ok(None);
        };
        url.strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .and_then(|addr| addr.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "admin.control_url",
                    format!("{url:?} is not http://IP:PORT"),
                )
            })
    }
}

/// Milliseconds as a [`Duration`].
pub(crate) fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_gives_the_defaults() {
        assert_eq!(
            BalancerConfig::from_toml("").unwrap(),
            BalancerConfig::default()
        );
    }

    #[test]
    fn full_document_parses() {
        let c = BalancerConfig::from_toml(
            r#"
            workers = 2
            [[backends]]
            id = "w1"
            address = "127.0.0.1:7001"
            weight = 3
            mode = "stateless"
            [balancing]
            strategy = "consistent_hash"
            hash_key = "header:X-Diner"
            [[routes]]
            prefix = "/v1/orders"
            sticky = "on"
            on_session_lost = "strict"
            [affinity]
            key = "0123456789abcdef"
            cookie_max_age_secs = 3600
            secure = true
            [health]
            rise = 1
            [retry]
            budget_ratio = 0.1
            [client]
            max_connections = 5
            [upstream]
            pool_max_idle = 8
            [admin]
            token = "t"
            "#,
        )
        .unwrap();
        assert_eq!(c.backends[0].weight, 3);
        assert_eq!(c.balancing.hash_key, HashKey::Header("x-diner".into()));
        assert_eq!(c.routes[0].sticky, Stickiness::On);
        assert_eq!(c.affinity.cookie_max_age_secs, Some(3600));
        assert_eq!(c.upstream.pool_max_idle, 8);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = BalancerConfig::from_toml("[health]\nintervall_ms = 5").unwrap_err();
        assert!(err.to_string().contains("intervall_ms"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        for (doc, field) in [
            ("[affinity]\nkey = \"short\"", "affinity.key"),
            ("[health]\nrise = 0", "health.rise"),
            ("[retry]\nbudget_ratio = 2.0", "retry.budget_ratio"),
            ("[[routes]]\nprefix = \"v1\"", "routes[0].prefix"),
            ("[client]\nmax_header_bytes = 10", "client.max_header_bytes"),
            ("[balancing]\nhash_key = \"ip\"", "hash_key"),
            (
                "[admin]\ncontrol_url = \"https://127.0.0.1:9\"",
                "admin.control_url",
            ),
        ] {
            let err = BalancerConfig::from_toml(doc).unwrap_err().to_string();
            assert!(err.contains(field), "{doc}: {err}");
        }
    }

    #[test]
    fn the_control_url_is_a_plain_http_address() {
        let c =
            BalancerConfig::from_toml("[admin]\ncontrol_url = \"http://127.0.0.1:9/\"").unwrap();
        assert_eq!(
            c.admin.control_addr().unwrap(),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(
            BalancerConfig::default().admin.control_addr().unwrap(),
            None
        );
        assert!(
            BalancerConfig::from_toml("[admin]\ncontrol_url = \"http://localhost:9\"").is_err(),
            "no name to resolve"
        );
    }

    #[test]
    fn duplicate_backend_ids_are_rejected() {
        let doc = "[[backends]]\nid = \"w1\"\naddress = \"127.0.0.1:1\"\n[[backends]]\nid = \"w1\"\naddress = \"127.0.0.1:2\"";
        assert!(
            matches!(BalancerConfig::from_toml(doc), Err(ConfigError::DuplicateBackend(id)) if id == "w1")
        );
    }

    #[test]
    fn hash_keys_parse() {
        assert_eq!("client_ip".parse::<HashKey>().unwrap(), HashKey::ClientIp);
        assert_eq!(
            "cookie:diner".parse::<HashKey>().unwrap(),
            HashKey::Cookie("diner".into())
        );
        assert!("cookie:".parse::<HashKey>().is_err());
        assert!("header:bad header".parse::<HashKey>().is_err());
    }
}
