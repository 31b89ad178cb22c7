//! # bistro-store: where the notes live
//!
//! Every waiter keeps its diners' sessions and orders behind one trait, [`OrderStore`].
//! Which implementation sits behind it *is* the architecture:
//!
//! - [`MemoryStore`]: the waiter's own memory. *Stateful* mode: fast, and gone when the
//!   process dies; only this waiter can serve these sessions.
//! - SQLite, PostgreSQL, Redis: a central store shared by every waiter. *Stateless*
//!   mode: any waiter can serve any request, and a waiter's death loses nothing.
//!
//! The trait is shaped by requests, not by tables: each method is what one HTTP request
//! needs, so every backend can do a read in one round trip and a write in one
//! compare-and-set. Every method that takes a session also checks that it is alive and
//! extends its idle TTL ("touch"), in the same round trip.
//!
//! Time is passed in (`now`, unix milliseconds) so TTLs can be tested under a paused
//! clock. [`Instrumented`] wraps any store with a per-operation timeout and the counters
//! behind `bistro_store_ops_total`.
//!
//! ## What a failure says
//!
//! A caller must know whether a failed write may have been applied anyway, so that it
//! can tell its client "nothing was changed" or "retry with the same Idempotency-Key"
//! truthfully. Only the backend knows, so its errors say it
//! ([`StoreError::may_have_applied`]): a statement the database rolled back or never
//! received changed nothing; a command whose answer was lost on the way back may have
//! run. For that answer to come in time, every backend keeps its own timeouts (SQLite's
//! busy timeout, PostgreSQL's `statement_timeout`, the Redis response timeout) below
//! [`StoreConfig::op_timeout`], the caller's limit: a database that gives up first
//! rolls back and says so, where a caller that gives up first can only say "maybe".
//!
//! ## Reads that read
//!
//! A session's idle TTL slides with every request, but a read extends it only when the
//! new expiry would be more than [`StoreConfig::touch_slack_ms`] later than the stored
//! one: most reads are then read-only statements (no WAL record, no replication, no
//! write lock), and a session still expires at most `touch_slack_ms` early.
//!
//! ## Backends are cargo features
//!
//! `sqlite`, `postgres` and `redis` (all on by default) each compile one central
//! backend and its driver; the memory store is always there. A build without one still
//! parses its URLs, and says which feature to rebuild with
//! ([`StoreError::Config`]) instead of opening it.

#![warn(missing_docs)]

#[cfg(any(feature = "postgres", feature = "redis"))]
mod admin;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
mod codec;
mod error;
mod ids;
mod instrument;
mod memory;
mod open;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "redis")]
pub use self::redis::RedisStore;
#[cfg(feature = "redis")]
pub use admin::delete_redis_prefix;
#[cfg(feature = "postgres")]
pub use admin::drop_postgres_schema;
pub use error::{Source, StoreError};
pub use ids::{SessionId, is_order_id, new_order_id};
pub use instrument::{Instrumented, OpCount, StoreOp};
pub use memory::{MemoryStore, SessionSnapshot};
pub use open::{StoreUrl, open};
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use bistro_orders::Order;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings every backend honours.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// A session untouched for this long expires (and its orders with it).
    pub session_ttl_ms: u64,
    /// How long an idempotency record is kept.
    pub idempotency_ttl_ms: u64,
    /// How long an unfinished idempotency record blocks a repeat before a retry may run
    /// the request again (the first attempt is presumed dead).
    pub idempotency_pending_ms: u64,
    /// Most sessions held at once; `create_session` fails with
    /// [`StoreError::SessionLimit`] beyond it. Only the memory store enforces it (a
    /// count of a central store's sessions is not cheap enough for every creation; the
    /// waiter checks central stores against its periodic count instead).
    pub max_sessions: usize,
    /// Most orders one session holds; `insert_order` fails with
    /// [`StoreError::OrderLimit`] beyond it.
    pub max_orders_per_session: usize,
    /// Most idempotency records one session holds; `idempotency_begin` prunes the
    /// session's expired records and then fails with [`StoreError::IdempotencyLimit`].
    pub max_idempotency_per_session: usize,
    /// The caller's limit on one operation. Backends keep their own timeouts below it
    /// (see the crate docs), so an operation that fails in time says whether it was
    /// applied.
    pub op_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            session_ttl_ms: 30 * 60 * 1000,
            idempotency_ttl_ms: 24 * 60 * 60 * 1000,
            idempotency_pending_ms: 30 * 1000,
            max_sessions: 100_000,
            max_orders_per_session: 100,
            max_idempotency_per_session: 1_000,
            op_timeout: Duration::from_secs(2),
        }
    }
}

impl StoreConfig {
    /// How far a read may leave a session's expiry behind before it writes a new one:
    /// a tenth of the TTL, at most a minute.
    pub fn touch_slack_ms(&self) -> u64 {
        (self.session_ttl_ms / 10).min(60_000)
    }

    /// A read at `now` touches its session only when the stored expiry is below this:
    /// a fresh expiry minus [`StoreConfig::touch_slack_ms`].
    pub fn stale_before(&self, now: u64) -> u64 {
        now.saturating_add(self.session_ttl_ms)
            .saturating_sub(self.touch_slack_ms())
    }

    /// The timeout a backend gives its own database operations: three quarters of
    /// [`StoreConfig::op_timeout`], so the database answers before the caller gives up.
    pub fn backend_timeout(&self) -> Duration {
        self.op_timeout * 3 / 4
    }
}

/// What [`OrderStore::create_session`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCreated {
    /// A new, empty session.
    New,
    /// A live session with this id existed already; it was kept (and touched). Only
    /// ids derived from a client's request can meet this (see the waiter's
    /// idempotent session creation); random ids do not collide.
    Existing,
}

/// A response kept for an idempotency key, replayed to repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// HTTP status code.
    pub status: u16,
    /// Headers worth replaying (`Location`, `ETag`, `Content-Type`).
    pub headers: Vec<(String, String)>,
    /// The response body.
    pub body: String,
}

/// What [`OrderStore::idempotency_begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// No record: the caller now holds the key and must `finish` or `abort` it.
    Proceed,
    /// The request already completed: replay this response, do not redo the work.
    Replay(StoredResponse),
    /// The key was used with a different request (method, path or body).
    Mismatch,
    /// Another request with this key is running right now.
    InProgress,
}

/// How many sessions and orders a store holds (live or not yet swept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Sessions, expired ones the sweeper has not deleted yet included.
    pub sessions: u64,
    /// Orders, across every session.
    pub orders: u64,
}

/// Where the orders are kept. See the crate docs for the contract shared by all backends.
///
/// Errors every method may return: [`StoreError::Unavailable`] or
/// [`StoreError::Timeout`] (the store could not be reached; retryable) and
/// [`StoreError::Corrupt`]. Methods taking a session return
/// [`StoreError::UnknownSession`] when it does not exist or has expired.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Backend name: `memory`, `sqlite`, `postgres` or `redis`.
    fn kind(&self) -> &'static str;

    /// Cheap liveness probe of the backend (used by `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates a session that expires `session_ttl_ms` after `now`, unless a live one
    /// with this id exists (then it is kept and touched). An expired one awaiting the
    /// sweeper is replaced, with everything it held.
    ///
    /// # Errors
    /// [`StoreError::SessionLimit`] when the store holds `max_sessions` already.
    async fn create_session(
        &self,
        session: SessionId,
        now: u64,
    ) -> Result<SessionCreated, StoreError>;

    /// Extends a session's TTL. `Ok(false)` if it does not exist or has expired.
    async fn touch_session(&self, session: SessionId, now: u64) -> Result<bool, StoreError>;

    /// The session's orders, oldest first (touches the session).
    async fn list_orders(&self, session: SessionId, now: u64) -> Result<Vec<Order>, StoreError>;

    /// One order of the session (touches the session).
    ///
    /// # Errors
    /// [`StoreError::OrderNotFound`] when the session has no such order, including when
    /// the order belongs to another session.
    async fn get_order(
        &self,
        session: SessionId,
        order_id: &str,
        now: u64,
    ) -> Result<Order, StoreError>;

    /// Stores a new order under the session (touches the session).
    ///
    /// # Errors
    /// [`StoreError::OrderLimit`] when the session holds `max_orders_per_session`;
    /// [`StoreError::DuplicateOrder`] when the id is taken.
    async fn insert_order(
        &self,
        session: SessionId,
        order: &Order,
        now: u64,
    ) -> Result<(), StoreError>;

    /// Replaces the order if the stored one is at version `expected` (compare-and-set;
    /// touches the session). The new order's own version is what is stored.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the stored version is not `expected` (another
    /// writer got there first); [`StoreError::OrderNotFound`] when the order is gone.
    async fn update_order(
        &self,
        session: SessionId,
        order: &Order,
        expected: u64,
        now: u64,
    ) -> Result<(), StoreError>;

    /// Claims an idempotency key for a request with `fingerprint` (a hash of method,
    /// path and body), or finds what an earlier request with the same key did.
    ///
    /// # Errors
    /// [`StoreError::IdempotencyLimit`] when claiming a new key would hold more than
    /// `max_idempotency_per_session` live records.
    async fn idempotency_begin(
        &self,
        session: SessionId,
        key: &str,
        fingerprint: &str,
        now: u64,
    ) -> Result<IdempotencyBegin, StoreError>;

    /// Records the response of a request that claimed `key`, for `idempotency_ttl_ms`.
    async fn idempotency_finish(
        &self,
        session: SessionId,
        key: &str,
        response: &StoredResponse,
        now: u64,
    ) -> Result<(), StoreError>;

    /// Releases a claimed key whose request failed without an effect, so a retry can run.
    async fn idempotency_abort(&self, session: SessionId, key: &str) -> Result<(), StoreError>;

    /// Up to `limit` orders whose kitchen step is due at `now`, with their sessions.
    async fn kitchen_due(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<Vec<(SessionId, Order)>, StoreError>;

    /// Deletes up to `batch` expired sessions with their orders and idempotency records,
    /// and expired idempotency records; returns how many sessions went.
    async fn sweep(&self, now: u64, batch: usize) -> Result<usize, StoreError>;

    /// How much the store holds.
    async fn counts(&self) -> Result<Counts, StoreError>;
}
