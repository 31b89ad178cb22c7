//! A real store behind a fault injector: a [`MemoryStore`] whose operations can be
//! switched to fail, slowed down, made to lose compare-and-sets, and journaled.

use async_trait::async_trait;
use bistro_orders::Order;
use bistro_store::{
    Counts, IdempotencyBegin, MemoryStore, OrderStore, SessionCreated, SessionId, StoreConfig,
    StoreError, StoredResponse,
};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The switches.
#[derive(Default)]
pub struct Faults {
    pub down: AtomicBool,
    pub delay_ms: AtomicU64,
    pub conflicts: AtomicU32,
    /// Pause after each order read, widening the window between a read-modify-write's
    /// read and its compare-and-set so that concurrent writers really collide.
    pub read_pause_ms: AtomicU64,
    /// (version, requests) of every order update the store accepted.
    pub journal: Mutex<Vec<(u64, String)>>,
}

pub struct FaultyStore {
    inner: MemoryStore,
    faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn new() -> (Arc<FaultyStore>, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        let store = FaultyStore {
            inner: MemoryStore::new(StoreConfig::default()),
            faults: Arc::clone(&faults),
        };
        (Arc::new(store), faults)
    }

    pub async fn gate(&self) -> Result<(), StoreError> {
        let delay = self.faults.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.faults.down.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable(
                "injected fault: the store is switched off",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl OrderStore for FaultyStore {
    fn kind(&self) -> &'static str {
        "faulty-memory"
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.ping().await
    }
    async fn create_session(
        &self,
        session: SessionId,
        now: u64,
    ) -> Result<SessionCreated, StoreError> {
        self.gate().await?;
        self.inner.create_session(session, now).await
    }
    async fn touch_session(&self, session: SessionId, now: u64) -> Result<bool, StoreError> {
        self.gate().await?;
        self.inner.touch_session(session, now).await
    }
    async fn list_orders(&self, session: SessionId, now: u64) -> Result<Vec<Order>, StoreError> {
        self.gate().await?;
        self.inner.list_orders(session, now).await
    }
    async fn get_order(
        &self,
        session: SessionId,
        order_id: &str,
        now: u64,
    ) -> Result<Order, StoreError> {
        self.gate().await?;
        let order = self.inner.get_order(session, order_id, now).await;
        let pause = self.faults.read_pause_ms.load(Ordering::SeqCst);
        if pause > 0 {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        order
    }
    async fn insert_order(
        &self,
        session: SessionId,
        order: &Order,
        now: u64,
    ) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.insert_order(session, order, now).await
    }
    async fn update_order(
        &self,
        session: SessionId,
        order: &Order,
        expected: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        self.gate().await?;
        let injected =
            self.faults
                .conflicts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if injected.is_ok() {
            // As if another writer had stored the next version first.
            return Err(StoreError::Conflict {
                expected,
                actual: expected + 1,
            });
        }
        self.inner
            .update_order(session, order, expected, now)
            .await?;
        self.faults
            .journal
            .lock()
            .unwrap()
            .push((order.version, order.notes.requests.clone()));
        Ok(())
    }
    async fn idempotency_begin(
        &self,
        session: SessionId,
        key: &str,
        fingerprint: &str,
        now: u64,
    ) -> Result<IdempotencyBegin, StoreError> {
        self.gate().await?;
        self.inner
            .idempotency_begin(session, key, fingerprint, now)
            .await
    }
    async fn idempotency_finish(
        &self,
        session: SessionId,
        key: &str,
        response: &StoredResponse,
        now: u64,
    ) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner
            .idempotency_finish(session, key, response, now)
            .await
    }
    async fn idempotency_abort(&self, session: SessionId, key: &str) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.idempotency_abort(session, key).await
    }
    async fn kitchen_due(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<Vec<(SessionId, Order)>, StoreError> {
        self.gate().await?;
        self.inner.kitchen_due(now, limit).await
    }
    async fn sweep(&self, now: u64, batch: usize) -> Result<usize, StoreError> {
        self.gate().await?;
        self.inner.sweep(now, batch).await
    }
    async fn counts(&self) -> Result<Counts, StoreError> {
        self.gate().await?;
        self.inner.counts().await
    }
}
