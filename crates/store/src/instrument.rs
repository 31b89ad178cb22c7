//! A wrapper that puts a timeout on every store operation and counts them.
//!
//! The counters are how bistro makes the cost of statelessness visible: the waiter
//! exports them as `bistro_store_ops_total{op,result}`, so a reader can check that a read
//! request costs one store round trip and a write one compare-and-set.

use crate::{
    Counts, IdempotencyBegin, OrderStore, SessionCreated, SessionId, StoreError, StoredResponse,
};
use async_trait::async_trait;
use bistro_orders::Order;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The operations counted, one per [`OrderStore`] method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// [`OrderStore::ping`]: the liveness probe.
    Ping,
    /// [`OrderStore::create_session`].
    CreateSession,
    /// [`OrderStore::touch_session`]: extends a session's TTL.
    TouchSession,
    /// [`OrderStore::list_orders`].
    ListOrders,
    /// [`OrderStore::get_order`].
    GetOrder,
    /// [`OrderStore::insert_order`].
    InsertOrder,
    /// [`OrderStore::update_order`]: the compare-and-set of every order change.
    UpdateOrder,
    /// [`OrderStore::idempotency_begin`]: claims a key or finds its earlier answer.
    IdempotencyBegin,
    /// [`OrderStore::idempotency_finish`]: records a claimed key's response.
    IdempotencyFinish,
    /// [`OrderStore::idempotency_abort`]: releases a claimed key.
    IdempotencyAbort,
    /// [`OrderStore::kitchen_due`]: the kitchen's poll for due orders.
    KitchenDue,
    /// [`OrderStore::sweep`]: deletes expired sessions and idempotency records.
    Sweep,
    /// [`OrderStore::counts`]: how many sessions and orders the store holds.
    Counts,
}

impl StoreOp {
    /// Every operation, in label order.
    pub const ALL: [StoreOp; 13] = [
        StoreOp::Ping,
        StoreOp::CreateSession,
        StoreOp::TouchSession,
        StoreOp::ListOrders,
        StoreOp::GetOrder,
        StoreOp::InsertOrder,
        StoreOp::UpdateOrder,
        StoreOp::IdempotencyBegin,
        StoreOp::IdempotencyFinish,
        StoreOp::IdempotencyAbort,
        StoreOp::KitchenDue,
        StoreOp::Sweep,
        StoreOp::Counts,
    ];

    /// Whether the operation writes: a write abandoned at the timeout may still take
    /// effect.
    pub fn writes(self) -> bool {
        matches!(
            self,
            StoreOp::CreateSession
                | StoreOp::TouchSession
                | StoreOp::InsertOrder
                | StoreOp::UpdateOrder
                | StoreOp::IdempotencyBegin
                | StoreOp::IdempotencyFinish
                | StoreOp::IdempotencyAbort
                | StoreOp::Sweep
        )
    }

    /// The metric label (`get_order`, ...).
    pub fn label(self) -> &'static str {
        match self {
            StoreOp::Ping => "ping",
            StoreOp::CreateSession => "create_session",
            StoreOp::TouchSession => "touch_session",
            StoreOp::ListOrders => "list_orders",
            StoreOp::GetOrder => "get_order",
            StoreOp::InsertOrder => "insert_order",
            StoreOp::UpdateOrder => "update_order",
            StoreOp::IdempotencyBegin => "idempotency_begin",
            StoreOp::IdempotencyFinish => "idempotency_finish",
            StoreOp::IdempotencyAbort => "idempotency_abort",
            StoreOp::KitchenDue => "kitchen_due",
            StoreOp::Sweep => "sweep",
            StoreOp::Counts => "counts",
        }
    }
}

/// Totals for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpCount {
    /// The operation counted.
    pub op: StoreOp,
    /// Calls that returned `Ok` or a domain answer (conflict, unknown session, ...).
    pub ok: u64,
    /// Calls that failed because of the store (unavailable, timeout, corrupt).
    pub failed: u64,
}

/// Any store, with a timeout per operation and counters.
pub struct Instrumented {
    inner: Arc<dyn OrderStore>,
    timeout: Duration,
    ok: [AtomicU64; StoreOp::ALL.len()],
    failed: [AtomicU64; StoreOp::ALL.len()],
}

impl Instrumented {
    /// Wraps `inner`; every operation taking longer than `timeout` fails with
    /// [`StoreError::Timeout`].
    pub fn new(inner: Arc<dyn OrderStore>, timeout: Duration) -> Instrumented {
        Instrumented {
            inner,
            timeout,
            ok: std::array::from_fn(|_| AtomicU64::new(0)),
            failed: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Totals per operation so far.
    pub fn op_counts(&self) -> Vec<OpCount> {
        StoreOp::ALL
            .iter()
            .enumerate()
            .map(|(i, &op)| OpCount {
                op,
                ok: self.ok[i].load(Ordering::Relaxed),
                failed: self.failed[i].load(Ordering::Relaxed),
            })
            .collect()
    }

    async fn run<T>(
        &self,
        op: StoreOp,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let i = StoreOp::ALL
            .iter()
            .position(|&o| o == op)
            .expect("op is listed");
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            // The operation was under way when it was abandoned: a write may have been
            // applied (the backends' own, shorter timeouts exist to make this rare).
            Err(_) => Err(StoreError::Timeout {
                after: self.timeout,
                maybe_applied: op.writes(),
            }),
        };
        let counter = match &result {
            Err(e) if e.is_outage() || matches!(e, StoreError::Corrupt(_)) => &self.failed[i],
            _ => &self.ok[i],
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }
}

#[async_trait]
impl OrderStore for Instrumented {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.run(StoreOp::Ping, self.inner.ping()).await
    }
    async fn create_session(
        &self,
        session: SessionId,
        now: u64,
    ) -> Result<SessionCreated, StoreError> {
        self.run(
            StoreOp::CreateSession,
            self.inner.create_session(session, now),
        )
        .await
    }
    async fn touch_session(&self, session: SessionId, now: u64) -> Result<bool, StoreError> {
        self.run(
            StoreOp::TouchSession,
            self.inner.touch_session(session, now),
        )
        .await
    }
    async fn list_orders(&self, session: SessionId, now: u64) -> Result<Vec<Order>, StoreError> {
        self.run(StoreOp::ListOrders, self.inner.list_orders(session, now))
            .await
    }
    async fn get_order(
        &self,
        session: SessionId,
        order_id: &str,
        now: u64,
    ) -> Result<Order, StoreError> {
        self.run(
            StoreOp::GetOrder,
            self.inner.get_order(session, order_id, now),
        )
        .await
    }
    async fn insert_order(
        &self,
        session: SessionId,
        order: &Order,
        now: u64,
    ) -> Result<(), StoreError> {
        self.run(
            StoreOp::InsertOrder,
            self.inner.insert_order(session, order, now),
        )
        .await
    }
    async fn update_order(
        &self,
        session: SessionId,
        order: &Order,
        expected: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        self.run(
            StoreOp::UpdateOrder,
            self.inner.update_order(session, order, expected, now),
        )
        .await
    }
    async fn idempotency_begin(
        &self,
        session: SessionId,
        key: &str,
        fingerprint: &str,
        now: u64,
    ) -> Result<IdempotencyBegin, StoreError> {
        self.run(
            StoreOp::IdempotencyBegin,
            self.inner.idempotency_begin(session, key, fingerprint, now),
        )
        .await
    }
    async fn idempotency_finish(
        &self,
        session: SessionId,
        key: &str,
        response: &StoredResponse,
        now: u64,
    ) -> Result<(), StoreError> {
        self.run(
            StoreOp::IdempotencyFinish,
            self.inner.idempotency_finish(session, key, response, now),
        )
        .await
    }
    async fn idempotency_abort(&self, session: SessionId, key: &str) -> Result<(), StoreError> {
        self.run(
            StoreOp::IdempotencyAbort,
            self.inner.idempotency_abort(session, key),
        )
        .await
    }
    async fn kitchen_due(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<Vec<(SessionId, Order)>, StoreError> {
        self.run(StoreOp::KitchenDue, self.inner.kitchen_due(now, limit))
            .await
    }
    async fn sweep(&self, now: u64, batch: usize) -> Result<usize, StoreError> {
        self.run(StoreOp::Sweep, self.inner.sweep(now, batch)).await
    }
    async fn counts(&self) -> Result<Counts, StoreError> {
        self.run(StoreOp::Counts, self.inner.counts()).await
    }
}
