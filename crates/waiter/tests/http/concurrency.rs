//! Many writers at once on one order, and several stateless waiters on one store.

use crate::faulty::FaultyStore;
use crate::harness::*;
use bistro_client::Client;
use bistro_store::{MemoryStore, OrderStore, StoreConfig};
use bistro_waiter::{Mode, WaiterConfig};
use http::{Method, StatusCode};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const DINERS: usize = 64;

/// `DINERS` clients sharing one session (as tabs of one table would), the session and the
/// order's path.
async fn shared_session(server: &Server) -> (Vec<Arc<Client>>, String, String) {
    let first = server.client();
    let id = create(&first, fries()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let session = first.cookie("bistro_session").unwrap();
    let clients = (0..DINERS)
        .map(|_| {
            let c = server.client();
            c.set_cookie("bistro_session", &session);
            Arc::new(c)
        })
        .collect();
    (clients, session, format!("/v1/orders/{id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_if_match_writers_lose_no_acknowledged_change() {
    let server = Server::memory(fast()).await;
    let (clients, session, path) = shared_session(&server).await;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let path = path.clone();
            tokio::spawn(async move {
                let token = format!("{i:02};");
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let current = client.get(&path).await.unwrap();
                    let etag = current.header("etag").unwrap().to_string();
                    let requests = current.value()["notes"]["requests"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    let body = json!({"notes": {"requests": format!("{requests}{token}")}});
                    let resp = patch(&client, &path, &[("if-match", etag.as_str())], body).await;
                    match resp.status.as_u16() {
                        200 => return (token, resp.value()["version"].as_u64().unwrap(), attempts),
                        412 => assert_eq!(kind(&resp), "version-mismatch"),
                        other => panic!("unexpected {other}: {}", resp.text()),
                    }
                }
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    let reader = server.client();
    reader.set_cookie("bistro_session", &session);
    let final_order = reader.get(&path).await.unwrap().value();
    let requests = final_order["notes"]["requests"].as_str().unwrap();
    for (token, _, _) in &acked {
        assert_eq!(
            requests.matches(token.as_str()).count(),
            1,
            "{token} missing or doubled in {requests}"
        );
    }
    let attempts: u32 = acked.iter().map(|(_, _, n)| n).sum();
    assert!(
        attempts as usize > DINERS,
        "no writer ever lost a race, so this test proved nothing"
    );
    let mut versions: Vec<u64> = acked.iter().map(|(_, v, _)| *v).collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (2..=DINERS as u64 + 1).collect::<Vec<_>>(),
        "each acknowledged write has its own version"
    );
    assert_eq!(final_order["version"], DINERS as u64 + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_without_if_match_are_serialized_by_compare_and_set() {
    let (store, faults) = FaultyStore::new();
    // Each loss means another writer won, so 64 retries guarantee every writer succeeds.
    let server = Server::start(
        WaiterConfig {
            max_cas_retries: DINERS as u32,
            ..fast()
        },
        store,
    )
    .await;
    let (clients, _, path) = shared_session(&server).await;
    faults.read_pause_ms.store(2, Ordering::SeqCst);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let path = path.clone();
            tokio::spawn(async move {
                let requests = format!("writer {i:02}");
                let resp = patch(
                    &client,
                    &path,
                    &[],
                    json!({"notes": {"requests": requests}}),
                )
                .await;
                assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
                let v = resp.value();
                assert_eq!(
                    v["notes"]["requests"],
                    requests.as_str(),
                    "the answer shows this writer's change"
                );
                (v["version"].as_u64().unwrap(), requests)
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    acked.sort();
    // Every acknowledged write was stored as its own version, in the order of the
    // versions it was acknowledged with: no write replaced one it had not read.
    let journal = faults.journal.lock().unwrap().clone();
    assert_eq!(
        journal, acked,
        "the store's history is exactly the acknowledged writes"
    );
    let versions: Vec<u64> = acked.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (2..=DINERS as u64 + 1).collect::<Vec<_>>());
    let metrics = server.client().get("/metrics").await.unwrap().text();
    let conflicts = metric(&metrics, "bistro_cas_conflicts_total");
    assert!(
        conflicts > 0,
        "the writers never collided, so this test proved nothing"
    );
    let updates_ok = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bistro_store_ops_total{op=\"update_order\",result=\"ok\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert_eq!(
        updates_ok,
        DINERS as u64 + conflicts,
        "every lost compare-and-set was retried"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Stateless: several waiters, one store

#[tokio::test]
async fn stateless_waiters_share_sessions_and_the_kitchen_steps_exactly_once() {
    let store: Arc<dyn OrderStore> = Arc::new(MemoryStore::new(StoreConfig::default()));
    let config = |id: &str| WaiterConfig {
        id: id.into(),
        mode: Mode::Stateless,
        ..fast()
    };
    let w1 = Server::start(config("w1"), Arc::clone(&store)).await;
    let w2 = Server::start(config("w2"), Arc::clone(&store)).await;
    let at_w1 = w1.client();
    let id = create(&at_w1, fries()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let session = at_w1.cookie("bistro_session").unwrap();

    let at_w2 = w2.client();
    let resp = at_w2
        .request(
            Method::GET,
            &format!("/v1/orders/{id}"),
            &[("bistro-session", &session)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "any waiter serves any session: {}",
        resp.text()
    );
    assert_eq!(resp.header("bistro-waiter"), Some("w2"));
    at_w2.set_cookie("bistro_session", &session);
    assert_eq!(
        post(&at_w2, &format!("/v1/orders/{id}/place"), &[])
            .await
            .status,
        StatusCode::OK
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = at_w1
            .get(&format!("/v1/orders/{id}"))
            .await
            .unwrap()
            .value();
        if now["status"] == "ready" {
            assert_eq!(
                now["version"], 4,
                "placed, cooking, ready: each step stored once"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready: {now}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let steps = |s: &Server| {
        let c = s.client();
        async move {
            metric(
                &c.get("/metrics").await.unwrap().text(),
                "bistro_kitchen_transitions_total",
            )
        }
    };
    assert_eq!(
        steps(&w1).await + steps(&w2).await,
        2,
        "two kitchens, two steps in all"
    );
    w1.stop().await;
    w2.stop().await;
}
