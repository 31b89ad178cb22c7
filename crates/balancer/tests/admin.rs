//! The admin API end to end: live changes, errors, the token.

mod support;

use bistro_balancer::BalancerError;
use http::Method;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use support::{Balancer, Waiter, config, waiter_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one GET on a raw keep-alive connection and reads exactly one response.
async fn get_on(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: bistro.test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if data.len() >= head_end + 4 + length {
                return text;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_change_live_without_dropping_connections() {
    let waiters = Waiter::three("stateful").await;
    let balancer = Balancer::start(config(&waiters.iter().collect::<Vec<_>>())).await;
    let admin = balancer.admin();

    let list = admin.get("/backends").await.unwrap().value();
    assert_eq!(list.as_array().unwrap().len(), 3);
    for field in [
        "id",
        "address",
        "weight",
        "health",
        "mode",
        "draining",
        "active_connections",
        "sessions_pinned",
    ] {
        assert!(!list[0][field].is_null(), "{field} in {list}");
    }

    let mut raw = TcpStream::connect(balancer.addr).await.unwrap();
    assert!(
        get_on(&mut raw, "/v1/menu")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let pinned_to_w1 = loop {
        let d = balancer.diner();
        if waiter_of(&d.get("/v1/orders").await.unwrap()) == "w1" {
            break d;
        }
    };

    // Add a fourth waiter: new diners reach it.
    let w4 = Waiter::start("w4", "stateful").await;
    let added = admin
        .request(
            Method::POST,
            "/backends",
            &[],
            Some(&json!({"id": "w4", "address": w4.addr.to_string(), "weight": 1})),
        )
        .await
        .unwrap();
    assert_eq!(added.status, 201, "{}", added.text());
    assert_eq!(added.value()["id"], "w4");
    let mut homes = HashSet::new();
    for _ in 0..16 {
        homes.insert(waiter_of(
            &balancer.diner().get("/v1/orders").await.unwrap(),
        ));
    }
    assert!(homes.contains("w4"), "{homes:?}");

    // Re-weight it.
    let weighted = admin
        .request(
            Method::POST,
            "/backends/w4/weight",
            &[],
            Some(&json!({"weight": 3})),
        )
        .await
        .unwrap();
    assert_eq!(weighted.status, 200);
    assert_eq!(weighted.value()["weight"], 3);

    // Remove w1: its pinned diner has lost the session, everyone else carries on.
    let removed = admin
        .request(Method::DELETE, "/backends/w1", &[], None)
        .await
        .unwrap();
    assert_eq!(removed.status, 204);
    let lost = pinned_to_w1.get("/v1/orders").await.unwrap();
    assert_eq!(lost.status, 503);
    assert_eq!(
        lost.value()["type"],
        "https://bistro.dev/problems/session-lost"
    );
    assert!(
        get_on(&mut raw, "/v1/menu")
            .await
            .starts_with("HTTP/1.1 200"),
        "the old connection still works"
    );
    for _ in 0..10 {
        assert_ne!(
            waiter_of(&balancer.diner().get("/v1/orders").await.unwrap()),
            "w1"
        );
    }
    assert_eq!(
        admin
            .get("/backends")
            .await
            .unwrap()
            .value()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_errors_are_problems() {
    let waiter = Waiter::start("w1", "stateful").await;
    let balancer = Balancer::start(config(&[&waiter])).await;
    let admin = balancer.admin();
    let cases = [
        (
            Method::POST,
            "/backends",
            Some(json!({"id": "w1", "address": "127.0.0.1:9"})),
            409,
        ),
        (
            Method::POST,
            "/backends",
            Some(json!({"id": "bad id", "address": "127.0.0.1:9"})),
            400,
        ),
        (Method::POST, "/backends", Some(json!({"id": "w2"})), 400),
        (
            Method::POST,
            "/backends/w1/weight",
            Some(json!({"weight": 0})),
            400,
        ),
        (Method::POST, "/backends/w9/drain", None, 404),
        (Method::DELETE, "/backends/w9", None, 404),
        (Method::PUT, "/backends", None, 405),
        (Method::GET, "/nothing-here", None, 404),
    ];
    for (method, path, body, status) in cases {
        let r = admin
            .request(method.clone(), path, &[], body.as_ref())
            .await
            .unwrap();
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    let metrics = admin.get("/metrics").await.unwrap();
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(
        metrics
            .text()
            .contains("bistro_balancer_backend_request_duration_seconds_bucket{backend=\"w1\"")
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_required() {
    let waiter = Waiter::start("w1", "stateful").await;
    let mut c = config(&[&waiter]);
    c.admin.token = Some("s3cret-token".into());
    let balancer = Balancer::start(c).await;
    let admin = balancer.admin();
    let refused = admin.get("/backends").await.unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    let wrong = admin
        .request(
            Method::GET,
            "/backends",
            &[("authorization", "Bearer nope")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(wrong.status, 401);
    let ok = admin
        .request(
            Method::GET,
            "/backends",
            &[("authorization", "Bearer s3cret-token")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_admin_listener_without_token_is_refused() {
    let waiter = Waiter::start("w1", "stateful").await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        bistro_balancer::run(
            listener,
            Some(admin),
            config(&[&waiter]),
            std::future::pending(),
        ),
    )
    .await
    .expect("run refuses at once");
    assert!(
        matches!(result, Err(BalancerError::AdminTokenRequired { .. })),
        "{result:?}"
    );
}

/// Sends raw bytes to the admin listener; returns the answer's status line.
async fn admin_raw(balancer: &support::Balancer, request: String) -> String {
    let (reply, _) =
        support::raw_exchange(balancer.admin, request.as_bytes(), Duration::from_secs(5)).await;
    reply.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_reach_the_admin_api() {
    // Regression: a cross-origin `Content-Type: text/plain` POST (which a browser sends
    // without a preflight) added a backend, so any page an operator opened could route
    // diners, and their cookies, elsewhere.
    let waiter = Waiter::start("w1", "stateful").await;
    let balancer = Balancer::start(config(&[&waiter])).await;
    let host = balancer.admin.to_string();
    let body = r#"{"id":"evil","address":"127.0.0.1:9"}"#;
    let post = |headers: &str| {
        format!(
            "POST /backends HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let text_plain = post(&format!("Host: {host}\r\nContent-Type: text/plain\r\n"));
    assert!(admin_raw(&balancer, text_plain).await.contains(" 415 "));
    let no_type = post(&format!("Host: {host}\r\n"));
    assert!(admin_raw(&balancer, no_type).await.contains(" 415 "));
    let foreign_origin = post(&format!(
        "Host: {host}\r\nOrigin: http://evil.example\r\nContent-Type: application/json\r\n"
    ));
    assert!(admin_raw(&balancer, foreign_origin).await.contains(" 403 "));
    // DNS rebinding: the page's own name, resolved to the admin address.
    let rebound = post("Host: evil.example:8081\r\nContent-Type: application/json\r\n");
    assert!(admin_raw(&balancer, rebound).await.contains(" 403 "));
    let list = balancer.admin().get("/backends").await.unwrap().value();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "nothing was added: {list}"
    );

    // The operator's own tools still work: same-origin JSON, and body-less actions.
    let own_origin = post(&format!(
        "Host: {host}\r\nOrigin: http://{host}\r\nContent-Type: application/json\r\n"
    ));
    assert!(admin_raw(&balancer, own_origin).await.contains(" 201 "));
    let drain = balancer
        .admin()
        .request(Method::POST, "/backends/w1/drain", &[], None)
        .await
        .unwrap();
    assert_eq!(drain.status, 200);
    balancer.shutdown().await.unwrap();
}
