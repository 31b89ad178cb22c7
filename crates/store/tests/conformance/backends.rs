//! Each central backend's own machinery: several stores on one database, schema
//! versions and concurrent startup, corrupt data, unreachable servers, recovery after an
//! outage, and opening by URL.

use crate::common::{
    Backend, Place, T0, TTL, changed, config, in_place, open_order, postgres_admin, postgres_url,
    redis_admin, redis_url,
};
use crate::proxy::{Proxy, target, via};
use crate::{concurrent_writers, new_session};
use bistro_orders::Change;
use bistro_store::{
    Instrumented, OrderStore, PostgresStore, RedisStore, SessionId, SqliteStore, StoreConfig,
    StoreError, StoreUrl,
};
use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sqlite_path(place: &Place) -> &Path {
    match place {
        Place::File(path) => path,
        other => panic!("not a SQLite place: {other:?}"),
    }
}

fn schema(place: &Place) -> &str {
    match place {
        Place::Schema(schema) => schema,
        other => panic!("not a PostgreSQL place: {other:?}"),
    }
}

fn prefix(place: &Place) -> &str {
    match place {
        Place::Prefix(prefix) => prefix,
        other => panic!("not a Redis place: {other:?}"),
    }
}

// Several waiters on one store: two stores (separate connections, like two processes)
// on one database, writing one order concurrently.

async fn two_stores_lose_no_update(backend: Backend) {
    in_place(backend, move |place| async move {
        let stores = [place.open(backend).await, place.open(backend).await];
        concurrent_writers(&stores).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_stores_on_one_file_lose_no_update() {
    two_stores_lose_no_update(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_stores_on_one_schema_lose_no_update() {
    two_stores_lose_no_update(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_stores_on_one_prefix_lose_no_update() {
    two_stores_lose_no_update(Backend::Redis).await;
}

// Several waiter processes on one SQLite file: this test runs its own binary twice more
// as writer processes (told so by an environment variable) while it writes itself.

const CHILD_ENV: &str = "BISTRO_TEST_SQLITE_WRITER";
const PROCESS_ROUNDS: usize = 20;

/// Makes `PROCESS_ROUNDS` changes to one order, each a read and a retried
/// compare-and-set, tagging each change `{writer}{round};`.
async fn write_rounds(store: &dyn OrderStore, session: SessionId, order_id: &str, writer: char) {
    for round in 0..PROCESS_ROUNDS {
        let tag = format!("{writer}{round:02};");
        for attempt in 0.. {
            assert!(attempt < 10_000, "writer {writer} never got its change in");
            let current = store.get_order(session, order_id, T0).await.unwrap();
            let requests = format!("{}{tag}", current.notes.requests);
            let next = changed(&current, Change::SetRequests(requests), T0);
            match store
                .update_order(session, &next, next.version - 1, T0)
                .await
            {
                Ok(()) => break,
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => panic!("writer {writer}: {e}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_processes_share_one_file_without_lost_updates() {
    if let Ok(job) = std::env::var(CHILD_ENV) {
        // A writer process started by the test below.
        let [path, session, order_id, writer]: [&str; 4] = job
            .split('|')
            .collect::<Vec<_>>()
            .try_into()
            .expect("path|session|order|writer");
        let store = SqliteStore::open(path, config()).await.unwrap();
        let session = SessionId::parse(session).expect("a session id");
        write_rounds(&store, session, order_id, writer.chars().next().unwrap()).await;
        return;
    }
    in_place(Backend::Sqlite, |place| async move {
        let path = sqlite_path(&place).to_str().unwrap().to_string();
        let store = place.open(Backend::Sqlite).await;
        let session = new_session(&*store, T0).await;
        let order = open_order(T0);
        store.insert_order(session, &order, T0).await.unwrap();

        let children: Vec<_> = ['b', 'c']
            .into_iter()
            .map(|writer| {
                tokio::process::Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "backends::sqlite_processes_share_one_file_without_lost_updates",
                    ])
                    .env(CHILD_ENV, format!("{path}|{session}|{}|{writer}", order.id))
                    .output()
            })
            .collect();
        write_rounds(&*store, session, &order.id, 'a').await;
        for child in children {
            let out = child.await.expect("run a writer process");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "a writer process failed: {}\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let last = store.get_order(session, &order.id, T0).await.unwrap();
        assert_eq!(
            last.version,
            1 + 3 * PROCESS_ROUNDS as u64,
            "one version per acknowledged change"
        );
        let tags: BTreeSet<&str> = last.notes.requests.split_terminator(';').collect();
        let expected: BTreeSet<String> = ['a', 'b', 'c']
            .iter()
            .flat_map(|w| (0..PROCESS_ROUNDS).map(move |r| format!("{w}{r:02}")))
            .collect();
        assert_eq!(tags, expected.iter().map(String::as_str).collect());
    })
    .await;
}

// Schema versions: waiters starting together on a fresh store all succeed and the
// version is recorded once; a store written by a newer bistro is refused.

async fn start_together(backend: Backend, place: &Place) {
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let place = place.clone();
            tokio::spawn(async move { place.open(backend).await.ping().await })
        })
        .collect();
    for start in starts {
        start
            .await
            .expect("a start finished")
            .expect("a store opened concurrently answers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_schema_is_versioned_and_startup_is_concurrent() {
    in_place(Backend::Sqlite, |place| async move {
        start_together(Backend::Sqlite, &place).await;
        let path = sqlite_path(&place);
        // The blocking connection is closed before the next await.
        {
            let db = rusqlite::Connection::open(path).unwrap();
            let mut st = db.prepare("SELECT version FROM bistro_schema").unwrap();
            let versions: Vec<i64> = st
                .query_map([], |row| row.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(versions, vec![1]);
            let mode: String = db
                .query_row("PRAGMA journal_mode", [], |row| row.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            db.execute("UPDATE bistro_schema SET version = 99", [])
                .unwrap();
        }
        let newer = SqliteStore::open(path.to_str().unwrap(), config()).await;
        assert!(
            matches!(newer, Err(StoreError::Config(ref m)) if m.contains("99")),
            "{newer:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_schema_is_versioned_and_startup_is_concurrent() {
    in_place(Backend::Postgres, |place| async move {
        start_together(Backend::Postgres, &place).await;
        let schema = schema(&place);
        let admin = postgres_admin().await;
        let rows = admin
            .query(&format!("SELECT version FROM {schema}.bistro_schema"), &[])
            .await
            .unwrap();
        let versions: Vec<i32> = rows.iter().map(|row| row.get(0)).collect();
        assert_eq!(versions, vec![1]);

        admin
            .batch_execute(&format!("UPDATE {schema}.bistro_schema SET version = 99"))
            .await
            .unwrap();
        let newer = PostgresStore::connect_in_schema(&postgres_url(), schema, config()).await;
        assert!(
            matches!(newer, Err(StoreError::Config(ref m)) if m.contains("99")),
            "{newer:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_layout_is_versioned_and_startup_is_concurrent() {
    in_place(Backend::Redis, |place| async move {
        start_together(Backend::Redis, &place).await;
        let prefix = prefix(&place);
        let mut admin = redis_admin().await;
        let key = format!("{prefix}schema");
        let version: String = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(version, "1");

        let () = redis::cmd("SET")
            .arg(&key)
            .arg("99")
            .query_async(&mut admin)
            .await
            .unwrap();
        let newer = RedisStore::connect_with_prefix(&redis_url(), prefix, config()).await;
        assert!(
            matches!(newer, Err(StoreError::Config(ref m)) if m.contains("99")),
            "{newer:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rejects_a_schema_name_that_is_not_an_identifier() {
    let result =
        PostgresStore::connect_in_schema(&postgres_url(), "x; DROP TABLE y", config()).await;
    assert!(matches!(result, Err(StoreError::Config(_))), "{result:?}");
}

// Corrupt data is reported as such, not as a missing order or an outage.

async fn corrupt_document_is_reported<F, Fut>(backend: Backend, corrupt: F)
where
    F: FnOnce(Place, bistro_store::SessionId, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    in_place(backend, move |place| async move {
        let store = place.open(backend).await;
        let session = new_session(&*store, T0).await;
        let order = open_order(T0);
        store.insert_order(session, &order, T0).await.unwrap();
        corrupt(place.clone(), session, order.id.clone()).await;
        let got = store.get_order(session, &order.id, T0).await;
        assert!(matches!(got, Err(StoreError::Corrupt(_))), "{got:?}");
        let listed = store.list_orders(session, T0).await;
        assert!(matches!(listed, Err(StoreError::Corrupt(_))), "{listed:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reports_a_corrupt_document() {
    corrupt_document_is_reported(Backend::Sqlite, |place, _, id| async move {
        let db = rusqlite::Connection::open(sqlite_path(&place)).unwrap();
        db.busy_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            db.execute(
                "UPDATE bistro_orders SET doc = 'not json' WHERE id = ?1",
                [&id]
            )
            .unwrap(),
            1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reports_a_corrupt_document() {
    corrupt_document_is_reported(Backend::Postgres, |place, _, id| async move {
        let admin = postgres_admin().await;
        let sql = format!(
            "UPDATE {}.bistro_orders SET doc = '{{\"not\": \"an order\"}}' WHERE id = $1",
            schema(&place)
        );
        assert_eq!(admin.execute(&sql, &[&id]).await.unwrap(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reports_a_corrupt_document() {
    corrupt_document_is_reported(Backend::Redis, |place, session, id| async move {
        let mut admin = redis_admin().await;
        let key = format!("{}o:{session}", prefix(&place));
        let added: i64 = redis::cmd("HSET")
            .arg(&key)
            .arg(format!("d:{id}"))
            .arg("not json")
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(added, 0, "the order's document was there to overwrite");
    })
    .await;
}

// An unreachable server fails fast, as an outage, without echoing the password.

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("a bound address").port()
}

async fn fails_fast<T: std::fmt::Debug>(connect: impl Future<Output = Result<T, StoreError>>) {
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .expect("connecting must not hang");
    let elapsed = started.elapsed();
    match result {
        Err(e @ StoreError::Unavailable { .. }) => {
            let told = format!("{e} {e:?}");
            assert!(!told.contains("sekrit"), "leaks the password: {told}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_on_a_closed_port_is_unavailable_quickly() {
    let url = format!("postgres://bob:sekrit@127.0.0.1:{}/postgres", closed_port());
    fails_fast(PostgresStore::connect(&url, config())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_on_a_closed_port_is_unavailable_quickly() {
    let url = format!("redis://:sekrit@127.0.0.1:{}/", closed_port());
    fails_fast(RedisStore::connect(&url, config())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_a_missing_directory_is_unavailable() {
    let path = std::env::temp_dir()
        .join(crate::common::unique("no-such-dir"))
        .join("bistro.db");
    fails_fast(SqliteStore::open(path.to_str().unwrap(), config())).await;
}

// An outage in the middle of work: every call fails as an outage within seconds, a
// write made during it is not stored, and the store recovers by itself.

async fn outage_and_recovery(store: &dyn OrderStore, proxy: &Proxy) {
    let session = new_session(store, T0).await;
    let kept = open_order(T0);
    store.insert_order(session, &kept, T0).await.unwrap();

    proxy.cut().await;
    let lost = open_order(T0);
    for _ in 0..3 {
        let started = Instant::now();
        let insert = tokio::time::timeout(
            Duration::from_secs(10),
            store.insert_order(session, &lost, T0),
        )
        .await
        .expect("a call during an outage must not hang");
        assert!(matches!(insert, Err(ref e) if e.is_outage()), "{insert:?}");
        let get = tokio::time::timeout(
            Duration::from_secs(10),
            store.get_order(session, &kept.id, T0),
        )
        .await
        .expect("a call during an outage must not hang");
        assert!(matches!(get, Err(ref e) if e.is_outage()), "{get:?}");
        // Two calls, each bounded by the operation timeout; ten times that.
        assert!(
            started.elapsed() < impatient().op_timeout * 20,
            "took {:?}",
            started.elapsed()
        );
    }

    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.get_order(session, &kept.id, T0).await {
            Ok(order) => {
                assert_eq!(order, kept);
                break;
            }
            Err(e) if e.is_outage() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    }
    assert_eq!(
        store.get_order(session, &lost.id, T0).await,
        Err(StoreError::OrderNotFound),
        "a write that failed was not stored"
    );
    store.insert_order(session, &lost, T0).await.unwrap();
    store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_recovers_after_an_outage() {
    in_place(Backend::Postgres, |place| async move {
        let url = postgres_url();
        let proxy = Proxy::start(&target(&url, 5432)).await;
        let store =
            PostgresStore::connect_in_schema(&via(&url, proxy.addr()), schema(&place), config())
                .await
                .expect("connect through the proxy");
        outage_and_recovery(&store, &proxy).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_recovers_after_an_outage() {
    in_place(Backend::Redis, |place| async move {
        let url = redis_url();
        let proxy = Proxy::start(&target(&url, 6379)).await;
        let store =
            RedisStore::connect_with_prefix(&via(&url, proxy.addr()), prefix(&place), config())
                .await
                .expect("connect through the proxy");
        outage_and_recovery(&store, &proxy).await;
    })
    .await;
}

// A timeout says whether the write may have happened. When the database gives up (a
// lock held too long), it rolled the write back: "not applied", safe to retry. When the
// caller gives up on a write already sent (its reply lost), the write may well have
// happened: "maybe", and it really did.

/// The tests' config with a short operation timeout, so waiting on a lock ends soon.
fn impatient() -> StoreConfig {
    StoreConfig {
        op_timeout: Duration::from_millis(600),
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_locked_file_times_out_with_nothing_applied() {
    in_place(Backend::Sqlite, |place| async move {
        let path = sqlite_path(&place).to_path_buf();
        let store = SqliteStore::open(path.to_str().unwrap(), impatient())
            .await
            .unwrap();
        let session = new_session(&store, T0).await;
        let v1 = open_order(T0);
        store.insert_order(session, &v1, T0).await.unwrap();

        // Another process holds the write lock for longer than the store waits.
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let holder = std::thread::spawn(move || {
            let db = rusqlite::Connection::open(&path).unwrap();
            db.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.blocking_recv();
            db.execute_batch("ROLLBACK").unwrap();
        });
        locked_rx.await.unwrap();
        let v2 = changed(&v1, Change::SetSpice(2), T0 + 1);
        let started = Instant::now();
        let update = store.update_order(session, &v2, 1, T0 + 1).await;
        let waited = started.elapsed();
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        match update {
            Err(StoreError::Timeout { maybe_applied, .. }) => {
                assert!(!maybe_applied, "SQLite rolled the write back")
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        // Ten times the operation timeout: the point is that it ends, not how fast a
        // loaded machine gets there.
        assert!(waited < impatient().op_timeout * 10, "waited {waited:?}");
        assert_eq!(store.get_order(session, &v1.id, T0 + 2).await.unwrap(), v1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_locked_row_times_out_with_nothing_applied() {
    in_place(Backend::Postgres, |place| async move {
        let store = PostgresStore::connect_in_schema(&postgres_url(), schema(&place), impatient())
            .await
            .unwrap();
        let session = new_session(&store, T0).await;
        let v1 = open_order(T0);
        store.insert_order(session, &v1, T0).await.unwrap();

        // Another client holds the order's row lock for longer than statement_timeout.
        let mut admin = postgres_admin().await;
        let tx = admin.transaction().await.unwrap();
        let sql = format!(
            "SELECT version FROM {}.bistro_orders WHERE id = $1 FOR UPDATE",
            schema(&place)
        );
        assert_eq!(tx.query(&sql, &[&v1.id]).await.unwrap().len(), 1);
        let v2 = changed(&v1, Change::SetSpice(2), T0 + 1);
        let started = Instant::now();
        let update = store.update_order(session, &v2, 1, T0 + 1).await;
        let waited = started.elapsed();
        tx.rollback().await.unwrap();
        match update {
            Err(StoreError::Timeout { maybe_applied, .. }) => {
                assert!(!maybe_applied, "PostgreSQL cancelled the statement")
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        // Ten times the operation timeout: the point is that it ends, not how fast a
        // loaded machine gets there.
        assert!(waited < impatient().op_timeout * 10, "waited {waited:?}");
        assert_eq!(store.get_order(session, &v1.id, T0 + 2).await.unwrap(), v1);
    })
    .await;
}

/// Updates an order through `proxy` while it drops the replies, and checks the caller
/// is told "maybe applied", then (through `direct`, a store that does not go through
/// the proxy) that the write did land.
async fn lost_reply_may_have_applied(
    via_proxy: Arc<dyn OrderStore>,
    direct: &dyn OrderStore,
    proxy: &Proxy,
) {
    let store = Instrumented::new(via_proxy, impatient().op_timeout);
    let session = new_session(&store, T0).await;
    let v0 = open_order(T0);
    store.insert_order(session, &v0, T0).await.unwrap();
    // One update first: a server that has not run the update yet (a fresh Redis has no
    // script cached) would answer the first attempt "no such script", which the proxy
    // then swallows, and the write would never be made.
    let v1 = changed(&v0, Change::SetSpice(1), T0);
    store.update_order(session, &v1, 1, T0).await.unwrap();
    // Every pooled connection is open before replies vanish, so the update is really
    // sent rather than stuck in a connection handshake.
    for _ in 0..32 {
        store.get_order(session, &v1.id, T0).await.unwrap();
    }
    proxy.swallow_replies(true);
    let v2 = changed(&v1, Change::SetSpice(2), T0 + 1);
    let started = Instant::now();
    let update = store.update_order(session, &v2, 2, T0 + 1).await;
    let waited = started.elapsed();
    let error = update.expect_err("no reply came back");
    assert!(error.may_have_applied(), "{error:?}");
    assert!(error.is_outage(), "{error:?}");
    // Ten times the operation timeout: the point is that it ends, not how fast a
    // loaded machine gets there.
    assert!(waited < impatient().op_timeout * 10, "waited {waited:?}");
    assert_eq!(
        direct.get_order(session, &v1.id, T0 + 2).await.unwrap(),
        v2,
        "the write the caller could not confirm did happen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_lost_reply_may_have_applied() {
    in_place(Backend::Postgres, |place| async move {
        let url = postgres_url();
        let proxy = Proxy::start(&target(&url, 5432)).await;
        let via_proxy =
            PostgresStore::connect_in_schema(&via(&url, proxy.addr()), schema(&place), impatient())
                .await
                .expect("connect through the proxy");
        let direct = PostgresStore::connect_in_schema(&url, schema(&place), config())
            .await
            .unwrap();
        lost_reply_may_have_applied(Arc::new(via_proxy), &direct, &proxy).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_lost_reply_may_have_applied() {
    in_place(Backend::Redis, |place| async move {
        let url = redis_url();
        let proxy = Proxy::start(&target(&url, 6379)).await;
        let via_proxy =
            RedisStore::connect_with_prefix(&via(&url, proxy.addr()), prefix(&place), impatient())
                .await
                .expect("connect through the proxy");
        let direct = RedisStore::connect_with_prefix(&url, prefix(&place), config())
            .await
            .unwrap();
        lost_reply_may_have_applied(Arc::new(via_proxy), &direct, &proxy).await;
    })
    .await;
}

// A read within the touch slack of the stored expiry writes nothing: reads stay reads.

/// The session's stored expiry, read around the store.
async fn stored_expiry(backend: Backend, place: &Place, session: SessionId) -> i64 {
    match backend {
        Backend::Sqlite => {
            let db = rusqlite::Connection::open(sqlite_path(place)).unwrap();
            db.busy_timeout(Duration::from_secs(5)).unwrap();
            db.query_row(
                "SELECT expires_at FROM bistro_sessions WHERE id = ?1",
                [&session.as_bytes()[..]],
                |row| row.get(0),
            )
            .unwrap()
        }
        Backend::Postgres => {
            let sql = format!(
                "SELECT expires_at FROM {}.bistro_sessions WHERE id = $1",
                schema(place)
            );
            let id = &session.as_bytes()[..];
            postgres_admin()
                .await
                .query_one(&sql, &[&id])
                .await
                .unwrap()
                .get(0)
        }
        Backend::Redis => {
            let key = format!("{}s:{session}", prefix(place));
            let value: String = redis::cmd("GET")
                .arg(key)
                .query_async(&mut redis_admin().await)
                .await
                .unwrap();
            value.parse().unwrap()
        }
        Backend::Memory => unreachable!("the memory store has nothing to read around"),
    }
}

async fn a_fresh_read_writes_nothing(backend: Backend) {
    in_place(backend, move |place| async move {
        let store = place.open(backend).await;
        let session = new_session(&*store, T0).await;
        let order = open_order(T0);
        store.insert_order(session, &order, T0).await.unwrap();
        let created = (T0 + TTL) as i64;
        assert_eq!(stored_expiry(backend, &place, session).await, created);
        // Within the slack (a minute, with a one-hour TTL) reads leave the expiry alone...
        store
            .get_order(session, &order.id, T0 + 1_000)
            .await
            .unwrap();
        store.list_orders(session, T0 + 59_000).await.unwrap();
        assert_eq!(stored_expiry(backend, &place, session).await, created);
        // ...and past it a read extends the session like any touch.
        let late = T0 + 61_000;
        store.get_order(session, &order.id, late).await.unwrap();
        assert_eq!(
            stored_expiry(backend, &place, session).await,
            (late + TTL) as i64
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_fresh_read_writes_nothing() {
    a_fresh_read_writes_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_fresh_read_writes_nothing() {
    a_fresh_read_writes_nothing(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_fresh_read_writes_nothing() {
    a_fresh_read_writes_nothing(Backend::Redis).await;
}

// `bistro_store::open` picks the backend from the URL. (Redis is left out: `open` uses
// the default key prefix, which a test must not write to on a shared server.)

async fn opened_by_url(url: &str, kind: &str) -> Arc<dyn OrderStore> {
    let url = StoreUrl::parse(url).expect("a valid store URL");
    let store = bistro_store::open(&url, config())
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    assert_eq!(store.kind(), kind);
    store.ping().await.unwrap();
    new_session(&*store, T0).await;
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_by_url_picks_the_backend() {
    let memory = opened_by_url("memory", "memory").await;
    assert_eq!(memory.counts().await.unwrap().sessions, 1);

    in_place(Backend::Sqlite, |place| async move {
        let url = format!("sqlite://{}", sqlite_path(&place).display());
        let store = opened_by_url(&url, "sqlite").await;
        assert_eq!(store.counts().await.unwrap().sessions, 1);
    })
    .await;

    in_place(Backend::Postgres, |place| async move {
        // The URL's search_path option puts the tables in the test's schema.
        let schema = schema(&place);
        let admin = postgres_admin().await;
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let base = postgres_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        opened_by_url(
            &format!("{base}{separator}options=-csearch_path%3D{schema}"),
            "postgres",
        )
        .await;
        let row = admin
            .query_one(
                &format!("SELECT count(*) FROM {schema}.bistro_sessions"),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 1);
    })
    .await;
}
