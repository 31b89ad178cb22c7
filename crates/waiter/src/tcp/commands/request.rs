//! `REQUEST <text>`: set the free-text request (the rest of the line, as sent). Without
//! text it clears the request. Length and control characters are the domain's rules.

use super::change;
use crate::Waiter;
use crate::tcp::codec::{ParseError, Words};
use crate::tcp::conversation::Conversation;
use crate::tcp::reply::Reply;
use bistro_orders::Change;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The text; empty clears the request.
    pub text: String,
}

impl Request {
    /// Takes the rest of the line.
    ///
    /// # Errors
    /// None today; the signature matches the other commands.
    pub fn parse(mut words: Words<'_>) -> Result<Request, ParseError> {
        Ok(Request {
            text: words.rest_of_line().to_string(),
        })
    }

    pub(crate) async fn apply(self, waiter: &Waiter, conversation: &mut Conversation) -> Reply {
        let cleared = self.text.is_empty();
        change(waiter, conversation, Change::SetRequests(self.text), |_| {
            if cleared {
                "request cleared"
            } else {
                "request noted"
            }
            .to_string()
        })
        .await
    }
}
