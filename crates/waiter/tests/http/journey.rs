//! The diner's journey: what a diner sees when things go right, and when they ask for
//! something they may not have.

use crate::harness::*;
use axum::body::Body;
use bistro_orders::KitchenTimings;
use bistro_store::{Counts, MemoryStore, OrderStore, SessionId, StoreConfig};
use bistro_waiter::{Mode, Waiter, WaiterConfig};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

#[tokio::test]
async fn full_lifecycle_with_notes_allergy_refusal_and_kitchen_progress() {
    // Cooking lasts long enough for a loaded machine's polls to see it.
    let kitchen = KitchenTimings {
        queue_ms: 30,
        cook_ms: 200,
    };
    let server = Server::memory(WaiterConfig { kitchen, ..fast() }).await;
    let diner = server.client();

    let body = json!({
        "items": [{"dish": "green-salad", "quantity": 1}],
        "notes": {"spice": 2, "allergies": ["peanuts"], "requests": "no onions"}
    });
    let resp = diner.post_json("/v1/orders", &body).await.unwrap();
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    assert_eq!(resp.header("bistro-waiter"), Some("w1"));
    assert_eq!(resp.header("bistro-mode"), Some("stateful"));
    let session = diner
        .cookie("bistro_session")
        .expect("the first write starts a session");
    assert_eq!(resp.header("bistro-session"), Some(session.as_str()));
    let order = resp.value();
    let id = order["id"].as_str().unwrap().to_string();
    assert_eq!(resp.header("location").unwrap(), format!("/v1/orders/{id}"));
    assert_eq!(
        order["notes"],
        json!({"spice": 2, "allergies": ["peanuts"], "requests": "no onions"})
    );
    let path = format!("/v1/orders/{id}");

    let refused = patch(
        &diner,
        &path,
        &[],
        json!({"items": [{"dish": "satay-skewers"}]}),
    )
    .await;
    assert_problem(&refused, 422, "dish-contains-allergen");
    assert_eq!(refused.value()["dish"], "satay-skewers");
    assert_eq!(refused.value()["allergen"], "peanuts");

    let etag = resp.header("etag").unwrap().to_string();
    let items = json!({"items": [{"dish": "green-salad", "quantity": 2}, {"dish": "fries", "quantity": 1}]});
    let changed = patch(&diner, &path, &[("if-match", etag.as_str())], items).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    assert_eq!(changed.header("etag"), Some("\"2\""));
    let menu = &server.waiter.config().menu;
    let expected_total =
        2 * menu.dish("green-salad").unwrap().price_cents + menu.dish("fries").unwrap().price_cents;
    assert_eq!(changed.value()["total_cents"], expected_total);

    let placed = post(&diner, &format!("{path}/place"), &[]).await;
    assert_eq!(
        placed.value()["progress"]["status"],
        "placed",
        "{}",
        placed.text()
    );

    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.last().map(String::as_str) != Some("ready") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kitchen never finished: saw {seen:?}"
        );
        let now = diner.get(&path).await.unwrap().value();
        let status = now["progress"]["status"].as_str().unwrap().to_string();
        if seen.last() != Some(&status) {
            seen.push(status);
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert!(
        seen.contains(&"cooking".to_string()),
        "progress must pass through cooking: {seen:?}"
    );

    let served = post(&diner, &format!("{path}/serve"), &[]).await;
    assert_eq!(served.value()["status"], "served");
    let paid = post(&diner, &format!("{path}/pay"), &[]).await;
    assert_eq!(paid.status, StatusCode::OK);
    assert_eq!(paid.value()["status"], "paid");
    assert_eq!(
        paid.header("etag"),
        Some("\"7\""),
        "create, patch, place, cook, ready, serve, pay"
    );
    let metrics = diner.get("/metrics").await.unwrap().text();
    assert_eq!(metric(&metrics, "bistro_kitchen_transitions_total"), 2);
    server.stop().await;
}

#[tokio::test]
async fn orders_are_visible_only_to_their_session() {
    let server = Server::memory(fast()).await;
    let (alice, bob, stranger) = (server.client(), server.client(), server.client());
    let alices = create(&alice, fries()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    create(&bob, json!({"items": [{"dish": "salmon"}]})).await;
    let path = format!("/v1/orders/{alices}");

    assert_problem(&bob.get(&path).await.unwrap(), 404, "order-not-found");
    assert_problem(
        &post(&bob, &format!("{path}/cancel"), &[]).await,
        404,
        "order-not-found",
    );
    assert_problem(&stranger.get(&path).await.unwrap(), 404, "order-not-found");
    assert_problem(
        &patch(&stranger, &path, &[], json!({"notes": {"spice": 1}})).await,
        404,
        "order-not-found",
    );
    assert_eq!(
        stranger.cookie("bistro_session"),
        None,
        "failed reads start no session"
    );

    let bobs = bob.get("/v1/orders").await.unwrap().value();
    assert_eq!(bobs["orders"].as_array().unwrap().len(), 1);
    assert_eq!(bobs["orders"][0]["items"][0]["dish"], "salmon");
    assert_eq!(alice.get(&path).await.unwrap().status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_stale_if_match_is_refused_with_412() {
    let server = Server::memory(fast()).await;
    let diner = server.client();
    let id = create(&diner, fries()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/orders/{id}");
    let first = patch(
        &diner,
        &path,
        &[("if-match", "\"1\"")],
        json!({"notes": {"spice": 3}}),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    let second = patch(
        &diner,
        &path,
        &[("if-match", "\"1\"")],
        json!({"notes": {"spice": 1}}),
    )
    .await;
    assert_problem(&second, 412, "version-mismatch");
    assert_eq!(second.value()["current_version"], 2);
    let now = diner.get(&path).await.unwrap();
    assert_eq!(
        now.value()["notes"]["spice"],
        3,
        "the refused write changed nothing"
    );
    assert_eq!(now.header("etag"), Some("\"2\""));
    server.stop().await;
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_problems() {
    let server = Server::memory(fast()).await;
    let diner = server.client();
    let huge = Bytes::from(vec![b'x'; 2 * 1024 * 1024]);
    let resp = diner
        .request_raw(
            Method::POST,
            "/v1/orders",
            &[],
            Some("application/json"),
            huge,
        )
        .await
        .unwrap();
    assert_problem(&resp, 413, "body-too-large");
    assert_eq!(resp.value()["limit_bytes"], 65_536);

    let broken = Bytes::from_static(b"{\"items\": [");
    let resp = diner
        .request_raw(
            Method::POST,
            "/v1/orders",
            &[],
            Some("application/json"),
            broken,
        )
        .await
        .unwrap();
    assert_problem(&resp, 400, "malformed-json");
    assert_eq!(
        diner.cookie("bistro_session"),
        None,
        "a refused body starts no session"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_session_is_explained_and_never_replaced_silently() {
    let server = Server::memory(WaiterConfig {
        id: "w2".into(),
        ..fast()
    })
    .await;
    let diner = server.client();
    diner.set_cookie("bistro_session", &SessionId::generate().to_string());
    let resp = diner.get("/v1/orders").await.unwrap();
    assert_problem(&resp, 404, "unknown-session");
    let detail = resp.value()["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("stateful mode") && detail.contains("(w2)") && detail.contains("restarted"),
        "{detail}"
    );
    assert_eq!(
        diner.cookie("bistro_session"),
        None,
        "the 404 clears the cookie"
    );
    // With the cookie cleared, the next order starts a fresh session.
    create(&diner, fries()).await;
    assert!(diner.cookie("bistro_session").is_some());
    server.stop().await;

    let stateless = Server::memory(WaiterConfig {
        mode: Mode::Stateless,
        ..fast()
    })
    .await;
    let diner = stateless.client();
    diner.set_cookie("bistro_session", &SessionId::generate().to_string());
    let resp = diner.post_json("/v1/orders", &fries()).await.unwrap();
    assert_problem(&resp, 404, "unknown-session");
    assert!(
        resp.value()["detail"]
            .as_str()
            .unwrap()
            .contains("expired or never existed")
    );
    assert_eq!(
        stateless.waiter.store().counts().await.unwrap(),
        Counts {
            sessions: 0,
            orders: 0
        }
    );
    stateless.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_creates_one_order_however_often_it_is_sent() {
    let server = Server::memory(fast()).await;
    let diner = server.client();
    let key = [("idempotency-key", "3f1c9a2e-order-1-5b7d0c44e1a8")];
    let first = diner
        .request(Method::POST, "/v1/orders", &key, Some(&fries()))
        .await
        .unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.header("idempotency-replayed"), None);
    let again = diner
        .request(Method::POST, "/v1/orders", &key, Some(&fries()))
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(again.value()["id"], first.value()["id"]);
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("etag"), first.header("etag"));
    let list = diner.get("/v1/orders").await.unwrap().value();
    assert_eq!(list["orders"].as_array().unwrap().len(), 1, "{list}");

    let other_body = json!({"items": [{"dish": "salmon"}]});
    let reused = diner
        .request(Method::POST, "/v1/orders", &key, Some(&other_body))
        .await
        .unwrap();
    assert_problem(&reused, 422, "idempotency-key-reused");
    let metrics = diner.get("/metrics").await.unwrap().text();
    assert_eq!(metric(&metrics, "bistro_idempotent_replays_total"), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_cookieless_retry_with_the_same_key_finds_the_same_session_and_order() {
    // The diner's first POST started a session, but the reply (and its cookie) was lost:
    // the retry carries no cookie, only the key.
    let server = Server::memory(fast()).await;
    let key = [("idempotency-key", "6f0e2c1d-8a4b-4d3e-9f7a-2b5c8d1e0a63")];
    let first = server
        .client()
        .request(Method::POST, "/v1/orders", &key, Some(&fries()))
        .await
        .unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    let retry = server
        .client()
        .request(Method::POST, "/v1/orders", &key, Some(&fries()))
        .await
        .unwrap();
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.header("idempotency-replayed"), Some("true"));
    assert_eq!(retry.value()["id"], first.value()["id"]);
    let session = first
        .header("bistro-session")
        .expect("a new session is named");
    assert_eq!(retry.header("bistro-session"), Some(session));
    assert!(
        retry
            .header("set-cookie")
            .is_some_and(|c| c.contains(session)),
        "the retry is handed the session's cookie"
    );
    assert_eq!(
        server.waiter.store().counts().await.unwrap(),
        Counts {
            sessions: 1,
            orders: 1
        },
        "one session and one order, not two"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_short_key_cannot_start_a_session() {
    let server = Server::memory(fast()).await;
    let diner = server.client();
    let resp = diner
        .request(
            Method::POST,
            "/v1/orders",
            &[("idempotency-key", "order-1")],
            Some(&fries()),
        )
        .await
        .unwrap();
    assert_problem(&resp, 400, "invalid-idempotency-key");
    assert!(resp.header("set-cookie").is_none());
    assert_eq!(server.waiter.store().counts().await.unwrap().sessions, 0);
    // Inside a session a short key is fine: it names nothing but the request.
    let started = diner.post_json("/v1/orders", &fries()).await.unwrap();
    assert_eq!(started.status, StatusCode::CREATED);
    let resp = diner
        .request(
            Method::POST,
            "/v1/orders",
            &[("idempotency-key", "order-2")],
            Some(&fries()),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::CREATED);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_session_expires_after_its_idle_ttl() {
    let store = Arc::new(MemoryStore::new(StoreConfig {
        session_ttl_ms: 60_000,
        ..StoreConfig::default()
    }));
    let waiter = Waiter::new(WaiterConfig::default(), store);
    let app = waiter.router();
    let call = |method: Method, path: String, session: Option<String>, body: Option<Value>| {
        let app = app.clone();
        async move {
            let mut req = Request::builder().method(method).uri(path);
            if let Some(s) = session {
                req = req.header("cookie", format!("bistro_session={s}"));
            }
            let req = match body {
                Some(b) => req
                    .header("content-type", "application/json")
                    .body(Body::from(b.to_string())),
                None => req.body(Body::empty()),
            };
            let resp = app.oneshot(req.unwrap()).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let req = Request::post("/v1/orders")
        .header("content-type", "application/json")
        .body(Body::from(fries().to_string()));
    let resp = app.clone().oneshot(req.unwrap()).await.unwrap();
    let session = resp.headers()["bistro-session"]
        .to_str()
        .unwrap()
        .to_string();
    let id = {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<Value>(&bytes).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let path = format!("/v1/orders/{id}");

    tokio::time::advance(Duration::from_secs(50)).await;
    let (status, _) = call(Method::GET, path.clone(), Some(session.clone()), None).await;
    assert_eq!(status, StatusCode::OK, "each request extends the idle TTL");
    tokio::time::advance(Duration::from_secs(50)).await;
    let (status, _) = call(Method::GET, path.clone(), Some(session.clone()), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "100 s after creation, but only 50 s idle"
    );

    tokio::time::advance(Duration::from_secs(61)).await;
    let (status, problem) = call(Method::GET, path, Some(session.clone()), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        problem["type"],
        "https://bistro.dev/problems/unknown-session"
    );
    let (status, _) = call(
        Method::POST,
        "/v1/orders".into(),
        Some(session),
        Some(fries()),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an expired session is not silently recreated"
    );
}
