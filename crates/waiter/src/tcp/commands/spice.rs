//! `SPICE <0-5>`: set the spice level.

use super::change;
use crate::Waiter;
use crate::tcp::codec::{ParseError, Words};
use crate::tcp::conversation::Conversation;
use crate::tcp::reply::Reply;
use bistro_orders::Change;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spice {
    /// The level; the range is the domain's rule (`bad-spice`), as over HTTP.
    pub level: u32,
}

impl Spice {
    /// Parses `<level>`.
    ///
    /// # Errors
    /// `bad-argument` for a missing or non-numeric level, or extra words.
    pub fn parse(mut words: Words<'_>) -> Result<Spice, ParseError> {
        let word = words.word("a level from 0 to 5")?;
        let level = words.number(word, "the spice level")?;
        words.finish()?;
        Ok(Spice { level })
    }

    pub(crate) async fn apply(self, waiter: &Waiter, conversation: &mut Conversation) -> Reply {
        let level = self.level;
        change(waiter, conversation, Change::SetSpice(level), |_| {
            format!("spice {level}")
        })
        .await
    }
}
