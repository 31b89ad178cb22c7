//! `[tcp]`: the layer-4 proxy in front of the waiters' line-protocol ports.
//!
//! ```toml
//! [tcp]
//! strategy = "consistent_hash"    # round_robin | least_connections | consistent_hash
//! connect_timeout_ms = 2000
//! max_connections = 10000
//!
//! [[tcp.backends]]
//! id = "w1"                       # same id as an HTTP backend: its health is reused
//! address = "127.0.0.1:7101"
//! ```
//!
//! The TCP proxy only runs when the caller gives it a listener (`--tcp-listen`). Health
//! comes from `[health]`: a backend whose id is also an HTTP backend follows that
//! backend's health (its `/readyz` checks and passive ejection), since it is the same
//! waiter; any other TCP backend is checked with a plain connect every
//! `health.interval_ms`, with the same `rise`/`fall`.

use super::positive;
use crate::config::StrategyKind;
use crate::error::ConfigError;
use crate::spec::BackendSpec;
use serde::Deserialize;
use std::collections::HashSet;

/// How the TCP proxy picks a backend for a new connection. A connection then stays on
/// that backend for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpStrategy {
    /// Each backend in turn.
    RoundRobin,
    /// The backend with the fewest open tunnels (per unit of weight).
    #[default]
    LeastConnections,
    /// A hash ring over the client's IP: the same client keeps reaching the same
    /// backend, which is what a stateful waiter needs across reconnects (L4 affinity).
    ConsistentHash,
}

impl TcpStrategy {
    /// The balancing strategy that implements it.
    pub(crate) fn kind(self) -> StrategyKind {
        match self {
            TcpStrategy::RoundRobin => StrategyKind::RoundRobin,
            TcpStrategy::LeastConnections => StrategyKind::LeastConnections,
            TcpStrategy::ConsistentHash => StrategyKind::ConsistentHash,
        }
    }
}

/// `[tcp]`: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// The waiters' TCP ports.
    pub backends: Vec<BackendSpec>,
    /// How a new connection's backend is chosen.
    pub strategy: TcpStrategy,
    /// How long connecting to a backend may take before the next one is tried.
    pub connect_timeout_ms: u64,
    /// Most tunnels open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// A tunnel in which neither side sent a byte for this long is closed (HAProxy's
    /// `timeout tunnel`).
    pub idle_timeout_ms: u64,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            backends: Vec::new(),
            strategy: TcpStrategy::default(),
            connect_timeout_ms: 2_000,
            max_connections: 10_000,
            idle_timeout_ms: 300_000,
        }
    }
}

impl TcpConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        for b in &self.backends {
            b.validate()?;
            if !ids.insert(b.id.as_str()) {
                return Err(ConfigError::invalid(
                    "tcp.backends",
                    format!("backend id {:?} is used twice", b.id),
                ));
            }
        }
        positive("tcp.connect_timeout_ms", self.connect_timeout_ms)?;
        positive("tcp.idle_timeout_ms", self.idle_timeout_ms)?;
        positive("tcp.max_connections", self.max_connections as u64)
    }
}

#[cfg(test)]
mod tests {
    use crate::BalancerConfig;
    use crate::config::TcpStrategy;

    #[test]
    fn tcp_section_parses_and_validates() {
        let c = BalancerConfig::from_toml(
            r#"
            [tcp]
            strategy = "consistent_hash"
            [[tcp.backends]]
            id = "w1"
            address = "127.0.0.1:7101"
            "#,
        )
        .unwrap();
        assert_eq!(c.tcp.strategy, TcpStrategy::ConsistentHash);
        assert_eq!(c.tcp.backends[0].id, "w1");
        assert_eq!(c.tcp.connect_timeout_ms, 2_000);
        let twice = "[[tcp.backends]]\nid = \"w1\"\naddress = \"127.0.0.1:1\"\n[[tcp.backends]]\nid = \"w1\"\naddress = \"127.0.0.1:2\"";
        let err = BalancerConfig::from_toml(twice).unwrap_err().to_string();
        assert!(err.contains("tcp.backends"), "{err}");
        let err = BalancerConfig::from_toml("[tcp]\nmax_connections = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tcp.max_connections"), "{err}");
    }
}
