//! What a waiter knows about replicated sessions, and the rules for what peers send it.
//!
//! The data lives in two [`MemoryStore`]s: `led`, the waiter's own store (the sessions
//! it is primary for, served to diners), and `copies` (other waiters' sessions it keeps
//! as a backup, never served until taken over). The [`Ledger`] holds the metadata that
//! makes the copies safe:
//!
//! - for a session it leads: the [`Epoch`] it leads at, and which peer holds the copy up
//!   to which change (`acked_seq`), so a change is acknowledged only once a copy has it;
//! - for a copy: the epoch it was written under;
//! - **fences**: the newest epoch claimed for a session. A message with an older epoch
//!   is refused ([`Reply::Fenced`]); that is how a primary that was paused past its
//!   takeover learns it no longer leads, before it can acknowledge anything.
//!
//! Nothing here does I/O: [`Ledger::receive`] applies one peer [`Item`] to the stores
//! and returns the [`Reply`]; the property tests below drive it through interleavings.

use super::wire::{Epoch, Item, Reply};
use bistro_store::{MemoryStore, SessionId, SessionSnapshot};
use std::collections::HashMap;

/// A session this waiter leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Led {
    /// The epoch it leads at.
    pub epoch: Epoch,
    /// The peer keeping its copy, if one does.
    pub backup: Option<Backup>,
    /// The expiry the backup was last told (see [`Item::Extend`]).
    pub extended_to: u64,
}

/// Where a led session's copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backup {
    /// The peer (an index into the waiter's peers).
    pub peer: usize,
    /// The peer's link generation when it acknowledged: a newer generation means the
    /// peer was unreachable or restarted since, and may have lost the copy.
    pub generation: u64,
    /// The newest change of the session the copy holds.
    pub acked_seq: u64,
}

#[derive(Debug, Clone)]
struct Fence {
    epoch: Epoch,
    until: u64,
}

/// The replication metadata of one waiter (see the module docs).
#[derive(Debug, Default)]
pub struct Ledger {
    led: HashMap<SessionId, Led>,
    copies: HashMap<SessionId, Epoch>,
    fences: HashMap<SessionId, Fence>,
}

impl Ledger {
    /// The newest epoch this waiter has seen for `session`, at `now`.
    pub fn newest(&self, session: SessionId, now: u64) -> Option<Epoch> {
        let fence = self
            .fences
            .get(&session)
            .filter(|f| f.until > now)
            .map(|f| &f.epoch);
        [
            self.led.get(&session).map(|l| &l.epoch),
            self.copies.get(&session),
            fence,
        ]
        .into_iter()
        .flatten()
        .max()
        .cloned()
    }

    /// The session this waiter leads, if it does.
    pub fn led(&self, session: SessionId) -> Option<&Led> {
        self.led.get(&session)
    }

    /// Records that this waiter leads `session` (it started it, or took it over).
    pub fn lead(&mut self, session: SessionId, epoch: Epoch, expires_at: u64) -> &mut Led {
        self.copies.remove(&session);
        self.led.insert(
            session,
            Led {
                epoch,
                backup: None,
                extended_to: expires_at,
            },
        );
        self.led.get_mut(&session).expect("just inserted")
    }

    /// The led session's entry, started at the first epoch if this waiter has not led it
    /// yet (a session it just created).
    pub fn lead_or_start(&mut self, session: SessionId, me: &str, expires_at: u64) -> &mut Led {
        self.led.entry(session).or_insert_with(|| Led {
            epoch: Epoch::first(me),
            backup: None,
            extended_to: expires_at,
        })
    }

    /// The entry of a led session, to record a backup's acknowledgement.
    pub fn led_mut(&mut self, session: SessionId) -> Option<&mut Led> {
        self.led.get_mut(&session)
    }

    /// The epoch of this waiter's copy of `session`, if it holds one.
    pub fn copy_epoch(&self, session: SessionId) -> Option<&Epoch> {
        self.copies.get(&session)
    }

    /// The waiter that claimed `session` after this waiter's copy was written, if one
    /// did (then a request for it belongs there, not here).
    pub fn claimed_by(&self, session: SessionId, now: u64) -> Option<&str> {
        let copy = self.copies.get(&session)?;
        self.fences
            .get(&session)
            .filter(|f| f.until > now && f.epoch > *copy)
            .map(|f| f.epoch.by.as_str())
    }

    /// This waiter no longer leads `session` (a peer's newer epoch fenced it): what it
    /// held becomes a copy at its old epoch, which is never served again unless taken
    /// over with the newest data the group holds.
    pub fn step_down(
        &mut self,
        session: SessionId,
        newer: Epoch,
        fence_until: u64,
        led: &MemoryStore,
        copies: &MemoryStore,
        now: u64,
    ) {
        if let Some(old) = self.led.remove(&session) {
            if let Some(snapshot) = led.snapshot(session) {
                copies.remove(session);
                copies.install(snapshot, now);
                self.copies.insert(session, old.epoch);
            }
            led.remove(session);
        }
        self.fence(session, newer, fence_until);
    }

    fn fence(&mut self, session: SessionId, epoch: Epoch, until: u64) {
        match self.fences.get_mut(&session) {
            Some(f) if f.epoch >= epoch => f.until = f.until.max(until),
            _ => {
                self.fences.insert(session, Fence { epoch, until });
            }
        }
    }

    /// Forgets the copy of `session` (after a takeover moved it into `led`).
    pub fn forget_copy(&mut self, session: SessionId) {
        self.copies.remove(&session);
    }

    /// Applies what a peer sent; `fence_until` is how long a claim's fence lasts (a
    /// session's TTL: no older leader can outlive it).
    pub fn receive(
        &mut self,
        item: Item,
        now: u64,
        fence_until: u64,
        led: &MemoryStore,
        copies: &MemoryStore,
    ) -> Reply {
        let (session, epoch) = match &item {
            Item::Copy { epoch, snapshot } => (snapshot.session, epoch),
            Item::Extend { session, epoch, .. }
            | Item::Drop { session, epoch }
            | Item::Claim { session, epoch } => (*session, epoch),
        };
        if let Some(newest) = self.newest(session, now) {
            // A claim must be strictly newer than anything seen; a copy may come at the
            // epoch already known (the same primary's next change).
            let stale = match &item {
                Item::Claim { .. } => *epoch <= newest,
                _ => *epoch < newest,
            };
            if stale {
                return Reply::Fenced { epoch: newest };
            }
        }
        match item {
            Item::Copy { epoch, snapshot } => {
                // A newer primary (after a takeover): replace whatever is held, whatever
                // its change counter; this waiter may even have led it at an older epoch.
                if self.led.contains_key(&session) {
                    self.led.remove(&session);
                    led.remove(session);
                }
                if self.copies.get(&session).is_some_and(|held| *held < epoch) {
                    copies.remove(session);
                }
                copies.install(snapshot, now);
                self.copies.insert(session, epoch);
                Reply::Ok
            }
            Item::Extend { expires_at, .. } => {
                copies.extend(session, expires_at);
                Reply::Ok
            }
            Item::Drop { .. } => {
                if self.copies.remove(&session).is_some() {
                    copies.remove(session);
                }
                Reply::Ok
            }
            Item::Claim { epoch, .. } => {
                let held = if let Some(l) = self.led.get(&session) {
                    let held_epoch = l.epoch.clone();
                    let snapshot = led.snapshot(session);
                    // Handed over: stop leading, keep the data as a copy until dropped.
                    self.step_down(session, epoch.clone(), fence_until, led, copies, now);
                    snapshot.map(|s| (held_epoch, s))
                } else {
                    let held = self
                        .copies
                        .get(&session)
                        .cloned()
                        .zip(copies.snapshot(session));
                    self.fence(session, epoch, fence_until);
                    held
                };
                match held {
                    Some((epoch, snapshot)) => Reply::Held { epoch, snapshot },
                    None => Reply::NotHeld,
                }
            }
        }
    }

    /// Removes the entries of sessions neither store holds any more (expired and swept),
    /// and fences past their time.
    pub fn prune(&mut self, now: u64, led: &MemoryStore, copies: &MemoryStore) {
        self.led.retain(|s, _| led.seq(*s).is_some());
        self.copies.retain(|s, _| copies.seq(*s).is_some());
        self.fences.retain(|_, f| f.until > now);
    }

    /// Every led session with its entry, for a pass over them.
    pub fn led_sessions(&self) -> Vec<(SessionId, Led)> {
        self.led.iter().map(|(s, l)| (*s, l.clone())).collect()
    }

    /// How many sessions this waiter leads and holds copies of.
    pub fn counts(&self) -> (usize, usize) {
        (self.led.len(), self.copies.len())
    }
}

/// Of what several waiters hold of one session, the newest: the highest epoch, then
/// the highest change counter.
pub fn newest_of(
    held: impl IntoIterator<Item = (Epoch, SessionSnapshot)>,
) -> Option<(Epoch, SessionSnapshot)> {
    held.into_iter()
        .max_by(|(ea, sa), (eb, sb)| ea.cmp(eb).then(sa.seq.cmp(&sb.seq)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bistro_orders::{Change, ItemInput, Menu, NewOrder, Order};
    use bistro_store::{OrderStore, StoreConfig};
    use proptest::prelude::*;

    const NOW: u64 = 1_000_000;
    const UNTIL: u64 = NOW + 3_600_000;

    fn store() -> MemoryStore {
        MemoryStore::new(StoreConfig::default())
    }

    fn order() -> Order {
        let new = NewOrder {
            items: vec![ItemInput {
                dish: "fries".into(),
                quantity: 1,
            }],
            ..Default::default()
        };
        Order::create(
            bistro_store::new_order_id(),
            new,
            &Menu::default_menu(),
            NOW,
        )
        .unwrap()
    }

    async fn session_with_order(store: &MemoryStore) -> (SessionId, Order) {
        let s = SessionId::generate();
        store.create_session(s, NOW).await.unwrap();
        let o = order();
        store.insert_order(s, &o, NOW).await.unwrap();
        (s, o)
    }

    /// A primary's store, and a backup's own and copies stores.
    fn stores() -> (MemoryStore, MemoryStore, MemoryStore) {
        (
            store(),
            store(),
            MemoryStore::for_copies(StoreConfig::default()),
        )
    }

    fn copy(epoch: &Epoch, snapshot: SessionSnapshot) -> Item {
        Item::Copy {
            epoch: epoch.clone(),
            snapshot,
        }
    }

    #[tokio::test]
    async fn a_copy_is_kept_and_an_older_one_ignored() {
        let (primary, led, copies) = stores();
        let (s, o) = session_with_order(&primary).await;
        let e1 = Epoch::first("w1");
        let first = primary.snapshot(s).unwrap();
        let mut next = o.clone();
        next.apply(&[Change::SetSpice(2)], &Menu::default_menu(), NOW)
            .unwrap();
        primary
            .update_order(s, &next, o.version, NOW)
            .await
            .unwrap();
        let second = primary.snapshot(s).unwrap();
        let mut ledger = Ledger::default();
        // Out of order: the newer arrives first; the older must not undo it.
        assert!(matches!(
            ledger.receive(copy(&e1, second.clone()), NOW, UNTIL, &led, &copies),
            Reply::Ok
        ));
        assert!(matches!(
            ledger.receive(copy(&e1, first), NOW, UNTIL, &led, &copies),
            Reply::Ok
        ));
        assert_eq!(copies.snapshot(s), Some(second));
        assert_eq!(ledger.copy_epoch(s), Some(&e1));
    }

    #[tokio::test]
    async fn a_claim_fences_the_old_primary() {
        // w2 holds w1's copy; w3 claims the session; w1 then tries to copy a change.
        let (primary, led, copies) = stores();
        let (s, _) = session_with_order(&primary).await;
        let e1 = Epoch::first("w1");
        let mut w2 = Ledger::default();
        w2.receive(
            copy(&e1, primary.snapshot(s).unwrap()),
            NOW,
            UNTIL,
            &led,
            &copies,
        );
        let e2 = e1.next("w3");
        let reply = w2.receive(
            Item::Claim {
                session: s,
                epoch: e2.clone(),
            },
            NOW,
            UNTIL,
            &led,
            &copies,
        );
        assert!(matches!(&reply, Reply::Held { epoch, .. } if *epoch == e1));
        let late = w2.receive(
            copy(&e1, primary.snapshot(s).unwrap()),
            NOW,
            UNTIL,
            &led,
            &copies,
        );
        assert!(matches!(late, Reply::Fenced { epoch } if epoch == e2));
        // The same claim again, or an older one, is refused too.
        let again = w2.receive(
            Item::Claim {
                session: s,
                epoch: e2.clone(),
            },
            NOW,
            UNTIL,
            &led,
            &copies,
        );
        assert!(matches!(again, Reply::Fenced { .. }));
        // The claimant's own copies at the new epoch are taken.
        let ok = w2.receive(
            copy(&e2, primary.snapshot(s).unwrap()),
            NOW,
            UNTIL,
            &led,
            &copies,
        );
        assert!(matches!(ok, Reply::Ok));
        assert_eq!(
            w2.claimed_by(s, NOW),
            None,
            "the copy is at the claimed epoch now"
        );
    }

    #[tokio::test]
    async fn a_claim_on_a_live_primary_hands_over_and_steps_down() {
        let (led, copies) = (store(), MemoryStore::for_copies(StoreConfig::default()));
        let (s, _) = session_with_order(&led).await;
        let mut w1 = Ledger::default();
        w1.lead_or_start(s, "w1", NOW);
        let e2 = Epoch::first("w1").next("w2");
        let reply = w1.receive(
            Item::Claim {
                session: s,
                epoch: e2.clone(),
            },
            NOW,
            UNTIL,
            &led,
            &copies,
        );
        assert!(matches!(&reply, Reply::Held { snapshot, .. } if snapshot.order_count() == 1));
        assert!(w1.led(s).is_none(), "stepped down");
        assert_eq!(led.seq(s), None, "no longer served");
        assert!(copies.seq(s).is_some(), "kept as a copy until dropped");
        assert_eq!(w1.claimed_by(s, NOW), Some("w2"));
        // Its own late change is refused by anyone who saw the claim, here itself.
        let late = w1.receive(
            copy(&Epoch::first("w1"), copies.snapshot(s).unwrap()),
            NOW,
            UNTIL,
            &led,
            &copies,
        );
        assert!(matches!(late, Reply::Fenced { .. }));
    }

    #[tokio::test]
    async fn fences_expire_with_the_session_ttl() {
        let (led, copies) = (store(), MemoryStore::for_copies(StoreConfig::default()));
        let s = SessionId::generate();
        let mut w = Ledger::default();
        let e2 = Epoch::first("w1").next("w2");
        assert!(matches!(
            w.receive(
                Item::Claim {
                    session: s,
                    epoch: e2
                },
                NOW,
                NOW + 10,
                &led,
                &copies
            ),
            Reply::NotHeld
        ));
        assert!(w.newest(s, NOW + 9).is_some());
        assert!(w.newest(s, NOW + 10).is_none());
        w.prune(NOW + 10, &led, &copies);
        assert!(w.fences.is_empty());
    }

    #[test]
    fn the_newest_copy_wins() {
        let s = SessionId::generate();
        let snap = |seq: u64| {
            let json = serde_json::json!({"session": s.to_string(), "seq": seq, "expires_at": 1, "orders": [], "idempotency": []});
            serde_json::from_value::<SessionSnapshot>(json).unwrap()
        };
        let e1 = Epoch::first("w1");
        let e2 = e1.next("w2");
        let best =
            newest_of([(e1.clone(), snap(9)), (e2.clone(), snap(3)), (e1, snap(12))]).unwrap();
        assert_eq!((best.0, best.1.seq), (e2, 3));
    }

    // The model: a primary makes changes and copies each to a backup before
    // acknowledging it; messages are delivered late, twice or out of order; a takeover
    // by the backup may happen at any point. Whatever the interleaving, every
    // acknowledged change is in what the takeover finds, and the old primary can
    // acknowledge nothing after it.
    #[derive(Debug, Clone)]
    enum Step {
        Change,
        Deliver(usize),
        Takeover,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            prop_oneof![
                4 => Just(Step::Change),
                4 => (0usize..8).prop_map(Step::Deliver),
                1 => Just(Step::Takeover),
            ],
            1..40,
        )
    }

    proptest! {
        #[test]
        fn acknowledged_changes_survive_any_interleaving(steps in steps()) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async move {
                let primary = store();
                let (s, mut o) = session_with_order(&primary).await;
                let (b_led, b_copies) = (store(), MemoryStore::for_copies(StoreConfig::default()));
                let mut backup = Ledger::default();
                let e1 = Epoch::first("w1");
                let mut in_flight: Vec<SessionSnapshot> = vec![primary.snapshot(s).unwrap()];
                let mut acked = 0u64;
                let mut taken_over = false;
                let menu = Menu::default_menu();
                for step in steps {
                    match step {
                        Step::Change => {
                            let mut next = o.clone();
                            next.apply(&[Change::SetSpice((o.version % 5) as u32)], &menu, NOW).unwrap();
                            primary.update_order(s, &next, o.version, NOW).await.unwrap();
                            o = next;
                            in_flight.push(primary.snapshot(s).unwrap());
                        }
                        Step::Deliver(i) if !in_flight.is_empty() => {
                            // Any pending message, possibly again later (a resend).
                            let snap = in_flight[i % in_flight.len()].clone();
                            let seq = snap.seq;
                            match backup.receive(copy(&e1, snap), NOW, UNTIL, &b_led, &b_copies) {
                                Reply::Ok => {
                                    prop_assert!(!taken_over, "a fenced primary got an ack");
                                    acked = acked.max(seq);
                                }
                                Reply::Fenced { .. } => prop_assert!(taken_over),
                                other => prop_assert!(false, "unexpected {other:?}"),
                            }
                        }
                        Step::Deliver(_) => {}
                        Step::Takeover => {
                            if !taken_over {
                                let claim = Item::Claim { session: s, epoch: e1.next("w2") };
                                let reply = backup.receive(claim, NOW, UNTIL, &b_led, &b_copies);
                                if acked > 0 {
                                    match reply {
                                        Reply::Held { snapshot, .. } => prop_assert!(snapshot.seq >= acked),
                                        other => prop_assert!(false, "lost the copy: {other:?}"),
                                    }
                                }
                                taken_over = true;
                            }
                        }
                    }
                }
                Ok(())
            })?;
        }
    }
}
