//! `SHOW`: the current order, one data line per fact.
//!
//! ```text
//! order 9d1Qe0uJvYc3kQ2a open version 4 (draft: on this connection only, until PLACE)
//! item fries 2 x 4.50 = 9.00 (French fries)
//! spice 2
//! allergies peanuts
//! requests no onions
//! total 9.00
//! OK order 9d1Qe0uJvYc3kQ2a open
//! ```

use crate::Waiter;
use crate::tcp::codec::{ParseError, Words};
use crate::tcp::conversation::Conversation;
use crate::tcp::reply::{Refusal, Reply, money};

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Show;

impl Show {
    /// Takes no arguments.
    ///
    /// # Errors
    /// `bad-argument` for any argument.
    pub fn parse(words: Words<'_>) -> Result<Show, ParseError> {
        words.finish()?;
        Ok(Show)
    }

    pub(crate) async fn apply(self, waiter: &Waiter, conversation: &mut Conversation) -> Reply {
        Reply::from_result(run(waiter, conversation).await)
    }
}

async fn run(waiter: &Waiter, conversation: &Conversation) -> Result<Reply, Refusal> {
    let order = conversation.order(waiter).await?;
    let menu = &waiter.config().menu;
    let draft = if conversation.has_draft() {
        " (draft: on this connection only, until PLACE)"
    } else {
        ""
    };
    let mut reply = Reply::ok(format!("order {} {}", order.id, order.status)).line(format!(
        "order {} {} version {}{draft}",
        order.id, order.status, order.version
    ));
    for item in &order.items {
        let name = menu
            .dish(&item.dish)
            .map_or(String::new(), |d| format!(" ({})", d.name));
        reply = reply.line(format!(
            "item {} {} x {} = {}{name}",
            item.dish,
            item.quantity,
            money(u64::from(item.unit_price_cents)),
            money(u64::from(item.unit_price_cents) * u64::from(item.quantity)),
        ));
    }
    let notes = &order.notes;
    let allergies: Vec<&str> = notes.allergies.iter().map(|a| a.as_str()).collect();
    reply = reply
        .line(format!("spice {}", notes.spice))
        .line(if allergies.is_empty() {
            "allergies none".to_string()
        } else {
            format!("allergies {}", allergies.join(", "))
        })
        .line(if notes.requests.is_empty() {
            "requests none".to_string()
        } else {
            format!("requests {}", notes.requests)
        })
        .line(format!("total {}", money(order.total_cents)));
    if let Some(eta) = order.eta_seconds(waiter.clock().now()) {
        reply = reply.line(format!("eta {eta}s"));
    }
    Ok(reply)
}
