//! Drain with handoff, end to end: real waiter and balancer processes, diners changing
//! their orders the whole time, and every acknowledged change checked at the end.

mod support;

use bistro_client::{Client, Response};
use http::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{Proc, spawn_balancer, spawn_waiter};

const SECRET: &str = "the-waiters-group-secret";
const TOKEN: &str = "an-admin-token-for-tests";

fn balancer(waiters: &[&Proc]) -> Proc {
    spawn_balancer(
        waiters,
        ",mode=stateful",
        &["--admin-token", TOKEN, "--peer-secret", SECRET],
    )
}

async fn admin(lb: &Proc, method: Method, path: &str, body: Option<&Value>) -> Response {
    let bearer = format!("Bearer {TOKEN}");
    Client::new(lb.admin.expect("the balancer's admin address"))
        .request(method, path, &[("authorization", bearer.as_str())], body)
        .await
        .expect("the admin API answers")
}

struct Diner {
    client: Client,
    order: String,
    home: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_with_handoff_moves_every_session_and_no_diner_sees_an_error() {
    let waiters: Vec<Proc> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| spawn_waiter(id, &["--peer-secret", SECRET, "--session-rate", "0"]))
        .collect();
    let lb = balancer(&waiters.iter().collect::<Vec<_>>());
    let mut diners = Vec::new();
    for _ in 0..90 {
        let client = Client::new(lb.addr).with_timeout(Duration::from_secs(10));
        let created = client
            .post_json(
                "/v1/orders",
                &json!({"items": [{"dish": "fries", "quantity": 1}]}),
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.text());
        diners.push(Diner {
            order: format!("/v1/orders/{}", created.value()["id"].as_str().unwrap()),
            home: created.header("bistro-waiter").unwrap().to_string(),
            client,
        });
    }
    let on_w2 = diners.iter().filter(|d| d.home == "w2").count();
    assert!(on_w2 > 5, "w2 holds some sessions ({on_w2})");

    // What moves if w2 goes: its sessions, and nothing else.
    let plan = admin(&lb, Method::GET, "/plan?remove=w2", None).await;
    assert_eq!(plan.status, 200, "{}", plan.text());
    assert_eq!(
        plan.value()["sessions"]["moving"],
        on_w2 as u64,
        "{}",
        plan.text()
    );

    // Diners keep changing their orders through the whole drain.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for d in diners {
        let stop = Arc::clone(&stop);
        load.push(tokio::spawn(async move {
            let (mut acknowledged, mut rerouted, mut errors) = (0u64, false, Vec::new());
            let mut spice = 0;
            while !stop.load(Ordering::Relaxed) {
                spice = (spice + 1) % 6;
                let r = d
                    .client
                    .patch_json(&d.order, &json!({"notes": {"spice": spice}}))
                    .await;
                match r {
                    Ok(r) if r.status == 200 => {
                        acknowledged += 1;
                        rerouted |= r.header("bistro-rerouted").is_some();
                    }
                    Ok(r) => errors.push(format!(
                        "{} from {:?}: {}",
                        r.status,
                        r.header("bistro-waiter"),
                        r.text()
                    )),
                    Err(e) => errors.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (d, acknowledged, rerouted, errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let drain = admin(
        &lb,
        Method::POST,
        "/backends/w2/drain",
        Some(&json!({"handoff": true, "deadline_seconds": 30, "remove_when_done": true})),
    )
    .await;
    assert_eq!(drain.status, 200, "{}", drain.text());
    assert_eq!(drain.value()["drain"]["state"], "draining");
    let mut last = Value::Null;
    loop {
        let r = admin(&lb, Method::GET, "/backends/w2", None).await;
        if r.status == 404 {
            break; // removed when done
        }
        last = r.value();
        assert_ne!(last["drain"]["state"], "expired", "{last}");
        assert!(started.elapsed() < Duration::from_secs(30), "{last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut moved_diners = 0;
    for task in load {
        let (d, acknowledged, rerouted, errors) = task.await.unwrap();
        assert!(
            errors.is_empty(),
            "a diner of {} saw errors: {errors:?}",
            d.home
        );
        let read = d.client.get(&d.order).await.unwrap();
        assert_eq!(read.status, 200, "{}", read.text());
        assert_eq!(
            read.value()["version"].as_u64().unwrap(),
            1 + acknowledged,
            "every acknowledged change is there, once"
        );
        if d.home == "w2" {
            moved_diners += 1;
            assert!(rerouted, "a moved diner is told Bistro-Rerouted");
            assert_ne!(read.header("bistro-waiter"), Some("w2"));
        }
    }
    assert_eq!(moved_diners, on_w2);
    let status = admin(&lb, Method::GET, "/status", None).await.value();
    assert_eq!(status["sessions_handed_off"], on_w2 as u64, "{status}");
    assert_eq!(status["backends"], 2, "w2 was removed when done");
    eprintln!("drained {on_w2} sessions with handoff in {took:?}; last view {last}");
}
