//! Sessions handed from one waiter to another (drain with handoff, see
//! [`drain`](crate::drain)): where each now lives, so the diner's next request goes
//! straight there and its affinity cookie is issued again naming the new waiter.
//!
//! Keyed by the waiter's session id (the `bistro_session` cookie or `Bistro-Session`
//! header), which the diner sends with every request. An entry lives as long as an
//! affinity cookie may (`affinity.max_age_secs`): after that the cookie naming the old
//! waiter is expired anyway. The proxy looks here only while the table is not empty,
//! so a balancer that never drained with handoff pays one atomic load per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// Most entries kept; a full table first forgets expired entries, then refuses new
/// ones (the old waiter still answers `421 session-moved` for them while it runs).
const MAX_ENTRIES: usize = 1_000_000;

#[derive(Debug)]
struct Entry {
    from: Arc<str>,
    to: Arc<str>,
    until_ms: u64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Moves {
    map: Mutex<HashMap<Box<str>, Entry>>,
    len: AtomicUsize,
}

/// Where a handed-off session went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Moved {
    /// The waiter the diner's cookie names.
    pub(crate) from: Arc<str>,
    /// The waiter that holds the session now.
    pub(crate) to: Arc<str>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Single inserts and removes: a panic cannot leave the map half-changed.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Moves {
    /// Whether no session was moved (the proxy's fast path).
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Relaxed) == 0
    }

    /// Records that `session` moved from `from` to `to`, until `until_ms`. `false` when
    /// the table is full.
    pub(crate) fn insert(
        &self,
        session: &str,
        from: &Arc<str>,
        to: &Arc<str>,
        until_ms: u64,
        now_ms: u64,
    ) -> bool {
        let mut map = lock(&self.map);
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, e| e.until_ms > now_ms);
            if map.len() >= MAX_ENTRIES {
                return false;
            }
        }
        map.insert(
            session.into(),
            Entry {
                from: Arc::clone(from),
                to: Arc::clone(to),
                until_ms,
            },
        );
        self.len.store(map.len(), Relaxed);
        true
    }

    /// Where `session` went, if it was moved and the note still holds at `now_ms`.
    pub(crate) fn lookup(&self, session: &str, now_ms: u64) -> Option<Moved> {
        lock(&self.map)
            .get(session)
            .filter(|e| e.until_ms > now_ms)
            .map(|e| Moved {
                from: Arc::clone(&e.from),
                to: Arc::clone(&e.to),
            })
    }

    /// How many sessions are noted.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_is_found_until_it_expires() {
        let moves = Moves::default();
        assert!(moves.is_empty());
        let (w2, w3): (Arc<str>, Arc<str>) = (Arc::from("w2"), Arc::from("w3"));
        assert!(moves.insert("s1", &w2, &w3, 1_000, 0));
        assert!(!moves.is_empty());
        assert_eq!(moves.len(), 1);
        let m = moves.lookup("s1", 999).unwrap();
        assert_eq!((&*m.from, &*m.to), ("w2", "w3"));
        assert!(moves.lookup("s1", 1_000).is_none());
        assert!(moves.lookup("s2", 0).is_none());
    }
}
