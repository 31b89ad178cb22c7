//! Sticky sessions end to end: pinning, losing the waiter (strict and redispatch),
//! draining, and forged cookies.

mod support;

use bistro_balancer::{LostPolicy, ManualClock, RouteConfig, Stickiness};
use std::collections::HashSet;
use std::time::Duration;
use support::{Balancer, Waiter, config, eventually, waiter_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diner_stays_with_one_waiter_for_100_requests() {
    let waiters = Waiter::three("stateful").await;
    let balancer = Balancer::start(config(&waiters.iter().collect::<Vec<_>>())).await;
    let diner = balancer.diner();

    let first = diner.get("/v1/orders").await.unwrap();
    assert_eq!(first.status, 200);
    let set_cookie = first
        .header("set-cookie")
        .expect("the first answer pins the diner");
    assert!(set_cookie.starts_with("bistro_affinity="), "{set_cookie}");
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Lax")
            && set_cookie.contains("Path=/")
    );
    let home = waiter_of(&first);
    assert!(
        !set_cookie.contains(&waiters[0].addr.port().to_string()),
        "the token never carries an address"
    );

    for _ in 0..99 {
        let r = diner.get("/v1/orders").await.unwrap();
        assert_eq!(waiter_of(&r), home);
        assert!(
            r.header("set-cookie").is_none(),
            "a valid cookie is not re-issued"
        );
    }
    let served: Vec<u64> = waiters.iter().map(Waiter::requests).collect();
    assert_eq!(served.iter().sum::<u64>(), 100);
    assert_eq!(
        served.iter().filter(|&&n| n == 100).count(),
        1,
        "{served:?}"
    );

    // New diners are spread over the waiters.
    let mut homes = HashSet::new();
    for _ in 0..12 {
        homes.insert(waiter_of(
            &balancer.diner().get("/v1/orders").await.unwrap(),
        ));
    }
    assert!(homes.len() >= 2, "{homes:?}");
    assert!(
        balancer
            .metric("bistro_balancer_affinity_total{outcome=\"hit\"}")
            .await
            >= 99.0
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_policy_answers_session_lost_and_clears_the_cookie() {
    let waiters = Waiter::three("stateful").await;
    let balancer = Balancer::start(config(&waiters.iter().collect::<Vec<_>>())).await;
    let diner = balancer.diner();
    let home = waiter_of(&diner.get("/v1/orders").await.unwrap());
    let pinned = waiters.iter().find(|w| w.id == home).unwrap();
    pinned.stop();

    let lost = diner.get("/v1/orders").await.unwrap();
    assert_eq!(lost.status, 503);
    assert_eq!(
        lost.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(lost.header("bistro-session-lost"), Some("1"));
    let body = lost.value();
    assert_eq!(body["type"], "https://bistro.dev/problems/session-lost");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!(
            "the waiter that holds your session ({home}) is unavailable;"
        )),
        "{detail}"
    );
    let cleared = lost.header("set-cookie").unwrap();
    assert!(
        cleared.starts_with("bistro_affinity=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(diner.cookie("bistro_affinity"), None);

    // Without the cookie the diner starts over elsewhere.
    let fresh = diner.get("/v1/orders").await.unwrap();
    assert_eq!(fresh.status, 200);
    assert_ne!(waiter_of(&fresh), home);
    assert!(diner.cookie("bistro_affinity").is_some());
    assert_eq!(
        balancer
            .metric("bistro_balancer_affinity_total{outcome=\"lost\"}")
            .await,
        1.0
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redispatch_policy_reroutes_and_re_pins() {
    let waiters = Waiter::three("stateful").await;
    let mut c = config(&waiters.iter().collect::<Vec<_>>());
    c.routes = vec![RouteConfig {
        prefix: "/".into(),
        sticky: Stickiness::Auto,
        on_session_lost: LostPolicy::Redispatch,
    }];
    let balancer = Balancer::start(c).await;
    let diner = balancer.diner();
    let home = waiter_of(&diner.get("/v1/orders").await.unwrap());
    let old_cookie = diner.cookie("bistro_affinity").unwrap();
    waiters.iter().find(|w| w.id == home).unwrap().stop();

    let moved = diner.get("/v1/orders").await.unwrap();
    assert_eq!(moved.status, 200);
    let new_home = waiter_of(&moved);
    assert_ne!(new_home, home);
    assert_eq!(
        moved.header("bistro-rerouted"),
        Some(format!("{home}->{new_home}").as_str())
    );
    assert_ne!(
        diner.cookie("bistro_affinity").unwrap(),
        old_cookie,
        "the cookie names the new waiter"
    );
    for _ in 0..10 {
        let r = diner.get("/v1/orders").await.unwrap();
        assert_eq!(waiter_of(&r), new_home);
        assert!(r.header("bistro-rerouted").is_none());
    }
    assert!(
        balancer
            .metric("bistro_balancer_affinity_total{outcome=\"rerouted\"}")
            .await
            >= 1.0
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_waiter_keeps_its_diners_and_gets_no_new_ones() {
    let waiters = Waiter::three("stateful").await;
    let balancer = Balancer::start(config(&waiters.iter().collect::<Vec<_>>())).await;
    let regular = balancer.diner();
    let home = waiter_of(&regular.get("/v1/orders").await.unwrap());

    let drained = balancer
        .admin()
        .request(
            http::Method::POST,
            &format!("/backends/{home}/drain"),
            &[],
            None,
        )
        .await
        .unwrap();
    assert_eq!(drained.status, 200);
    assert_eq!(drained.value()["draining"], true);

    for _ in 0..20 {
        assert_eq!(
            waiter_of(&regular.get("/v1/orders").await.unwrap()),
            home,
            "pinned diners stay"
        );
        let newcomer = balancer.diner().get("/v1/orders").await.unwrap();
        assert_ne!(
            waiter_of(&newcomer),
            home,
            "no new sessions on a draining waiter"
        );
    }
    let entry = balancer.backend(&home).await;
    assert_eq!(entry["draining"], true);
    assert!(entry["sessions_pinned"].as_i64().unwrap() >= 1);

    balancer
        .admin()
        .request(
            http::Method::POST,
            &format!("/backends/{home}/undrain"),
            &[],
            None,
        )
        .await
        .unwrap();
    let mut homes = HashSet::new();
    for _ in 0..12 {
        homes.insert(waiter_of(
            &balancer.diner().get("/v1/orders").await.unwrap(),
        ));
    }
    assert!(
        homes.contains(&home),
        "undrained waiters take new diners again: {homes:?}"
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_wrong_key_and_unknown_cookies_are_replaced_not_refused() {
    let waiters = Waiter::three("stateful").await;
    let balancer = Balancer::start(config(&waiters.iter().collect::<Vec<_>>())).await;
    let diner = balancer.diner();
    diner.get("/v1/orders").await.unwrap();
    let genuine = diner.cookie("bistro_affinity").unwrap();

    // A token signed with another key (a balancer that does not share the key).
    let mut other = config(&waiters.iter().collect::<Vec<_>>());
    other.affinity.key = Some("a-completely-different-key".into());
    let stranger = Balancer::start(other).await;
    let elsewhere = stranger.diner();
    elsewhere.get("/v1/orders").await.unwrap();
    let foreign = elsewhere.cookie("bistro_affinity").unwrap();

    // A genuine token naming a waiter this balancer never knew.
    let extra = Waiter::start("w9", "stateful").await;
    let sibling = Balancer::start(config(&[&extra])).await;
    let visitor = sibling.diner();
    visitor.get("/v1/orders").await.unwrap();
    let unknown = visitor.cookie("bistro_affinity").unwrap();

    // Change the signature's last character (to one it is not).
    let last = if genuine.ends_with('A') { 'B' } else { 'A' };
    let tampered = format!("{}{last}", &genuine[..genuine.len() - 1]);
    for token in [tampered, "garbage".to_string(), foreign, unknown] {
        let d = balancer.diner();
        d.set_cookie("bistro_affinity", &token);
        let r = d.get("/v1/orders").await.unwrap();
        assert_eq!(
            r.status, 200,
            "an invalid cookie is never an error for the diner"
        );
        assert!(
            r.header("set-cookie")
                .unwrap()
                .starts_with("bistro_affinity="),
            "and it is replaced"
        );
        assert_ne!(d.cookie("bistro_affinity").unwrap(), token);
    }
    assert_eq!(
        balancer
            .metric("bistro_balancer_affinity_total{outcome=\"forged\"}")
            .await,
        3.0
    );
    assert_eq!(
        balancer
            .metric("bistro_balancer_affinity_total{outcome=\"unknown\"}")
            .await,
        1.0
    );
    for b in [stranger, sibling, balancer] {
        b.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_expires_at_its_deadline_on_the_balancers_clock() {
    let waiters = Waiter::three("stateful").await;
    let mut c = config(&waiters.iter().collect::<Vec<_>>());
    let clock = ManualClock::new();
    c.clock = clock.clock();
    let balancer = Balancer::start(c).await;
    let drained = balancer
        .admin()
        .post_json(
            "/backends/w1/drain",
            &serde_json::json!({"deadline_seconds": 60}),
        )
        .await
        .unwrap();
    assert_eq!(drained.status, 200, "{}", drained.text());
    let drain = &drained.value()["drain"];
    assert_eq!(drain["state"], "draining");
    let (started, deadline) = (drain["started_at"].as_u64(), drain["deadline_at"].as_u64());
    assert_eq!(deadline.unwrap() - started.unwrap(), 60);
    // The test waiter does not count its sessions, so only the deadline ends the drain,
    // and a minute of real time does not pass in this test.
    clock.advance(Duration::from_secs(61));
    assert!(
        eventually(Duration::from_secs(5), || async {
            balancer.backend("w1").await["drain"]["state"] == "expired"
        })
        .await,
        "{}",
        balancer.backend("w1").await
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_cookie_is_replaced() {
    let waiters = Waiter::three("stateful").await;
    let mut c = config(&waiters.iter().collect::<Vec<_>>());
    c.affinity.max_age_secs = 60;
    let clock = ManualClock::new();
    c.clock = clock.clock();
    let balancer = Balancer::start(c).await;
    let diner = balancer.diner();
    diner.get("/v1/orders").await.unwrap();
    let old = diner.cookie("bistro_affinity").unwrap();
    // Within its lifetime (and before half of it, when it would be re-issued) the
    // cookie is honoured as it is.
    let r = diner.get("/v1/orders").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(diner.cookie("bistro_affinity").unwrap(), old);
    clock.advance(Duration::from_secs(61));
    let r = diner.get("/v1/orders").await.unwrap();
    assert_eq!(r.status, 200);
    assert_ne!(diner.cookie("bistro_affinity").unwrap(), old);
    assert_eq!(
        balancer
            .metric("bistro_balancer_affinity_total{outcome=\"expired\"}")
            .await,
        1.0
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_waiters_get_no_cookie_and_a_lost_pin_is_redispatched() {
    let waiters = Waiter::three("stateless").await;
    let mut c = config(&waiters.iter().collect::<Vec<_>>());
    c.health.active = false;
    c.routes = vec![RouteConfig {
        prefix: "/v1/orders".into(),
        sticky: Stickiness::On,
        on_session_lost: LostPolicy::Auto,
    }];
    let balancer = Balancer::start(c).await;
    let diner = balancer.diner();
    // The first answer teaches the balancer the mode (Bistro-Mode): no cookie on `auto` routes.
    let mut served = HashSet::new();
    for _ in 0..9 {
        let r = diner.get("/v1/menu").await.unwrap();
        assert!(
            r.header("set-cookie").is_none(),
            "stateless waiters need no affinity"
        );
        served.insert(waiter_of(&r));
    }
    assert!(served.len() >= 2, "requests spread freely: {served:?}");

    // A route forced sticky pins even stateless diners; losing the waiter then follows
    // the stateless default, redispatch.
    let home = waiter_of(&diner.get("/v1/orders").await.unwrap());
    assert!(diner.cookie("bistro_affinity").is_some());
    waiters.iter().find(|w| w.id == home).unwrap().stop();
    let moved = diner.get("/v1/orders").await.unwrap();
    assert_eq!(moved.status, 200);
    assert_eq!(
        moved.header("bistro-rerouted"),
        Some(format!("{home}->{}", waiter_of(&moved)).as_str())
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_on_a_header_keeps_each_key_on_one_waiter() {
    let waiters = Waiter::three("stateless").await;
    let mut c = config(&waiters.iter().collect::<Vec<_>>());
    c.balancing.strategy = bistro_balancer::StrategyKind::ConsistentHash;
    c.balancing.hash_key = "header:x-diner".parse().unwrap();
    c.routes = vec![RouteConfig {
        prefix: "/".into(),
        sticky: Stickiness::Off,
        on_session_lost: LostPolicy::Auto,
    }];
    let balancer = Balancer::start(c).await;
    let mut homes = HashSet::new();
    for d in 0..12 {
        let key = format!("diner-{d}");
        let mut seen = HashSet::new();
        for _ in 0..5 {
            let r = balancer
                .diner()
                .request(http::Method::GET, "/v1/menu", &[("x-diner", &key)], None)
                .await
                .unwrap();
            seen.insert(waiter_of(&r));
        }
        assert_eq!(seen.len(), 1, "{key} always lands on one waiter: {seen:?}");
        homes.extend(seen);
    }
    assert!(homes.len() >= 2, "keys spread over the waiters: {homes:?}");
    balancer.shutdown().await.unwrap();
}
