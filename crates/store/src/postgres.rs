//! PostgreSQL: the central store for waiters on many machines.
//!
//! Three tables (see [`SCHEMA_V1`]): sessions with their expiry, orders as JSONB documents
//! beside the columns the store queries on (session, id, version, kitchen due time), and
//! idempotency records. Orders and idempotency records reference their session with
//! `ON DELETE CASCADE`, so deleting a session removes everything it owned.
//!
//! ## One round trip per method
//!
//! Every method that takes a session is **one prepared statement** in the common case. A write's
//! data-modifying CTE first touches the session (`UPDATE bistro_sessions SET expires_at
//! = now + ttl WHERE id = $1 AND expires_at > now RETURNING id`) and the rest of the
//! statement does the work only for the row that CTE returned. No row means unknown or
//! expired (an expired row awaiting the sweeper counts as absent). A statement is its
//! own transaction, so touch and work commit together, and no method needs
//! `BEGIN`/`COMMIT` round trips. The update of the session row also serializes
//! concurrent statements on one session.
//!
//! A **read** (`list_orders`, `get_order`) is a plain `SELECT` of the session's expiry
//! and its orders, with no data-modifying CTE: it takes no row lock, assigns no
//! transaction id, writes no WAL and waits for no flush. Only when the expiry it saw has
//! fallen more than the touch slack behind does a second statement touch the session
//! (once a minute per active session at most). That is the difference between a read
//! costing a commit and costing a lookup.
//!
//! ## Limits
//!
//! `statement_timeout` is set on every connection below the caller's operation timeout,
//! so a statement stuck behind a lock is cancelled and rolled back by the server, and
//! the caller learns that nothing was applied. The caps on orders and idempotency
//! records per session are counted in the statement that adds one; concurrent
//! statements of one session see each other only once committed, so a burst of them
//! may overshoot a cap by its own size (not more: each is bounded by what it saw).
//!
//! `update_order` is a compare-and-set: `UPDATE bistro_orders ... WHERE version =
//! expected`. Under READ COMMITTED a concurrent writer that committed first makes
//! PostgreSQL re-check that condition on the new row, so exactly one of two writers of a
//! version wins. Two rare paths cost a second read: reporting the winner's version after
//! a conflict lost *during* the statement, and `idempotency_begin` finding that a
//! concurrent request claimed the key after the statement's snapshot was taken.
//!
//! ## Connections
//!
//! A small pool ([`POOL_SIZE`] clients, opened on first use, used round robin). A
//! tokio-postgres client pipelines concurrent statements on its connection, and since no
//! method needs a transaction a client is shared rather than checked out. Each client
//! prepares every statement once when it connects. A client whose connection died (server
//! restart, network) is replaced on its next use, so the store recovers by itself after
//! an outage; the statement that met the outage fails with [`StoreError::Unavailable`]
//! and is never retried behind the caller's back (a write whose fate is unknown must not
//! be reported as done, nor done twice).
//!
//! ## Schema
//!
//! Created and migrated at connect, versioned in `bistro_schema`, under a transaction-level
//! advisory lock keyed by the schema name, so waiters starting together take turns.
//! [`PostgresStore::connect_in_schema`] keeps everything in one named schema (created if
//! absent, set as `search_path` on every connection): tests use one schema each.

use crate::codec::{decode_order, decode_response, encode, ms, session_id, stored_u64};
use crate::{
    Counts, IdempotencyBegin, OrderStore, SessionCreated, SessionId, StoreConfig, StoreError,
    StoredResponse,
};
use async_trait::async_trait;
use bistro_orders::Order;
use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Statement};

/// Clients per store. Each pipelines its statements, so a few suffice; more mean more
/// server processes to wake per request (on a two-core machine, `bistro bench store`
/// read 25% more requests per second with 4 than with 8, and wrote 35% more).
const POOL_SIZE: usize = 4;
/// Limit on establishing one connection (TCP, startup, authentication, preparing).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

const SCHEMA_V1: &str = "
CREATE TABLE bistro_sessions (
    id BYTEA PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX bistro_sessions_expiry ON bistro_sessions (expires_at);

CREATE TABLE bistro_orders (
    session BYTEA NOT NULL REFERENCES bistro_sessions (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    version BIGINT NOT NULL,
    kitchen_due_ms BIGINT,
    doc JSONB NOT NULL,
    PRIMARY KEY (session, id)
);
CREATE INDEX bistro_orders_kitchen ON bistro_orders (kitchen_due_ms)
    WHERE kitchen_due_ms IS NOT NULL;

CREATE TABLE bistro_idempotency (
    session BYTEA NOT NULL REFERENCES bistro_sessions (id) ON DELETE CASCADE,
    idem_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    response JSONB,
    updated_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (session, idem_key)
);
CREATE INDEX bistro_idempotency_expiry ON bistro_idempotency (expires_at);
";

/// Schema migrations: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[SCHEMA_V1];

/// The touch every session statement starts with: $1 session, $2 now, $3 new expiry.
macro_rules! touch_cte {
    () => {
        "WITH s AS (UPDATE bistro_sessions SET expires_at = GREATEST(expires_at, $3::bigint)
                    WHERE id = $1::bytea AND expires_at > $2::bigint RETURNING id) "
    };
}

/// $1 session, $2 now, $3 new expiry. A live session is kept (and touched); an expired
/// one is replaced, its orders and records dropped; the answer says which:
/// (kept, replaced or inserted).
const CREATE_SESSION: &str = "
WITH old AS (SELECT id, expires_at > $2::bigint AS alive FROM bistro_sessions
             WHERE id = $1::bytea FOR UPDATE),
     o AS (DELETE FROM bistro_orders WHERE session = $1::bytea
           AND EXISTS (SELECT 1 FROM old WHERE NOT alive)),
     i AS (DELETE FROM bistro_idempotency WHERE session = $1::bytea
           AND EXISTS (SELECT 1 FROM old WHERE NOT alive)),
     up AS (INSERT INTO bistro_sessions (id, expires_at) VALUES ($1::bytea, $3::bigint)
            ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at RETURNING 1)
SELECT coalesce((SELECT alive FROM old), false), (SELECT count(*) FROM up)";
// GREATEST: a touch with a slightly older `now` (another waiter's clock) never shortens
// a session.
const TOUCH: &str = "UPDATE bistro_sessions SET expires_at = GREATEST(expires_at, $3::bigint) WHERE id = $1::bytea AND expires_at > $2::bigint";
/// Reads are plain `SELECT`s (no data-modifying CTE: they take no row lock and assign
/// no transaction id): $1 session, $2 now. They return the session's expiry, and the
/// caller touches the session in a second statement only when that expiry is stale.
const LIST: &str = "
SELECT s.expires_at, o.doc::text FROM bistro_sessions s
LEFT JOIN bistro_orders o ON o.session = s.id
WHERE s.id = $1::bytea AND s.expires_at > $2::bigint ORDER BY o.seq";
const GET: &str = "
SELECT s.expires_at, o.doc::text FROM bistro_sessions s
LEFT JOIN bistro_orders o ON o.session = s.id AND o.id = $3::text
WHERE s.id = $1::bytea AND s.expires_at > $2::bigint";
const INSERT: &str = concat!(
    touch_cte!(),
    ", held AS (SELECT count(*) AS n FROM bistro_orders WHERE session = $1::bytea),
       ins AS (INSERT INTO bistro_orders (session, id, version, kitchen_due_ms, doc)
              SELECT id, $4::text, $5::bigint, $6::bigint, $7::text::jsonb FROM s, held
              WHERE held.n < $8::bigint
              ON CONFLICT (session, id) DO NOTHING RETURNING 1)
     SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM ins), (SELECT n FROM held)"
);
const UPDATE: &str = concat!(
    touch_cte!(),
    ", upd AS (UPDATE bistro_orders o SET version = $5::bigint, kitchen_due_ms = $6::bigint, doc = $7::text::jsonb
              FROM s WHERE o.session = s.id AND o.id = $4::text AND o.version = $8::bigint RETURNING 1)
     SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM upd),
            (SELECT version FROM bistro_orders WHERE session = $1::bytea AND id = $4::text)"
);
const ORDER_VERSION: &str =
    "SELECT version FROM bistro_orders WHERE session = $1::bytea AND id = $2::text";
/// A new key is claimed only while the session holds fewer than $7 live records; the
/// expired ones are pruned in the same statement once the cap is reached.
const IDEM_BEGIN: &str = concat!(
    touch_cte!(),
    ", live AS (SELECT count(*) AS n FROM bistro_idempotency
                WHERE session = $1::bytea AND expires_at > $2::bigint AND idem_key <> $4::text),
       pruned AS (DELETE FROM bistro_idempotency
                  WHERE session = $1::bytea AND expires_at <= $2::bigint
                    AND idem_key <> $4::text AND (SELECT n FROM live) >= $7::bigint),
       claim AS (INSERT INTO bistro_idempotency AS i
                    (session, idem_key, fingerprint, state, response, updated_at, expires_at)
                SELECT id, $4::text, $5::text, 'pending', NULL, $2::bigint, $6::bigint FROM s, live
                WHERE live.n < $7::bigint
                ON CONFLICT (session, idem_key) DO UPDATE SET
                    fingerprint = EXCLUDED.fingerprint, state = 'pending', response = NULL,
                    updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at
                WHERE i.expires_at <= EXCLUDED.updated_at
                RETURNING 1)
     SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM claim),
            i.fingerprint, i.state, i.response::text, i.expires_at, (SELECT n FROM live)
     FROM (SELECT 1) AS one
     LEFT JOIN bistro_idempotency i ON i.session = $1::bytea AND i.idem_key = $4::text"
);
const IDEM_READ: &str =
    "SELECT fingerprint, state, response::text, expires_at FROM bistro_idempotency
                         WHERE session = $1::bytea AND idem_key = $2::text";
const IDEM_FINISH: &str = concat!(
    touch_cte!(),
    ", f AS (UPDATE bistro_idempotency i SET state = 'done', response = $5::text::jsonb,
                    updated_at = $2::bigint, expires_at = $6::bigint
            FROM s WHERE i.session = s.id AND i.idem_key = $4::text RETURNING 1)
     SELECT count(*) FROM s"
);
const IDEM_LIVE: &str =
    "SELECT count(*) FROM bistro_idempotency WHERE session = $1::bytea AND expires_at > $2::bigint";
const IDEM_ABORT: &str = "DELETE FROM bistro_idempotency WHERE session = $1::bytea AND idem_key = $2::text AND state = 'pending'";
// Orders of expired sessions are left to the sweeper: no waiter may change them.
const KITCHEN_DUE: &str = "
SELECT o.session, o.doc::text FROM bistro_orders o JOIN bistro_sessions s ON s.id = o.session
WHERE o.kitchen_due_ms <= $1::bigint AND s.expires_at > $1::bigint
ORDER BY o.kitchen_due_ms LIMIT $2::bigint";
// SKIP LOCKED lets several waiters sweep at once without waiting on each other; locking
// re-checks `expires_at`, so a session touched meanwhile survives. The idempotency
// delete leaves the dying sessions' records to the cascade.
const SWEEP: &str = "
WITH dead AS (SELECT id FROM bistro_sessions WHERE expires_at <= $1::bigint
              ORDER BY expires_at LIMIT $2::bigint FOR UPDATE SKIP LOCKED),
     gone AS (DELETE FROM bistro_sessions s USING dead WHERE s.id = dead.id RETURNING 1),
     stale AS (DELETE FROM bistro_idempotency WHERE (session, idem_key) IN
               (SELECT session, idem_key FROM bistro_idempotency
                WHERE expires_at <= $1::bigint AND session NOT IN (SELECT id FROM dead)
                LIMIT $2::bigint))
SELECT count(*) FROM gone";
const COUNTS: &str =
    "SELECT (SELECT count(*) FROM bistro_sessions), (SELECT count(*) FROM bistro_orders)";

/// Every statement, prepared on one connection.
struct Statements {
    create_session: Statement,
    touch: Statement,
    list: Statement,
    get: Statement,
    insert: Statement,
    update: Statement,
    order_version: Statement,
    idem_begin: Statement,
    idem_read: Statement,
    idem_finish: Statement,
    idem_abort: Statement,
    idem_live: Statement,
    kitchen_due: Statement,
    sweep: Statement,
    counts: Statement,
}

impl Statements {
    /// Prepares every statement, all in flight at once: the client pipelines them, so
    /// this costs about two round trips, not fourteen.
    async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        let (create_session, touch, list, get, insert, update, order_version) = tokio::try_join!(
            client.prepare(CREATE_SESSION),
            client.prepare(TOUCH),
            client.prepare(LIST),
            client.prepare(GET),
            client.prepare(INSERT),
            client.prepare(UPDATE),
            client.prepare(ORDER_VERSION),
        )?;
        let (idem_begin, idem_read, idem_finish, idem_abort, idem_live, kitchen_due, sweep) = tokio::try_join!(
            client.prepare(IDEM_BEGIN),
            client.prepare(IDEM_READ),
            client.prepare(IDEM_FINISH),
            client.prepare(IDEM_ABORT),
            client.prepare(IDEM_LIVE),
            client.prepare(KITCHEN_DUE),
            client.prepare(SWEEP),
        )?;
        let counts = client.prepare(COUNTS).await?;
        Ok(Statements {
            create_session,
            touch,
            list,
            get,
            insert,
            update,
            order_version,
            idem_begin,
            idem_read,
            idem_finish,
            idem_abort,
            idem_live,
            kitchen_due,
            sweep,
            counts,
        })
    }
}

/// One open connection with its prepared statements.
struct Conn {
    client: Client,
    st: Statements,
}

/// A store in PostgreSQL, shared by every waiter.
pub struct PostgresStore {
    config: StoreConfig,
    pg: tokio_postgres::Config,
    slots: Vec<Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the coordinates: the config holds the password.
        f.debug_struct("PostgresStore")
            .field("dbname", &self.pg.get_dbname())
            .field("options", &self.pg.get_options())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`, plain TCP)
    /// and brings the schema up to date. Tables go in the first schema of the
    /// connection's `search_path`, which the URL may set with
    /// `options=-csearch_path%3D<schema>` (that schema must exist).
    ///
    /// # Errors
    /// [`StoreError::Config`] for a bad URL or a schema newer than this bistro,
    /// [`StoreError::Unavailable`] when the server cannot be reached within a few seconds.
    pub async fn connect(url: &str, config: StoreConfig) -> Result<PostgresStore, StoreError> {
        PostgresStore::open(url, None, config).await
    }

    /// Like [`connect`](PostgresStore::connect), but keeps every table in `schema`,
    /// creating it if absent and setting it as `search_path` on every connection.
    ///
    /// # Errors
    /// As [`connect`](PostgresStore::connect); [`StoreError::Config`] when `schema` is
    /// not 1 to 63 lowercase letters, digits and underscores starting with a letter or
    /// underscore.
    pub async fn connect_in_schema(
        url: &str,
        schema: &str,
        config: StoreConfig,
    ) -> Result<PostgresStore, StoreError> {
        PostgresStore::open(url, Some(schema), config).await
    }

    async fn open(
        url: &str,
        schema: Option<&str>,
        config: StoreConfig,
    ) -> Result<PostgresStore, StoreError> {
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Config(format!(
                "invalid PostgreSQL URL {}: {e}",
                crate::open::redact(url)
            ))
        })?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        // The server cancels (and rolls back) a statement before the caller gives up on
        // it, so a timed-out write is known not to have happened.
        let statement_timeout = format!(
            "-c statement_timeout={}",
            config.backend_timeout().as_millis().max(1)
        );
        let options = match pg.get_options() {
            Some(existing) => format!("{existing} {statement_timeout}"),
            None => statement_timeout,
        };
        pg.options(options);
        if let Some(schema) = schema {
            let valid = !schema.is_empty()
                && schema.len() <= 63
                && schema
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && !schema.as_bytes()[0].is_ascii_digit();
            if !valid {
                return Err(StoreError::Config(format!(
                    "invalid PostgreSQL schema name {schema:?}; use lowercase letters, digits and underscores"
                )));
            }
            let options = match pg.get_options() {
                Some(existing) => format!("{existing} -c search_path={schema}"),
                None => format!("-c search_path={schema}"),
            };
            pg.options(options);
        }
        let store = PostgresStore {
            config,
            pg,
            slots: (0..POOL_SIZE).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        };
        store.migrate(schema).await?;
        // Open the first pooled connection now, so a broken setup fails here.
        let first = store.connect_one().await?;
        *store.slots[0].lock().await = Some(first);
        Ok(store)
    }

    /// Opens a connection and prepares every statement, within [`CONNECT_TIMEOUT`].
    async fn connect_one(&self) -> Result<Arc<Conn>, StoreError> {
        let connect = async {
            let client = self.raw_connection().await?;
            let st = Statements::prepare(&client).await.map_err(pg_error)?;
            Ok(Arc::new(Conn { client, st }))
        };
        timed(connect).await
    }

    async fn raw_connection(&self) -> Result<Client, StoreError> {
        let (client, connection) = self.pg.connect(NoTls).await.map_err(pg_error)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %describe(&e), "a PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// Creates or upgrades the schema under an advisory lock, so waiters starting
    /// together take turns.
    async fn migrate(&self, schema: Option<&str>) -> Result<(), StoreError> {
        let migrate = async {
            let mut client = self.raw_connection().await?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let target: String = match schema {
                Some(schema) => schema.to_string(),
                None => tx
                    .query_one("SELECT coalesce(current_schema(), '')", &[])
                    .await
                    .map_err(pg_error)?
                    .get(0),
            };
            tx.execute(
                "SELECT pg_advisory_xact_lock(1651076466, hashtext($1::text))",
                &[&target],
            )
            .await
            .map_err(pg_error)?;
            if let Some(schema) = schema {
                // The name was checked to be a plain identifier.
                tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                    .await
                    .map_err(pg_error)?;
            }
            tx.batch_execute("CREATE TABLE IF NOT EXISTS bistro_schema (version INTEGER NOT NULL)")
                .await
                .map_err(pg_error)?;
            let current: i32 = tx
                .query_one("SELECT coalesce(max(version), 0) FROM bistro_schema", &[])
                .await
                .map_err(pg_error)?
                .get(0);
            let latest = MIGRATIONS.len() as i32;
            if current > latest {
                return Err(StoreError::Config(format!(
                    "the PostgreSQL schema has version {current}, newer than this bistro understands ({latest}); upgrade bistro"
                )));
            }
            if current == latest {
                return Ok(());
            }
            for step in &MIGRATIONS[current as usize..] {
                tx.batch_execute(step).await.map_err(pg_error)?;
            }
            tx.execute("DELETE FROM bistro_schema", &[])
                .await
                .map_err(pg_error)?;
            tx.execute(
                "INSERT INTO bistro_schema (version) VALUES ($1)",
                &[&latest],
            )
            .await
            .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)
        };
        timed(migrate).await
    }

    /// The next pooled connection, reconnecting it if it died.
    async fn conn(&self) -> Result<Arc<Conn>, StoreError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % POOL_SIZE;
        let mut slot = self.slots[i].lock().await;
        if let Some(conn) = slot.as_ref()
            && !conn.client.is_closed()
        {
            return Ok(Arc::clone(conn));
        }
        *slot = None;
        // Boxed: connecting prepares every statement at once, a future of many KiB that
        // would otherwise be part of (and copied with) every method's future.
        let conn = Box::pin(self.connect_one()).await?;
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    fn expiry(&self, now: u64) -> i64 {
        ms(now.saturating_add(self.config.session_ttl_ms))
    }

    /// A failed statement as a [`StoreError`], with the statement timeout named.
    fn error(&self, e: tokio_postgres::Error) -> StoreError {
        match pg_error(e) {
            StoreError::Timeout { maybe_applied, .. } => StoreError::Timeout {
                after: self.config.backend_timeout(),
                maybe_applied,
            },
            other => other,
        }
    }

    /// After a read: extends the session when its stored expiry (`expires_at`, as the
    /// read saw it) is more than the touch slack behind a fresh one, so most reads write
    /// nothing. A session that expired meanwhile is left alone (the read still stands:
    /// it saw the session alive).
    async fn touch_if_stale(
        &self,
        conn: &Conn,
        sid: &[u8],
        expires_at: i64,
        now: u64,
    ) -> Result<(), StoreError> {
        if expires_at >= ms(self.config.stale_before(now)) {
            return Ok(());
        }
        conn.client
            .execute(&conn.st.touch, &[&sid, &ms(now), &self.expiry(now)])
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Live idempotency records of `sid` at `now`.
    async fn live_idempotency(&self, conn: &Conn, sid: &[u8], now: u64) -> Result<i64, StoreError> {
        let row = conn
            .client
            .query_one(&conn.st.idem_live, &[&sid, &ms(now)])
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.get(0))
    }
}

#[async_trait]
impl OrderStore for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn create_session(
        &self,
        session: SessionId,
        now: u64,
    ) -> Result<SessionCreated, StoreError> {
        let conn = self.conn().await?;
        let sid = &session.as_bytes()[..];
        let row = conn
            .client
            .query_one(
                &conn.st.create_session,
                &[&sid, &ms(now), &self.expiry(now)],
            )
            .await
            .map_err(|e| self.error(e))?;
        let kept: bool = row.get(0);
        Ok(if kept {
            SessionCreated::Existing
        } else {
            SessionCreated::New
        })
    }

    async fn touch_session(&self, session: SessionId, now: u64) -> Result<bool, StoreError> {
        let conn = self.conn().await?;
        let sid = &session.as_bytes()[..];
        let n = conn
            .client
            .execute(&conn.st.touch, &[&sid, &ms(now), &self.expiry(now)])
            .await
            .map_err(|e| self.error(e))?;
        Ok(n == 1)
    }

    async fn list_orders(&self, session: SessionId, now: u64) -> Result<Vec<Order>, StoreError> {
        let conn = self.conn().await?;
        let sid = &session.as_bytes()[..];
        let rows = conn
            .client
            .query(&conn.st.list, &[&sid, &ms(now)])
            .await
            .map_err(|e| self.error(e))?;
        let Some(first) = rows.first() else {
            return Err(StoreError::UnknownSession);
        };
        self.touch_if_stale(&conn, sid, first.get(0), now).await?;
        // A live session without orders is one row with a NULL document.
        rows.iter()
            .filter_map(|row| row.get::<_, Option<String>>(1))
            .map(|doc| decode_order(&doc))
            .collect()
    }

    async fn get_order(
        &self,
        session: SessionId,
        order_id: &str,
        now: u64,
    ) -> Result<Order, StoreError> {
        let conn = self.conn().await?;
        let sid = &session.as_bytes()[..];
        let row = conn
            .client
            .query_opt(&conn.st.get, &[&sid, &ms(now), &order_id])
            .await
            .map_err(|e| self.error(e))?
            .ok_or(StoreError::UnknownSession)?;
        self.touch_if_stale(&conn, sid, row.get(0), now).await?;
        let doc: Option<String> = row.get(1);
        decode_order(&doc.ok_or(StoreError::OrderNotFound)?)
    }

    async fn insert_order(
        &self,
        session: SessionId,
        order: &Order,
        now: u64,
    ) -> Result<(), StoreError> {
        let doc = encode(order)?;
        let conn = self.conn().await?;
        let sid = &session.as_bytes()[..];
        let due = order.kitchen_due_ms.map(ms);
        let row = conn
            .client
            .query_one(
                &conn.st.insert,
                &[
                    &sid,
                    &ms(now),
                    &self.expiry(now),
                    &order.id,
                    &ms(order.version),
                    &due,
                    &doc,
                    &ms(self.config.max_orders_per_session as u64),
                ],
            )
            .await
            .map_err(|e| self.error(e))?;
        let (alive, inserted, held): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let limit = self.config.max_orders_per_session;
        match (alive, inserted) {
            (0, _) => Err(StoreError::UnknownSession),
            (_, 0) if stored_u64(held)? >= limit as u64 => Err(StoreError::OrderLimit { limit }),
            (_, 0) => Err(StoreError::DuplicateOrder),
            _ => Ok(()),
        }
    }

    async fn update_order(
        &self,
        session: SessionId,
        order: &Order,
        expected: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        let doc = encode(order)?;
        let conn = self.conn().await?;
        let sid = &session.as_bytes()[..];
        let due = order.kitchen_due_ms.map(ms);
        let row = conn
            .client
            .query_one(
                &conn.st.update,
                &[
                    &sid,
                    &ms(now),
                    &self.expiry(now),
                    &order.id,
                    &ms(order.version),
                    &due,
                    &doc,
                    &ms(expected),
                ],
            )
            .await
            .map_err(|e| self.error(e))?;
        let (alive, updated, seen): (i64, i64, Option<i64>) = (row.get(0), row.get(1), row.get(2));
        if alive == 0 {
            return Err(StoreError::UnknownSession);
        }
        if updated == 1 {
            return Ok(());
        }
        // `seen` comes from the statement's snapshot. If it still shows the expected
        // version, another writer committed during the statement: read what it wrote.
        let actual = match seen {
            Some(v) if v != ms(expected) => Some(v),
            _ => conn
                .client
                .query_opt(&conn.st.order_version, &[&sid, &order.id])
                .await
                .map_err(|e| self.error(e))?
                .map(|row| row.get::<_, i64>(0)),
        };
        match actual {
            None => Err(StoreError::OrderNotFound),
            Some(actual) => Err(StoreError::Conflict {
                expected,
                actual: stored_u64(actual)?,
            }),
        }
    }

    async fn idempotency_begin(
        &self,
        session: SessionId,
        key: &str,
        fingerprint: &str,
        now: u64,
    ) -> Result<IdempotencyBegin, StoreError> {
        let conn = self.conn().await?;
        let sid = &session.as_bytes()[..];
        let pending_until = ms(now.saturating_add(self.config.idempotency_pending_ms));
        let limit = ms(self.config.max_idempotency_per_session as u64);
        // A claim that loses to a concurrent request reads that request's record; if the
        // record vanished in between (its request aborted), claim again. Three rounds
        // are plenty: each lost round means another request held the key.
        for _ in 0..3 {
            let row = conn
                .client
                .query_one(
                    &conn.st.idem_begin,
                    &[
                        &sid,
                        &ms(now),
                        &self.expiry(now),
                        &key,
                        &fingerprint,
                        &pending_until,
                        &limit,
                    ],
                )
                .await
                .map_err(|e| self.error(e))?;
            let (alive, claimed): (i64, i64) = (row.get(0), row.get(1));
            if alive == 0 {
                return Err(StoreError::UnknownSession);
            }
            if claimed == 1 {
                return Ok(IdempotencyBegin::Proceed);
            }
            let live: i64 = row.get(6);
            let unclaimed = IdemRecord::from_row(&row, 2)?.is_none_or(|r| r.expires_at <= ms(now));
            if unclaimed && live >= limit {
                // The cap stopped a new key: the pruning in the statement freed nothing
                // it could see. Look again, now that it committed.
                if self.live_idempotency(&conn, sid, now).await? >= limit {
                    return Err(StoreError::IdempotencyLimit {
                        limit: self.config.max_idempotency_per_session,
                    });
                }
                continue;
            }
            let snapshot = IdemRecord::from_row(&row, 2)?;
            let record = match snapshot {
                Some(r) if r.expires_at > ms(now) => Some(r),
                // Claimed by a request that committed after this statement's snapshot.
                _ => match conn
                    .client
                    .query_opt(&conn.st.idem_read, &[&sid, &key])
                    .await
                    .map_err(|e| self.error(e))?
                {
                    Some(row) => IdemRecord::from_row(&row, 0)?,
                    None => None,
                },
            };
            if let Some(record) = record.filter(|r| r.expires_at > ms(now)) {
                return record.answer(fingerprint);
            }
        }
        Ok(IdempotencyBegin::InProgress)
    }

    async fn idempotency_finish(
        &self,
        session: SessionId,
        key: &str,
        response: &StoredResponse,
        now: u64,
    ) -> Result<(), StoreError> {
        let response = encode(response)?;
        let conn = self.conn().await?;
        let sid = &session.as_bytes()[..];
        let done_until = ms(now.saturating_add(self.config.idempotency_ttl_ms));
        let row = conn
            .client
            .query_one(
                &conn.st.idem_finish,
                &[
                    &sid,
                    &ms(now),
                    &self.expiry(now),
                    &key,
                    &response,
                    &done_until,
                ],
            )
            .await
            .map_err(|e| self.error(e))?;
        if row.get::<_, i64>(0) == 0 {
            return Err(StoreError::UnknownSession);
        }
        Ok(())
    }

    async fn idempotency_abort(&self, session: SessionId, key: &str) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        let sid = &session.as_bytes()[..];
        conn.client
            .execute(&conn.st.idem_abort, &[&sid, &key])
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn kitchen_due(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<Vec<(SessionId, Order)>, StoreError> {
        let conn = self.conn().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = conn
            .client
            .query(&conn.st.kitchen_due, &[&ms(now), &limit])
            .await
            .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|row| Ok((session_id(row.get(0))?, decode_order(row.get(1))?)))
            .collect()
    }

    async fn sweep(&self, now: u64, batch: usize) -> Result<usize, StoreError> {
        let conn = self.conn().await?;
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        let row = conn
            .client
            .query_one(&conn.st.sweep, &[&ms(now), &batch])
            .await
            .map_err(|e| self.error(e))?;
        let removed: i64 = row.get(0);
        Ok(stored_u64(removed)? as usize)
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .client
            .query_one(&conn.st.counts, &[])
            .await
            .map_err(|e| self.error(e))?;
        Ok(Counts {
            sessions: stored_u64(row.get(0))?,
            orders: stored_u64(row.get(1))?,
        })
    }
}

/// An idempotency record as read back.
struct IdemRecord {
    fingerprint: String,
    state: String,
    response: Option<String>,
    expires_at: i64,
}

impl IdemRecord {
    /// Reads the four record columns starting at `first`; `None` when they are NULL
    /// (no record).
    fn from_row(row: &tokio_postgres::Row, first: usize) -> Result<Option<IdemRecord>, StoreError> {
        let fingerprint: Option<String> = row.get(first);
        let Some(fingerprint) = fingerprint else {
            return Ok(None);
        };
        Ok(Some(IdemRecord {
            fingerprint,
            state: row.get(first + 1),
            response: row.get(first + 2),
            expires_at: row.get(first + 3),
        }))
    }

    /// What a live record means for a request with `fingerprint`.
    fn answer(self, fingerprint: &str) -> Result<IdempotencyBegin, StoreError> {
        if self.fingerprint != fingerprint {
            return Ok(IdempotencyBegin::Mismatch);
        }
        match (self.state.as_str(), self.response) {
            ("pending", _) => Ok(IdempotencyBegin::InProgress),
            ("done", Some(response)) => Ok(IdempotencyBegin::Replay(decode_response(&response)?)),
            (state, _) => Err(StoreError::Corrupt(format!(
                "idempotency record in state {state:?}"
            ))),
        }
    }
}

/// Runs `fut` within [`CONNECT_TIMEOUT`], as an outage when it takes longer.
async fn timed<T>(fut: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::unavailable(format!(
                "PostgreSQL did not accept a connection within {CONNECT_TIMEOUT:?}"
            )))
        })
}

/// The error with its causes ("db error: ERROR: ..."); tokio-postgres never puts the
/// password in them.
fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What a failed statement says about its effect (a statement timeout comes back as
/// `Timeout` with no duration; [`PostgresStore::error`] fills it in). The server answered with an error
/// (it rolled the statement back, including a `statement_timeout` cancellation): not
/// applied. The connection failed while the statement was out: maybe applied.
fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let reason = format!("postgres: {}", describe(&e));
    if let Some(db) = e.as_db_error() {
        if *db.code() == tokio_postgres::error::SqlState::QUERY_CANCELED {
            return StoreError::Timeout {
                after: Duration::ZERO,
                maybe_applied: false,
            };
        }
        return StoreError::unavailable(reason).with_source(std::sync::Arc::new(e));
    }
    if e.is_closed() || e.source().is_some_and(|s| s.is::<std::io::Error>()) {
        return StoreError::lost(reason, Some(std::sync::Arc::new(e)));
    }
    StoreError::unavailable(reason).with_source(std::sync::Arc::new(e))
}
