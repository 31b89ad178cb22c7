//! Where a request goes: its affinity resolved, or a backend selected.
//!
//! A valid token naming an available backend pins the request to it (a *hit*; a
//! draining backend still serves its pinned diners). When the pinned backend is *not*
//! available, what the diner is told depends on whether its notes can still exist:
//!
//! - the backend was removed, or refuses connections (its process is gone), or has
//!   been out for longer than `affinity.lost_after_down_ms`: the session is *lost*, and
//!   the route's policy answers 503 `session-lost` (`strict`, cookie cleared) or picks
//!   another backend (`redispatch`);
//! - the backend is alive but slow, hung, ejected or failing its checks: a `strict`
//!   route answers 503 `backend-unavailable` with `Retry-After` and keeps the cookie, so
//!   the diner carries on where it was once its waiter is back; `redispatch` moves it.
//!
//! Forged, expired or unknown tokens are counted and treated as absent. Without a pin,
//! the strategy picks among backends that are available and not draining (the
//! `accept` filter) — unless too few are available: then the balancer is in *panic
//! mode* and treats every backend that is not known to be gone as available (see
//! `health.panic_threshold_percent`).

use crate::affinity::{TokenId, Verdict};
use crate::backend::{Core, Local};
use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::headers::add_via;
use crate::metrics::AffinityOutcome;
use crate::moves::Moved;
use crate::problem::{Problem, error_response};
use crate::route::{Policy, Route};
use crate::spec::Mode;
use crate::state::Worker;
use crate::strategy::Pick;
use crate::table::Table;
use http::header::SET_COOKIE;
use http::{HeaderValue, Response};
use std::sync::Arc;

use bistro_proto::headers::SESSION_LOST;

/// An answer the balancer gives without (further) asking a backend; boxed because the
/// paths that produce it are rare and the common `Ok` should stay small.
pub(crate) type Early = Box<Response<ResponseBody>>;

/// The request's affinity, as far as the response needs it.
#[derive(Debug, Default)]
pub(crate) struct Sticky {
    /// The issue time of a valid token naming the target.
    pub(crate) issued_at: Option<u64>,
    /// A cookie came in but cannot stay as it is (forged, expired, unknown, lost).
    pub(crate) replace: bool,
    /// The backend the diner was pinned to, when the request was sent elsewhere.
    pub(crate) rerouted_from: Option<Arc<str>>,
    /// The backup the token named (replicated waiters), where the diner goes when its
    /// waiter is unavailable.
    pub(crate) backup: Option<Arc<str>>,
}

/// Where the request goes.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) local: Arc<Local>,
    pub(crate) sticky: Sticky,
}

impl Sticky {
    /// A request moved off the backend `from` it was pinned to: the cookie is issued
    /// again for wherever it lands, which the response names in `Bistro-Rerouted`.
    pub(crate) fn rerouted(from: Arc<str>) -> Sticky {
        Sticky {
            issued_at: None,
            replace: true,
            rerouted_from: Some(from),
            backup: None,
        }
    }
}

impl Target {
    pub(crate) fn pinned(&self) -> bool {
        self.sticky.issued_at.is_some()
    }
}

/// Whether a request may go to `core` at `now_ms`: available, or, in panic mode, not
/// known to be gone.
fn usable(core: &Core, now_ms: u64, panic: bool) -> bool {
    core.health.is_available(now_ms) || (panic && !core.health.is_gone())
}

/// Resolves the request's affinity, or selects a backend for it.
#[allow(clippy::too_many_arguments)] // each is one fact about the request; a struct would only rename them
pub(crate) fn choose(
    worker: &Worker,
    table: &Table,
    route: &Route,
    verdict: Verdict,
    key: u64,
    now_ms: u64,
    moved: Option<Moved>,
    request_id: &dyn Fn() -> HeaderValue,
) -> Result<Target, Early> {
    let counters = worker.counters();
    let mut sticky = Sticky::default();
    let mut lost_core: Option<&Core> = None;
    if route.is_sticky() {
        match verdict {
            Verdict::Valid {
                backend,
                backup,
                issued_at,
            } => {
                // The session was handed from the waiter the token names to another
                // (drain with handoff): go there, and re-issue the cookie.
                if let Some(moved) = moved
                    && *moved.from == *backend.as_str()
                    && let Some(b) = table.find(&moved.to)
                    && usable(&b.core, now_ms, worker.shared.in_panic(table, now_ms))
                {
                    counters.affinity(AffinityOutcome::Moved);
                    // The cookie is issued again naming the new waiter (which counts
                    // it); the old one holds the session no more.
                    if let Some(old) = table.find(backend.as_str()) {
                        old.core.unpin();
                    }
                    return Ok(Target {
                        local: b.local(worker.index).clone(),
                        sticky: Sticky::rerouted(moved.from),
                    });
                }
                sticky.backup = backup.map(|b| Arc::from(b.as_str()));
                match table.find(backend.as_str()) {
                    Some(b) if b.core.health.is_available(now_ms) => {
                        counters.affinity(AffinityOutcome::Hit);
                        sticky.issued_at = Some(issued_at);
                        return Ok(Target {
                            local: b.local(worker.index).clone(),
                            sticky,
                        });
                    }
                    Some(b)
                        if worker.shared.in_panic(table, now_ms) && !b.core.health.is_gone() =>
                    {
                        // Too few backends are healthy to trust the verdicts: the diner's
                        // own waiter is as good a guess as any, and the only one with notes.
                        counters.affinity(AffinityOutcome::Hit);
                        counters.panic_routed();
                        sticky.issued_at = Some(issued_at);
                        return Ok(Target {
                            local: b.local(worker.index).clone(),
                            sticky,
                        });
                    }
                    Some(b) => {
                        if let Some(local) =
                            failover(worker, table, backup.as_ref().map(TokenId::as_str), now_ms)
                        {
                            sticky.rerouted_from = Some(b.core.id.clone());
                            sticky.replace = true;
                            return Ok(Target { local, sticky });
                        }
                        unavailable(worker, route, &b.core, now_ms, false)?;
                        lost_core = Some(&b.core);
                        sticky.rerouted_from = Some(b.core.id.clone());
                        sticky.replace = true;
                    }
                    None if let Some(local) =
                        failover(worker, table, backup.as_ref().map(TokenId::as_str), now_ms) =>
                    {
                        sticky.rerouted_from = Some(Arc::from(backend.as_str()));
                        sticky.replace = true;
                        return Ok(Target { local, sticky });
                    }
                    None => match table.tombstone(backend.as_str()) {
                        Some(t) => {
                            lose(worker, route, &t.id, t.mode, None)?;
                            sticky.rerouted_from = Some(t.id.clone());
                            sticky.replace = true;
                        }
                        None => {
                            counters.affinity(AffinityOutcome::Unknown);
                            sticky.replace = true;
                        }
                    },
                }
            }
            Verdict::Forged => {
                counters.affinity(AffinityOutcome::Forged);
                sticky.replace = true;
            }
            Verdict::Expired => {
                counters.affinity(AffinityOutcome::Expired);
                sticky.replace = true;
            }
            Verdict::Absent => counters.affinity(AffinityOutcome::Miss),
        }
    }
    let exclude = |b: &Core| lost_core.is_some_and(|l| std::ptr::eq(l, b));
    match select(worker, table, key, now_ms, &exclude) {
        Some(local) => Ok(Target { local, sticky }),
        None => Err(Box::new(error_response(
            &ProxyError::NoBackend,
            &request_id(),
        ))),
    }
}

/// The backup a replicated diner's token names, when it can take the request: it holds
/// the session's copy and takes the session over.
fn failover(
    worker: &Worker,
    table: &Table,
    backup: Option<&str>,
    now_ms: u64,
) -> Option<Arc<Local>> {
    let b = table.find(backup?)?;
    let panic = worker.shared.in_panic(table, now_ms);
    usable(&b.core, now_ms, panic).then(|| {
        worker.counters().affinity(AffinityOutcome::Failover);
        b.local(worker.index).clone()
    })
}

/// The backup named in `sticky`, for a request whose pinned backend just failed.
pub(crate) fn failover_to(worker: &Worker, sticky: &Sticky, now_ms: u64) -> Option<Arc<Local>> {
    failover(
        worker,
        &worker.shared.registry.load(),
        sticky.backup.as_deref(),
        now_ms,
    )
}

/// The diner's pinned backend `core` cannot take its request now (`refused`: a connect
/// was just refused). `Ok` means the route redispatches; otherwise the answer: the
/// session is lost when the backend is gone or has been out too long, and the diner is
/// asked to retry when it is merely unavailable.
pub(crate) fn unavailable(
    worker: &Worker,
    route: &Route,
    core: &Core,
    now_ms: u64,
    refused: bool,
) -> Result<(), Early> {
    let gone = refused
        || core.health.is_gone()
        || core.health.down_for(now_ms) >= worker.shared.settings.lost_after_down_ms;
    if gone || route.on_lost(core.mode()) == Policy::Redispatch {
        return lose(worker, route, &core.id, core.mode(), Some(core));
    }
    worker.counters().affinity(AffinityOutcome::Unavailable);
    let why = match core.health.reason() {
        crate::health::DownReason::Timeout => "is not answering in time",
        crate::health::DownReason::StoreUnavailable => "cannot reach its store",
        crate::health::DownReason::ShuttingDown => "is shutting down",
        _ if core.health.is_ejected(now_ms) => "is failing and was taken out for a moment",
        _ => "is failing its health checks",
    };
    let mut response = Problem::backend_unavailable(&core.id, why).into_response();
    add_via(response.headers_mut());
    Err(Box::new(response))
}

/// Applies the session-lost policy for the diner's backend `id`. `Ok` means redispatch.
pub(crate) fn lose(
    worker: &Worker,
    route: &Route,
    id: &str,
    mode: Option<Mode>,
    core: Option<&Core>,
) -> Result<(), Early> {
    if let Some(core) = core {
        core.unpin();
    }
    match route.on_lost(mode) {
        Policy::Strict => {
            worker.counters().affinity(AffinityOutcome::Lost);
            let mut response = Problem::session_lost(id).into_response();
            let headers = response.headers_mut();
            headers.insert(SESSION_LOST.clone(), HeaderValue::from_static("1"));
            headers.append(SET_COOKIE, worker.shared.affinity.clear_cookie());
            add_via(headers);
            Err(Box::new(response))
        }
        Policy::Redispatch => {
            worker.counters().affinity(AffinityOutcome::Rerouted);
            Ok(())
        }
    }
}

/// The strategy's choice among usable, non-draining, not excluded backends.
fn select(
    worker: &Worker,
    table: &Table,
    key: u64,
    now_ms: u64,
    exclude: &dyn Fn(&Core) -> bool,
) -> Option<Arc<Local>> {
    let pick = Pick {
        worker: worker.index,
        key,
    };
    let panic = worker.shared.in_panic(table, now_ms);
    let chosen = table.select(pick, &mut |b| {
        usable(&b.core, now_ms, panic) && !b.core.is_draining() && !exclude(&b.core)
    })?;
    if panic && !chosen.core.health.is_available(now_ms) {
        worker.counters().panic_routed();
    }
    Some(chosen.local(worker.index).clone())
}

pub(crate) fn pick(
    worker: &Worker,
    key: u64,
    now_ms: u64,
    exclude: &dyn Fn(&Core) -> bool,
) -> Option<Arc<Local>> {
    select(worker, &worker.shared.registry.load(), key, now_ms, exclude)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BalancerConfig, LostPolicy, RouteConfig, Stickiness};
    use crate::health::DownReason;
    use crate::spec::BackendSpec;
    use crate::state::Shared;
    use http::header::SET_COOKIE;

    const NOW: u64 = 1_700_000_000;

    fn worker(lost: LostPolicy) -> Worker {
        let config = BalancerConfig {
            backends: (1..=3)
                .map(|i| {
                    BackendSpec::new(format!("w{i}"), format!("127.0.0.1:{i}").parse().unwrap())
                })
                .collect(),
            routes: vec![RouteConfig {
                prefix: "/".into(),
                sticky: Stickiness::Auto,
                on_session_lost: lost,
            }],
            ..BalancerConfig::default()
        };
        Worker::new(
            0,
            Arc::new(Shared::new(config, b"unit-test-key-0123456789", 1)),
        )
    }

    fn token_for(w: &Worker, id: &str) -> Verdict {
        w.shared
            .affinity
            .verify(&w.shared.affinity.issue(id, NOW), NOW)
    }

    fn choose_with(w: &Worker, verdict: Verdict) -> Result<Target, Early> {
        choose_at(w, verdict, 1)
    }

    fn choose_at(w: &Worker, verdict: Verdict, now_ms: u64) -> Result<Target, Early> {
        let table = w.shared.registry.load();
        let id = || HeaderValue::from_static("test");
        choose(
            w,
            &table,
            w.shared.routes.find("/v1/orders"),
            verdict,
            0,
            now_ms,
            None,
            &id,
        )
    }

    fn count(w: &Worker, outcome: AffinityOutcome) -> u64 {
        w.shared.metrics.affinity_total(outcome)
    }

    #[test]
    fn a_valid_token_pins_even_to_a_draining_backend() {
        let w = worker(LostPolicy::Auto);
        w.shared.registry.set_draining("w2", true).unwrap();
        let target = choose_with(&w, token_for(&w, "w2")).unwrap();
        assert_eq!(&*target.local.core.id, "w2");
        assert!(target.pinned());
        assert_eq!(count(&w, AffinityOutcome::Hit), 1);
        for _ in 0..20 {
            let fresh = choose_with(&w, Verdict::Absent).unwrap();
            assert_ne!(
                &*fresh.local.core.id, "w2",
                "no new sessions on a draining backend"
            );
        }
        assert_eq!(count(&w, AffinityOutcome::Miss), 20);
    }

    #[test]
    fn a_handed_off_session_goes_to_its_new_waiter_even_after_the_old_one_is_removed() {
        let w = worker(LostPolicy::Auto);
        let moved = |from: &str| {
            Some(Moved {
                from: Arc::from(from),
                to: Arc::from("w3"),
            })
        };
        let go = |w: &Worker, verdict, moved| {
            let table = w.shared.registry.load();
            let route = w.shared.routes.find("/v1/orders");
            let id = || HeaderValue::from_static("test");
            choose(w, &table, route, verdict, 0, 1, moved, &id)
        };
        w.shared.registry.set_draining("w2", true).unwrap();
        let target = go(&w, token_for(&w, "w2"), moved("w2")).unwrap();
        assert_eq!(&*target.local.core.id, "w3");
        assert_eq!(target.sticky.rerouted_from.as_deref(), Some("w2"));
        assert!(target.sticky.replace, "the cookie is issued again");
        assert_eq!(count(&w, AffinityOutcome::Moved), 1);
        // A token naming another waiter than the one the session left is not redirected.
        let target = go(&w, token_for(&w, "w1"), moved("w2")).unwrap();
        assert_eq!(&*target.local.core.id, "w1");
        w.shared.registry.remove("w2").unwrap();
        let target = go(&w, token_for(&w, "w2"), moved("w2")).unwrap();
        assert_eq!(&*target.local.core.id, "w3", "not session-lost: it moved");
    }

    #[test]
    fn a_moved_session_goes_to_its_new_waiter_and_leaves_the_old_ones_count() {
        let w = worker(LostPolicy::Auto);
        let table = w.shared.registry.load();
        table.find("w2").unwrap().core.pin();
        let id = || HeaderValue::from_static("test");
        let moved = Moved {
            from: Arc::from("w2"),
            to: Arc::from("w3"),
        };
        let target = choose(
            &w,
            &table,
            w.shared.routes.find("/v1/orders"),
            token_for(&w, "w2"),
            0,
            1,
            Some(moved),
            &id,
        )
        .unwrap();
        assert_eq!(&*target.local.core.id, "w3");
        assert_eq!(target.sticky.rerouted_from.as_deref(), Some("w2"));
        assert_eq!(table.find("w2").unwrap().core.pinned(), 0);
    }

    #[test]
    fn an_unknown_backend_is_treated_as_absent_and_replaced() {
        let w = worker(LostPolicy::Auto);
        let target = choose_with(&w, token_for(&w, "w9")).unwrap();
        assert!(!target.pinned());
        assert!(target.sticky.replace);
        assert!(target.sticky.rerouted_from.is_none());
        assert_eq!(count(&w, AffinityOutcome::Unknown), 1);
    }

    #[test]
    fn forged_and_expired_tokens_are_counted_and_replaced() {
        let w = worker(LostPolicy::Auto);
        assert!(choose_with(&w, Verdict::Forged).unwrap().sticky.replace);
        assert!(choose_with(&w, Verdict::Expired).unwrap().sticky.replace);
        assert_eq!(count(&w, AffinityOutcome::Forged), 1);
        assert_eq!(count(&w, AffinityOutcome::Expired), 1);
    }

    fn check_fails(w: &Worker, id: &str, reason: DownReason, now_ms: u64) {
        w.shared
            .registry
            .load()
            .find(id)
            .unwrap()
            .core
            .health
            .record_check(Err(reason), 1, 1, now_ms);
    }

    #[test]
    fn a_live_but_failing_backend_keeps_its_diners_until_it_has_been_out_too_long() {
        let w = worker(LostPolicy::Auto); // mode unknown: treated as stateful, so strict
        check_fails(&w, "w1", DownReason::Timeout, 100);
        let response = choose_at(&w, token_for(&w, "w1"), 200).unwrap_err();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        assert!(
            response.headers().get(SET_COOKIE).is_none(),
            "the cookie is kept"
        );
        assert!(response.headers().get("bistro-session-lost").is_none());
        assert_eq!(count(&w, AffinityOutcome::Unavailable), 1);
        let lost_after = w.shared.settings.lost_after_down_ms;
        let response = choose_at(&w, token_for(&w, "w1"), 100 + lost_after).unwrap_err();
        assert_eq!(
            response.headers()["bistro-session-lost"],
            "1",
            "out too long"
        );
    }

    #[test]
    fn a_refusing_backend_loses_the_session_under_strict() {
        let w = worker(LostPolicy::Auto); // mode unknown: treated as stateful, so strict
        check_fails(&w, "w1", DownReason::Refused, 1);
        let response = choose_with(&w, token_for(&w, "w1")).unwrap_err();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["bistro-session-lost"], "1");
        assert!(
            response.headers()[SET_COOKIE]
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
        assert_eq!(count(&w, AffinityOutcome::Lost), 1);
    }

    #[test]
    fn a_removed_backend_is_rerouted_under_redispatch() {
        let w = worker(LostPolicy::Redispatch);
        w.shared.registry.remove("w3").unwrap();
        let target = choose_with(&w, token_for(&w, "w3")).unwrap();
        assert_ne!(&*target.local.core.id, "w3");
        assert_eq!(target.sticky.rerouted_from.as_deref(), Some("w3"));
        assert_eq!(count(&w, AffinityOutcome::Rerouted), 1);
    }

    #[test]
    fn too_few_healthy_backends_put_every_live_one_back_in_play() {
        let w = worker(LostPolicy::Auto);
        check_fails(&w, "w1", DownReason::StoreUnavailable, 1);
        check_fails(&w, "w2", DownReason::StoreUnavailable, 1);
        check_fails(&w, "w3", DownReason::Refused, 1);
        assert!(w.shared.in_panic(&w.shared.registry.load(), 2));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let target = choose_at(&w, Verdict::Absent, 2).unwrap();
            seen.insert(target.local.core.id.to_string());
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            ["w1", "w2"],
            "panic spreads over every backend not known to be gone"
        );
        let pinned = choose_at(&w, token_for(&w, "w2"), 2).unwrap();
        assert_eq!(&*pinned.local.core.id, "w2", "a pinned diner goes home");
        assert!(w.shared.metrics.panic_routed_total() >= 20);
    }

    #[test]
    fn nothing_available_is_a_503_problem() {
        let w = worker(LostPolicy::Auto);
        for b in w.shared.registry.load().backends() {
            b.core.set_draining(true);
        }
        let response = choose_with(&w, Verdict::Absent).unwrap_err();
        assert_eq!(response.status(), 503);
    }
}
