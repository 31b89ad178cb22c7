//! Verification: does what the servers hold match what they acknowledged?
//!
//! At the end of a run every diner reads back each of its orders and lists each of its
//! sessions ([`crate::audit`] does the I/O). This module judges those observations
//! against the diner's [`Ledger`], as pure functions, one verdict per order:
//!
//! - **intact**: the order is there, its items and notes are the last acknowledged ones
//!   (or those of a write that failed ambiguously, see [`crate::ledger`]), and its
//!   version is at least the acknowledged one;
//! - **lost**: the servers no longer know it (404 `unknown-session` or `order-not-found`,
//!   503 `session-lost`): an acknowledged order is gone;
//! - **diverged**: the order is there but differs from what was acknowledged, or its
//!   version went backwards: an acknowledged change was lost or overwritten;
//! - **unchecked**: the read-back itself failed (e.g. a timeout), so the lab cannot say.
//!
//! Per session, orders listed by `GET /v1/orders` that the diner never created are
//! **duplicates** (a retried create that made two orders), except as many as the diner
//! had ambiguous creates, which may have landed unseen.

use crate::ledger::{Ledger, OrderRecord, OrderSnapshot, SessionRecord};
use crate::sample::ErrorKind;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What reading an order back returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// 200 with the order.
    Found(OrderSnapshot),
    /// The servers say it does not exist (or the session holding it is gone).
    Missing(ErrorKind),
    /// The read failed (timeouts, 5xx, unreadable body), after retries.
    Failed(String),
}

/// What listing a session's orders returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// The ids listed.
    Listed(Vec<String>),
    /// The session is gone.
    Missing(ErrorKind),
    /// The list could not be read.
    Failed(String),
    /// The session never got a cookie (its first order failed), so there is nothing the
    /// servers could list.
    NoSession,
}

/// The verdict on one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// As acknowledged.
    Intact,
    /// Gone.
    Lost,
    /// Present but different from what was acknowledged.
    Diverged,
    /// The read-back failed; no verdict.
    Unchecked,
}

/// The verdict on one order, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCheck {
    /// The order id.
    pub order: String,
    /// The diner.
    pub diner: usize,
    /// The diner's session index.
    pub session: usize,
    /// The waiter that created the order, if known.
    pub waiter: Option<String>,
    /// The verdict.
    pub verdict: Verdict,
    /// Why, in words (empty when intact).
    pub detail: String,
}

/// Judges one order.
pub fn check_order(rec: &OrderRecord, obs: &Observation) -> (Verdict, String) {
    match obs {
        Observation::Missing(kind) => (Verdict::Lost, format!("the servers answered {kind}")),
        Observation::Failed(why) => (Verdict::Unchecked, why.clone()),
        Observation::Found(stored) => {
            if stored.id != rec.id {
                return (
                    Verdict::Diverged,
                    format!("asked for order {} and got order {}", rec.id, stored.id),
                );
            }
            if stored.version < rec.acked.version {
                return (
                    Verdict::Diverged,
                    format!(
                        "stored version {} is older than the acknowledged version {}: an acknowledged change was lost",
                        stored.version, rec.acked.version
                    ),
                );
            }
            if stored.contents == rec.acked.contents || rec.unconfirmed.contains(&stored.contents) {
                return (Verdict::Intact, String::new());
            }
            (
                Verdict::Diverged,
                format!(
                    "stored {} but the last acknowledged was {}",
                    stored.contents.describe(),
                    rec.acked.contents.describe()
                ),
            )
        }
    }
}

/// How many listed orders the diner cannot account for in `session`.
pub fn duplicates(session: &SessionRecord, listed: &[String]) -> u32 {
    let created: BTreeSet<&str> = session.created.iter().map(String::as_str).collect();
    let unknown = listed
        .iter()
        .filter(|id| !created.contains(id.as_str()))
        .collect::<BTreeSet<_>>()
        .len() as u32;
    unknown.saturating_sub(session.ambiguous_creates)
}

/// The read-back of one diner: an observation per order (in ledger order) and a listing
/// per session (in ledger order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    /// One per [`Ledger::orders`] entry.
    pub orders: Vec<Observation>,
    /// One per [`Ledger::sessions`] entry.
    pub sessions: Vec<Listing>,
}

/// The verification figures of one architecture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifySummary {
    /// Orders the servers acknowledged creating.
    pub orders: u32,
    /// Verdict counts.
    pub intact: u32,
    /// Orders gone.
    pub lost: u32,
    /// Orders present but different.
    pub diverged: u32,
    /// Orders whose read-back failed.
    pub unchecked: u32,
    /// Orders listed in a session that its diner never created, beyond what its
    /// ambiguously failed creates can explain (a retried create that made two).
    pub duplicated: u32,
    /// Sessions whose list was read.
    pub sessions_listed: u32,
    /// Sessions that were gone at the end.
    pub sessions_gone: u32,
    /// Sessions whose list could not be read.
    pub sessions_unchecked: u32,
    /// Lost orders per waiter that created them.
    pub lost_by_waiter: BTreeMap<String, u32>,
    /// Every order's verdict.
    pub checks: Vec<OrderCheck>,
}

/// Judges every diner's read-back against its ledger.
pub fn summarize(diners: &[(Ledger, ReadBack)]) -> VerifySummary {
    let mut out = VerifySummary::default();
    for (ledger, back) in diners {
        for (i, rec) in ledger.orders.iter().enumerate() {
            let obs = back
                .orders
                .get(i)
                .cloned()
                .unwrap_or_else(|| Observation::Failed("not read back".into()));
            let (verdict, detail) = check_order(rec, &obs);
            out.orders += 1;
            match verdict {
                Verdict::Intact => out.intact += 1,
                Verdict::Lost => {
                    out.lost += 1;
                    let waiter = rec.waiter.clone().unwrap_or_else(|| "unknown".into());
                    *out.lost_by_waiter.entry(waiter).or_default() += 1;
                }
                Verdict::Diverged => out.diverged += 1,
                Verdict::Unchecked => out.unchecked += 1,
            }
            out.checks.push(OrderCheck {
                order: rec.id.clone(),
                diner: ledger.diner,
                session: rec.session,
                waiter: rec.waiter.clone(),
                verdict,
                detail,
            });
        }
        for (i, session) in ledger.sessions.iter().enumerate() {
            match back.sessions.get(i) {
                Some(Listing::Listed(ids)) => {
                    out.sessions_listed += 1;
                    out.duplicated += duplicates(session, ids);
                }
                Some(Listing::Missing(_)) => out.sessions_gone += 1,
                Some(Listing::NoSession) => {}
                Some(Listing::Failed(_)) | None => out.sessions_unchecked += 1,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Contents;

    fn contents(dish: &str, qty: u32, spice: u8) -> Contents {
        Contents::new(
            vec![(dish.into(), qty)],
            spice,
            vec!["peanuts".into()],
            "no onions".into(),
        )
    }

    fn snap(id: &str, version: u64, c: Contents) -> OrderSnapshot {
        OrderSnapshot {
            id: id.into(),
            status: "placed".into(),
            version,
            contents: c,
        }
    }

    fn ledger_with(orders: &[(&str, u64, Contents)]) -> Ledger {
        let mut l = Ledger::new(7);
        let s = l.new_session();
        for (id, v, c) in orders {
            l.created(
                s,
                snap(id, *v, c.clone()),
                Some("w2".into()),
                Some("sess".into()),
            );
        }
        l
    }

    #[test]
    fn an_order_read_back_as_acknowledged_is_intact_even_after_the_kitchen_moved_it() {
        let l = ledger_with(&[("o1", 4, contents("fries", 2, 3))]);
        let mut later = snap("o1", 6, contents("fries", 2, 3));
        later.status = "ready".into();
        assert_eq!(
            check_order(&l.orders[0], &Observation::Found(later)).0,
            Verdict::Intact
        );
    }

    #[test]
    fn a_deliberately_lost_order_is_lost() {
        let l = ledger_with(&[
            ("o1", 2, contents("fries", 1, 0)),
            ("o2", 1, contents("salmon", 1, 1)),
        ]);
        let back = ReadBack {
            orders: vec![
                Observation::Missing(ErrorKind::SessionLost),
                Observation::Found(snap("o2", 1, contents("salmon", 1, 1))),
            ],
            sessions: vec![Listing::Missing(ErrorKind::SessionLost)],
        };
        let s = summarize(&[(l, back)]);
        assert_eq!(
            (s.orders, s.intact, s.lost, s.diverged, s.unchecked),
            (2, 1, 1, 0, 0)
        );
        assert_eq!(s.lost_by_waiter.get("w2"), Some(&1));
        assert_eq!(s.sessions_gone, 1);
        let lost = s
            .checks
            .iter()
            .find(|c| c.verdict == Verdict::Lost)
            .unwrap();
        assert_eq!((lost.order.as_str(), lost.diner), ("o1", 7));
        assert!(lost.detail.contains("session-lost"), "{}", lost.detail);
        for kind in [ErrorKind::UnknownSession, ErrorKind::OrderNotFound] {
            let l = ledger_with(&[("o1", 2, contents("fries", 1, 0))]);
            assert_eq!(
                check_order(&l.orders[0], &Observation::Missing(kind)).0,
                Verdict::Lost
            );
        }
    }

    #[test]
    fn a_deliberately_changed_order_is_diverged() {
        let l = ledger_with(&[("o1", 3, contents("fries", 2, 3))]);
        let (v, detail) = check_order(
            &l.orders[0],
            &Observation::Found(snap("o1", 5, contents("fries", 1, 3))),
        );
        assert_eq!(v, Verdict::Diverged);
        assert!(
            detail.contains("fries x1") && detail.contains("fries x2"),
            "{detail}"
        );
        let (v, detail) = check_order(
            &l.orders[0],
            &Observation::Found(snap("o1", 2, contents("fries", 2, 3))),
        );
        assert_eq!(
            v,
            Verdict::Diverged,
            "a version older than acknowledged means a lost change"
        );
        assert!(detail.contains("older"), "{detail}");
    }

    #[test]
    fn contents_of_an_ambiguously_failed_write_are_not_a_divergence() {
        let mut l = ledger_with(&[("o1", 3, contents("fries", 2, 3))]);
        l.unconfirmed("o1", contents("fries", 2, 5));
        let (v, _) = check_order(
            &l.orders[0],
            &Observation::Found(snap("o1", 4, contents("fries", 2, 5))),
        );
        assert_eq!(v, Verdict::Intact);
        let (v, _) = check_order(
            &l.orders[0],
            &Observation::Found(snap("o1", 4, contents("fries", 2, 4))),
        );
        assert_eq!(v, Verdict::Diverged);
    }

    #[test]
    fn a_failed_read_back_is_unchecked_not_lost() {
        let l = ledger_with(&[("o1", 1, contents("fries", 1, 0))]);
        let (v, detail) = check_order(&l.orders[0], &Observation::Failed("timeout".into()));
        assert_eq!((v, detail.as_str()), (Verdict::Unchecked, "timeout"));
    }

    #[test]
    fn unknown_listed_orders_are_duplicates_unless_an_ambiguous_create_explains_them() {
        let l = ledger_with(&[
            ("o1", 1, contents("fries", 1, 0)),
            ("o2", 1, contents("fries", 1, 0)),
        ]);
        let listed = vec!["o1".to_string(), "o2".to_string(), "o3".to_string()];
        assert_eq!(duplicates(&l.sessions[0], &listed), 1);
        let back = ReadBack {
            orders: vec![
                Observation::Found(snap("o1", 1, contents("fries", 1, 0))),
                Observation::Found(snap("o2", 1, contents("fries", 1, 0))),
            ],
            sessions: vec![Listing::Listed(listed.clone())],
        };
        let s = summarize(&[(l.clone(), back)]);
        assert_eq!((s.duplicated, s.intact, s.sessions_listed), (1, 2, 1));
        let mut explained = l;
        explained.ambiguous_create(0);
        assert_eq!(duplicates(&explained.sessions[0], &listed), 0);
        assert_eq!(duplicates(&explained.sessions[0], &listed[..2]), 0);
    }
}
