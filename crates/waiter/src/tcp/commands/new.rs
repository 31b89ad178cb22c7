//! `NEW`: start an order, and a session first if the connection has none.
//!
//! Stateful: the order is a draft on this connection until `PLACE`. Stateless: it is
//! in the central store from this moment.

use crate::Waiter;
use crate::config::Mode;
use crate::tcp::codec::{ParseError, Words};
use crate::tcp::conversation::Conversation;
use crate::tcp::reply::{Refusal, Reply};

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct New;

impl New {
    /// Takes no arguments.
    ///
    /// # Errors
    /// `bad-argument` for any argument.
    pub fn parse(words: Words<'_>) -> Result<New, ParseError> {
        words.finish()?;
        Ok(New)
    }

    pub(crate) async fn apply(self, waiter: &Waiter, conversation: &mut Conversation) -> Reply {
        Reply::from_result(run(waiter, conversation).await)
    }
}

async fn run(waiter: &Waiter, conversation: &mut Conversation) -> Result<Reply, Refusal> {
    let had_session = conversation.session.is_some();
    let order = conversation.new_order(waiter).await?;
    let where_kept = match waiter.config().mode {
        Mode::Stateful => "a draft on this connection until PLACE (lost if the connection drops)",
        Mode::Stateless => "stored in the central store; every change is saved",
        Mode::Replicated => "stored here and copied to a colleague; every change is saved",
    };
    let mut reply = Reply::ok(format!("order {} open; {where_kept}", order.id));
    if !had_session && let Some(session) = conversation.session {
        reply = reply.line(format!("session {session} started"));
    }
    Ok(reply)
}
