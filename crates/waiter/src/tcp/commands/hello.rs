//! `HELLO [session-id]`: start a session, or resume one.
//!
//! Without an argument a new session is created in the store. With a session id, the
//! store is asked for that session's orders: the most recent unfinished one (else the
//! most recent) becomes current, and every order is listed. A stateful waiter knows only the sessions it
//! took itself; a stateless one knows every session in the central store, whichever
//! waiter (or protocol) started it.

use super::summary;
use crate::Waiter;
use crate::service::ServiceError;
use crate::tcp::codec::{ParseError, Words};
use crate::tcp::conversation::Conversation;
use crate::tcp::reply::{Refusal, Reply};
use bistro_store::SessionId;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The session to resume: `None` starts a new one. `Some(None)` is an argument that
    /// cannot be a session id, answered like an unknown session (as over HTTP).
    pub session: Option<Option<SessionId>>,
}

impl Hello {
    /// Parses `[session-id]`.
    ///
    /// # Errors
    /// `bad-argument` for more than one argument.
    pub fn parse(mut words: Words<'_>) -> Result<Hello, ParseError> {
        let session = words.next_word().map(SessionId::parse);
        words.finish()?;
        Ok(Hello { session })
    }

    pub(crate) async fn apply(self, waiter: &Waiter, conversation: &mut Conversation) -> Reply {
        Reply::from_result(self.run(waiter, conversation).await)
    }

    async fn run(self, waiter: &Waiter, conversation: &mut Conversation) -> Result<Reply, Refusal> {
        let session = match self.session {
            None => {
                let session = conversation.restart(waiter).await?;
                return Ok(Reply::ok(format!("session {session} started")));
            }
            Some(None) => return Err(Refusal::service(waiter, &ServiceError::UnknownSession)),
            Some(Some(session)) => session,
        };
        // Replicated mode: this waiter may hold only a copy (its primary is gone).
        waiter
            .orders()
            .locate(session)
            .await
            .map_err(|e| Refusal::service(waiter, &e))?;
        let orders = conversation.resume(waiter, session).await?;
        let current = conversation
            .stored_id()
            .and_then(|id| orders.iter().find(|o| o.id == id));
        let mut reply = Reply::ok(match current {
            Some(o) => format!(
                "session {session} resumed; current order {} {}",
                o.id, o.status
            ),
            None => format!("session {session} resumed; no order yet, NEW starts one"),
        });
        for order in &orders {
            reply = reply.line(summary(order));
        }
        Ok(reply)
    }
}
