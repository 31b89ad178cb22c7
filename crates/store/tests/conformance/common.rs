//! What the conformance tests share: opening each backend in a place of its own (a temp
//! file, a PostgreSQL schema, a Redis key prefix), cleaning it up afterwards, and
//! building orders.
//!
//! PostgreSQL and Redis are found through `BISTRO_TEST_POSTGRES_URL` and
//! `BISTRO_TEST_REDIS_URL`; without them, throwaway servers are started from the
//! installed binaries (see `bistro-testsupport`). A server that cannot be reached fails
//! the test with a message saying so; nothing is skipped.

use bistro_orders::{Change, ItemInput, KitchenTimings, Menu, NewOrder, Order};
use bistro_store::{
    MemoryStore, OrderStore, PostgresStore, RedisStore, SqliteStore, StoreConfig, StoredResponse,
};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// A session's idle TTL in these tests.
pub const TTL: u64 = 60 * 60 * 1000;
/// How long a done idempotency record is kept.
pub const IDEM_TTL: u64 = 10 * 60 * 1000;
/// How long a pending idempotency record blocks repeats.
pub const PENDING: u64 = 5_000;
/// The tests' "now": time is passed in, never read.
pub const T0: u64 = 1_700_000_000_000;
/// How many orders a session may hold in these tests.
pub const MAX_ORDERS: usize = 12;
/// How many live idempotency records a session may hold in these tests.
pub const MAX_KEYS: usize = 12;

pub fn config() -> StoreConfig {
    StoreConfig {
        session_ttl_ms: TTL,
        idempotency_ttl_ms: IDEM_TTL,
        idempotency_pending_ms: PENDING,
        max_sessions: 1_000,
        max_orders_per_session: MAX_ORDERS,
        max_idempotency_per_session: MAX_KEYS,
        ..StoreConfig::default()
    }
}

pub use bistro_testsupport::{postgres_url, redis_url};

/// A name no other test (in this or another process) uses.
pub fn unique(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!(
        "{tag}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Memory,
    Sqlite,
    Postgres,
    Redis,
}

/// Where a test's data lives, so it can be removed afterwards.
#[derive(Debug, Clone)]
pub enum Place {
    Nowhere,
    File(PathBuf),
    Schema(String),
    Prefix(String),
}

impl Place {
    pub fn new(backend: Backend) -> Place {
        match backend {
            Backend::Memory => Place::Nowhere,
            Backend::Sqlite => {
                Place::File(std::env::temp_dir().join(format!("{}.db", unique("bistro-test"))))
            }
            Backend::Postgres => Place::Schema(unique("bistro_test")),
            Backend::Redis => Place::Prefix(format!("{}:", unique("bistro-test"))),
        }
    }

    /// Opens a store of `backend` here (several may be opened on one place); panics with
    /// a clear message when the server cannot be reached.
    pub async fn open(&self, backend: Backend) -> Arc<dyn OrderStore> {
        match (backend, self) {
            (Backend::Memory, _) => Arc::new(MemoryStore::new(config())),
            (Backend::Sqlite, Place::File(path)) => Arc::new(
                SqliteStore::open(path.to_str().expect("temp paths are UTF-8"), config())
                    .await
                    .unwrap_or_else(|e| panic!("cannot open SQLite at {}: {e}", path.display())),
            ),
            (Backend::Postgres, Place::Schema(schema)) => {
                let url = postgres_url();
                Arc::new(PostgresStore::connect_in_schema(&url, schema, config()).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {url} is unreachable or unusable ({e}); start it or set BISTRO_TEST_POSTGRES_URL")
                }))
            }
            (Backend::Redis, Place::Prefix(prefix)) => {
                let url = redis_url();
                Arc::new(RedisStore::connect_with_prefix(&url, prefix, config()).await.unwrap_or_else(|e| {
                    panic!("Redis at {url} is unreachable or unusable ({e}); start it or set BISTRO_TEST_REDIS_URL")
                }))
            }
            (backend, place) => panic!("{backend:?} cannot live in {place:?}"),
        }
    }

    /// Removes everything stored here.
    pub async fn clean(&self) {
        match self {
            Place::Nowhere => {}
            Place::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    match std::fs::remove_file(&file) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => panic!("cannot remove {file:?}: {e}"),
                    }
                }
            }
            Place::Schema(schema) => {
                let client = postgres_admin().await;
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
                    .unwrap_or_else(|e| panic!("cannot drop schema {schema}: {e}"));
            }
            Place::Prefix(prefix) => {
                let mut conn = redis_admin().await;
                let mut cursor = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{prefix}*"))
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await
                        .expect("SCAN works");
                    if !keys.is_empty() {
                        let _: u64 = redis::cmd("DEL")
                            .arg(&keys)
                            .query_async(&mut conn)
                            .await
                            .expect("DEL works");
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
    }
}

/// A direct PostgreSQL connection for setting up and inspecting tests.
pub async fn postgres_admin() -> tokio_postgres::Client {
    let url = postgres_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {url} is unreachable ({e}); start it or set BISTRO_TEST_POSTGRES_URL"
            )
        });
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("test PostgreSQL connection ended: {e}");
        }
    });
    client
}

/// A direct Redis connection for setting up and inspecting tests.
pub async fn redis_admin() -> redis::aio::MultiplexedConnection {
    let url = redis_url();
    redis::Client::open(url.as_str())
        .expect("a valid Redis URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("Redis at {url} is unreachable ({e}); start it or set BISTRO_TEST_REDIS_URL")
        })
}

/// Runs `case` against a fresh store of `backend`, then removes its data, whether the
/// case passed or panicked.
pub async fn run<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Arc<dyn OrderStore>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    in_place(backend, move |place| async move {
        let store = place.open(backend).await;
        case(store).await;
    })
    .await;
}

/// Runs `body` with a fresh place of `backend`, then removes its data, whether the body
/// passed or panicked.
pub async fn in_place<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Place) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let place = Place::new(backend);
    let outcome = tokio::spawn(body(place.clone())).await;
    place.clean().await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("the test task did not finish: {e}"),
        }
    }
}

pub static MENU: LazyLock<Menu> = LazyLock::new(Menu::default_menu);

/// A new open order with one dish, created at `now`.
pub fn open_order(now: u64) -> Order {
    let new = NewOrder {
        items: vec![ItemInput {
            dish: "fries".into(),
            quantity: 1,
        }],
        ..Default::default()
    };
    Order::create(bistro_store::new_order_id(), new, &MENU, now).expect("a valid order")
}

/// A new order placed at `now`, due in the kitchen `queue_ms` later.
pub fn placed_order(now: u64, queue_ms: u64) -> Order {
    changed(
        &open_order(now),
        Change::Place(KitchenTimings {
            queue_ms,
            cook_ms: 3_000,
        }),
        now,
    )
}

/// `order` after `change` (version + 1).
pub fn changed(order: &Order, change: Change, now: u64) -> Order {
    let mut next = order.clone();
    next.apply(&[change], &MENU, now).expect("a valid change");
    next
}

pub fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            ("Location".into(), "/v1/orders/x".into()),
            ("ETag".into(), "\"2\"".into()),
        ],
        body: body.into(),
    }
}
