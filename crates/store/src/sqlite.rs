//! SQLite: one database file that every waiter on one machine shares.
//!
//! The file holds three tables (see [`SCHEMA_V1`]): sessions with their expiry, orders as
//! JSON documents beside the columns the store queries on (session, id, version, kitchen
//! due time), and idempotency records. Several waiter *processes* may open the same file;
//! SQLite's file locks coordinate them, and the settings below make that cheap and safe.
//!
//! ## Why these settings
//!
//! - **WAL journal** (`journal_mode=WAL`): readers never block the writer and the writer
//!   never blocks readers, and a commit appends to the log instead of rewriting pages in
//!   place. Without it a waiter listing orders would stall every other waiter's writes.
//! - **`synchronous=NORMAL`**: in WAL mode a commit survives a crash of the process; only
//!   the last commits can be lost on a power cut, for a fraction of `FULL`'s fsyncs.
//! - **`busy_timeout`** of three quarters of the operation timeout: when another
//!   connection or process holds the write lock, wait for it instead of failing at once
//!   with `SQLITE_BUSY`, but give up (and roll back, so the caller knows nothing was
//!   written) before the caller's own timeout would leave it guessing.
//! - **`BEGIN IMMEDIATE`** for every transaction that writes: it takes the write lock when
//!   it starts, so concurrent writers (threads or processes) queue on the busy timeout. A
//!   deferred transaction that reads first and writes later must *upgrade* its lock, and
//!   when another connection committed in between SQLite cannot let it wait (its snapshot
//!   is stale), so it fails with `SQLITE_BUSY` whatever the busy timeout. The transactions
//!   here all start with the touch, a write, but `IMMEDIATE` makes that safe by
//!   construction rather than by the order of statements.
//! - **`foreign_keys=ON`**: orders and idempotency records reference their session with
//!   `ON DELETE CASCADE`, so deleting a session row removes everything it owned.
//!
//! ## Blocking work off the runtime
//!
//! rusqlite is blocking. Every operation runs on tokio's blocking pool
//! (`spawn_blocking`) with a connection from a small pool (four, opened on first use), so
//! a slow disk or a held lock never stalls the async runtime. A semaphore keeps at most
//! four operations in flight per store; since SQLite has one writer at a time, more would
//! only queue inside SQLite.
//!
//! ## Sessions and their TTL
//!
//! A session row carries `expires_at` (unix ms). Every method that writes runs one
//! `BEGIN IMMEDIATE` transaction whose first statement is the touch,
//! `UPDATE ... SET expires_at = now + ttl WHERE id = ? AND expires_at > now`: no row
//! changed means the session is unknown or expired (an expired row awaiting the sweeper
//! counts as absent). The rest of the work runs in the same transaction, which commits
//! even when the answer is a domain error (conflict, not found), so the touch stands as in
//! the memory store. The write lock it holds also makes the caps exact (orders and
//! idempotency records per session are counted under it).
//!
//! Reads (`list_orders`, `get_order`) are plain read transactions, which under WAL take
//! no lock at all; only when the session's expiry has fallen more than the touch slack
//! behind does a read follow up with the touch (see the crate docs).
//! [`OrderStore::sweep`] deletes expired sessions in bounded batches.
//!
//! ## Cost per operation
//!
//! There is no network: each trait method is one transaction on one `spawn_blocking` hop
//! (`ping`, `counts` and `kitchen_due` are a single read without a write lock).

use crate::codec::{decode_order, decode_response, encode, ms, session_id, stored_u64};
use crate::{
    Counts, IdempotencyBegin, OrderStore, SessionCreated, SessionId, StoreConfig, StoreError,
    StoredResponse,
};
use async_trait::async_trait;
use bistro_orders::Order;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior, params,
};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Connections per store (and operations in flight).
const POOL_SIZE: usize = 4;
/// How long opening the store waits for another process's lock (see [`SqliteStore::open`]).
const STARTUP_BUSY: Duration = Duration::from_secs(10);

/// The first schema. Sessions are keyed by their 16 raw bytes; orders keep insertion
/// order through `seq` (the rowid), so `list_orders` returns them oldest first.
const SCHEMA_V1: &str = "
CREATE TABLE bistro_sessions (
    id BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX bistro_sessions_expiry ON bistro_sessions (expires_at);

CREATE TABLE bistro_orders (
    seq INTEGER PRIMARY KEY,
    session BLOB NOT NULL REFERENCES bistro_sessions (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    kitchen_due_ms INTEGER,
    doc TEXT NOT NULL,
    UNIQUE (session, id)
);
CREATE INDEX bistro_orders_kitchen ON bistro_orders (kitchen_due_ms)
    WHERE kitchen_due_ms IS NOT NULL;

CREATE TABLE bistro_idempotency (
    session BLOB NOT NULL REFERENCES bistro_sessions (id) ON DELETE CASCADE,
    idem_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    response TEXT,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (session, idem_key)
) WITHOUT ROWID;
CREATE INDEX bistro_idempotency_expiry ON bistro_idempotency (expires_at);
";

/// Schema migrations: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[SCHEMA_V1];

// max(): a touch with a slightly older `now` (another waiter's clock) never shortens a
// session.
const TOUCH: &str =
    "UPDATE bistro_sessions SET expires_at = max(expires_at, ?3) WHERE id = ?1 AND expires_at > ?2";

/// A store in a SQLite file, shared by the waiters of one machine.
pub struct SqliteStore {
    config: StoreConfig,
    pool: Arc<Pool>,
}

struct Pool {
    path: String,
    /// How long a statement waits for another connection's lock before failing.
    busy: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.pool.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// Safe to call from several processes at once: the migration runs under
    /// `BEGIN IMMEDIATE`, so one process migrates and the others find it done.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be opened or written,
    /// [`StoreError::Config`] when it cannot use WAL (e.g. `:memory:`) or was written by
    /// a newer bistro.
    pub async fn open(path: &str, config: StoreConfig) -> Result<SqliteStore, StoreError> {
        let pool = Arc::new(Pool {
            path: path.to_string(),
            busy: config.backend_timeout(),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(POOL_SIZE),
        });
        // Startup waits longer for the lock than a request does: several waiters
        // starting on a fresh file all switch it to WAL and migrate at once.
        let path = path.to_string();
        tokio::task::spawn_blocking(move || {
            // Switching a fresh file to WAL needs an exclusive lock, and SQLite answers
            // a connection that cannot have it at once with SQLITE_BUSY, busy timeout or
            // not (seen with four waiters opening one new file together): try again
            // until the startup deadline.
            let deadline = std::time::Instant::now() + STARTUP_BUSY;
            let mut pause = Duration::from_millis(5);
            loop {
                let attempt =
                    open_connection(&path, STARTUP_BUSY).and_then(|mut conn| migrate(&mut conn));
                match attempt {
                    Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(200));
                    }
                    other => return other,
                }
            }
        })
        .await
        .map_err(|e| StoreError::unavailable(format!("the SQLite migration failed: {e}")))?
        .map_err(|e| busy_means_timeout(e, STARTUP_BUSY))?;
        Ok(SqliteStore { config, pool })
    }

    /// Runs blocking `work` with a pooled connection on tokio's blocking pool.
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .pool
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::unavailable("the SQLite pool is closed"))?;
        let pool = Arc::clone(&self.pool);
        tokio::task::spawn_blocking(move || {
            let popped = lock(&pool.idle).pop();
            let mut conn = match popped {
                Some(conn) => conn,
                None => open_connection(&pool.path, pool.busy)
                    .map_err(|e| busy_means_timeout(e, pool.busy))?,
            };
            let result = work(&mut conn).map_err(|e| busy_means_timeout(e, pool.busy));
            // A connection left inside a transaction (a failed rollback) is not reused.
            if conn.is_autocommit() {
                let mut idle = lock(&pool.idle);
                if idle.len() < POOL_SIZE {
                    idle.push(conn);
                }
            }
            result
        })
        .await
        // The worker panicked: whether its transaction committed first is unknown.
        .map_err(|e| StoreError::lost(format!("a SQLite worker failed: {e}"), Some(Arc::new(e))))?
    }

    /// Touches `session` and runs `work` in the same `BEGIN IMMEDIATE` transaction.
    ///
    /// Commits unless `work` failed because of the store, so the touch stands when the
    /// answer is a domain error such as a conflict.
    async fn with_session<T, F>(
        &self,
        session: SessionId,
        now: u64,
        work: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let expires_at = ms(now.saturating_add(self.config.session_ttl_ms));
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let touched = tx
                .prepare_cached(TOUCH)
                .and_then(|mut st| {
                    st.execute(params![&session.as_bytes()[..], ms(now), expires_at])
                })
                .map_err(db)?;
            if touched == 0 {
                return Err(StoreError::UnknownSession);
            }
            match work(&tx) {
                Err(e) if is_store_failure(&e) => Err(e),
                result => {
                    commit(tx)?;
                    result
                }
            }
        })
        .await
    }

    /// Runs `work` in a read transaction on a live `session`, then touches the session
    /// only if its expiry has fallen more than the touch slack behind (see the module
    /// docs): most reads write nothing.
    async fn read_session<T, F>(
        &self,
        session: SessionId,
        now: u64,
        work: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let new_expiry = now.saturating_add(self.config.session_ttl_ms);
        let stale_before = ms(self.config.stale_before(now));
        let (result, stale) = self
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Deferred)
                    .map_err(db)?;
                let expires_at: Option<i64> = tx
                    .prepare_cached(
                        "SELECT expires_at FROM bistro_sessions WHERE id = ?1 AND expires_at > ?2",
                    )
                    .and_then(|mut st| {
                        st.query_row(params![&session.as_bytes()[..], ms(now)], |row| row.get(0))
                            .optional()
                    })
                    .map_err(db)?;
                let Some(expires_at) = expires_at else {
                    return Err(StoreError::UnknownSession);
                };
                let result = work(&tx);
                // A read transaction has nothing to commit; ending it releases the snapshot.
                drop(tx);
                Ok((result, expires_at < stale_before))
            })
            .await?;
        if stale {
            self.run(move |conn| {
                conn.prepare_cached(TOUCH)
                    .and_then(|mut st| {
                        st.execute(params![&session.as_bytes()[..], ms(now), ms(new_expiry)])
                    })
                    .map_err(db)
            })
            .await?;
        }
        result
    }
}

fn open_connection(path: &str, busy: Duration) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(db)?;
    conn.busy_timeout(busy).map_err(db)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(db)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Config(format!(
            "SQLite database {path:?} cannot use WAL (journal mode {mode}); use a file on a local disk"
        )));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
    Ok(conn)
}

/// Creates or upgrades the schema, recording its version in `bistro_schema`.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS bistro_schema (version INTEGER NOT NULL)")
        .map_err(db)?;
    let stored: Option<i64> = tx
        .query_row("SELECT max(version) FROM bistro_schema", [], |row| {
            row.get(0)
        })
        .map_err(db)?;
    let current = stored.unwrap_or(0);
    let latest = MIGRATIONS.len() as i64;
    if current > latest {
        return Err(StoreError::Config(format!(
            "the SQLite database has schema version {current}, newer than this bistro understands ({latest}); upgrade bistro"
        )));
    }
    if current == latest {
        return Ok(());
    }
    for step in &MIGRATIONS[current as usize..] {
        tx.execute_batch(step).map_err(db)?;
    }
    tx.execute("DELETE FROM bistro_schema", []).map_err(db)?;
    tx.execute("INSERT INTO bistro_schema (version) VALUES (?1)", [latest])
        .map_err(db)?;
    tx.commit().map_err(db)
}

#[async_trait]
impl OrderStore for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(db))
            .await
    }

    async fn create_session(
        &self,
        session: SessionId,
        now: u64,
    ) -> Result<SessionCreated, StoreError> {
        let expires_at = ms(now.saturating_add(self.config.session_ttl_ms));
        self.run(move |conn| {
            let id = &session.as_bytes()[..];
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let kept = tx
                .prepare_cached(TOUCH)
                .and_then(|mut st| st.execute(params![id, ms(now), expires_at]))
                .map_err(db)?;
            if kept == 1 {
                tx.commit().map_err(db)?;
                return Ok(SessionCreated::Existing);
            }
            // A row left under this id is an expired session awaiting the sweeper, which
            // the new one replaces (the cascade drops its orders).
            tx.prepare_cached("DELETE FROM bistro_sessions WHERE id = ?1")
                .and_then(|mut st| st.execute([id]))
                .map_err(db)?;
            tx.prepare_cached("INSERT INTO bistro_sessions (id, expires_at) VALUES (?1, ?2)")
                .and_then(|mut st| st.execute(params![id, expires_at]))
                .map_err(db)?;
            commit(tx)?;
            Ok(SessionCreated::New)
        })
        .await
    }

    async fn touch_session(&self, session: SessionId, now: u64) -> Result<bool, StoreError> {
        match self.with_session(session, now, |_| Ok(())).await {
            Ok(()) => Ok(true),
            Err(StoreError::UnknownSession) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn list_orders(&self, session: SessionId, now: u64) -> Result<Vec<Order>, StoreError> {
        self.read_session(session, now, move |tx| {
            let mut st = tx
                .prepare_cached("SELECT doc FROM bistro_orders WHERE session = ?1 ORDER BY seq")
                .map_err(db)?;
            let docs = st
                .query_map([&session.as_bytes()[..]], |row| row.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db)?;
            docs.iter().map(|doc| decode_order(doc)).collect()
        })
        .await
    }

    async fn get_order(
        &self,
        session: SessionId,
        order_id: &str,
        now: u64,
    ) -> Result<Order, StoreError> {
        let order_id = order_id.to_string();
        self.read_session(session, now, move |tx| {
            let doc: Option<String> = tx
                .prepare_cached("SELECT doc FROM bistro_orders WHERE session = ?1 AND id = ?2")
                .and_then(|mut st| {
                    st.query_row(params![&session.as_bytes()[..], order_id], |row| row.get(0))
                        .optional()
                })
                .map_err(db)?;
            decode_order(&doc.ok_or(StoreError::OrderNotFound)?)
        })
        .await
    }

    async fn insert_order(
        &self,
        session: SessionId,
        order: &Order,
        now: u64,
    ) -> Result<(), StoreError> {
        let doc = encode(order)?;
        let (id, version, due) = (
            order.id.clone(),
            ms(order.version),
            order.kitchen_due_ms.map(ms),
        );
        let limit = self.config.max_orders_per_session;
        self.with_session(session, now, move |tx| {
            let sid = &session.as_bytes()[..];
            // Counted under the transaction's write lock: exact.
            let held: i64 = tx
                .prepare_cached("SELECT count(*) FROM bistro_orders WHERE session = ?1")
                .and_then(|mut st| st.query_row([sid], |row| row.get(0)))
                .map_err(db)?;
            if stored_u64(held)? >= limit as u64 {
                return Err(StoreError::OrderLimit { limit });
            }
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO bistro_orders (session, id, version, kitchen_due_ms, doc) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (session, id) DO NOTHING",
                )
                .and_then(|mut st| st.execute(params![sid, id, version, due, doc]))
                .map_err(db)?;
            if inserted == 0 {
                return Err(StoreError::DuplicateOrder);
            }
            Ok(())
        })
        .await
    }

    async fn update_order(
        &self,
        session: SessionId,
        order: &Order,
        expected: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        let doc = encode(order)?;
        let (id, version, due) = (
            order.id.clone(),
            ms(order.version),
            order.kitchen_due_ms.map(ms),
        );
        self.with_session(session, now, move |tx| {
            let sid = &session.as_bytes()[..];
            let updated = tx
                .prepare_cached(
                    "UPDATE bistro_orders SET version = ?4, kitchen_due_ms = ?5, doc = ?6
                     WHERE session = ?1 AND id = ?2 AND version = ?3",
                )
                .and_then(|mut st| st.execute(params![sid, id, ms(expected), version, due, doc]))
                .map_err(db)?;
            if updated == 1 {
                return Ok(());
            }
            let actual: Option<i64> = tx
                .prepare_cached("SELECT version FROM bistro_orders WHERE session = ?1 AND id = ?2")
                .and_then(|mut st| st.query_row(params![sid, id], |row| row.get(0)).optional())
                .map_err(db)?;
            match actual {
                None => Err(StoreError::OrderNotFound),
                Some(actual) => Err(StoreError::Conflict {
                    expected,
                    actual: stored_u64(actual)?,
                }),
            }
        })
        .await
    }

    async fn idempotency_begin(
        &self,
        session: SessionId,
        key: &str,
        fingerprint: &str,
        now: u64,
    ) -> Result<IdempotencyBegin, StoreError> {
        let (key, fingerprint) = (key.to_string(), fingerprint.to_string());
        let pending_until = ms(now.saturating_add(self.config.idempotency_pending_ms));
        let limit = self.config.max_idempotency_per_session;
        self.with_session(session, now, move |tx| {
            let sid = &session.as_bytes()[..];
            // The transaction holds the write lock, so read-then-claim is atomic.
            let found: Option<(String, String, Option<String>, i64)> = tx
                .prepare_cached(
                    "SELECT fingerprint, state, response, expires_at FROM bistro_idempotency
                     WHERE session = ?1 AND idem_key = ?2",
                )
                .and_then(|mut st| {
                    st.query_row(params![sid, key], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()
                })
                .map_err(db)?;
            let found_expired = found.as_ref().map(|f| f.3 <= ms(now));
            if let Some((stored_fingerprint, state, response, expires_at)) = found
                && expires_at > ms(now)
            {
                if stored_fingerprint != fingerprint {
                    return Ok(IdempotencyBegin::Mismatch);
                }
                return match (state.as_str(), response) {
                    ("pending", _) => Ok(IdempotencyBegin::InProgress),
                    ("done", Some(response)) => {
                        Ok(IdempotencyBegin::Replay(decode_response(&response)?))
                    }
                    (state, _) => Err(StoreError::Corrupt(format!(
                        "idempotency record in state {state:?}"
                    ))),
                };
            }
            if found_expired.is_none() {
                // A new key: counted under the write lock, after pruning the expired.
                let live = |tx: &Transaction<'_>| -> Result<u64, StoreError> {
                    let n: i64 = tx
                        .prepare_cached(
                            "SELECT count(*) FROM bistro_idempotency WHERE session = ?1 AND expires_at > ?2",
                        )
                        .and_then(|mut st| st.query_row(params![sid, ms(now)], |row| row.get(0)))
                        .map_err(db)?;
                    stored_u64(n)
                };
                if live(tx)? >= limit as u64 {
                    tx.prepare_cached(
                        "DELETE FROM bistro_idempotency WHERE session = ?1 AND expires_at <= ?2",
                    )
                    .and_then(|mut st| st.execute(params![sid, ms(now)]))
                    .map_err(db)?;
                    if live(tx)? >= limit as u64 {
                        return Err(StoreError::IdempotencyLimit { limit });
                    }
                }
            }
            tx.prepare_cached(
                "INSERT INTO bistro_idempotency
                     (session, idem_key, fingerprint, state, response, updated_at, expires_at)
                 VALUES (?1, ?2, ?3, 'pending', NULL, ?4, ?5)
                 ON CONFLICT (session, idem_key) DO UPDATE SET
                     fingerprint = excluded.fingerprint, state = 'pending', response = NULL,
                     updated_at = excluded.updated_at, expires_at = excluded.expires_at",
            )
            .and_then(|mut st| st.execute(params![sid, key, fingerprint, ms(now), pending_until]))
            .map_err(db)?;
            Ok(IdempotencyBegin::Proceed)
        })
        .await
    }

    async fn idempotency_finish(
        &self,
        session: SessionId,
        key: &str,
        response: &StoredResponse,
        now: u64,
    ) -> Result<(), StoreError> {
        let (key, response) = (key.to_string(), encode(response)?);
        let done_until = ms(now.saturating_add(self.config.idempotency_ttl_ms));
        self.with_session(session, now, move |tx| {
            tx.prepare_cached(
                "UPDATE bistro_idempotency SET state = 'done', response = ?3, updated_at = ?4, expires_at = ?5
                 WHERE session = ?1 AND idem_key = ?2",
            )
            .and_then(|mut st| st.execute(params![&session.as_bytes()[..], key, response, ms(now), done_until]))
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn idempotency_abort(&self, session: SessionId, key: &str) -> Result<(), StoreError> {
        let key = key.to_string();
        self.run(move |conn| {
            conn.prepare_cached("DELETE FROM bistro_idempotency WHERE session = ?1 AND idem_key = ?2 AND state = 'pending'")
                .and_then(|mut st| st.execute(params![&session.as_bytes()[..], key]))
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn kitchen_due(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<Vec<(SessionId, Order)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |conn| {
            // Orders of expired sessions are left to the sweeper: no waiter may change them.
            let mut st = conn
                .prepare_cached(
                    "SELECT o.session, o.doc FROM bistro_orders o JOIN bistro_sessions s ON s.id = o.session
                     WHERE o.kitchen_due_ms <= ?1 AND s.expires_at > ?1
                     ORDER BY o.kitchen_due_ms LIMIT ?2",
                )
                .map_err(db)?;
            let rows = st
                .query_map(params![ms(now), limit], |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, String>(1)?)))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db)?;
            rows.into_iter().map(|(sid, doc)| Ok((session_id(&sid)?, decode_order(&doc)?))).collect()
        })
        .await
    }

    async fn sweep(&self, now: u64, batch: usize) -> Result<usize, StoreError> {
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            // The cascade removes the sessions' orders and idempotency records; `execute`
            // counts only the session rows.
            let removed = tx
                .prepare_cached(
                    "DELETE FROM bistro_sessions WHERE id IN
                     (SELECT id FROM bistro_sessions WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
                )
                .and_then(|mut st| st.execute(params![ms(now), batch]))
                .map_err(db)?;
            tx.prepare_cached(
                "DELETE FROM bistro_idempotency WHERE (session, idem_key) IN
                 (SELECT session, idem_key FROM bistro_idempotency WHERE expires_at <= ?1 LIMIT ?2)",
            )
            .and_then(|mut st| st.execute(params![ms(now), batch]))
            .map_err(db)?;
            commit(tx)?;
            Ok(removed)
        })
        .await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.run(|conn| {
            let (sessions, orders): (i64, i64) = conn
                .query_row(
                    "SELECT (SELECT count(*) FROM bistro_sessions), (SELECT count(*) FROM bistro_orders)",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(db)?;
            Ok(Counts { sessions: stored_u64(sessions)?, orders: stored_u64(orders)? })
        })
        .await
    }
}

/// Whether `e` is the store's fault (the transaction then rolls back).
fn is_store_failure(e: &StoreError) -> bool {
    e.is_outage() || matches!(e, StoreError::Corrupt(_) | StoreError::Config(_))
}

/// A failed statement: SQLite rolls the transaction back, so nothing was applied (a
/// failed `COMMIT` is the exception, see [`commit`]).
fn db(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt(format!("sqlite: {e}"))
        }
        _ => StoreError::unavailable(format!("sqlite: {e}")).with_source(Arc::new(e)),
    }
}

/// Whether `e` is SQLite's `SQLITE_BUSY` or `SQLITE_LOCKED`.
fn is_busy(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Unavailable { source: Some(source), .. }
            if source
                .downcast_ref::<rusqlite::Error>()
                .and_then(rusqlite::Error::sqlite_error_code)
                .is_some_and(|c| matches!(c, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
    )
}

/// `SQLITE_BUSY` after the busy timeout: the lock never came, the statement was not run.
fn busy_means_timeout(e: StoreError, busy: Duration) -> StoreError {
    if is_busy(&e) {
        StoreError::Timeout {
            after: busy,
            maybe_applied: false,
        }
    } else {
        e
    }
}

/// Commits; a commit that fails with an I/O error may or may not have reached the
/// disk, so it says "maybe".
fn commit(tx: Transaction<'_>) -> Result<(), StoreError> {
    tx.commit().map_err(|e| match e.sqlite_error_code() {
        Some(ErrorCode::SystemIoFailure | ErrorCode::DiskFull) => {
            StoreError::lost(format!("sqlite commit: {e}"), Some(Arc::new(e)))
        }
        _ => db(e),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The pool only holds idle connections; a panic elsewhere cannot leave it half-updated.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
