//! Stateless mode across real processes: several `bistro waiter` processes on one
//! central store (SQLite file, PostgreSQL, Redis). Whatever one waiter wrote, another
//! reads; a waiter killed with SIGKILL loses nothing; concurrent writers through
//! different waiters lose no acknowledged change; a store outage is a 503, and the
//! waiter recovers by itself.

mod support;

use bistro_client::Client;
use http::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Proc, TempDb, free_port, postgres_url, redis_url, spawn_waiter};

fn stateless(store: &str) -> Vec<String> {
    vec![
        "--mode".into(),
        "stateless".into(),
        "--store".into(),
        store.into(),
        "--kitchen-seconds".into(),
        "0.2".into(),
        "--kitchen-queue-seconds".into(),
        "0.1".into(),
    ]
}

fn spawn_pair(store: &str) -> (Proc, Proc) {
    let args = stateless(store);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (spawn_waiter("wa", &args), spawn_waiter("wb", &args))
}

/// Create on A, read and modify on B, SIGKILL A, carry on through B: nothing is lost.
async fn nothing_lost_when_a_waiter_dies(store: &str) {
    let (mut a, b) = spawn_pair(store);
    let on_a = Client::new(a.addr);
    let created = on_a
        .post_json("/v1/orders", &json!({"items":[{"dish":"fries","quantity":2}],"notes":{"spice":1,"requests":"extra salt"}}))
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("bistro-waiter"), Some("wa"));
    assert_eq!(created.header("bistro-mode"), Some("stateless"));
    let id = created.value()["id"].as_str().unwrap().to_string();
    let session = on_a.cookie("bistro_session").expect("session cookie");

    let on_b = Client::new(b.addr);
    on_b.set_cookie("bistro_session", &session);
    let read = on_b.get(&format!("/v1/orders/{id}")).await.unwrap();
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.header("bistro-waiter"), Some("wb"));
    assert_eq!(read.value()["notes"]["requests"], "extra salt");
    let patched = on_b
        .patch_json(&format!("/v1/orders/{id}"), &json!({"notes":{"spice":4}}))
        .await
        .unwrap();
    assert_eq!(patched.status, 200, "{}", patched.text());

    a.kill();

    let placed = on_b
        .request(Method::POST, &format!("/v1/orders/{id}/place"), &[], None)
        .await
        .unwrap();
    assert_eq!(placed.status, 200, "{}", placed.text());
    let order = wait_for_status(&on_b, &id, "ready").await;
    assert_eq!(order["notes"]["spice"], 4);
    assert_eq!(order["notes"]["requests"], "extra salt");
    assert_eq!(order["items"][0]["quantity"], 2);
    drop(b);
}

async fn wait_for_status(c: &Client, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get(&format!("/v1/orders/{id}")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.value();
        if v["status"] == status {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "order never reached {status}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 64 concurrent read-modify-write loops on one order, split across two waiters, each
/// appending its own token to the requests with If-Match: every acknowledged append is
/// in the final order.
async fn concurrent_modifiers_lose_nothing(store: &str) {
    let (a, b) = spawn_pair(store);
    let creator = Client::new(a.addr);
    let created = creator
        .post_json(
            "/v1/orders",
            &json!({"items":[{"dish":"fries","quantity":1}]}),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201);
    let id = created.value()["id"].as_str().unwrap().to_string();
    let session = creator.cookie("bistro_session").unwrap();
    let path = Arc::new(format!("/v1/orders/{id}"));
    let mut tasks = Vec::new();
    for n in 0..64u32 {
        let addr = if n % 2 == 0 { a.addr } else { b.addr };
        let (session, path) = (session.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let c = Client::new(addr);
            c.set_cookie("bistro_session", &session);
            let token = format!("t{n:02}");
            for _attempt in 0..200 {
                let cur = c.get(&path).await.unwrap();
                assert_eq!(cur.status, 200, "{}", cur.text());
                let etag = cur.header("etag").unwrap().to_string();
                let text = cur.value()["notes"]["requests"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let next = if text.is_empty() {
                    token.clone()
                } else {
                    format!("{text} {token}")
                };
                let body = serde_json::to_vec(&json!({"notes":{"requests": next}})).unwrap();
                let r = c
                    .request_raw(
                        Method::PATCH,
                        &path,
                        &[("if-match", &etag)],
                        Some("application/json"),
                        body.into(),
                    )
                    .await
                    .unwrap();
                match r.status.as_u16() {
                    200 => return token,
                    412 | 409 => continue,
                    s => panic!("unexpected {s}: {}", r.text()),
                }
            }
            panic!("{token} never got through");
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.push(t.await.unwrap());
    }
    let fin = creator.get(&path).await.unwrap().value();
    let text = fin["notes"]["requests"].as_str().unwrap();
    for token in &acknowledged {
        assert!(
            text.split(' ').any(|t| t == token),
            "acknowledged {token} missing from {text:?}"
        );
    }
    assert_eq!(
        fin["version"], 65,
        "one version per acknowledged change: {fin}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_waiters_share_one_file_and_survive_sigkill() {
    let db = TempDb::new("share");
    nothing_lost_when_a_waiter_dies(&db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_modifiers_across_two_waiters() {
    let db = TempDb::new("cas");
    concurrent_modifiers_lose_nothing(&db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_waiters_share_the_store_and_survive_sigkill() {
    nothing_lost_when_a_waiter_dies(&postgres_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_modifiers_across_two_waiters() {
    concurrent_modifiers_lose_nothing(&postgres_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_waiters_share_the_store_and_survive_sigkill() {
    nothing_lost_when_a_waiter_dies(&redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrent_modifiers_across_two_waiters() {
    concurrent_modifiers_lose_nothing(&redis_url()).await;
}

/// A private redis-server that this test can stop and start.
struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (it is on this machine kind)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis {
            port,
            child: Some(child),
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill redis-server");
            c.wait().expect("reap redis-server");
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_is_a_503_and_the_waiter_recovers_by_itself() {
    let port = free_port();
    let mut redis = PrivateRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}/");
    let mut args = stateless(&url);
    args.extend(["--store-timeout-ms".into(), "300".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let waiter = spawn_waiter("wo", &args);
    let diner = Client::new(waiter.addr).with_timeout(Duration::from_secs(5));
    let order = json!({"items":[{"dish":"fries","quantity":1}]});
    assert_eq!(
        diner.post_json("/v1/orders", &order).await.unwrap().status,
        201
    );

    redis.stop();
    let r = diner.post_json("/v1/orders", &order).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(
        r.value()["type"]
            .as_str()
            .unwrap()
            .ends_with("/store-unavailable"),
        "{}",
        r.text()
    );
    assert!(r.header("retry-after").is_some());
    let ready = diner.get("/readyz").await.unwrap();
    assert_eq!(
        ready.status, 503,
        "readyz must report not ready during the outage"
    );

    let _again = PrivateRedis::start(redis.port);
    let back = Instant::now();
    let fresh = Client::new(waiter.addr).with_timeout(Duration::from_secs(5));
    loop {
        let r = fresh.post_json("/v1/orders", &order).await.unwrap();
        if r.status == 201 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.text());
        // Redis's own start-up is inside this window; the bound only says the waiter
        // comes back by itself rather than after its reconnect backoff grew long.
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "no 2xx within 15 s of the store's return"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fresh.get("/readyz").await.unwrap().status, 200);
}
