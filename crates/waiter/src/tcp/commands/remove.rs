//! `REMOVE <dish>`: remove a dish's line from the order.

use super::change;
use crate::Waiter;
use crate::tcp::codec::{ParseError, Words};
use crate::tcp::conversation::Conversation;
use crate::tcp::reply::Reply;
use bistro_orders::Change;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remove {
    /// Dish id on the order.
    pub dish: String,
}

impl Remove {
    /// Parses `<dish>`.
    ///
    /// # Errors
    /// `bad-argument` for a missing dish or extra words.
    pub fn parse(mut words: Words<'_>) -> Result<Remove, ParseError> {
        let dish = words.word("a dish id")?.to_string();
        words.finish()?;
        Ok(Remove { dish })
    }

    pub(crate) async fn apply(self, waiter: &Waiter, conversation: &mut Conversation) -> Reply {
        let dish = self.dish.clone();
        let c = Change::RemoveItem { dish: self.dish };
        change(waiter, conversation, c, |_| format!("removed {dish}")).await
    }
}
