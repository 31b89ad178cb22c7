//! A diner's own record of what the servers acknowledged.
//!
//! Verification needs a ground truth that does not come from the servers under test: each
//! diner keeps, per order, the last order JSON the servers acknowledged (a 2xx answer to a
//! write, or a read), and per session the ids of the orders it created there. At the end
//! the lab compares what the servers hold with this ledger ([`crate::verify`]).
//!
//! A write that failed *ambiguously* (a timeout, a broken connection, a 5xx) may or may
//! not have been applied, so the diner also notes the contents such a write would have
//! produced ([`OrderRecord::unconfirmed`]). Finding those contents in the store is not a
//! divergence: the diner simply never learnt that its write had landed.

use bistro_proto::views::OrderView;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The status-independent part of an order: what the diner asked for. This is what must
/// survive; the status and version move on by themselves (the kitchen cooks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contents {
    /// `(dish, quantity)`, sorted by dish.
    pub items: Vec<(String, u32)>,
    /// Spice level.
    pub spice: u8,
    /// Declared allergies, sorted.
    pub allergies: Vec<String>,
    /// Free-text requests.
    pub requests: String,
}

impl Contents {
    /// Builds contents, normalising the order of items and allergies.
    pub fn new(
        mut items: Vec<(String, u32)>,
        spice: u8,
        mut allergies: Vec<String>,
        requests: String,
    ) -> Contents {
        items.sort();
        allergies.sort();
        allergies.dedup();
        Contents {
            items,
            spice,
            allergies,
            requests,
        }
    }

    /// A compact description, e.g. `fries x2, salmon x1; spice 3; allergies [peanuts]`.
    pub fn describe(&self) -> String {
        let items: Vec<String> = self
            .items
            .iter()
            .map(|(d, q)| format!("{d} x{q}"))
            .collect();
        format!(
            "{}; spice {}; allergies [{}]; requests {:?}",
            if items.is_empty() {
                "no items".to_string()
            } else {
                items.join(", ")
            },
            self.spice,
            self.allergies.join(", "),
            self.requests
        )
    }
}

/// An order as a server showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSnapshot {
    /// The order id.
    pub id: String,
    /// The status (`open`, `placed`, ...).
    pub status: String,
    /// The version (also the ETag).
    pub version: u64,
    /// Items and notes.
    pub contents: Contents,
}

impl OrderSnapshot {
    /// Reads an order as the waiter API shows it ([`bistro_proto::views::OrderView`]);
    /// `None` when it is not one.
    pub fn from_json(v: &Value) -> Option<OrderSnapshot> {
        let view: OrderView = serde_json::from_value(v.clone()).ok()?;
        let items = view
            .items
            .into_iter()
            .map(|i| (i.dish, i.quantity))
            .collect();
        let allergies = view
            .notes
            .allergies
            .iter()
            .map(|a| a.as_str().to_string())
            .collect();
        Some(OrderSnapshot {
            id: view.id,
            status: view.status.as_str().to_string(),
            version: view.version,
            contents: Contents::new(items, view.notes.spice, allergies, view.notes.requests),
        })
    }
}

/// What a diner knows about one of its orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// The order id.
    pub id: String,
    /// Index of the diner's session it belongs to.
    pub session: usize,
    /// The waiter that created it (`Bistro-Waiter`), when the answer named one.
    pub waiter: Option<String>,
    /// The last state the servers acknowledged.
    pub acked: OrderSnapshot,
    /// Contents that an ambiguously failed write after `acked` would have produced.
    pub unconfirmed: Vec<Contents>,
}

/// One of a diner's sessions (a fresh session starts when the old one is lost).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The `bistro_session` cookie, once the servers set one.
    pub cookie: Option<String>,
    /// The balancer's affinity cookie (`bistro_affinity`), last seen with a 2xx answer.
    #[serde(default)]
    pub affinity: Option<String>,
    /// Ids of the orders the servers acknowledged creating in this session.
    pub created: Vec<String>,
    /// Create requests in this session that failed ambiguously: each may have created an
    /// order the diner never heard of.
    pub ambiguous_creates: u32,
}

/// Everything one diner knows, in a form verification can check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The diner's index.
    pub diner: usize,
    /// Sessions, oldest first.
    pub sessions: Vec<SessionRecord>,
    /// Orders, oldest first.
    pub orders: Vec<OrderRecord>,
}

impl Ledger {
    /// An empty ledger for diner `diner`.
    pub fn new(diner: usize) -> Ledger {
        Ledger {
            diner,
            sessions: Vec::new(),
            orders: Vec::new(),
        }
    }

    /// Opens a new session and returns its index.
    pub fn new_session(&mut self) -> usize {
        self.sessions.push(SessionRecord::default());
        self.sessions.len() - 1
    }

    /// Records that the servers created `order` in `session`.
    pub fn created(
        &mut self,
        session: usize,
        order: OrderSnapshot,
        waiter: Option<String>,
        cookie: Option<String>,
    ) {
        if let Some(s) = self.sessions.get_mut(session) {
            s.created.push(order.id.clone());
            if cookie.is_some() {
                s.cookie = cookie;
            }
        }
        self.orders.push(OrderRecord {
            id: order.id.clone(),
            session,
            waiter,
            acked: order,
            unconfirmed: Vec::new(),
        });
    }

    /// Remembers the cookies `session` had when the servers last answered 2xx, so the
    /// read-back can present them again even if a later error cleared them.
    pub fn cookies(&mut self, session: usize, cookie: Option<String>, affinity: Option<String>) {
        if let Some(s) = self.sessions.get_mut(session) {
            if cookie.is_some() {
                s.cookie = cookie;
            }
            if affinity.is_some() {
                s.affinity = affinity;
            }
        }
    }

    /// Records an acknowledged state of an order (a write's answer or a read). A snapshot
    /// older than the one already recorded is ignored: versions only grow.
    pub fn acknowledged(&mut self, order: OrderSnapshot) {
        if let Some(rec) = self.orders.iter_mut().rev().find(|r| r.id == order.id)
            && order.version >= rec.acked.version
        {
            rec.acked = order;
            rec.unconfirmed.clear();
        }
    }

    /// Records that a write which would leave `contents` on order `id` failed ambiguously.
    pub fn unconfirmed(&mut self, id: &str, contents: Contents) {
        if let Some(rec) = self.orders.iter_mut().rev().find(|r| r.id == id)
            && !rec.unconfirmed.contains(&contents)
        {
            rec.unconfirmed.push(contents);
        }
    }

    /// Records an ambiguously failed create in `session`.
    pub fn ambiguous_create(&mut self, session: usize) {
        if let Some(s) = self.sessions.get_mut(session) {
            s.ambiguous_creates += 1;
        }
    }

    /// The last acknowledged snapshot of order `id`.
    pub fn order(&self, id: &str) -> Option<&OrderSnapshot> {
        self.orders
            .iter()
            .rev()
            .find(|r| r.id == id)
            .map(|r| &r.acked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snap(id: &str, version: u64, spice: u8) -> OrderSnapshot {
        OrderSnapshot {
            id: id.into(),
            status: "open".into(),
            version,
            contents: Contents::new(vec![("fries".into(), 1)], spice, vec![], String::new()),
        }
    }

    #[test]
    fn reads_the_waiter_order_json_and_normalises_it() {
        let v = json!({
            "id": "o1", "status": "placed", "version": 3, "total_cents": 900,
            "created_at_ms": 1, "updated_at_ms": 2, "placed_at_ms": 2,
            "items": [{"dish": "salmon", "quantity": 1, "unit_price_cents": 1950, "name": "Grilled salmon"},
                      {"dish": "fries", "quantity": 2, "unit_price_cents": 450}],
            "notes": {"spice": 2, "allergies": ["peanuts", "dairy"], "requests": "no onions"},
            "progress": {"status": "placed", "eta_seconds": 2}
        });
        let s = OrderSnapshot::from_json(&v).unwrap();
        assert_eq!(
            (s.id.as_str(), s.status.as_str(), s.version),
            ("o1", "placed", 3)
        );
        assert_eq!(
            s.contents.items,
            vec![("fries".to_string(), 2), ("salmon".to_string(), 1)]
        );
        assert_eq!(
            s.contents.allergies,
            vec!["dairy".to_string(), "peanuts".to_string()]
        );
        assert!(OrderSnapshot::from_json(&json!({"id": "o1"})).is_none());
    }

    #[test]
    fn acknowledgements_only_move_forward_and_clear_unconfirmed_writes() {
        let mut l = Ledger::new(0);
        let s = l.new_session();
        l.created(
            s,
            snap("o1", 1, 0),
            Some("w1".into()),
            Some("cookie".into()),
        );
        l.unconfirmed("o1", snap("o1", 2, 3).contents);
        l.unconfirmed("o1", snap("o1", 2, 3).contents);
        assert_eq!(
            l.orders[0].unconfirmed.len(),
            1,
            "the same contents are noted once"
        );
        l.acknowledged(snap("o1", 3, 4));
        assert_eq!(l.order("o1").unwrap().version, 3);
        assert!(l.orders[0].unconfirmed.is_empty());
        l.acknowledged(snap("o1", 2, 1));
        assert_eq!(
            l.order("o1").unwrap().contents.spice,
            4,
            "an older read does not roll back the record"
        );
        assert_eq!(l.sessions[0].created, vec!["o1".to_string()]);
        assert_eq!(l.sessions[0].cookie.as_deref(), Some("cookie"));
        l.cookies(0, None, Some("pinned-w2".into()));
        l.cookies(0, None, None);
        assert_eq!(
            l.sessions[0].cookie.as_deref(),
            Some("cookie"),
            "an absent cookie keeps the last one"
        );
        assert_eq!(l.sessions[0].affinity.as_deref(), Some("pinned-w2"));
    }
}
