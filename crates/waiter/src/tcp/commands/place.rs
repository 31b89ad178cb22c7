//! `PLACE`: send the order to the kitchen.
//!
//! In stateful mode this is the moment the draft leaves the connection: the placed
//! order is stored in the waiter's memory under the session, where HTTP (with the same
//! session id) and the kitchen find it.

use super::summary;
use crate::Waiter;
use crate::tcp::codec::{ParseError, Words};
use crate::tcp::conversation::Conversation;
use crate::tcp::reply::Reply;
use bistro_orders::Change;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place;

impl Place {
    /// Takes no arguments.
    ///
    /// # Errors
    /// `bad-argument` for any argument.
    pub fn parse(words: Words<'_>) -> Result<Place, ParseError> {
        words.finish()?;
        Ok(Place)
    }

    pub(crate) async fn apply(self, waiter: &Waiter, conversation: &mut Conversation) -> Reply {
        let place = Change::Place(waiter.config().kitchen);
        match conversation.change(waiter, &[place]).await {
            Ok(order) => {
                let eta = order.eta_seconds(waiter.clock().now()).unwrap_or(0);
                let mut reply = Reply::ok(format!(
                    "placed; ready in about {eta}s, STATUS shows progress; {}",
                    summary(&order)
                ));
                if let Some(session) = conversation.session {
                    reply = reply.line(format!("session {session}"));
                }
                reply
            }
            Err(refusal) => Reply::err(refusal),
        }
    }
}
