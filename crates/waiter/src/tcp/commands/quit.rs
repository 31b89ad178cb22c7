//! `QUIT`: say goodbye; the server closes the connection after `OK bye`. In stateful
//! mode an unplaced draft goes with it, and the reply says so.

use crate::tcp::codec::{ParseError, Words};
use crate::tcp::conversation::Conversation;
use crate::tcp::reply::Reply;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quit;

impl Quit {
    /// Takes no arguments.
    ///
    /// # Errors
    /// `bad-argument` for any argument.
    pub fn parse(words: Words<'_>) -> Result<Quit, ParseError> {
        words.finish()?;
        Ok(Quit)
    }

    pub(crate) fn apply(self, conversation: &Conversation) -> Reply {
        let text = if conversation.has_draft() {
            "bye; the unplaced draft on this connection is discarded"
        } else {
            "bye"
        };
        Reply::ok(text).and_close()
    }
}
