//! Handoff on real sockets: stateful waiters in this process, each served by `run` on
//! its own 127.0.0.1 port, sharing a group secret. The test plays the balancer: it
//! lists what a waiter holds and asks it to move sessions to another.

use bistro_client::{Client, Response};
use bistro_store::{MemoryStore, StoreConfig};
use bistro_waiter::{Waiter, WaiterConfig, run};
use http::Method;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SECRET: &str = "a-group-secret-of-some-length";

struct Served {
    id: String,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Served {
    async fn start(id: &str, with_secret: bool) -> Served {
        let config = WaiterConfig {
            id: id.to_string(),
            session_rate_per_sec: 0,
            ..WaiterConfig::default()
        };
        let store = Arc::new(MemoryStore::new(StoreConfig::default()));
        let waiter = if with_secret {
            Waiter::stateful_with_handoff(config, store, SECRET.into())
        } else {
            Waiter::new(config, store)
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(run(listener, waiter, async move {
            let _ = stopped.await;
        }));
        Served {
            id: id.to_string(),
            addr,
            stop: Some(stop),
        }
    }

    fn client(&self) -> Client {
        Client::new(self.addr).with_timeout(Duration::from_secs(10))
    }

    async fn as_group(&self, method: Method, path: &str, body: Option<&Value>) -> Response {
        let bearer = format!("Bearer {SECRET}");
        self.client()
            .request(method, path, &[("authorization", bearer.as_str())], body)
            .await
            .expect("an answer")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct Diner {
    session: String,
    order: String,
}

impl Diner {
    async fn start(on: &Served) -> Diner {
        let created = on
            .client()
            .post_json(
                "/v1/orders",
                &json!({"items": [{"dish": "fries", "quantity": 1}]}),
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.text());
        Diner {
            session: created.header("bistro-session").unwrap().to_string(),
            order: format!("/v1/orders/{}", created.value()["id"].as_str().unwrap()),
        }
    }

    async fn request(&self, to: &Served, method: Method, body: Option<&Value>) -> Response {
        to.client()
            .request(
                method,
                &self.order,
                &[("bistro-session", &self.session)],
                body,
            )
            .await
            .expect("an answer")
    }
}

fn moves(diners: &[&Diner], to: &Served) -> Value {
    json!({"moves": diners.iter().map(|d| json!({
        "session": d.session, "to": to.id, "address": to.addr.to_string()
    })).collect::<Vec<_>>()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_move_whole_and_the_old_waiter_points_to_the_new_one() {
    let (w2, w3) = (
        Served::start("w2", true).await,
        Served::start("w3", true).await,
    );
    let mut diners = Vec::new();
    for spice in 0..5 {
        let d = Diner::start(&w2).await;
        let r = d
            .request(
                &w2,
                Method::PATCH,
                Some(&json!({"notes": {"spice": spice}})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        diners.push(d);
    }
    let held = w2.as_group(Method::GET, "/v1/handoff?limit=3", None).await;
    assert_eq!(held.status, 200, "{}", held.text());
    assert_eq!(held.value()["sessions"], 5);
    assert_eq!(held.value()["ids"].as_array().unwrap().len(), 3);

    let all: Vec<&Diner> = diners.iter().collect();
    let moved = w2
        .as_group(Method::POST, "/v1/handoff", Some(&moves(&all, &w3)))
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text());
    let answer = moved.value();
    assert_eq!(answer["sessions"], 0, "{answer}");
    for r in answer["results"].as_array().unwrap() {
        assert_eq!(r["result"], "moved", "{answer}");
        assert_eq!(r["to"], "w3");
    }

    for (spice, d) in diners.iter().enumerate() {
        let old = d.request(&w2, Method::GET, None).await;
        assert_eq!(old.status, 421, "{}", old.text());
        assert_eq!(old.header("bistro-leader"), Some("w3"));
        assert_eq!(
            old.value()["type"],
            "https://bistro.dev/problems/session-moved"
        );
        let new = d.request(&w3, Method::GET, None).await;
        assert_eq!(new.status, 200, "{}", new.text());
        assert_eq!(
            new.value()["notes"]["spice"],
            spice as u64,
            "the whole session moved"
        );
        assert_eq!(new.value()["version"], 2);
        let changed = d
            .request(&w3, Method::PATCH, Some(&json!({"notes": {"spice": 5}})))
            .await;
        assert_eq!(changed.status, 200, "{}", changed.text());
    }
    let info = w3.client().get("/v1/waiter").await.unwrap().value();
    assert_eq!(info["sessions"], 5);
    assert_eq!(info["handoff"]["moved_in"], 5);
    let info = w2.client().get("/v1/waiter").await.unwrap().value();
    assert_eq!(info["handoff"]["moved_out"], 5);
    assert_eq!(info["handoff"]["forwarding"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_changed_during_its_move_keeps_every_acknowledged_change() {
    let (w2, w3) = (
        Served::start("w2", true).await,
        Served::start("w3", true).await,
    );
    let diner = Arc::new(Diner::start(&w2).await);
    let w2 = Arc::new(w2);
    // A diner changing its order as fast as it can, while the session moves.
    let writer = {
        let (diner, w2) = (Arc::clone(&diner), Arc::clone(&w2));
        tokio::spawn(async move {
            let (mut acknowledged, mut moved_answers) = (0u64, 0u64);
            for i in 0..400u64 {
                let r = diner
                    .request(
                        &w2,
                        Method::PATCH,
                        Some(&json!({"notes": {"spice": i % 6}})),
                    )
                    .await;
                match r.status.as_u16() {
                    200 => acknowledged += 1,
                    421 => {
                        moved_answers += 1;
                        break;
                    }
                    other => panic!("a diner saw {other} during a move: {}", r.text()),
                }
            }
            (acknowledged, moved_answers)
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut result = Value::Null;
    for _ in 0..20 {
        let r = w2
            .as_group(Method::POST, "/v1/handoff", Some(&moves(&[&*diner], &w3)))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        result = r.value()["results"][0]["result"].clone();
        if result == "moved" {
            break;
        }
        assert_eq!(result, "busy", "{}", r.text());
    }
    assert_eq!(result, "moved", "the move goes through between two changes");
    let (acknowledged, moved_answers) = writer.await.unwrap();
    let read = diner.request(&w3, Method::GET, None).await;
    assert_eq!(read.status, 200, "{}", read.text());
    // Version 1 is the order as created; every acknowledged change added one.
    assert_eq!(
        read.value()["version"].as_u64().unwrap(),
        1 + acknowledged,
        "no acknowledged change was lost, none applied twice (then {moved_answers} answer said session-moved)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_needs_the_secret_and_a_waiter_that_can() {
    let (w2, w3) = (
        Served::start("w2", true).await,
        Served::start("w3", true).await,
    );
    let diner = Diner::start(&w2).await;
    let wrong = w2
        .client()
        .request(
            Method::GET,
            "/v1/handoff",
            &[("authorization", "Bearer not-the-secret")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let offer = w3
        .client()
        .request(
            Method::POST,
            "/v1/peer/handoff",
            &[],
            Some(&json!({"from": "w2", "items": []})),
        )
        .await
        .unwrap();
    assert_eq!(offer.status, 401, "{}", offer.text());
    let to_itself = w2
        .as_group(Method::POST, "/v1/handoff", Some(&moves(&[&diner], &w2)))
        .await;
    assert_eq!(to_itself.status, 422, "{}", to_itself.text());
    let garbage = w2
        .as_group(Method::POST, "/v1/handoff", Some(&json!({"moves": 3})))
        .await;
    assert_eq!(garbage.status, 422, "{}", garbage.text());

    let plain = Served::start("w4", false).await;
    let none = plain.as_group(Method::GET, "/v1/handoff", None).await;
    assert_eq!(none.status, 404, "{}", none.text());
    assert_eq!(
        none.value()["type"],
        "https://bistro.dev/problems/handoff-unavailable"
    );

    // A target that refuses (it is not a handoff waiter): the session stays, usable.
    let refused = w2
        .as_group(Method::POST, "/v1/handoff", Some(&moves(&[&diner], &plain)))
        .await;
    assert_eq!(refused.status, 200, "{}", refused.text());
    assert_eq!(refused.value()["results"][0]["result"], "failed");
    let still = diner.request(&w2, Method::GET, None).await;
    assert_eq!(still.status, 200, "{}", still.text());
}
