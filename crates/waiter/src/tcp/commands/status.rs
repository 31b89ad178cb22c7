//! `STATUS`: where the current order is, as `OK status <status> [eta <n>s]`.

use crate::Waiter;
use crate::tcp::codec::{ParseError, Words};
use crate::tcp::conversation::Conversation;
use crate::tcp::reply::Reply;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status;

impl Status {
    /// Takes no arguments.
    ///
    /// # Errors
    /// `bad-argument` for any argument.
    pub fn parse(words: Words<'_>) -> Result<Status, ParseError> {
        words.finish()?;
        Ok(Status)
    }

    pub(crate) async fn apply(self, waiter: &Waiter, conversation: &mut Conversation) -> Reply {
        match conversation.order(waiter).await {
            Ok(order) => match order.eta_seconds(waiter.clock().now()) {
                Some(eta) => Reply::ok(format!("status {} eta {eta}s", order.status)),
                None => Reply::ok(format!("status {}", order.status)),
            },
            Err(refusal) => Reply::err(refusal),
        }
    }
}
