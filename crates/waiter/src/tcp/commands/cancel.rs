//! `CANCEL`: cancel the order before the kitchen starts on it. A stateful draft is simply dropped: it was never stored.

use super::change;
use crate::Waiter;
use crate::tcp::codec::{ParseError, Words};
use crate::tcp::conversation::Conversation;
use crate::tcp::reply::Reply;
use bistro_orders::Change;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancel;

impl Cancel {
    /// Takes no arguments.
    ///
    /// # Errors
    /// `bad-argument` for any argument.
    pub fn parse(words: Words<'_>) -> Result<Cancel, ParseError> {
        words.finish()?;
        Ok(Cancel)
    }

    pub(crate) async fn apply(self, waiter: &Waiter, conversation: &mut Conversation) -> Reply {
        change(waiter, conversation, Change::Cancel, |_| {
            "cancelled".to_string()
        })
        .await
    }
}
