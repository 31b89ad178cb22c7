//! Sessions, orders, bodies, `If-Match` and `Idempotency-Key`, through the router.

use super::*;

#[tokio::test]
async fn creating_an_order_starts_a_session_but_reading_does_not() {
    let a = app(WaiterConfig {
        cookie_secure: true,
        ..WaiterConfig::default()
    });
    let list = a.call(Method::GET, "/v1/orders", None, None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.json, json!({"orders": []}));
    assert!(list.headers.get("set-cookie").is_none());
    assert_eq!(a.waiter.store().counts().await.unwrap().sessions, 0);

    let created = a
        .call(Method::POST, "/v1/orders", None, Some(json!({"items": [{"dish": "pad-thai"}], "notes": {"spice": 2, "requests": "no onions"}})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json);
    let session = created.header("bistro-session");
    assert!(SessionId::parse(session).is_some(), "{session}");
    assert_eq!(
        created.header("set-cookie"),
        format!("bistro_session={session}; Path=/; HttpOnly; SameSite=Lax; Secure")
    );
    let id = created.json["id"].as_str().unwrap();
    assert_eq!(created.header("location"), format!("/v1/orders/{id}"));
    assert_eq!(created.header("etag"), "\"1\"");
    assert_eq!(
        created.json["items"][0]["name"],
        a.waiter
            .config()
            .menu
            .dish("pad-thai")
            .unwrap()
            .name
            .as_str()
    );
    assert_eq!(created.json["items"][0]["quantity"], 1);
    assert_eq!(created.json["notes"]["requests"], "no onions");
    assert_eq!(
        created.json["progress"],
        json!({"status": "open", "eta_seconds": null})
    );

    // The header works for clients without cookies.
    let listed = a
        .call_with(
            Method::GET,
            "/v1/orders",
            None,
            &[("bistro-session", session)],
            None,
        )
        .await;
    assert_eq!(listed.json["orders"][0]["id"], id);
    let one = a
        .call(
            Method::GET,
            &format!("/v1/orders/{id}"),
            Some(session),
            None,
        )
        .await;
    assert_eq!((one.status, one.header("etag")), (StatusCode::OK, "\"1\""));
}

#[tokio::test]
async fn a_refused_order_starts_no_session() {
    let a = default_app();
    let refused = a
        .call(
            Method::POST,
            "/v1/orders",
            None,
            Some(json!({"items": [{"dish": "pad-thai"}], "notes": {"allergies": ["peanuts"]}})),
        )
        .await;
    assert_eq!(
        (refused.status, refused.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "dish-contains-allergen")
    );
    assert_eq!(
        (
            refused.json["dish"].as_str(),
            refused.json["allergen"].as_str()
        ),
        (Some("pad-thai"), Some("peanuts"))
    );
    assert!(refused.headers.get("set-cookie").is_none());
    assert_eq!(a.waiter.store().counts().await.unwrap().sessions, 0);
}

#[tokio::test]
async fn a_named_but_unknown_session_is_never_replaced_silently() {
    let a = default_app();
    let ghost = SessionId::generate().to_string();
    for (method, path, body) in [
        (Method::GET, "/v1/orders", None),
        (Method::POST, "/v1/orders", Some(fries())),
        (Method::GET, "/v1/orders/AAAAAAAAAAAAAAAA", None),
    ] {
        let ans = a.call(method.clone(), path, Some(&ghost), body).await;
        assert_eq!(
            (ans.status, ans.kind()),
            (StatusCode::NOT_FOUND, "unknown-session"),
            "{method} {path}"
        );
        assert_eq!(
            ans.header("set-cookie"),
            "bistro_session=; Max-Age=0; Path=/"
        );
        assert!(
            ans.json["detail"]
                .as_str()
                .unwrap()
                .contains("only the waiter that took the order")
        );
    }
    let garbage = a
        .call(
            Method::POST,
            "/v1/orders",
            Some("not-a-session"),
            Some(fries()),
        )
        .await;
    assert_eq!(garbage.kind(), "unknown-session");
    assert_eq!(
        a.waiter.store().counts().await.unwrap().sessions,
        0,
        "no session may be created"
    );
}

#[tokio::test]
async fn orders_of_other_sessions_and_bad_ids_are_not_found() {
    let a = default_app();
    let (_, id) = a.new_order(fries()).await;
    let (other, _) = a.new_order(fries()).await;
    let stolen = a
        .call(Method::GET, &format!("/v1/orders/{id}"), Some(&other), None)
        .await;
    assert_eq!(
        (stolen.status, stolen.kind()),
        (StatusCode::NOT_FOUND, "order-not-found")
    );
    let no_session = a
        .call(Method::POST, &format!("/v1/orders/{id}/place"), None, None)
        .await;
    assert_eq!(no_session.kind(), "order-not-found");
    let bad = a
        .call(Method::GET, "/v1/orders/..%2F..%2Fetc", Some(&other), None)
        .await;
    assert_eq!(
        (bad.status, bad.kind()),
        (StatusCode::NOT_FOUND, "order-not-found")
    );
}

#[tokio::test]
async fn bodies_are_checked_before_anything_happens() {
    let a = default_app();
    let text = a
        .send(
            Request::post("/v1/orders")
                .header("content-type", "text/plain")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (text.status, text.kind()),
        (StatusCode::BAD_REQUEST, "malformed-json")
    );
    let shape = a
        .call(
            Method::POST,
            "/v1/orders",
            None,
            Some(json!({"items": "fries"})),
        )
        .await;
    assert_eq!(
        (shape.status, shape.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid-body")
    );
    let big = a
        .send(
            Request::post("/v1/orders")
                .header("content-type", "application/json")
                .body(Body::from(vec![b' '; 70_000]))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (big.status, big.kind()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body-too-large")
    );
    assert_eq!(big.header("bistro-waiter"), "w1");

    let (session, id) = a.new_order(fries()).await;
    let with_body = a
        .call(
            Method::POST,
            &format!("/v1/orders/{id}/place"),
            Some(&session),
            Some(json!({"now": true})),
        )
        .await;
    assert_eq!(with_body.kind(), "invalid-body");
    let empty_patch = a
        .call(
            Method::PATCH,
            &format!("/v1/orders/{id}"),
            Some(&session),
            Some(json!({})),
        )
        .await;
    assert_eq!(empty_patch.kind(), "invalid-body");
    let placed = a
        .call(
            Method::POST,
            &format!("/v1/orders/{id}/place"),
            Some(&session),
            Some(json!({})),
        )
        .await;
    assert_eq!(placed.status, StatusCode::OK, "{}", placed.json);
}

#[tokio::test]
async fn if_match_spellings_and_mismatches() {
    let a = default_app();
    let (session, id) = a.new_order(fries()).await;
    let path = format!("/v1/orders/{id}");
    let patch = |tag: &'static str, spice: u32| {
        let (a, s, p) = (&a, session.clone(), path.clone());
        async move {
            a.call_with(
                Method::PATCH,
                &p,
                Some(&s),
                &[("if-match", tag)],
                Some(json!({"notes": {"spice": spice}})),
            )
            .await
        }
    };
    assert_eq!(patch("W/\"1\"", 1).await.header("etag"), "\"2\"");
    assert_eq!(patch("2", 2).await.header("etag"), "\"3\"");
    assert_eq!(patch("*", 3).await.header("etag"), "\"4\"");
    let stale = patch("\"3\"", 4).await;
    assert_eq!(
        (stale.status, stale.kind()),
        (StatusCode::PRECONDITION_FAILED, "version-mismatch")
    );
    assert_eq!(stale.json["current_version"], 4);
    let garbage = patch("\"abc\"", 4).await;
    assert_eq!(garbage.status, StatusCode::PRECONDITION_FAILED);
    let empty = patch("", 4).await;
    assert_eq!(
        (empty.status, empty.kind()),
        (StatusCode::BAD_REQUEST, "invalid-if-match")
    );
    let place = a
        .call_with(
            Method::POST,
            &format!("{path}/place"),
            Some(&session),
            &[("if-match", "\"1\"")],
            None,
        )
        .await;
    assert_eq!(place.kind(), "version-mismatch");
    let now = a.call(Method::GET, &path, Some(&session), None).await;
    assert_eq!(
        (
            now.json["version"].as_u64(),
            now.json["notes"]["spice"].as_u64()
        ),
        (Some(4), Some(3))
    );
}

#[tokio::test]
async fn idempotency_keys_replay_refuse_reuse_and_wait_for_running_requests() {
    let a = default_app();
    let (session, id) = a.new_order(fries()).await;
    let place = format!("/v1/orders/{id}/place");
    let first = a
        .call_with(
            Method::POST,
            &place,
            Some(&session),
            &[("idempotency-key", "k1")],
            None,
        )
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let again = a
        .call_with(
            Method::POST,
            &place,
            Some(&session),
            &[("idempotency-key", "k1")],
            None,
        )
        .await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "a replay, not a second place (which would be 409)"
    );
    assert_eq!(again.header("idempotency-replayed"), "true");
    assert_eq!(again.json["version"], first.json["version"]);
    assert_eq!(again.header("etag"), first.header("etag"));

    let cancel = format!("/v1/orders/{id}/cancel");
    let reused = a
        .call_with(
            Method::POST,
            &cancel,
            Some(&session),
            &[("idempotency-key", "k1")],
            None,
        )
        .await;
    assert_eq!(
        (reused.status, reused.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused")
    );

    // A refusal releases its key: the same request may run again.
    let serve = format!("/v1/orders/{id}/serve");
    let early = a
        .call_with(
            Method::POST,
            &serve,
            Some(&session),
            &[("idempotency-key", "k2")],
            None,
        )
        .await;
    assert_eq!(early.kind(), "invalid-transition");
    let still_early = a
        .call_with(
            Method::POST,
            &serve,
            Some(&session),
            &[("idempotency-key", "k2")],
            None,
        )
        .await;
    assert!(still_early.headers.get("idempotency-replayed").is_none());

    let sid = SessionId::parse(&session).unwrap();
    let fp = crate::idempotency::fingerprint(&Method::POST, &cancel, b"");
    let begun = a
        .waiter
        .store()
        .idempotency_begin(sid, "k3", &fp, a.waiter.clock().now())
        .await
        .unwrap();
    assert_eq!(begun, IdempotencyBegin::Proceed);
    let running = a
        .call_with(
            Method::POST,
            &cancel,
            Some(&session),
            &[("idempotency-key", "k3")],
            None,
        )
        .await;
    assert_eq!(
        (running.status, running.kind()),
        (StatusCode::CONFLICT, "idempotency-in-progress")
    );
    assert_eq!(running.header("retry-after"), "1");

    let bad = a
        .call_with(
            Method::POST,
            &cancel,
            Some(&session),
            &[("idempotency-key", "with space")],
            None,
        )
        .await;
    assert_eq!(
        (bad.status, bad.kind()),
        (StatusCode::BAD_REQUEST, "invalid-idempotency-key")
    );
    let metrics = a.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
}
