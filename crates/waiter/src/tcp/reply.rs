//! What the server sends back: a [`Reply`] of data lines and one status line, and the
//! [`Refusal`] behind every `ERR`.
//!
//! Every reply ends with exactly one line starting `OK` or `ERR <kind> <message>`, so a
//! client reads lines until it sees one of those two words and never has to know how
//! many data lines a command produces. Data lines always start with a lowercase keyword
//! (`dish`, `item`, `order`, ...), so they can never be mistaken for a status line.
//!
//! The `<kind>` of an `ERR` is the same stable name the HTTP API puts in a problem's
//! `type` (`dish-contains-allergen`, `unknown-session`, ...): every failure of the
//! service layer is named by [`ServiceError::kind`], the very function that names the
//! HTTP problems, so the two front ends cannot drift apart. Only what HTTP has no word
//! for gets a protocol kind of its own (`unknown-command`, `bad-argument`, `no-order`,
//! `line-too-long`, ...).

use crate::Waiter;
use crate::config::Mode;
use crate::service::ServiceError;
use crate::tcp::codec::{MAX_LINE, ParseError};
use bistro_orders::OrderError;

/// Why a command was refused: a stable kind and a message saying what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable, URL-safe name of the error (the HTTP problem type's last segment).
    pub kind: &'static str,
    /// One line of text for people.
    pub message: String,
}

impl Refusal {
    /// A refusal of `kind`.
    pub fn new(kind: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
        }
    }

    /// A domain refusal, with the same kind and text as over HTTP.
    pub fn order(err: &OrderError) -> Refusal {
        let message = match err {
            OrderError::UnknownDish { dish } => {
                format!("there is no dish {dish:?} on the menu; MENU lists the dish ids")
            }
            other => other.to_string(),
        };
        Refusal::new(err.kind(), message)
    }

    /// A command that did not parse.
    pub fn parse(err: &ParseError) -> Refusal {
        Refusal::new(err.kind(), err.to_string())
    }

    /// A failure of the service layer, named exactly as the HTTP API names it.
    pub fn service(waiter: &Waiter, err: &ServiceError) -> Refusal {
        let config = waiter.config();
        let message = match err {
            ServiceError::Order(e) => return Refusal::order(e),
            ServiceError::UnknownSession => match config.mode {
                Mode::Stateful => format!(
                    "this waiter ({}) holds no notes for your session. In stateful mode only the waiter that took the order holds its notes; that waiter may have restarted, or you reached another one. HELLO starts a new session",
                    config.id
                ),
                Mode::Stateless => {
                    "your session expired or never existed; HELLO starts a new session".into()
                }
                Mode::Replicated => format!(
                    "this waiter ({}) holds neither your session nor a copy of it: it expired, or both the waiter that led it and the colleague keeping its copy are gone. HELLO starts a new session",
                    config.id
                ),
            },
            ServiceError::SessionMoved { to } => format!(
                "another waiter ({}) took your session over while this one was unreachable; nothing was changed here. Connect to it and HELLO <session-id>",
                to.as_deref().unwrap_or("of the group")
            ),
            ServiceError::OrderNotFound => "your session no longer holds this order; HELLO <session-id> shows the orders it holds, NEW starts one".into(),
            ServiceError::SessionLimit { .. } => "this waiter holds as many sessions as it may; retry later, or ask another waiter".into(),
            ServiceError::SessionRate { retry_after, .. } => format!(
                "this waiter is starting new sessions as fast as it may; retry in {retry_after} s"
            ),
            ServiceError::OrderLimit { limit } => format!(
                "your session holds {limit} orders, the most one session may hold; HELLO starts a new session"
            ),
            ServiceError::Conflict { attempts, .. } => format!(
                "the order changed under this command {attempts} times in a row; nothing was changed. SHOW it and retry"
            ),
            ServiceError::Store { error, .. } if error.is_outage() => {
                let outcome = if err.may_have_applied() {
                    "it may or may not have been saved: SHOW before repeating a change"
                } else {
                    "nothing was changed"
                };
                format!(
                    "the waiter could not reach its order store ({error}); {outcome}. Retry in a moment"
                )
            }
            ServiceError::VersionMismatch { .. } | ServiceError::IdempotencyLimit { .. } => {
                err.to_string()
            }
            _ => "the waiter failed because of an internal error; it has been logged. Retry later".into(),
        };
        Refusal::new(err.kind(), message)
    }

    /// The command needs an order and the connection has none.
    pub fn no_order() -> Refusal {
        Refusal::new(
            "no-order",
            "there is no current order on this connection; NEW starts one, HELLO <session-id> resumes a session",
        )
    }

    /// The command would silently throw a stateful draft away.
    pub fn draft_pending() -> Refusal {
        Refusal::new(
            "draft-pending",
            "this connection holds an order that is not placed yet; PLACE or CANCEL it first (in stateful mode a draft lives only on this connection)",
        )
    }

    /// A line over [`MAX_LINE`] bytes (the connection is closed after it).
    pub fn line_too_long() -> Refusal {
        Refusal::new(
            "line-too-long",
            format!("a line may hold at most {MAX_LINE} bytes; closing the connection"),
        )
    }
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    lines: Vec<String>,
    outcome: Result<String, Refusal>,
    close: bool,
}

impl Reply {
    /// `OK <text>` (or just `OK` when `text` is empty).
    pub fn ok(text: impl Into<String>) -> Reply {
        Reply {
            lines: Vec::new(),
            outcome: Ok(text.into()),
            close: false,
        }
    }

    /// `ERR <kind> <message>`.
    pub fn err(refusal: Refusal) -> Reply {
        Reply {
            lines: Vec::new(),
            outcome: Err(refusal),
            close: false,
        }
    }

    /// `OK` or `ERR` from a result.
    pub fn from_result(result: Result<Reply, Refusal>) -> Reply {
        result.unwrap_or_else(Reply::err)
    }

    /// Adds a data line, shown before the status line.
    pub fn line(mut self, line: impl Into<String>) -> Reply {
        self.lines.push(line.into());
        self
    }

    /// Adds data lines in front of the ones already there.
    pub fn prepend(mut self, lines: Vec<String>) -> Reply {
        let mut all = lines;
        all.append(&mut self.lines);
        self.lines = all;
        self
    }

    /// Closes the connection after sending this reply.
    pub fn and_close(mut self) -> Reply {
        self.close = true;
        self
    }

    /// Whether the connection closes after this reply.
    pub fn closes(&self) -> bool {
        self.close
    }

    /// `ok`, or the error kind: the `result` label of `bistro_tcp_commands_total`.
    pub fn result_label(&self) -> &'static str {
        match &self.outcome {
            Ok(_) => "ok",
            Err(r) => r.kind,
        }
    }

    /// The data lines.
    pub fn data(&self) -> &[String] {
        &self.lines
    }

    /// The status line, without its terminator.
    pub fn status_line(&self) -> String {
        match &self.outcome {
            Ok(text) if text.is_empty() => "OK".to_string(),
            Ok(text) => format!("OK {text}"),
            Err(r) => format!("ERR {} {}", r.kind, r.message),
        }
    }

    /// The reply as bytes on the wire: every line sanitized to one line, `\r\n` ends.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for line in &self.lines {
            // Data lines never start with a status word; keep it so even for odd input.
            if ["OK", "ERR", "BYE"].iter().any(|w| line.starts_with(w)) {
                out.extend_from_slice(b"  ");
            }
            push_line(out, line);
        }
        push_line(out, &self.status_line());
    }
}

/// Appends `line` with control characters (a `\n` in a dish name, say) shown as spaces,
/// so one logical line is always one line on the wire.
pub fn push_line(out: &mut Vec<u8>, line: &str) {
    for c in line.chars() {
        let c = if c.is_control() { ' ' } else { c };
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Cents as `12.50`.
pub fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(reply: &Reply) -> String {
        let mut out = Vec::new();
        reply.encode(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn data_lines_come_first_and_the_status_line_last() {
        let r = Reply::ok("2 dishes").line("dish a").line("dish b");
        assert_eq!(wire(&r), "dish a\r\ndish b\r\nOK 2 dishes\r\n");
        assert_eq!(wire(&Reply::ok("")), "OK\r\n");
        let e = Reply::err(Refusal::new("unknown-dish", "no such dish"));
        assert_eq!(wire(&e), "ERR unknown-dish no such dish\r\n");
        assert_eq!(e.result_label(), "unknown-dish");
    }

    #[test]
    fn nothing_can_forge_a_status_line() {
        let r = Reply::ok("fine")
            .line("OK forged")
            .line("requests a\r\nERR x");
        assert_eq!(wire(&r), "  OK forged\r\nrequests a  ERR x\r\nOK fine\r\n");
    }

    #[test]
    fn domain_errors_keep_their_kind() {
        let r = Refusal::order(&OrderError::UnknownDish { dish: "x".into() });
        assert_eq!(r.kind, "unknown-dish");
        assert!(r.message.contains("MENU"), "{}", r.message);
        let r = Refusal::order(&OrderError::EmptyOrder);
        assert_eq!(r.kind, "empty-order");
    }

    #[test]
    fn money_has_two_decimals() {
        assert_eq!(money(0), "0.00");
        assert_eq!(money(1205), "12.05");
    }
}
