//! `GET /plan` end to end: plan a change, apply it, and compare the prediction with
//! where real requests land.

mod support;

use bistro_balancer::{LostPolicy, RouteConfig, Stickiness, StrategyKind};
use http::Method;
use serde_json::{Value, json};
use support::{Balancer, Waiter, config, waiter_of};

/// Distinct hash keys sent each round.
const KEYS: usize = 2000;

/// How far the measured share of moved keys may be from the plan's. The keys are fixed,
/// so this is deterministic; 2000 keys sample a share to about ±0.01 (one standard
/// deviation), and the ring's arcs are not uniform across keys by more than that.
const TOLERANCE: f64 = 0.03;

/// Which waiter answers each key `diner-0` … `diner-{KEYS-1}`, in order.
async fn homes(balancer: &Balancer) -> Vec<String> {
    let diner = balancer.diner();
    let mut homes = Vec::with_capacity(KEYS);
    for k in 0..KEYS {
        let key = format!("diner-{k}");
        let r = diner
            .request(Method::GET, "/v1/menu", &[("x-diner", &key)], None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{key}: {}", r.text());
        homes.push(waiter_of(&r));
    }
    homes
}

/// The keys whose waiter changed, as (before, after) pairs.
fn changed<'a>(before: &'a [String], after: &'a [String]) -> Vec<(&'a str, &'a str)> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| b != a)
        .map(|(b, a)| (b.as_str(), a.as_str()))
        .collect()
}

async fn plan(balancer: &Balancer, query: &str) -> Value {
    let r = balancer
        .admin()
        .get(&format!("/plan?{query}"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{query}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.value()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_apply_compare_on_the_consistent_hash_ring() {
    let waiters = Waiter::three("stateless").await;
    let mut c = config(&waiters.iter().collect::<Vec<_>>());
    c.balancing.strategy = StrategyKind::ConsistentHash;
    c.balancing.hash_key = "header:x-diner".parse().unwrap();
    c.routes = vec![RouteConfig {
        prefix: "/".into(),
        sticky: Stickiness::Off,
        on_session_lost: LostPolicy::Auto,
    }];
    // A shared, busy machine must not make a health check fail mid-test: the plan
    // counts only the backends available when it is asked.
    c.health.timeout_ms = 2_000;
    c.health.fall = 5;
    let balancer = Balancer::start(c).await;
    let admin = balancer.admin();

    // Bad plans are refused, and a plan changes nothing.
    for bad in ["/plan", "/plan?remove=w9", "/plan?weight=w1:0"] {
        let r = admin.get(bad).await.unwrap();
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }

    let first = homes(&balancer).await;

    // Remove w2.
    let predicted = plan(&balancer, "remove=w2").await;
    assert_eq!(predicted["strategy"], "consistent-hash");
    assert_eq!(predicted["changes"], json!(["remove w2"]));
    assert_eq!(predicted["new_keys"]["exact"], true);
    assert!(predicted["backends"][1]["after"].is_null(), "{predicted}");
    let share = predicted["new_keys"]["moved_share"].as_f64().unwrap();
    assert_eq!(
        share, predicted["backends"][1]["before"]["share"],
        "removing w2 moves its own keys and no others"
    );
    let listed = admin.get("/backends").await.unwrap().value();
    assert_eq!(
        listed.as_array().unwrap().len(),
        3,
        "the plan changed nothing"
    );

    let removed = admin
        .request(Method::DELETE, "/backends/w2", &[], None)
        .await
        .unwrap();
    assert_eq!(removed.status, 204);
    let second = homes(&balancer).await;
    let moved = changed(&first, &second);
    assert!(
        moved.iter().all(|&(from, _)| from == "w2"),
        "only w2's keys move: {:?}",
        moved.iter().find(|&&(from, _)| from != "w2")
    );
    let measured = moved.len() as f64 / KEYS as f64;
    assert!(
        (measured - share).abs() <= TOLERANCE,
        "removal: measured {measured}, planned {share}"
    );

    // Add w4.
    let w4 = Waiter::start("w4", "stateless").await;
    let predicted = plan(&balancer, &format!("add=w4={}", w4.addr)).await;
    let share = predicted["new_keys"]["moved_share"].as_f64().unwrap();
    assert!(predicted["backends"][2]["before"].is_null(), "{predicted}");
    assert_eq!(predicted["backends"][2]["id"], "w4");
    for flow in predicted["new_keys"]["flows"].as_array().unwrap() {
        assert_eq!(flow["to"], "w4", "{flow}");
    }
    let added = admin
        .request(
            Method::POST,
            "/backends",
            &[],
            Some(&json!({"id": "w4", "address": w4.addr.to_string()})),
        )
        .await
        .unwrap();
    assert_eq!(added.status, 201, "{}", added.text());
    let third = homes(&balancer).await;
    let moved = changed(&second, &third);
    assert!(
        moved.iter().all(|&(_, to)| to == "w4"),
        "keys move only to w4: {:?}",
        moved.iter().find(|&&(_, to)| to != "w4")
    );
    let measured = moved.len() as f64 / KEYS as f64;
    assert!(
        (measured - share).abs() <= TOLERANCE,
        "addition: measured {measured}, planned {share}"
    );
    balancer.shutdown().await.unwrap();
}
