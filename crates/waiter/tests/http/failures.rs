//! When the store fails, is slow, or loses races, and when the waiter is told to stop.

use crate::faulty::FaultyStore;
use crate::harness::*;
use bistro_client::Client;
use bistro_waiter::{Mode, WaiterConfig};
use http::StatusCode;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn a_store_outage_is_503_and_readiness_follows_it() {
    let (store, faults) = FaultyStore::new();
    let server = Server::start(
        WaiterConfig {
            mode: Mode::Stateless,
            ..fast()
        },
        store,
    )
    .await;
    let diner = server.client();
    let id = create(&diner, fries()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(diner.get("/readyz").await.unwrap().status, StatusCode::OK);

    faults.down.store(true, Ordering::SeqCst);
    let newcomer = server.client();
    let resp = newcomer.post_json("/v1/orders", &fries()).await.unwrap();
    assert_problem(&resp, 503, "store-unavailable");
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(newcomer.cookie("bistro_session"), None);
    assert_problem(
        &diner.get(&format!("/v1/orders/{id}")).await.unwrap(),
        503,
        "store-unavailable",
    );
    assert_problem(
        &post(&diner, &format!("/v1/orders/{id}/place"), &[]).await,
        503,
        "store-unavailable",
    );
    assert_problem(
        &diner.get("/readyz").await.unwrap(),
        503,
        "store-unavailable",
    );
    assert_eq!(
        diner.get("/healthz").await.unwrap().status,
        StatusCode::OK,
        "alive, just not ready"
    );
    let metrics = diner.get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains("bistro_store_ops_total{op=\"get_order\",result=\"failed\"} 2"),
        "the read and the place: {metrics}"
    );

    faults.down.store(false, Ordering::SeqCst);
    let back = diner.get(&format!("/v1/orders/{id}")).await.unwrap();
    assert_eq!(
        (back.status, back.value()["status"].as_str()),
        (StatusCode::OK, Some("open")),
        "nothing was changed"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_slow_request_is_answered_503_timeout() {
    let (store, faults) = FaultyStore::new();
    let config = WaiterConfig {
        request_timeout: Duration::from_millis(100),
        store_timeout: Duration::from_secs(5),
        ..fast()
    };
    let server = Server::start(config, store).await;
    let diner = server.client();
    create(&diner, fries()).await;
    faults.delay_ms.store(400, Ordering::SeqCst);
    let resp = diner.get("/v1/orders").await.unwrap();
    assert_problem(&resp, 503, "timeout");
    faults.delay_ms.store(0, Ordering::SeqCst);
    server.stop().await;
}

#[tokio::test]
async fn lost_compare_and_sets_are_retried_or_reported() {
    let (store, faults) = FaultyStore::new();
    let server = Server::start(
        WaiterConfig {
            max_cas_retries: 3,
            ..fast()
        },
        store,
    )
    .await;
    let diner = server.client();
    let id = create(&diner, fries()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/orders/{id}");

    faults.conflicts.store(2, Ordering::SeqCst);
    let retried = patch(&diner, &path, &[], json!({"notes": {"spice": 1}})).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text());
    assert_eq!(retried.header("etag"), Some("\"2\""));

    faults.conflicts.store(1, Ordering::SeqCst);
    let pinned = patch(
        &diner,
        &path,
        &[("if-match", "\"2\"")],
        json!({"notes": {"spice": 2}}),
    )
    .await;
    assert_problem(&pinned, 412, "version-mismatch");

    faults.conflicts.store(100, Ordering::SeqCst);
    let gave_up = patch(&diner, &path, &[], json!({"notes": {"spice": 3}})).await;
    assert_problem(&gave_up, 409, "conflict");
    faults.conflicts.store(0, Ordering::SeqCst);

    let now = diner.get(&path).await.unwrap().value();
    assert_eq!(
        (now["version"].as_u64(), now["notes"]["spice"].as_u64()),
        (Some(2), Some(1))
    );
    let metrics = diner.get("/metrics").await.unwrap().text();
    assert_eq!(metric(&metrics, "bistro_cas_conflicts_total"), 2 + 1 + 4);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let (store, faults) = FaultyStore::new();
    let mut server = Server::start(fast(), store).await;
    let diner = server.client();
    let id = create(&diner, fries()).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    faults.delay_ms.store(300, Ordering::SeqCst);
    let in_flight = tokio::spawn(async move { diner.get(&format!("/v1/orders/{id}")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.signal_stop();
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let late = Client::new(server.addr).get("/healthz").await;
    assert!(
        late.as_ref().is_err_and(|e| e.is_connect()),
        "the listener is closed: {late:?}"
    );
}
