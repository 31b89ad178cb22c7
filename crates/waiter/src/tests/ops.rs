//! Identity headers, unknown routes, the menu, the kitchen, the sweeper, the ops
//! endpoints and the API description, through the router.

use super::*;

#[tokio::test]
async fn every_answer_names_the_waiter_and_its_mode() {
    let a = app(WaiterConfig {
        id: "w7".into(),
        mode: Mode::Stateless,
        ..WaiterConfig::default()
    });
    for (method, path) in [
        (Method::GET, "/healthz"),
        (Method::GET, "/nope"),
        (Method::DELETE, "/v1/menu"),
        (Method::GET, "/v1/orders/x"),
    ] {
        let ans = a.call(method.clone(), path, None, None).await;
        assert_eq!(ans.header("bistro-waiter"), "w7", "{method} {path}");
        assert_eq!(ans.header("bistro-mode"), "stateless", "{method} {path}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let a = default_app();
    let nf = a.call(Method::GET, "/v2/whatever", None, None).await;
    assert_eq!((nf.status, nf.kind()), (StatusCode::NOT_FOUND, "not-found"));
    assert_eq!(nf.header("content-type"), "application/problem+json");
    let mna = a.call(Method::DELETE, "/v1/orders", None, None).await;
    assert_eq!(
        (mna.status, mna.kind()),
        (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed")
    );
    assert!(
        mna.header("allow").contains("POST"),
        "allow: {:?}",
        mna.headers
    );
}

#[tokio::test]
async fn the_menu_lists_dishes_with_allergens() {
    let a = default_app();
    let m = a.call(Method::GET, "/v1/menu", None, None).await;
    assert_eq!(m.status, StatusCode::OK);
    let pad_thai = m.json["dishes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "pad-thai")
        .unwrap();
    assert!(pad_thai["price_cents"].as_u64().unwrap() > 0);
    assert!(
        pad_thai["allergens"]
            .as_array()
            .unwrap()
            .contains(&json!("peanuts"))
    );
}

#[tokio::test(start_paused = true)]
async fn the_kitchen_moves_placed_orders_to_cooking_then_ready() {
    let kitchen = KitchenTimings {
        queue_ms: 1_000,
        cook_ms: 2_000,
    };
    let a = app(WaiterConfig {
        kitchen,
        ..WaiterConfig::default()
    });
    let (session, id) = a.new_order(fries()).await;
    let path = format!("/v1/orders/{id}");
    let placed = a
        .call(Method::POST, &format!("{path}/place"), Some(&session), None)
        .await;
    assert_eq!(
        placed.json["progress"],
        json!({"status": "placed", "eta_seconds": 3})
    );

    assert_eq!(
        crate::kitchen::cook(&a.waiter).await,
        0,
        "nothing is due yet"
    );
    tokio::time::advance(Duration::from_millis(1_000)).await;
    assert_eq!(crate::kitchen::cook(&a.waiter).await, 1);
    let cooking = a.call(Method::GET, &path, Some(&session), None).await;
    assert_eq!(
        cooking.json["progress"],
        json!({"status": "cooking", "eta_seconds": 2})
    );
    let late_patch = a
        .call(
            Method::PATCH,
            &path,
            Some(&session),
            Some(json!({"notes": {"spice": 5}})),
        )
        .await;
    assert_eq!(
        (late_patch.status, late_patch.kind()),
        (StatusCode::CONFLICT, "kitchen-started")
    );

    tokio::time::advance(Duration::from_millis(2_000)).await;
    assert_eq!(crate::kitchen::cook(&a.waiter).await, 1);
    let ready = a.call(Method::GET, &path, Some(&session), None).await;
    assert_eq!(
        ready.json["progress"],
        json!({"status": "ready", "eta_seconds": 0})
    );
    assert_eq!(a.waiter.metrics().kitchen_transitions(), 2);
    let served = a
        .call(Method::POST, &format!("{path}/serve"), Some(&session), None)
        .await;
    assert_eq!(served.json["status"], "served");
    let paid = a
        .call(Method::POST, &format!("{path}/pay"), Some(&session), None)
        .await;
    assert_eq!(
        (paid.json["status"].as_str(), paid.header("etag")),
        (Some("paid"), "\"6\"")
    );
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_frees_expired_sessions_and_refreshes_the_gauges() {
    let config = StoreConfig {
        session_ttl_ms: 1_000,
        ..StoreConfig::default()
    };
    let waiter = Waiter::new(WaiterConfig::default(), Arc::new(MemoryStore::new(config)));
    let a = App {
        router: waiter.router(),
        waiter,
    };
    a.new_order(fries()).await;
    a.new_order(fries()).await;
    assert_eq!(crate::sweeper::sweep(&a.waiter).await, 0);
    let m = a.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(m.status, StatusCode::OK);
    tokio::time::advance(Duration::from_millis(1_001)).await;
    assert_eq!(crate::sweeper::sweep(&a.waiter).await, 2);
    assert_eq!(a.waiter.store().counts().await.unwrap().sessions, 0);
}

#[tokio::test]
async fn ops_endpoints() {
    // Only shown (the store is memory), so it needs no PostgreSQL support in the build.
    let url = StoreUrl::Postgres {
        url: "postgres://bob:secret@db/bistro".into(),
    };
    let a = app(WaiterConfig {
        id: "w3".into(),
        mode: Mode::Stateless,
        store_url: url,
        ..WaiterConfig::default()
    });
    a.new_order(fries()).await;
    let health = a.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (health.status, health.json.clone()),
        (StatusCode::OK, json!({"status": "alive"}))
    );
    assert_eq!(
        a.call(Method::GET, "/readyz", None, None).await.status,
        StatusCode::OK
    );

    let info = a.call(Method::GET, "/v1/waiter", None, None).await;
    assert_eq!(info.json["id"], "w3");
    assert_eq!(info.json["mode"], "stateless");
    assert_eq!(
        info.json["store"],
        json!({"kind": "memory", "url": "postgres://bob:***@db/bistro"})
    );
    assert_eq!(
        (info.json["sessions"].as_u64(), info.json["orders"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(info.json["uptime_seconds"].is_u64() && info.json["version"].is_string());

    let metrics = a
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert!(metrics.header("content-type").starts_with("text/plain"));
    let text = a
        .router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(text.to_vec()).unwrap();
    for needle in [
        "bistro_http_requests_total{route=\"/v1/orders\",method=\"POST\",status=\"201\"} 1",
        "bistro_http_request_duration_seconds_count{route=\"/v1/waiter\"} 1",
        "bistro_store_ops_total{op=\"insert_order\",result=\"ok\"} 1",
        "bistro_orders 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }

    a.waiter.begin_shutdown();
    let draining = a.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (draining.status, draining.kind()),
        (StatusCode::SERVICE_UNAVAILABLE, "shutting-down")
    );
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let a = default_app();
    let (session, id) = a.new_order(fries()).await;
    let doc = a.call(Method::GET, "/openapi.json", None, None).await;
    assert!(doc.json["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.json["paths"].as_object().unwrap();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", &id);
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let ans = a
                .call(method.clone(), &concrete, Some(&session), None)
                .await;
            assert!(
                !matches!(ans.kind(), "not-found" | "method-not-allowed"),
                "{method} {path} is documented but not served: {}",
                ans.json
            );
        }
    }
    for (method, path) in crate::openapi::ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} undocumented"
        );
    }
}
