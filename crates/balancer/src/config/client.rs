//! `[client]`: what protects the balancer from its clients (diners): connection caps,
//! per-IP abuse limits, timeouts on slow or idle clients, buffer sizes, and which
//! peers may speak for a client in `X-Forwarded-For`.
//!
//! | setting | default | HAProxy | nginx |
//! |---|---|---|---|
//! | `header_read_timeout_ms` | 10 s | `timeout http-request` | `client_header_timeout` |
//! | `keep_alive_idle_ms` | 60 s | `timeout http-keep-alive` | `keepalive_timeout` |
//! | `body_timeout_ms` | 30 s | `timeout http-request` (with `option http-buffer-request`) | — |
//! | `body_min_bytes_per_sec` after `body_rate_grace_ms` | 1024 B/s after 5 s | — | `client_body_timeout` (between reads) |
//! | `send_timeout_ms` | 30 s | `timeout client` | `send_timeout` |
//! | `max_connections` | 20 000 | `maxconn` | `worker_connections` |
//! | `max_connections_per_ip` | 1 000 | `tcp-request connection reject if { sc_conn_cur gt N }` | `limit_conn` |
//! | `session_rate_per_ip` / `session_burst_per_ip` | 20/s, burst 100 | `http-request deny if { sc_http_req_rate gt N }` | `limit_req` |
//! | `read_buffer_bytes` | 64 KiB | `tune.bufsize` | `client_header_buffer_size` / `large_client_header_buffers` |

use super::positive;
use crate::error::ConfigError;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// `[client]`: limits protecting the balancer from its clients.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Time allowed for a complete request head, counted from its first byte (or from
    /// the connection's start for the first request). A slowloris client is cut off
    /// with `408` when it runs out; a head that never started is the keep-alive idle
    /// timeout's business.
    pub header_read_timeout_ms: u64,
    /// How long a connection may sit idle between two requests (or before its first)
    /// before the balancer closes it.
    pub keep_alive_idle_ms: u64,
    /// Time allowed for a whole request body once the head is read; slower gets `408`.
    pub body_timeout_ms: u64,
    /// Slowest average body rate accepted once `body_rate_grace_ms` has passed: a body
    /// that trickles in below it gets `408` long before `body_timeout_ms` (0 disables).
    pub body_min_bytes_per_sec: u64,
    /// How long a body may take before `body_min_bytes_per_sec` is enforced.
    pub body_rate_grace_ms: u64,
    /// How long a write to a client may make no progress (a client that does not read
    /// its response) before the connection is closed.
    pub send_timeout_ms: u64,
    /// Largest request head (request line and headers); larger gets 431 and a close.
    pub max_header_bytes: usize,
    /// Largest request body; larger gets 413.
    pub max_body_bytes: u64,
    /// Largest read buffer per client connection (at least 8 KiB and at least
    /// `max_header_bytes`); bounds the memory a connection can hold.
    pub read_buffer_bytes: usize,
    /// Most client connections open at once. Beyond it a new connection is answered
    /// `503 balancer-busy` with `Retry-After` and closed at once, rather than left
    /// waiting unanswered in the kernel's backlog. The balancer also lowers it to what
    /// its file-descriptor limit can hold (see [`crate::raise_fd_limit`]).
    pub max_connections: usize,
    /// Most connections open at once from one client IP (the socket's peer; trusted
    /// proxies are exempt); beyond it `429 too-many-connections`. 0 disables.
    pub max_connections_per_ip: usize,
    /// Requests that create a session (no session cookie or `Bistro-Session` header, and
    /// not `GET`/`HEAD`/`OPTIONS`) allowed per second and client IP, on average;
    /// beyond it `429 too-many-new-sessions` with `Retry-After`. 0 disables.
    pub session_rate_per_ip: u32,
    /// How many session-creating requests one client IP may send in a burst.
    pub session_burst_per_ip: u32,
    /// Peers allowed to speak for a client: from these (addresses or CIDR blocks) the
    /// client IP is taken from `X-Forwarded-For` and the forwarding headers are
    /// appended to; from anyone else they are overwritten.
    pub trusted_proxies: Vec<Cidr>,
    /// Whether client connections are kept alive between requests.
    pub keep_alive: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            header_read_timeout_ms: 10_000,
            keep_alive_idle_ms: 60_000,
            body_timeout_ms: 30_000,
            body_min_bytes_per_sec: 1024,
            body_rate_grace_ms: 5_000,
            send_timeout_ms: 30_000,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            read_buffer_bytes: 64 * 1024,
            max_connections: 20_000,
            max_connections_per_ip: 1_000,
            session_rate_per_ip: 20,
            session_burst_per_ip: 100,
            trusted_proxies: Vec::new(),
            keep_alive: true,
        }
    }
}

/// hyper's smallest read buffer.
const MIN_READ_BUFFER: usize = 8 * 1024;

impl ClientConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("client.header_read_timeout_ms", self.header_read_timeout_ms)?;
        positive("client.keep_alive_idle_ms", self.keep_alive_idle_ms)?;
        positive("client.body_timeout_ms", self.body_timeout_ms)?;
        positive("client.send_timeout_ms", self.send_timeout_ms)?;
        if !(1024..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(ConfigError::invalid(
                "client.max_header_bytes",
                "must be 1 KiB to 1 MiB",
            ));
        }
        if self.read_buffer_bytes < MIN_READ_BUFFER.max(self.max_header_bytes)
            || self.read_buffer_bytes > 16 * 1024 * 1024
        {
            return Err(ConfigError::invalid(
                "client.read_buffer_bytes",
                format!(
                    "must be at least 8 KiB and at least max_header_bytes ({}), and at most 16 MiB",
                    self.max_header_bytes
                ),
            ));
        }
        positive("client.max_connections", self.max_connections as u64)?;
        if self.session_rate_per_ip > 0 && self.session_burst_per_ip == 0 {
            return Err(ConfigError::invalid(
                "client.session_burst_per_ip",
                "must be at least 1 when session_rate_per_ip is set",
            ));
        }
        Ok(())
    }
}

/// An address block such as `10.0.0.0/8`, `::1/128`, or one address (`192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the block. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Cidr, ConfigError> {
        let bad = |why: &str| {
            ConfigError::invalid(
                "client.trusted_proxies",
                format!("{s:?} {why}; use an address or a block such as 10.0.0.0/8"),
            )
        };
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| bad("is not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad("has an invalid prefix length"))?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(!net.contains(ip("::1")));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        let mapped: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(mapped.contains(ip("::ffff:127.0.0.1")), "IPv4-mapped IPv6");
    }

    #[test]
    fn bad_blocks_are_refused_with_the_field() {
        for bad in ["10.0.0.0/33", "nope", "::1/129", "10.0.0.0/x"] {
            let err = bad.parse::<Cidr>().unwrap_err().to_string();
            assert!(err.contains("client.trusted_proxies"), "{bad}: {err}");
        }
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn read_buffer_must_hold_a_whole_head() {
        let c = ClientConfig {
            max_header_bytes: 32 * 1024,
            read_buffer_bytes: 16 * 1024,
            ..ClientConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("read_buffer_bytes")
        );
        assert!(ClientConfig::default().validate().is_ok());
    }
}
