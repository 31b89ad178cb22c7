//! `ADD <dish> [qty]`: add portions of a dish (merged into its line if already there).

use super::change;
use crate::Waiter;
use crate::tcp::codec::{ParseError, Words};
use crate::tcp::conversation::Conversation;
use crate::tcp::reply::Reply;
use bistro_orders::Change;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    /// Dish id from the menu.
    pub dish: String,
    /// Portions; 1 when not given. Range checks are the domain's (`bad-quantity`).
    pub quantity: u32,
}

impl Add {
    /// Parses `<dish> [qty]`.
    ///
    /// # Errors
    /// `bad-argument` for a missing dish, a quantity that is not a whole number, or
    /// extra words.
    pub fn parse(mut words: Words<'_>) -> Result<Add, ParseError> {
        let dish = words.word("a dish id")?.to_string();
        let quantity = match words.next_word() {
            Some(q) => words.number(q, "the quantity")?,
            None => 1,
        };
        words.finish()?;
        Ok(Add { dish, quantity })
    }

    pub(crate) async fn apply(self, waiter: &Waiter, conversation: &mut Conversation) -> Reply {
        let (dish, quantity) = (self.dish.clone(), self.quantity);
        let c = Change::AddItem {
            dish: self.dish,
            quantity: self.quantity,
        };
        change(waiter, conversation, c, |_| {
            format!("added {quantity} x {dish}")
        })
        .await
    }
}
