//! The stateful waiter's notepad: sessions and orders in this process's memory.
//!
//! Sharded by session id so concurrent diners rarely contend on one lock. Sessions are
//! keyed by their 16 raw bytes and hold their orders in a small `Vec` (a diner has a
//! handful), which keeps a held session well under a kilobyte. A separate index of
//! kitchen due times lets the kitchen find due orders without scanning every session.
//!
//! Nothing here survives the process: that is the point of stateful mode. Replicated
//! mode copies a session elsewhere through [`MemoryStore::snapshot`] and
//! [`MemoryStore::install`]: every change bumps the session's `seq`, so a copy knows
//! which of two snapshots is newer whatever order they arrive in.

use crate::{
    Counts, IdempotencyBegin, OrderStore, SessionCreated, SessionId, StoreConfig, StoreError,
    StoredResponse,
};
use async_trait::async_trait;
use bistro_orders::Order;
use serde::{Deserialize, Serialize};
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

const SHARDS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum IdemState {
    Pending { since: u64 },
    Done { response: StoredResponse, at: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IdemEntry {
    key: String,
    fingerprint: String,
    #[serde(flatten)]
    state: IdemState,
}

#[derive(Debug)]
struct Session {
    expires_at: u64,
    /// Bumped by every change (not by a touch): the version of the session as a whole.
    seq: u64,
    orders: Vec<Order>,
    idempotency: Vec<IdemEntry>,
}

/// A whole session as a copy: its orders and idempotency records at change `seq`.
///
/// Opaque on purpose: only a [`MemoryStore`] makes one and installs one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// Which session.
    pub session: SessionId,
    /// The session's change counter when the snapshot was taken: of two snapshots of
    /// one session, the one with the higher `seq` is newer.
    pub seq: u64,
    /// When the session expires unless touched.
    pub expires_at: u64,
    orders: Vec<Order>,
    idempotency: Vec<IdemEntry>,
}

impl SessionSnapshot {
    /// How many orders the session holds.
    pub fn order_count(&self) -> usize {
        self.orders.len()
    }
}

/// In-process store for stateful mode.
#[derive(Debug)]
pub struct MemoryStore {
    config: StoreConfig,
    shards: Vec<Mutex<HashMap<SessionId, Session>>>,
    hasher: RandomState,
    sessions: AtomicUsize,
    /// (due ms, session, order id): a hint list, checked against the order when read.
    kitchen: Mutex<BTreeSet<(u64, SessionId, String)>>,
    /// Whether the kitchen index is kept (not for a store of copies: no kitchen reads
    /// it, so its hints would only pile up).
    kitchen_on: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> MemoryStore {
        MemoryStore {
            config,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            sessions: AtomicUsize::new(0),
            kitchen: Mutex::new(BTreeSet::new()),
            kitchen_on: true,
        }
    }

    /// An empty store for other waiters' sessions (a backup's copies): no kitchen index,
    /// since the kitchen runs on a session's primary only.
    pub fn for_copies(config: StoreConfig) -> MemoryStore {
        MemoryStore {
            kitchen_on: false,
            ..MemoryStore::new(config)
        }
    }

    /// The limits and TTLs this store was built with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn shard(&self, id: &SessionId) -> &Mutex<HashMap<SessionId, Session>> {
        &self.shards[(self.hasher.hash_one(id) as usize) % SHARDS]
    }

    /// Runs `f` on a live session (touching it), or fails with `UnknownSession`.
    /// (In memory a touch costs nothing, so the read slack of central stores is not
    /// needed here.)
    fn with_session<T>(
        &self,
        id: SessionId,
        now: u64,
        f: impl FnOnce(&mut Session) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut shard = lock(self.shard(&id));
        match shard.get_mut(&id) {
            Some(s) if s.expires_at > now => {
                s.expires_at = now + self.config.session_ttl_ms;
                f(s)
            }
            _ => Err(StoreError::UnknownSession),
        }
    }

    /// Runs `f` on a live session as a change: touches it and bumps its `seq` when `f`
    /// succeeds.
    fn change_session<T>(
        &self,
        id: SessionId,
        now: u64,
        f: impl FnOnce(&mut Session) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_session(id, now, |s| {
            let out = f(s)?;
            s.seq += 1;
            Ok(out)
        })
    }

    fn fresh_session(&self, now: u64) -> Session {
        Session {
            expires_at: now + self.config.session_ttl_ms,
            seq: 1,
            orders: Vec::new(),
            idempotency: Vec::new(),
        }
    }

    /// The session as a copy, if it is held (live or awaiting the sweeper: a copy of an
    /// expired session expires too).
    pub fn snapshot(&self, session: SessionId) -> Option<SessionSnapshot> {
        let shard = lock(self.shard(&session));
        shard.get(&session).map(|s| SessionSnapshot {
            session,
            seq: s.seq,
            expires_at: s.expires_at,
            orders: s.orders.clone(),
            idempotency: s.idempotency.clone(),
        })
    }

    /// The session's change counter, if it is held.
    pub fn seq(&self, session: SessionId) -> Option<u64> {
        lock(self.shard(&session)).get(&session).map(|s| s.seq)
    }

    /// When the session expires unless touched, if it is held.
    pub fn expires_at(&self, session: SessionId) -> Option<u64> {
        lock(self.shard(&session))
            .get(&session)
            .map(|s| s.expires_at)
    }

    /// Installs a copy, replacing what is held of that session unless it holds a live
    /// session with the same or a newer `seq` already (snapshots may arrive out of
    /// order; an expired one is an earlier life of a reused id). `true` when installed.
    ///
    /// Not bounded by `max_sessions`: a copy is never refused for room, or a primary's
    /// acknowledged change would have nowhere to go.
    pub fn install(&self, snapshot: SessionSnapshot, now: u64) -> bool {
        let session = snapshot.session;
        {
            let mut shard = lock(self.shard(&session));
            let held = Session {
                expires_at: snapshot.expires_at,
                seq: snapshot.seq,
                orders: snapshot.orders,
                idempotency: snapshot.idempotency,
            };
            match shard.entry(session) {
                Entry::Occupied(mut e) => {
                    if e.get().expires_at > now && e.get().seq >= held.seq {
                        return false;
                    }
                    e.insert(held);
                }
                Entry::Vacant(e) => {
                    self.sessions.fetch_add(1, Ordering::AcqRel);
                    e.insert(held);
                }
            }
        }
        let orders = lock(self.shard(&session))
            .get(&session)
            .map(|s| s.orders.clone())
            .unwrap_or_default();
        for order in &orders {
            self.index_kitchen(session, order);
        }
        true
    }

    /// Moves a session's expiry to `expires_at` if that is later (a copy kept alive by
    /// its primary's reads). `false` when the session is not held.
    pub fn extend(&self, session: SessionId, expires_at: u64) -> bool {
        match lock(self.shard(&session)).get_mut(&session) {
            Some(s) => {
                s.expires_at = s.expires_at.max(expires_at);
                true
            }
            None => false,
        }
    }

    /// Forgets a session (it moved to another waiter). `true` when it was held.
    pub fn remove(&self, session: SessionId) -> bool {
        let removed = lock(self.shard(&session)).remove(&session).is_some();
        if removed {
            self.sessions.fetch_sub(1, Ordering::AcqRel);
        }
        removed
    }

    /// Forgets a session only if it is still at change `seq`: the last step of handing
    /// it to another waiter, which must not drop a change made after the copy was
    /// taken. `false` when it changed (or is not held): copy it again.
    pub fn remove_if_seq(&self, session: SessionId, seq: u64) -> bool {
        let mut shard = lock(self.shard(&session));
        match shard.get(&session) {
            Some(s) if s.seq == seq => {
                shard.remove(&session);
                drop(shard);
                self.sessions.fetch_sub(1, Ordering::AcqRel);
                true
            }
            _ => false,
        }
    }

    /// How many live sessions are held at `now`, and the ids of up to `limit` of them
    /// (in no particular order). A scan of every shard, one lock at a time: for the
    /// operator's drain, never on a diner's path.
    pub fn live_sessions(&self, now: u64, limit: usize) -> (usize, Vec<SessionId>) {
        let (mut count, mut ids) = (0, Vec::new());
        for shard in &self.shards {
            for (id, s) in lock(shard).iter() {
                if s.expires_at > now {
                    count += 1;
                    if ids.len() < limit {
                        ids.push(*id);
                    }
                }
            }
        }
        (count, ids)
    }

    fn index_kitchen(&self, session: SessionId, order: &Order) {
        if !self.kitchen_on {
            return;
        }
        if let Some(due) = order.kitchen_due_ms {
            lock(&self.kitchen).insert((due, session, order.id.clone()));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a shard lock cannot leave a half-written order (orders are
    // replaced whole), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl OrderStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn create_session(
        &self,
        session: SessionId,
        now: u64,
    ) -> Result<SessionCreated, StoreError> {
        let limit = self.config.max_sessions;
        let mut shard = lock(self.shard(&session));
        if let Some(existing) = shard.get_mut(&session)
            && existing.expires_at > now
        {
            existing.expires_at = now + self.config.session_ttl_ms;
            return Ok(SessionCreated::Existing);
        }
        // Reserve a place first so concurrent creators in other shards cannot overshoot.
        if self.sessions.fetch_add(1, Ordering::AcqRel) >= limit {
            self.sessions.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::SessionLimit { limit });
        }
        match shard.entry(session) {
            Entry::Occupied(mut e) => {
                // An expired session awaiting the sweeper, replaced by this one.
                self.sessions.fetch_sub(1, Ordering::AcqRel);
                e.insert(self.fresh_session(now));
            }
            Entry::Vacant(e) => {
                e.insert(self.fresh_session(now));
            }
        }
        Ok(SessionCreated::New)
    }

    async fn touch_session(&self, session: SessionId, now: u64) -> Result<bool, StoreError> {
        match self.with_session(session, now, |_| Ok(())) {
            Ok(()) => Ok(true),
            Err(StoreError::UnknownSession) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn list_orders(&self, session: SessionId, now: u64) -> Result<Vec<Order>, StoreError> {
        self.with_session(session, now, |s| Ok(s.orders.clone()))
    }

    async fn get_order(
        &self,
        session: SessionId,
        order_id: &str,
        now: u64,
    ) -> Result<Order, StoreError> {
        self.with_session(session, now, |s| {
            s.orders
                .iter()
                .find(|o| o.id == order_id)
                .cloned()
                .ok_or(StoreError::OrderNotFound)
        })
    }

    async fn insert_order(
        &self,
        session: SessionId,
        order: &Order,
        now: u64,
    ) -> Result<(), StoreError> {
        let limit = self.config.max_orders_per_session;
        self.change_session(session, now, |s| {
            if s.orders.iter().any(|o| o.id == order.id) {
                return Err(StoreError::DuplicateOrder);
            }
            if s.orders.len() >= limit {
                return Err(StoreError::OrderLimit { limit });
            }
            // Exact growth: a Vec's first push reserves room for four orders, which
            // would triple what a typical one-order session costs a stateful waiter.
            s.orders.reserve_exact(1);
            s.orders.push(order.clone());
            Ok(())
        })?;
        self.index_kitchen(session, order);
        Ok(())
    }

    async fn update_order(
        &self,
        session: SessionId,
        order: &Order,
        expected: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        self.change_session(session, now, |s| {
            let stored = s
                .orders
                .iter_mut()
                .find(|o| o.id == order.id)
                .ok_or(StoreError::OrderNotFound)?;
            if stored.version != expected {
                return Err(StoreError::Conflict {
                    expected,
                    actual: stored.version,
                });
            }
            *stored = order.clone();
            Ok(())
        })?;
        self.index_kitchen(session, order);
        Ok(())
    }

    async fn idempotency_begin(
        &self,
        session: SessionId,
        key: &str,
        fingerprint: &str,
        now: u64,
    ) -> Result<IdempotencyBegin, StoreError> {
        let (ttl, pending_ms) = (
            self.config.idempotency_ttl_ms,
            self.config.idempotency_pending_ms,
        );
        let limit = self.config.max_idempotency_per_session;
        let live = move |e: &IdemEntry| match &e.state {
            IdemState::Pending { since } => since + pending_ms > now,
            IdemState::Done { at, .. } => at + ttl > now,
        };
        self.with_session(session, now, |s| {
            if let Some(e) = s.idempotency.iter_mut().find(|e| e.key == key) {
                if live(&*e) {
                    if e.fingerprint != fingerprint {
                        return Ok(IdempotencyBegin::Mismatch);
                    }
                    return Ok(match &e.state {
                        IdemState::Pending { .. } => IdempotencyBegin::InProgress,
                        IdemState::Done { response, .. } => {
                            IdempotencyBegin::Replay(response.clone())
                        }
                    });
                }
                e.fingerprint = fingerprint.to_string();
                e.state = IdemState::Pending { since: now };
                s.seq += 1;
                return Ok(IdempotencyBegin::Proceed);
            }
            if s.idempotency.len() >= limit {
                s.idempotency.retain(|e| live(e));
                if s.idempotency.len() >= limit {
                    return Err(StoreError::IdempotencyLimit { limit });
                }
            }
            s.idempotency.push(IdemEntry {
                key: key.to_string(),
                fingerprint: fingerprint.to_string(),
                state: IdemState::Pending { since: now },
            });
            s.seq += 1;
            Ok(IdempotencyBegin::Proceed)
        })
    }

    async fn idempotency_finish(
        &self,
        session: SessionId,
        key: &str,
        response: &StoredResponse,
        now: u64,
    ) -> Result<(), StoreError> {
        self.change_session(session, now, |s| {
            if let Some(e) = s.idempotency.iter_mut().find(|e| e.key == key) {
                e.state = IdemState::Done {
                    response: response.clone(),
                    at: now,
                };
            }
            Ok(())
        })
    }

    async fn idempotency_abort(&self, session: SessionId, key: &str) -> Result<(), StoreError> {
        let mut shard = lock(self.shard(&session));
        if let Some(s) = shard.get_mut(&session) {
            let before = s.idempotency.len();
            s.idempotency
                .retain(|e| !(e.key == key && matches!(e.state, IdemState::Pending { .. })));
            if s.idempotency.len() != before {
                s.seq += 1;
            }
        }
        Ok(())
    }

    async fn kitchen_due(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<Vec<(SessionId, Order)>, StoreError> {
        let hints: Vec<(u64, SessionId, String)> = {
            let mut index = lock(&self.kitchen);
            let mut taken = Vec::new();
            while taken.len() < limit {
                match index.first() {
                    Some((due, _, _)) if *due <= now => {
                        taken.push(index.pop_first().expect("first exists"))
                    }
                    _ => break,
                }
            }
            taken
        };
        let mut out = Vec::with_capacity(hints.len());
        for (due, session, order_id) in hints {
            let shard = lock(self.shard(&session));
            let order = shard
                .get(&session)
                .and_then(|s| s.orders.iter().find(|o| o.id == order_id))
                .filter(|o| o.kitchen_due_ms == Some(due));
            if let Some(order) = order {
                out.push((session, order.clone()));
            }
        }
        Ok(out)
    }

    async fn sweep(&self, now: u64, batch: usize) -> Result<usize, StoreError> {
        let ttl = self.config.idempotency_ttl_ms;
        let pending_ms = self.config.idempotency_pending_ms;
        let mut removed = 0;
        for shard in &self.shards {
            if removed >= batch {
                break;
            }
            let mut shard = lock(shard);
            shard.retain(|_, s| {
                if removed < batch && s.expires_at <= now {
                    removed += 1;
                    return false;
                }
                s.idempotency.retain(|e| match &e.state {
                    IdemState::Pending { since } => since + pending_ms > now,
                    IdemState::Done { at, .. } => at + ttl > now,
                });
                true
            });
        }
        self.sessions.fetch_sub(removed, Ordering::AcqRel);
        Ok(removed)
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        let mut counts = Counts::default();
        for shard in &self.shards {
            let shard = lock(shard);
            counts.sessions += shard.len() as u64;
            counts.orders += shard.values().map(|s| s.orders.len() as u64).sum::<u64>();
        }
        Ok(counts)
    }
}
