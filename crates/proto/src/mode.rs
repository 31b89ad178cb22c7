//! Where a waiter keeps the diners' notes: the choice bistro is about.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a waiter keeps the diners' notes, which decides how a balancer treats its
/// sessions: sticky with no way out for stateful waiters, free to move for stateless
/// ones, sticky with a fallback to the named backup for replicated ones. Its wire name
/// is in every answer's `Bistro-Mode` header and in `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// In the waiter's own memory: only that waiter can serve its sessions, and its
    /// death loses them.
    Stateful,
    /// In a central store: any waiter can serve any session.
    Stateless,
    /// In the waiter's memory with a copy on a peer (named in `Bistro-Backup`): the peer
    /// carries on when the waiter dies.
    Replicated,
}

impl Mode {
    /// Every mode, in the order bistro shows them.
    pub const ALL: [Mode; 3] = [Mode::Stateful, Mode::Stateless, Mode::Replicated];

    /// The wire name: `stateful`, `stateless` or `replicated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Stateful => "stateful",
            Mode::Stateless => "stateless",
            Mode::Replicated => "replicated",
        }
    }

    /// Parses a wire name (ASCII case-insensitive), e.g. a `Bistro-Mode` header's bytes.
    pub fn from_wire(s: &[u8]) -> Option<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| s.eq_ignore_ascii_case(m.as_str().as_bytes()))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode name that is not `stateful`, `stateless` or `replicated`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown mode {0:?}; use stateful (notes in the waiter's memory), stateless (notes in a central store) or replicated (in memory, with a copy on a peer)"
)]
pub struct ParseModeError(pub String);

impl FromStr for Mode {
    type Err = ParseModeError;

    fn from_str(s: &str) -> Result<Mode, ParseModeError> {
        Mode::from_wire(s.trim().as_bytes()).ok_or_else(|| ParseModeError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_in_every_spelling() {
        for mode in Mode::ALL {
            assert_eq!(mode.as_str().parse::<Mode>().unwrap(), mode);
            assert_eq!(
                Mode::from_wire(mode.as_str().to_uppercase().as_bytes()),
                Some(mode)
            );
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{mode}\""));
            assert_eq!(serde_json::from_str::<Mode>(&json).unwrap(), mode);
        }
        assert_eq!(" Stateless ".parse::<Mode>().unwrap(), Mode::Stateless);
        let err = "sticky".parse::<Mode>().unwrap_err();
        assert!(err.to_string().contains("stateful"), "{err}");
        assert_eq!(Mode::from_wire(b"state"), None);
    }
}
