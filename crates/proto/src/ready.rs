//! The readiness line: how a bistro process tells its supervisor it accepts connections.
//!
//! Started with `--ready-json`, `bistro waiter` and `bistro balancer` print exactly one
//! line on **stdout** once every listener is bound and serving:
//!
//! ```text
//! {"event":"ready","role":"waiter","id":"w1","pid":4242,"http":"127.0.0.1:40123","tcp":"127.0.0.1:40124"}
//! {"event":"ready","role":"balancer","pid":4243,"http":"127.0.0.1:8080","scheme":"https","admin":"127.0.0.1:8081"}
//! ```
//!
//! Logs go to stderr, so the line is the only thing on stdout at that point and a
//! supervisor reads it without parsing logs (which change with `--log-format` and
//! wording). Fields a process does not have are left out.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The flag that asks for the readiness line.
pub const FLAG: &str = "--ready-json";

/// The readiness event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "ready")]
pub struct Ready {
    /// `waiter` or `balancer`.
    pub role: String,
    /// The waiter's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The process id.
    pub pid: u32,
    /// The HTTP listener (the proxy's, for a balancer).
    pub http: SocketAddr,
    /// `http` or `https`, when not `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The line-protocol (TCP) listener, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<SocketAddr>,
    /// The admin API's listener, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<SocketAddr>,
}

impl Ready {
    /// The line to print (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a Ready serializes")
    }

    /// The event in `line`, if it is a readiness line.
    pub fn parse(line: &str) -> Option<Ready> {
        let line = line.trim();
        if !line.starts_with('{') {
            return None;
        }
        serde_json::from_str(line).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_round_trips_and_other_lines_are_not_ready() {
        let ready = Ready {
            role: "waiter".into(),
            id: Some("w1".into()),
            pid: 42,
            http: "127.0.0.1:7001".parse().unwrap(),
            scheme: None,
            tcp: Some("127.0.0.1:7002".parse().unwrap()),
            admin: None,
        };
        let line = ready.to_line();
        assert_eq!(
            line,
            r#"{"event":"ready","role":"waiter","id":"w1","pid":42,"http":"127.0.0.1:7001","tcp":"127.0.0.1:7002"}"#
        );
        assert_eq!(Ready::parse(&line), Some(ready));
        assert_eq!(Ready::parse("listening on http://127.0.0.1:1"), None);
        assert_eq!(Ready::parse(r#"{"event":"stopped","pid":1}"#), None);
        let v6 = Ready::parse(
            r#"{"event":"ready","role":"balancer","pid":7,"http":"[::1]:8080","scheme":"https","admin":"127.0.0.1:8081"}"#,
        )
        .unwrap();
        assert_eq!(v6.scheme.as_deref(), Some("https"));
        assert!(v6.http.is_ipv6());
    }
}
