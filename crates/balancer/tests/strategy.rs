//! A balancing strategy written outside the crate, configured as a custom strategy and
//! routing real requests.

mod support;

use bistro_balancer::{Backend, CustomStrategy, Pick, RouteConfig, Selection, Stickiness};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use support::{Balancer, Waiter, config, waiter_of};

/// Always the last backend (in table order) the balancer accepts.
#[derive(Debug)]
struct LastAccepted;

impl Selection for LastAccepted {
    fn select(
        &self,
        backends: &[Backend],
        _pick: Pick,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<usize> {
        backends.iter().rposition(accept)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_from_outside_the_crate_routes_requests() {
    let waiters = Waiter::three("stateless").await;
    let mut c = config(&waiters.iter().collect::<Vec<_>>());
    c.routes = vec![RouteConfig {
        prefix: "/".into(),
        sticky: Stickiness::Off,
        on_session_lost: Default::default(),
    }];
    c.health.active = false;
    // What the balancer hands the strategy when it builds it.
    let seen = Arc::new(Mutex::new(Vec::<(Vec<String>, u32)>::new()));
    let workers = Arc::new(AtomicUsize::new(0));
    let (seen_in, workers_in) = (seen.clone(), workers.clone());
    c.balancing.custom = Some(CustomStrategy::new("last-accepted", move |backends, n| {
        let view = backends.iter().map(|b| b.id().to_string()).collect();
        seen_in.lock().unwrap().push((view, backends[0].weight()));
        workers_in.store(n, SeqCst);
        Box::new(LastAccepted)
    }));
    let balancer = Balancer::start(c).await;
    let diner = balancer.diner();
    for _ in 0..12 {
        let r = diner.get("/v1/menu").await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(waiter_of(&r), "w3", "the last backend takes every request");
    }
    assert_eq!(waiters[0].requests() + waiters[1].requests(), 0);
    assert_eq!(
        seen.lock().unwrap().first(),
        Some(&(vec!["w1".into(), "w2".into(), "w3".into()], 1)),
        "built for the configured backends, in order"
    );
    assert_eq!(workers.load(SeqCst), 2, "and for the configured workers");

    // The balancer's own filter still applies: with w3 gone, its requests go to the last
    // backend the balancer still accepts.
    waiters[2].stop();
    for _ in 0..12 {
        let r = diner.get("/v1/menu").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(waiter_of(&r), "w2");
    }
    assert_eq!(waiters[0].requests(), 0, "w1 is never the last accepted");
    balancer.shutdown().await.unwrap();
}
