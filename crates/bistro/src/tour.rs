//! `bistro tour`: one order's whole life, step by step.
//!
//! Where `bistro demo` compares whole clusters, the tour shows one waiter at work: it starts a
//! stateful waiter on a free loopback port (in this process, on a real socket) and
//! walks a scripted diner through the whole life of an order over real HTTP: order
//! with notes, change it, be refused a dish for an allergy, place, watch the kitchen,
//! get served, pay. Every line it prints comes from a response it just received; any
//! unexpected answer stops the demo with a non-zero exit.

use anyhow::{Context, bail, ensure};
use bistro_client::{Client, Response};
use bistro_orders::KitchenTimings;
use bistro_proto::headers::{MODE, WAITER};
use bistro_store::{MemoryStore, StoreConfig};
use bistro_waiter::{Waiter, WaiterConfig};
use http::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs the scripted diner against a fresh waiter.
pub async fn run() -> anyhow::Result<()> {
    let config = WaiterConfig {
        id: "w1".into(),
        kitchen: KitchenTimings {
            queue_ms: 500,
            cook_ms: 1_500,
        },
        kitchen_poll: Duration::from_millis(50),
        ..WaiterConfig::default()
    };
    let waiter = Waiter::new(config, Arc::new(MemoryStore::new(StoreConfig::default())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind a loopback port")?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bistro_waiter::run(listener, waiter, async {
        let _sender_dropped_or_sent = stopped.await;
    }));

    println!("bistro tour: one stateful waiter at http://{addr}, one scripted diner\n");
    let result = script(&Client::new(addr)).await;
    // Stop the waiter whether or not the script succeeded; the send fails only if the
    // server already ended, which the join below reports.
    let _ = stop.send(());
    server
        .await
        .context("the waiter task panicked")?
        .context("the waiter failed")?;
    result?;
    println!("\nThe diner's notes lived only in waiter w1's memory (stateful mode).");
    println!("Try `bistro waiter` and the curl examples in the README to explore the API.");
    Ok(())
}

fn step(n: u32, what: &str) {
    println!("{n}. {what}");
}

fn show(resp: &Response) {
    let waiter = resp.header(WAITER.as_str()).unwrap_or("?");
    let mode = resp.header(MODE.as_str()).unwrap_or("?");
    let etag = resp
        .header("etag")
        .map(|e| format!(", ETag {e}"))
        .unwrap_or_default();
    println!("   → {} from waiter {waiter} ({mode}){etag}", resp.status);
}

fn expect(resp: &Response, status: u16, what: &str) -> anyhow::Result<Value> {
    show(resp);
    if resp.status.as_u16() != status {
        bail!(
            "{what}: expected HTTP {status}, got {}: {}",
            resp.status,
            resp.text()
        );
    }
    Ok(resp.value())
}

async fn script(diner: &Client) -> anyhow::Result<()> {
    step(1, "GET /v1/menu");
    let menu = expect(&diner.get("/v1/menu").await?, 200, "menu")?;
    let dishes = menu["dishes"].as_array().map(Vec::len).unwrap_or(0);
    println!("   the menu has {dishes} dishes");

    step(
        2,
        "POST /v1/orders: a tofu bowl and fries, spice 2, allergic to peanuts, \"no onions\"",
    );
    let body = json!({
        "items": [{"dish": "tofu-bowl", "quantity": 1}, {"dish": "fries", "quantity": 2}],
        "notes": {"spice": 2, "allergies": ["peanuts"], "requests": "no onions"}
    });
    let resp = diner.post_json("/v1/orders", &body).await?;
    let order = expect(&resp, 201, "create order")?;
    let id = order["id"]
        .as_str()
        .context("the created order has no id")?
        .to_string();
    let session = diner
        .cookie(bistro_proto::cookies::SESSION)
        .context("no bistro_session cookie was set")?;
    println!(
        "   order {id}, version {}, total {} cents; session cookie bistro_session={}…",
        order["version"],
        order["total_cents"],
        &session[..6]
    );
    let path = format!("/v1/orders/{id}");

    step(3, "PATCH the order: add a green salad, spice up to 3");
    let patch = json!({
        "items": [{"dish": "tofu-bowl", "quantity": 1}, {"dish": "fries", "quantity": 2}, {"dish": "green-salad", "quantity": 1}],
        "notes": {"spice": 3}
    });
    let order = expect(&diner.patch_json(&path, &patch).await?, 200, "modify order")?;
    println!(
        "   version {}, {} lines, total {} cents",
        order["version"],
        order["items"].as_array().map(Vec::len).unwrap_or(0),
        order["total_cents"]
    );

    step(4, "PATCH: also add satay skewers (they contain peanuts)");
    let patch = json!({"items": [{"dish": "tofu-bowl", "quantity": 1}, {"dish": "satay-skewers", "quantity": 1}]});
    let problem = expect(
        &diner.patch_json(&path, &patch).await?,
        422,
        "allergy refusal",
    )?;
    println!(
        "   refused ({}): {}",
        problem["type"].as_str().unwrap_or("?"),
        problem["detail"].as_str().unwrap_or("?")
    );

    step(5, "another diner, without our cookie, asks for the order");
    let stranger = Client::new(diner.addr());
    let resp = stranger.get(&path).await?;
    expect(&resp, 404, "cross-session isolation")?;
    println!("   not found: an order is visible only to its own session");

    step(6, "POST .../place");
    let order = expect(
        &diner
            .request(Method::POST, &format!("{path}/place"), &[], None)
            .await?,
        200,
        "place",
    )?;
    println!(
        "   status {}, ready in about {} s",
        order["status"], order["progress"]["eta_seconds"]
    );

    step(7, "poll GET the order while the kitchen works");
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let order = diner.get(&path).await?;
        ensure!(
            order.status == 200,
            "progress check failed: {}",
            order.text()
        );
        let v = order.value();
        let status = v["status"].as_str().unwrap_or("?").to_string();
        if status != last {
            println!(
                "   after {:.1} s: {status} (eta {} s, version {})",
                started.elapsed().as_secs_f64(),
                v["progress"]["eta_seconds"],
                v["version"]
            );
            last = status.clone();
        }
        if status == "ready" {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(15),
            "the kitchen did not finish within 15 s (status {status})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    step(8, "POST .../serve, then POST .../pay");
    expect(
        &diner
            .request(Method::POST, &format!("{path}/serve"), &[], None)
            .await?,
        200,
        "serve",
    )?;
    let order = expect(
        &diner
            .request(Method::POST, &format!("{path}/pay"), &[], None)
            .await?,
        200,
        "pay",
    )?;
    println!(
        "   status {}, paid {} cents, final version {}",
        order["status"], order["total_cents"], order["version"]
    );
    ensure!(order["status"] == "paid", "the order should be paid");
    Ok(())
}
