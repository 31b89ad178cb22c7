//! What the operator says about one backend: [`BackendSpec`], its [`Mode`], and the
//! `--backend id=host:port[,weight=N][,mode=M]` flag.
//!
//! A backend is named by an `id` (`w1`) chosen by the operator. The id, never the
//! address, is what affinity tokens carry: a waiter that restarts on another port keeps
//! its diners, and a token reveals nothing about the network behind the balancer.

use crate::error::ConfigError;
use serde::{Deserialize, Deserializer};
use std::net::{SocketAddr, ToSocketAddrs};

/// Largest accepted weight; weights are relative, so this is plenty and keeps the
/// precomputed weighted sequences small.
pub const MAX_WEIGHT: u32 = 1000;

/// Longest accepted backend id, in bytes (ids travel in every affinity cookie).
pub const MAX_ID_LEN: usize = 64;

pub use bistro_proto::Mode;

/// One backend as configured.
///
/// ```toml
/// [[backends]]
/// id = "w1"
/// address = "127.0.0.1:7001"
/// weight = 2            # optional, default 1
/// mode = "stateful"     # optional; otherwise learned from the waiter
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// The name affinity tokens carry: letters, digits, `-` and `_`, at most 64 bytes.
    pub id: String,
    /// Where the backend listens. Host names are resolved once, when the spec is read.
    #[serde(deserialize_with = "deserialize_addr")]
    pub address: SocketAddr,
    /// Relative share of new sessions (1 to 1000), for the weighted strategies.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Overrides the mode the balancer would otherwise learn from the waiter
    /// (`GET /v1/waiter` and the `Bistro-Mode` response header).
    #[serde(default)]
    pub mode: Option<Mode>,
}

fn default_weight() -> u32 {
    1
}

impl BackendSpec {
    /// A spec with weight 1 and no mode override.
    pub fn new(id: impl Into<String>, address: SocketAddr) -> BackendSpec {
        BackendSpec {
            id: id.into(),
            address,
            weight: 1,
            mode: None,
        }
    }

    /// Checks the id and weight.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_id(&self.id)?;
        validate_weight(self.weight)
    }
}

/// Checks a backend id: 1 to 64 bytes of `[A-Za-z0-9_-]`.
pub(crate) fn validate_id(id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            "backend id",
            format!("{id:?} must be 1 to {MAX_ID_LEN} letters, digits, '-' or '_'"),
        ))
    }
}

/// Checks a weight: 1 to [`MAX_WEIGHT`].
pub(crate) fn validate_weight(weight: u32) -> Result<(), ConfigError> {
    if (1..=MAX_WEIGHT).contains(&weight) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            "weight",
            format!("{weight} is outside 1..={MAX_WEIGHT}"),
        ))
    }
}

/// Resolves `host:port` (an IP literal or a name) to its first address.
///
/// # Errors
/// [`ConfigError::Invalid`] when it does not parse or resolve.
pub fn resolve_address(s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| ConfigError::invalid("address", format!("{s:?} does not resolve: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| ConfigError::invalid("address", format!("{s:?} resolves to no address")))
}

fn deserialize_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    resolve_address(&s).map_err(serde::de::Error::custom)
}

/// Parses a `--backend` flag: `w1=127.0.0.1:7001[,weight=2][,mode=stateful]`.
///
/// # Errors
/// [`ConfigError::BackendFlag`] saying which part is wrong.
pub fn parse_backend_flag(s: &str) -> Result<BackendSpec, ConfigError> {
    let fail = |reason: String| ConfigError::BackendFlag {
        flag: s.to_string(),
        reason,
    };
    let (id, rest) = s
        .split_once('=')
        .ok_or_else(|| fail("missing '=' after the id".into()))?;
    let mut parts = rest.split(',');
    let address = parts.next().unwrap_or_default().trim();
    if address.is_empty() {
        return Err(fail("missing address".into()));
    }
    let address = resolve_address(address).map_err(|e| fail(e.to_string()))?;
    let mut spec = BackendSpec::new(id.trim(), address);
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| fail(format!("option {part:?} is not key=value")))?;
        match key.trim() {
            "weight" => {
                spec.weight = value
                    .trim()
                    .parse()
                    .map_err(|_| fail(format!("weight {value:?} is not a whole number")))?;
            }
            "mode" => {
                spec.mode = Some(
                    value
                        .parse()
                        .map_err(|e: bistro_proto::ParseModeError| fail(e.to_string()))?,
                )
            }
            other => {
                return Err(fail(format!(
                    "unknown option {other:?} (known: weight, mode)"
                )));
            }
        }
    }
    spec.validate().map_err(|e| fail(e.to_string()))?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_with_only_id_and_address() {
        let spec = parse_backend_flag("w1=127.0.0.1:7001").unwrap();
        assert_eq!(
            spec,
            BackendSpec::new("w1", "127.0.0.1:7001".parse().unwrap())
        );
    }

    #[test]
    fn flag_with_weight_and_mode() {
        let spec = parse_backend_flag("w2=127.0.0.1:7002,weight=3,mode=stateless").unwrap();
        assert_eq!(spec.weight, 3);
        assert_eq!(spec.mode, Some(Mode::Stateless));
    }

    #[test]
    fn flag_errors_say_what_is_wrong() {
        for (flag, needle) in [
            ("127.0.0.1:7001", "missing '='"),
            ("w1=", "missing address"),
            ("w1=127.0.0.1:7001,weight=x", "not a whole number"),
            ("w1=127.0.0.1:7001,weight=0", "outside"),
            ("w1=127.0.0.1:7001,colour=red", "unknown option"),
            ("w 1=127.0.0.1:7001", "letters, digits"),
            (
                "w1=127.0.0.1:7001,mode=sharded",
                "unknown mode \"sharded\"; use stateful",
            ),
        ] {
            let err = parse_backend_flag(flag).unwrap_err().to_string();
            assert!(err.contains(needle), "{flag}: {err}");
        }
    }

    #[test]
    fn host_names_resolve() {
        let spec = parse_backend_flag("w1=localhost:7001").unwrap();
        assert!(spec.address.ip().is_loopback());
    }

    #[test]
    fn mode_wire_names_ignore_case() {
        assert_eq!(Mode::from_wire(b"Stateful"), Some(Mode::Stateful));
        assert_eq!(Mode::from_wire(b"stateless"), Some(Mode::Stateless));
        assert_eq!(Mode::from_wire(b"REPLICATED"), Some(Mode::Replicated));
        assert_eq!(Mode::from_wire(b"sharded"), None);
    }
}
