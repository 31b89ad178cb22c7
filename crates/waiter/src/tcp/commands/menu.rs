//! `MENU`: the dishes, one data line each: `dish <id> <price> <name> (allergens: ...)`.

use crate::Waiter;
use crate::tcp::codec::{ParseError, Words};
use crate::tcp::reply::{Reply, money};

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu;

impl Menu {
    /// Takes no arguments.
    ///
    /// # Errors
    /// `bad-argument` for any argument.
    pub fn parse(words: Words<'_>) -> Result<Menu, ParseError> {
        words.finish()?;
        Ok(Menu)
    }

    pub(crate) fn apply(self, waiter: &Waiter) -> Reply {
        let dishes = waiter.config().menu.dishes();
        let mut reply = Reply::ok(format!(
            "{} dishes; ADD <dish> [qty] orders one",
            dishes.len()
        ));
        for dish in dishes {
            let allergens: Vec<&str> = dish.allergens.iter().map(|a| a.as_str()).collect();
            let allergens = if allergens.is_empty() {
                "none".to_string()
            } else {
                allergens.join(", ")
            };
            reply = reply.line(format!(
                "dish {} {} {} (allergens: {allergens})",
                dish.id,
                money(u64::from(dish.price_cents)),
                dish.name
            ));
        }
        reply
    }
}
