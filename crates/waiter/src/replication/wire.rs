//! What waiters of one replicated group say to each other.
//!
//! One request, `POST /v1/peer/batch` with a [`Batch`] of [`Item`]s, answered by one
//! [`Replies`] with a [`Reply`] per item, in order. Every item names the sender's
//! [`Epoch`] for the session, which is what fences a primary that has been replaced: a
//! waiter refuses an item whose epoch is below the newest it has seen for that session.
//! JSON, because it is what every other bistro interface speaks and a batch is small; a
//! session travels whole (a [`SessionSnapshot`]), so the receiver never needs earlier
//! messages to make sense of a later one.

use bistro_store::{SessionId, SessionSnapshot};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Who may lead a session: a counter raised by every takeover, and the waiter that
/// raised it (which breaks ties between two waiters claiming at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    /// Raised by one on every takeover; a new session starts at 1.
    pub n: u64,
    /// The waiter leading the session at this epoch.
    pub by: String,
}

impl Epoch {
    /// The epoch of a session this waiter started.
    pub fn first(by: &str) -> Epoch {
        Epoch {
            n: 1,
            by: by.to_string(),
        }
    }

    /// The epoch after this one, led by `by`.
    pub fn next(&self, by: &str) -> Epoch {
        Epoch {
            n: self.n + 1,
            by: by.to_string(),
        }
    }
}

impl PartialOrd for Epoch {
    fn partial_cmp(&self, other: &Epoch) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Epoch {
    fn cmp(&self, other: &Epoch) -> Ordering {
        (self.n, &self.by).cmp(&(other.n, &other.by))
    }
}

/// One request between peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    /// The sending waiter's id.
    pub from: String,
    /// The sender's incarnation (random per process start).
    pub incarnation: u64,
    /// What the sender asks, answered in order.
    pub items: Vec<Item>,
}

/// One thing a peer asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Item {
    /// "Keep this copy of a session I lead": sent by a primary to its backup after
    /// every change, before the change is acknowledged.
    Copy {
        /// The primary's epoch for the session.
        epoch: Epoch,
        /// The whole session.
        snapshot: SessionSnapshot,
    },
    /// "The session is still in use; keep your copy until then": a primary's reads
    /// extend a session without changing it.
    Extend {
        /// Which session.
        session: SessionId,
        /// The primary's epoch for it.
        epoch: Epoch,
        /// The session's new expiry.
        expires_at: u64,
    },
    /// "Forget your copy: the session has another backup now" (best effort).
    Drop {
        /// Which session.
        session: SessionId,
        /// The primary's epoch for it.
        epoch: Epoch,
    },
    /// "I take this session over at `epoch`: refuse anything older from now on, and
    /// tell me what you hold of it."
    Claim {
        /// Which session.
        session: SessionId,
        /// The epoch the claimant will lead at.
        epoch: Epoch,
    },
}

/// The answer to one [`Item`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    /// Done (a copy kept, an expiry moved, a copy dropped).
    Ok,
    /// Refused: the session has a newer epoch here; the sender no longer leads it.
    Fenced {
        /// The newest epoch seen for the session.
        epoch: Epoch,
    },
    /// A claim accepted: what this waiter held of the session (as primary or copy).
    Held {
        /// The epoch what it held was written under.
        epoch: Epoch,
        /// The session as held.
        snapshot: SessionSnapshot,
    },
    /// A claim accepted; this waiter holds nothing of the session.
    NotHeld,
}

/// The answer to one [`Batch`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replies {
    /// The answering waiter's incarnation: a new one means it restarted and lost every
    /// copy it held.
    pub incarnation: u64,
    /// One reply per item, in order.
    pub replies: Vec<Reply>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_order_by_counter_then_waiter() {
        let a1 = Epoch::first("w1");
        let b2 = a1.next("w2");
        let a2 = a1.next("w1");
        assert!(b2 > a1);
        assert!(b2 > a2, "a tie goes to the larger id");
        assert!(a2.next("w0") > b2);
    }

    #[test]
    fn items_travel_as_tagged_json() {
        let item = Item::Drop {
            session: SessionId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap(),
            epoch: Epoch::first("w1"),
        };
        let json = serde_json::to_string(&item).unwrap();
        assert_eq!(
            json,
            r#"{"op":"drop","session":"AAAAAAAAAAAAAAAAAAAAAA","epoch":{"n":1,"by":"w1"}}"#
        );
        let back: Item = serde_json::from_str(&json).unwrap();
        assert!(matches!(back, Item::Drop { epoch, .. } if epoch == Epoch::first("w1")));
    }
}
