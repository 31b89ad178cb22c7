//! Diners, read-back and verification against a real waiter running in this process.
//!
//! No binary and no child process: the waiter library serves the real API on a loopback
//! port, so the diner's flow (menu, order, changes, place, kitchen, serve, pay), its
//! ledger and the verification are checked end to end on every `cargo test`. A waiter
//! "restart" is a fresh waiter with an empty memory on the same port, which is exactly
//! what a stateful waiter's death looks like to its diners.

use crate::audit;
use crate::load::{self, Live, LoadRun};
use crate::sample::ErrorKind;
use crate::scenario::{LoadModel, LoadSpec, ThinkTime};
use crate::verify::{self, Verdict};
use bistro_orders::KitchenTimings;
use bistro_store::{MemoryStore, StoreConfig};
use bistro_waiter::{Waiter, WaiterConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A stateful waiter with a fast kitchen on `addr`; send on the returned channel (or
/// drop it) to stop it.
async fn waiter(
    addr: SocketAddr,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let config = WaiterConfig {
        id: "w1".into(),
        kitchen: KitchenTimings {
            queue_ms: 30,
            cook_ms: 60,
        },
        kitchen_poll: Duration::from_millis(10),
        ..WaiterConfig::default()
    };
    let waiter = Waiter::new(config, Arc::new(MemoryStore::new(StoreConfig::default())));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind a loopback port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(bistro_waiter::run(listener, waiter, async {
        // Either a stop message or the sender being dropped ends the waiter.
        let _sent_or_dropped = stopped.await;
    }));
    (addr, stop, server)
}

fn load(addr: SocketAddr, diners: usize, seconds: f64) -> LoadRun {
    LoadRun {
        spec: LoadSpec {
            model: LoadModel::Closed { diners },
            duration: Duration::from_secs_f64(seconds),
            think: ThinkTime {
                min_ms: 2,
                max_ms: 10,
            },
            poll_interval: Duration::from_millis(20),
            request_timeout: Duration::from_secs(2),
        },
        seed: 9,
        addr,
        kitchen_budget: Duration::from_secs(5),
        t0: Instant::now(),
        live: Arc::new(Live::default()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diners_complete_orders_and_every_acknowledged_order_reads_back_intact() {
    let (addr, stop, server) = waiter("127.0.0.1:0".parse().unwrap()).await;
    let run = load(addr, 4, 1.5);
    let live = run.live.clone();
    let outcome = load::drive(run).await;
    assert_eq!(outcome.diners.len(), 4);
    let samples: Vec<_> = outcome
        .diners
        .iter()
        .flat_map(|d| d.samples.clone())
        .collect();
    let failed: Vec<_> = samples.iter().filter(|s| !s.is_ok()).collect();
    assert!(
        failed.is_empty(),
        "a healthy waiter answered errors: {failed:?} {:?}",
        outcome.diners[0].failures
    );
    let (requests, errors, paid) = live.snapshot();
    assert_eq!((requests, errors), (samples.len() as u64, 0));
    assert!(
        paid >= 4,
        "every diner should have paid at least one order, got {paid}"
    );

    let read = audit::read_back(outcome.diners, Instant::now() + Duration::from_secs(10)).await;
    let v = verify::summarize(&read);
    assert!(v.orders >= paid as u32);
    assert_eq!(
        (v.intact, v.lost, v.diverged, v.unchecked, v.duplicated),
        (v.orders, 0, 0, 0, 0),
        "{v:?}"
    );
    assert_eq!(v.sessions_listed, 4, "one session per diner, each listed");
    stop.send(()).expect("the waiter is running");
    server
        .await
        .expect("the waiter task did not panic")
        .expect("the waiter stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_stateful_waiter_has_lost_every_order() {
    let (addr, stop, server) = waiter("127.0.0.1:0".parse().unwrap()).await;
    let outcome = load::drive(load(addr, 3, 0.8)).await;
    stop.send(()).expect("the waiter is running");
    server
        .await
        .expect("the waiter task did not panic")
        .expect("the waiter stopped cleanly");

    // The same id on the same port, with an empty memory: a restart.
    let (again, stop, server) = waiter(addr).await;
    assert_eq!(again, addr);
    let read = audit::read_back(outcome.diners, Instant::now() + Duration::from_secs(10)).await;
    let v = verify::summarize(&read);
    assert!(v.orders > 0);
    assert_eq!((v.lost, v.intact), (v.orders, 0), "{v:?}");
    assert!(
        v.checks
            .iter()
            .all(|c| c.verdict == Verdict::Lost && c.waiter.as_deref() == Some("w1"))
    );
    assert_eq!(v.lost_by_waiter.get("w1"), Some(&v.orders));
    assert_eq!(
        v.sessions_gone, 3,
        "every session is unknown to the new waiter"
    );
    stop.send(()).expect("the waiter is running");
    server
        .await
        .expect("the waiter task did not panic")
        .expect("the waiter stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diners_facing_a_dead_address_record_connect_errors_and_stop_in_time() {
    let port = crate::process::free_port().unwrap();
    let started = std::time::Instant::now();
    let outcome = load::drive(load(SocketAddr::from(([127, 0, 0, 1], port)), 2, 0.5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the load is bounded by its duration"
    );
    let samples: Vec<_> = outcome
        .diners
        .iter()
        .flat_map(|d| d.samples.clone())
        .collect();
    assert!(!samples.is_empty());
    assert!(
        samples.iter().all(|s| s.error == Some(ErrorKind::Connect)),
        "{samples:?}"
    );
    assert!(outcome.diners.iter().all(|d| d.ledger.orders.is_empty()));
}
