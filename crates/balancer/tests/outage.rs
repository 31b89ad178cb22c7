//! Failures that must never eject everyone: a store outage shared by every waiter,
//! a hung waiter, a live but failing stateful waiter, many waiters failing at once.

mod support;

use bistro_balancer::{ManualClock, RouteConfig, Stickiness, StrategyKind};
use std::time::{Duration, Instant};
use support::{Balancer, Waiter, config, eventually, waiter_of};

const WITHIN: Duration = Duration::from_secs(10);

async fn status(balancer: &Balancer) -> serde_json::Value {
    balancer.admin().get("/status").await.unwrap().value()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_one_cause_and_the_first_request_after_it_succeeds() {
    // Regression: with every stateless waiter's /readyz failing while Redis was down,
    // the balancer took them all out and answered 503 itself until two probes passed
    // again: the first 2xx came seconds after the store was back.
    let waiters = Waiter::three("stateless").await;
    let mut c = config(&waiters.iter().collect::<Vec<_>>());
    c.health.eject_after = 2;
    let balancer = Balancer::start(c).await;
    for w in &waiters {
        w.set_store_down(true);
    }
    assert!(
        eventually(WITHIN, || async {
            let s = status(&balancer).await;
            s["store_outage"] == true && s["panic_mode"] == true
        })
        .await,
        "every waiter down for the same reason is reported as a store outage"
    );
    for b in ["w1", "w2", "w3"] {
        assert_eq!(balancer.backend(b).await["reason"], "store-unavailable");
    }
    // Panic mode keeps forwarding: the waiters answer for themselves.
    let diner = balancer.diner();
    for _ in 0..6 {
        let r = diner.get("/v1/orders").await.unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.value()["type"], "store-unavailable", "{}", r.text());
        assert!(r.header("retry-after").is_some());
    }
    for w in &waiters {
        w.set_store_down(false);
    }
    let back = Instant::now();
    let r = diner.get("/v1/orders").await.unwrap();
    assert_eq!(
        r.status, 200,
        "the very first request after the store returns succeeds"
    );
    eprintln!("first 2xx {:?} after the store returned", back.elapsed());
    for b in ["w1", "w2", "w3"] {
        assert_eq!(
            balancer
                .metric(&format!(
                    "bistro_balancer_backend_ejections_total{{backend=\"{b}\"}}"
                ))
                .await,
            0.0,
            "{b}: deliberate 503s never eject"
        );
    }
    assert!(
        eventually(WITHIN, || async {
            let s = status(&balancer).await;
            s["store_outage"] == false && s["panic_mode"] == false
        })
        .await
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_waiters_resendable_requests_go_elsewhere_when_it_goes_down() {
    let waiters = Waiter::three("stateless").await;
    let mut c = config(&waiters.iter().collect::<Vec<_>>());
    c.routes = vec![RouteConfig {
        prefix: "/".into(),
        sticky: Stickiness::Off,
        on_session_lost: Default::default(),
    }];
    c.balancing.strategy = StrategyKind::RoundRobin;
    c.upstream.response_timeout_ms = 30_000;
    c.health.timeout_ms = 200;
    let balancer = Balancer::start(c).await;
    // w1 hangs (as a SIGSTOPped process does: connections are accepted, nothing answers).
    waiters[0].set_delay(Duration::from_secs(20));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let diner = balancer.diner();
        tasks.push(tokio::spawn(async move { diner.get("/v1/menu").await }));
    }
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_ne!(waiter_of(&r), "w1");
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "rerouted when w1 went down, not after the 20 s hang or the 30 s timeout ({:?})",
        started.elapsed()
    );
    assert!(
        balancer
            .metric("bistro_balancer_backend_requests_total{backend=\"w1\"}")
            .await
            >= 1.0,
        "some requests had been sent to w1 before it was found hung"
    );
    assert!(balancer.metric("bistro_balancer_retries_total").await >= 1.0);
    assert_eq!(balancer.backend("w1").await["reason"], "timeout");
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_but_hung_stateful_waiter_keeps_its_diners_until_it_is_back() {
    let waiters = Waiter::three("stateful").await;
    let mut c = config(&waiters.iter().collect::<Vec<_>>());
    c.health.timeout_ms = 200;
    c.upstream.response_timeout_ms = 30_000;
    c.affinity.lost_after_down_ms = 60_000;
    let balancer = Balancer::start(c).await;
    let diner = balancer.diner();
    let home = waiter_of(&diner.get("/v1/orders").await.unwrap());
    let cookie = diner.cookie("bistro_affinity").expect("pinned");
    let pinned = waiters.iter().find(|w| w.id == home).unwrap();

    pinned.set_delay(Duration::from_secs(20));
    assert!(
        eventually(WITHIN, || async {
            balancer.backend(&home).await["health"] == "down"
        })
        .await
    );
    let r = diner.get("/v1/orders").await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.value()["type"],
        "https://bistro.dev/problems/backend-unavailable"
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.header("bistro-session-lost").is_none());
    assert!(r.header("set-cookie").is_none(), "the cookie is kept");
    assert_eq!(
        diner.cookie("bistro_affinity").as_deref(),
        Some(cookie.as_str())
    );

    pinned.set_delay(Duration::ZERO);
    assert!(
        eventually(WITHIN, || async {
            balancer.backend(&home).await["health"] == "up"
        })
        .await
    );
    let r = diner.get("/v1/orders").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        waiter_of(&r),
        home,
        "back with the waiter that has the notes"
    );
    assert_eq!(
        balancer
            .metric("bistro_balancer_affinity_total{outcome=\"lost\"}")
            .await,
        0.0
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_out_for_longer_than_lost_after_loses_its_sessions() {
    let waiters = Waiter::three("stateful").await;
    let mut c = config(&waiters.iter().collect::<Vec<_>>());
    c.affinity.lost_after_down_ms = 60_000;
    let clock = ManualClock::new();
    c.clock = clock.clock();
    let balancer = Balancer::start(c).await;
    let diner = balancer.diner();
    let home = waiter_of(&diner.get("/v1/orders").await.unwrap());
    waiters
        .iter()
        .find(|w| w.id == home)
        .unwrap()
        .set_failing(true);
    assert!(
        eventually(WITHIN, || async {
            balancer.backend(&home).await["health"] == "down"
        })
        .await
    );
    let r = diner.get("/v1/orders").await.unwrap();
    assert_eq!(
        r.value()["type"],
        "https://bistro.dev/problems/backend-unavailable",
        "down for less than lost_after_down_ms: the diner is asked to retry"
    );
    assert!(r.header("bistro-session-lost").is_none());
    clock.advance(Duration::from_millis(60_100));
    let r = diner.get("/v1/orders").await.unwrap();
    assert_eq!(
        r.header("bistro-session-lost"),
        Some("1"),
        "after lost_after_down_ms the session counts as lost: {}",
        r.text()
    );
    assert_eq!(
        diner.cookie("bistro_affinity"),
        None,
        "and the cookie is cleared"
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_never_takes_out_more_than_its_share() {
    let waiters = Waiter::three("stateless").await;
    let mut c = config(&waiters.iter().collect::<Vec<_>>());
    c.routes = vec![RouteConfig {
        prefix: "/".into(),
        sticky: Stickiness::Off,
        on_session_lost: Default::default(),
    }];
    c.health.active = false;
    c.health.eject_after = 1;
    c.health.ejection_base_ms = 60_000;
    c.health.ejection_max_ms = 60_000;
    c.health.max_ejection_percent = 34;
    let balancer = Balancer::start(c).await;
    for w in &waiters {
        w.set_failing(true);
    }
    let diner = balancer.diner();
    for _ in 0..30 {
        let r = diner.get("/v1/menu").await.unwrap();
        assert_eq!(r.status, 500, "the waiters' own answers are passed on");
    }
    let mut ejected = 0;
    for b in ["w1", "w2", "w3"] {
        if balancer.backend(b).await["health"] == "ejected" {
            ejected += 1;
        }
    }
    assert_eq!(ejected, 1, "34% of three backends is one");
    let reached = waiters.iter().filter(|w| w.requests() > 1).count();
    assert_eq!(reached, 2, "the other two keep taking requests");
    balancer.shutdown().await.unwrap();
}
