//! `HELP`: every command, one data line each, and what this waiter's mode means for a
//! connection's order.

use super::USAGE;
use crate::Waiter;
use crate::config::Mode;
use crate::tcp::codec::{MAX_LINE, ParseError, Words};
use crate::tcp::reply::Reply;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Help;

impl Help {
    /// Takes no arguments.
    ///
    /// # Errors
    /// `bad-argument` for any argument.
    pub fn parse(words: Words<'_>) -> Result<Help, ParseError> {
        words.finish()?;
        Ok(Help)
    }

    pub(crate) fn apply(self, waiter: &Waiter) -> Reply {
        let config = waiter.config();
        let mut reply = Reply::ok(format!("{} commands", USAGE.len()));
        for (_, usage, what) in USAGE {
            reply = reply.line(format!("command {usage:<20} {what}"));
        }
        let mode = match config.mode {
            Mode::Stateful => {
                "note stateful waiter: the order you are taking (before PLACE) lives only on this connection; if it drops before PLACE, the order is gone. Placed orders are kept in this waiter's memory under your session"
            }
            Mode::Stateless => {
                "note stateless waiter: every command is saved in the central store at once; HELLO <session-id> resumes your open order on any waiter, over TCP or HTTP"
            }
            Mode::Replicated => {
                "note replicated waiter: every command is saved in this waiter's memory and copied to a colleague before the reply; if this waiter dies, HELLO <session-id> on that colleague resumes your order"
            }
        };
        reply
            .line(mode)
            .line(format!(
                "note one command per line, at most {MAX_LINE} bytes; replies end with a line starting OK or ERR <kind>"
            ))
    }
}
