//! Who goes where: the balancing strategy, routes, and the affinity cookie.

use super::{MIN_KEY_LEN, positive};
use crate::error::ConfigError;
use crate::strategy::CustomStrategy;
use serde::{Deserialize, Deserializer};
use std::str::FromStr;

/// The selection algorithm for requests without (valid) affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// Each backend in turn; weights ignored.
    RoundRobin,
    /// nginx's smooth weighted round robin: shares follow weights, evenly interleaved.
    WeightedRoundRobin,
    /// Fewest in-flight requests per unit of weight.
    LeastConnections,
    /// Two random backends, the less loaded wins (seeded, so runs repeat).
    PowerOfTwoChoices,
    /// A hash ring with virtual nodes over `hash_key`: the same key lands on the same
    /// backend, and adding or removing one of N backends moves about 1/N of the keys.
    ConsistentHash,
}

/// What the consistent hash is keyed on. In TOML: `"client_ip"`, `"header:<name>"` or
/// `"cookie:<name>"`. A request without the header or cookie falls back to its client IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address (the TCP peer, not `X-Forwarded-For`).
    ClientIp,
    /// A request header's value.
    Header(String),
    /// A cookie's value.
    Cookie(String),
}

impl FromStr for HashKey {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<HashKey, ConfigError> {
        let bad = |why: &str| ConfigError::invalid("balancing.hash_key", format!("{s:?}: {why}"));
        match s.split_once(':') {
            None if s == "client_ip" => Ok(HashKey::ClientIp),
            Some(("header", name)) if http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                Ok(HashKey::Header(name.to_ascii_lowercase()))
            }
            Some(("cookie", name)) if !name.is_empty() && !name.contains([';', '=', ' ']) => {
                Ok(HashKey::Cookie(name.to_string()))
            }
            _ => Err(bad("use client_ip, header:<name> or cookie:<name>")),
        }
    }
}

impl<'de> Deserialize<'de> for HashKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HashKey, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `[balancing]`: how new requests are spread.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalancingConfig {
    /// The strategy; default least connections.
    pub strategy: StrategyKind,
    /// The consistent hash's key; default the client IP.
    pub hash_key: HashKey,
    /// Ring points per unit of weight for the consistent hash (1 to 1000, default 256;
    /// with 4 backends 256 points keep every share within about ±6% of even).
    pub virtual_nodes: u32,
    /// Seed for power of two choices; the same seed gives the same choices.
    pub seed: u64,
    /// A strategy written outside the crate, used instead of `strategy` by the HTTP
    /// proxy (the TCP proxy keeps `tcp.strategy`). Not part of the TOML document: set it
    /// in code. `/plan` cannot predict a custom strategy and says so.
    #[serde(skip)]
    pub custom: Option<CustomStrategy>,
}

impl Default for BalancingConfig {
    fn default() -> Self {
        BalancingConfig {
            strategy: StrategyKind::LeastConnections,
            hash_key: HashKey::ClientIp,
            virtual_nodes: 256,
            seed: 0x0b15_7a0b,
            custom: None,
        }
    }
}

impl BalancingConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1000).contains(&self.virtual_nodes) {
            return Err(ConfigError::invalid(
                "balancing.virtual_nodes",
                "must be 1 to 1000",
            ));
        }
        Ok(())
    }
}

/// Whether a route pins diners to one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stickiness {
    /// Sticky when the chosen backend is stateful (or its mode is not known yet).
    #[default]
    Auto,
    /// Always issue and honour affinity cookies.
    On,
    /// Never: affinity cookies are ignored and not issued.
    Off,
}

/// What to do when the backend a diner is pinned to is down, ejected or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LostPolicy {
    /// `strict` for stateful backends, `redispatch` for stateless ones.
    #[default]
    Auto,
    /// Answer 503 `session-lost` and clear the affinity cookie: the notes are gone and
    /// the diner must know.
    Strict,
    /// Send the diner to another backend, re-issue the cookie and say so in
    /// `Bistro-Rerouted: <from>-><to>`.
    Redispatch,
}

/// `[[routes]]`: stickiness for paths under `prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, matched on segment boundaries (`/v1` matches `/v1/orders`, not `/v10`).
    pub prefix: String,
    /// Whether the route is sticky.
    #[serde(default)]
    pub sticky: Stickiness,
    /// What to do when the pinned backend is gone.
    #[serde(default)]
    pub on_session_lost: LostPolicy,
}

/// `[affinity]`: the sticky cookie.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AffinityConfig {
    /// The cookie's name.
    pub cookie: String,
    /// The HMAC-SHA256 key (at least 16 bytes). Balancer replicas must share it to
    /// agree on tokens; when absent a random key is generated at start (with a warning).
    pub key: Option<String>,
    /// Tokens older than this (seconds since issue) are treated as absent. Tokens past
    /// half of it are re-issued on the next response, so an active diner keeps its pin.
    pub max_age_secs: u64,
    /// `Max-Age` attribute for the cookie; absent means a session cookie.
    pub cookie_max_age_secs: Option<u64>,
    /// Adds the `Secure` attribute (when a TLS terminator sits in front).
    pub secure: bool,
    /// How long a stateful diner's backend may be unavailable while still alive (slow,
    /// timing out, ejected, failing its checks) before its pinned sessions count as
    /// lost. Until then a pinned diner gets `503 backend-unavailable` with
    /// `Retry-After` and keeps its cookie. A backend that refuses connections (its
    /// process is gone) or was removed loses its sessions at once.
    pub lost_after_down_ms: u64,
}

impl Default for AffinityConfig {
    fn default() -> Self {
        AffinityConfig {
            cookie: bistro_proto::cookies::AFFINITY.into(),
            key: None,
            max_age_secs: 24 * 60 * 60,
            cookie_max_age_secs: None,
            secure: false,
            lost_after_down_ms: 10_000,
        }
    }
}

impl AffinityConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = !self.cookie.is_empty()
            && self
                .cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !name_ok {
            return Err(ConfigError::invalid(
                "affinity.cookie",
                "use letters, digits, '_', '-' or '.'",
            ));
        }
        if let Some(key) = &self.key
            && key.len() < MIN_KEY_LEN
        {
            return Err(ConfigError::invalid(
                "affinity.key",
                format!(
                    "is {} bytes; use at least {MIN_KEY_LEN} random bytes",
                    key.len()
                ),
            ));
        }
        positive("affinity.max_age_secs", self.max_age_secs)
    }
}
