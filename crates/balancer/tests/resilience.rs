//! Failures end to end: passive ejection and recovery, active health checks, retries
//! on connect failure, idempotent retries after a dropped connection, graceful drain.

mod support;

use bistro_balancer::{ManualClock, RouteConfig, Stickiness};
use http::Method;
use std::time::Duration;
use support::{Balancer, Waiter, config, eventually, waiter_of};

/// A configuration over `waiters` where no route is sticky (load spreads freely).
fn unpinned(waiters: &[Waiter]) -> bistro_balancer::BalancerConfig {
    let mut c = config(&waiters.iter().collect::<Vec<_>>());
    c.routes = vec![RouteConfig {
        prefix: "/".into(),
        sticky: Stickiness::Off,
        on_session_lost: Default::default(),
    }];
    c.health.active = false;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deliberate_503_with_retry_after_does_not_eject() {
    // Regression: during a store outage every stateless waiter answers 503
    // store-unavailable; ejecting them all kept the balancer answering 503 for seconds
    // after the store was back.
    let waiters = Waiter::three("stateless").await;
    let mut c = unpinned(&waiters);
    c.health.eject_after = 3;
    let balancer = Balancer::start(c).await;
    waiters[0].set_unavailable(true);
    let diner = balancer.diner();
    let mut unavailable = 0;
    for _ in 0..30 {
        if diner.get("/v1/menu").await.unwrap().status == 503 {
            unavailable += 1;
        }
    }
    assert!(
        waiters[0].requests() > 3,
        "w1 kept its share: {}",
        waiters[0].requests()
    );
    assert_eq!(
        unavailable,
        waiters[0].requests(),
        "the 503s are passed on as they are"
    );
    assert_ne!(balancer.backend("w1").await["health"], "ejected");
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_5xx_eject_a_waiter_until_it_recovers() {
    let waiters = Waiter::three("stateless").await;
    let mut c = unpinned(&waiters);
    c.health.eject_after = 3;
    // Far longer than the test runs in real time: only advancing the clock ends it.
    c.health.ejection_base_ms = 60_000;
    c.health.ejection_max_ms = 120_000;
    let clock = ManualClock::new();
    c.clock = clock.clock();
    let balancer = Balancer::start(c).await;
    waiters[0].set_failing(true);
    let diner = balancer.diner();
    let mut errors = 0;
    for _ in 0..30 {
        if diner.get("/v1/menu").await.unwrap().status == 500 {
            errors += 1;
        }
    }
    assert_eq!(waiters[0].requests(), 3, "three 500s in a row eject w1");
    assert_eq!(errors, 3, "5xx answers are passed on, not retried");
    assert_eq!(balancer.backend("w1").await["health"], "ejected");
    assert_eq!(
        balancer
            .metric("bistro_balancer_backend_ejections_total{backend=\"w1\"}")
            .await,
        1.0
    );

    waiters[0].set_failing(false);
    // Still ejected: the backoff runs on the balancer's clock, which has not been advanced.
    for _ in 0..6 {
        assert_eq!(diner.get("/v1/menu").await.unwrap().status, 200);
    }
    assert_eq!(
        waiters[0].requests(),
        3,
        "no request reaches w1 while ejected"
    );
    clock.advance(Duration::from_millis(60_100));
    for _ in 0..30 {
        assert_eq!(diner.get("/v1/menu").await.unwrap().status, 200);
    }
    assert!(
        waiters[0].requests() > 3,
        "after the backoff the waiter is probed and back"
    );
    assert_eq!(balancer.backend("w1").await["health"], "up");
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_never_left_are_retried_on_another_waiter() {
    let waiters = Waiter::three("stateless").await;
    let balancer = Balancer::start(unpinned(&waiters)).await;
    waiters[1].stop();
    let diner = balancer.diner();
    for i in 0..20 {
        let r = if i % 2 == 0 {
            diner.get("/v1/menu").await.unwrap()
        } else {
            // Not idempotent, but it never reached a waiter: safe to send elsewhere.
            diner
                .post_json("/v1/orders", &serde_json::json!({"items": []}))
                .await
                .unwrap()
        };
        assert!(r.status.is_success(), "{}: {}", r.status, r.text());
        assert_ne!(waiter_of(&r), "w2");
    }
    assert!(balancer.metric("bistro_balancer_retries_total").await >= 1.0);
    assert!(
        balancer
            .metric("bistro_balancer_backend_errors_total{backend=\"w2\"}")
            .await
            >= 1.0
    );

    // With every waiter gone the diner gets an explanation, not a hang.
    waiters[0].stop();
    waiters[2].stop();
    let r = balancer.diner().get("/v1/menu").await.unwrap();
    assert!(r.status == 502 || r.status == 503, "{}", r.status);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_with_idempotency_key_is_retried_and_takes_effect_once() {
    let waiters = Waiter::three("stateful").await;
    let balancer = Balancer::start(config(&waiters.iter().collect::<Vec<_>>())).await;
    let diner = balancer.diner();
    let home = waiter_of(&diner.get("/v1/orders").await.unwrap());
    let pinned = waiters.iter().find(|w| w.id == home).unwrap();

    pinned.drop_next_post();
    let order = serde_json::json!({"items": [{"dish": "tofu-bowl", "quantity": 1}]});
    let r = diner
        .request(
            Method::POST,
            "/v1/orders",
            &[("idempotency-key", "order-1")],
            Some(&order),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        waiter_of(&r),
        home,
        "a pinned stateful diner is retried on its own waiter"
    );
    assert_eq!(r.header("idempotency-replayed"), Some("true"));
    assert_eq!(
        waiters.iter().map(Waiter::effects).sum::<u64>(),
        1,
        "one effect despite two sends"
    );
    assert_eq!(balancer.metric("bistro_balancer_retries_total").await, 1.0);

    // Without a key the same failure is not retried: the balancer cannot know.
    pinned.drop_next_post();
    let r = diner.post_json("/v1/orders", &order).await.unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(
        r.value()["type"],
        "https://bistro.dev/problems/upstream-failed"
    );
    assert_eq!(balancer.metric("bistro_balancer_retries_total").await, 1.0);
    assert_eq!(waiters.iter().map(Waiter::effects).sum::<u64>(), 2);
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_take_a_waiter_out_and_back_and_learn_its_mode() {
    let waiters = Waiter::three("stateful").await;
    let mut c = unpinned(&waiters);
    c.health.active = true;
    let balancer = Balancer::start(c).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            balancer.backend("w3").await["mode"] == "stateful"
        })
        .await,
        "the mode is learned by the probes, before any traffic"
    );
    waiters[0].set_not_ready(true);
    assert!(
        eventually(Duration::from_secs(5), || async {
            balancer.backend("w1").await["health"] == "down"
        })
        .await
    );
    let before = waiters[0].requests();
    for _ in 0..15 {
        assert_eq!(balancer.diner().get("/v1/menu").await.unwrap().status, 200);
    }
    assert_eq!(
        waiters[0].requests(),
        before,
        "a down waiter gets no requests"
    );
    waiters[0].set_not_ready(false);
    assert!(
        eventually(Duration::from_secs(5), || async {
            balancer.backend("w1").await["health"] == "up"
        })
        .await
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_then_stops_accepting() {
    let waiter = Waiter::start("w1", "stateful").await;
    waiter.set_delay(Duration::from_millis(600));
    let balancer = Balancer::start(config(&[&waiter])).await;
    let addr = balancer.addr;
    let diner = balancer.diner();
    let slow = tokio::spawn(async move { diner.get("/v1/orders").await });
    // Shut down only once the request is in flight (a fixed pause could come too early
    // on a busy machine, and the request would then never have started).
    assert!(
        eventually(Duration::from_secs(5), || async {
            balancer
                .metric("bistro_balancer_backend_active_connections{backend=\"w1\"}")
                .await
                >= 1.0
        })
        .await
    );
    balancer.shutdown().await.unwrap();
    let r = slow.await.unwrap().unwrap();
    assert_eq!(
        r.status, 200,
        "the in-flight request completed during the drain"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuseport_listeners_serve_side_by_side() {
    let waiter = Waiter::start("w1", "stateful").await;
    let listeners = bistro_balancer::bind_reuseport("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let addr = listeners[0].local_addr().unwrap();
    assert_eq!(
        listeners[1].local_addr().unwrap(),
        addr,
        "both sockets share the port"
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(bistro_balancer::run_on(
        listeners,
        None,
        config(&[&waiter]),
        async move { stopped.await.unwrap_or(()) },
    ));
    for _ in 0..20 {
        let diner = bistro_client::Client::new(addr);
        assert_eq!(diner.get("/v1/menu").await.unwrap().status, 200);
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
