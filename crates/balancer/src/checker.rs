//! Active health checks: `GET /readyz` on every backend, every interval.
//!
//! A probe passes on a 2xx within the timeout. The verdicts feed
//! [`Health::record_check`](crate::health::Health::record_check) (rise/fall). Probes also
//! teach the balancer each backend's mode: from the `Bistro-Mode` header the waiter puts
//! on every response, or, while the mode is still unknown, from `GET /v1/waiter`'s
//! `"mode"` field. Each round probes the *current* backend table, so backends added
//! through the admin API are checked from the next round on.
//!
//! A failed probe says why ([`DownReason`]): refused (nothing listens: the process is
//! gone), timed out (hung or paused: the kernel still accepts its connections), a
//! `503` whose problem type says the waiter's store is unavailable or that it is
//! shutting down, or any other failure. When every backend is out because its store is
//! unavailable the round reports a *store outage*: one shared cause, not N faults
//! (the proxy's panic mode keeps forwarding meanwhile, see [`target`](crate::target)).
//! When a backend goes down, requests waiting on it are woken so that those that may
//! be sent again go elsewhere at once instead of waiting out their timeout.
//!
//! A probe that fails because of the balancer itself (out of file descriptors) says
//! nothing about the backend and is not recorded.
//!
//! Probes open a fresh connection each time: at four probes per backend and second the
//! cost is nil, and a fresh connection is what a new request would need.
//!
//! The round itself (interval, timeout, shutdown, one task per backend, rise/fall
//! counting) is [`run_loop`], shared with the TCP proxy's connect checks
//! ([`crate::tcp`]): each kind of check is a [`Probe`] that only says how to ask a
//! backend and what to log when it goes up or down.

use crate::backend::{Backend, Core};
use crate::clock::Clock;
use crate::config::{HealthConfig, ms};
use crate::health::DownReason;
use crate::spec::Mode;
use crate::state::Shared;
use crate::table::Table;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Largest `/v1/waiter` body read.
const MAX_INFO_BODY: usize = 64 * 1024;

/// One kind of active check: what [`run_loop`] does to each backend every interval.
///
/// The loop owns the timing (the interval, the probe timeout, shutdown), runs one
/// probe per backend concurrently, waits for the round to finish and records each
/// verdict through the rise/fall counting; a probe says only how to ask a backend and
/// how to tell about what changed.
pub(crate) trait Probe: Send + Sync + 'static {
    /// The backend table this round probes (read afresh each round, so backends added
    /// through the admin API are checked from the next round on).
    fn table(&self) -> Arc<Table>;

    /// Whether `backend` is probed at all.
    fn probes(&self, _backend: &Backend) -> bool {
        true
    }

    /// Asks `backend` once; the loop bounds the wait by `health.timeout_ms`.
    fn attempt(&self, backend: &Backend) -> impl Future<Output = Attempt> + Send;

    /// The attempt on `backend` did not finish within `timeout` (it counts as
    /// [`DownReason::Timeout`]).
    fn timed_out(&self, _backend: &Backend, _timeout: Duration) {}

    /// `backend` went up (`true`) or down (`false`) with this verdict.
    fn changed(&self, backend: &Backend, up: bool);

    /// Follow-up work after a passing verdict was recorded, bounded by `timeout`.
    fn passed(&self, _backend: &Backend, _timeout: Duration) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Every probe of the round over `table` has finished.
    fn round_done(&self, _table: &Table) {}
}

/// What one attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The backend answered as a ready one does.
    Pass,
    /// It did not, for this reason.
    Fail(DownReason),
    /// The attempt failed because of the balancer itself (out of file descriptors):
    /// it says nothing about the backend and is not recorded.
    Skip,
}

/// Runs `probe`'s rounds every `health.interval_ms` until `shutdown` is cancelled (not
/// at all when `health.active` is off). Verdicts are recorded at `clock`'s time.
pub(crate) async fn run_loop<P: Probe>(
    probe: Arc<P>,
    config: &HealthConfig,
    clock: Clock,
    shutdown: CancellationToken,
) {
    if !config.active {
        return;
    }
    let counting = Counting {
        timeout: ms(config.timeout_ms),
        rise: config.rise,
        fall: config.fall,
        clock,
    };
    let mut tick = tokio::time::interval(ms(config.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let table = probe.table();
        let mut round = JoinSet::new();
        for backend in table.backends().iter().filter(|b| probe.probes(b)) {
            let (probe, backend, counting) = (probe.clone(), backend.clone(), counting.clone());
            round.spawn(async move { counting.check(&*probe, &backend).await });
        }
        tokio::select! {
            () = async { while round.join_next().await.is_some() {} } => {}
            () = shutdown.cancelled() => return,
        }
        probe.round_done(&table);
    }
}

/// How verdicts are timed and counted (the `[health]` settings).
#[derive(Debug, Clone)]
struct Counting {
    timeout: Duration,
    rise: u32,
    fall: u32,
    clock: Clock,
}

impl Counting {
    /// Probes one backend and records the verdict.
    async fn check(&self, probe: &impl Probe, backend: &Backend) {
        let outcome = match tokio::time::timeout(self.timeout, probe.attempt(backend)).await {
            Ok(Attempt::Pass) => Ok(()),
            Ok(Attempt::Fail(reason)) => Err(reason),
            Ok(Attempt::Skip) => return,
            Err(_) => {
                probe.timed_out(backend, self.timeout);
                Err(DownReason::Timeout)
            }
        };
        let ok = outcome.is_ok();
        let health = &backend.core.health;
        if let Some(up) = health.record_check(outcome, self.rise, self.fall, self.clock.now_ms()) {
            probe.changed(backend, up);
        }
        if ok {
            probe.passed(backend, self.timeout).await;
        }
    }
}

/// Runs `GET /readyz` rounds until shutdown.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let clock = shared.clock.clone();
    let readiness = Arc::new(Readiness {
        shared: shared.clone(),
    });
    run_loop(readiness, &shared.config.health, clock, shutdown).await;
}

/// The HTTP backends' probe: `GET /readyz`, and `GET /v1/waiter` while the mode is
/// unknown.
struct Readiness {
    shared: Arc<Shared>,
}

impl Probe for Readiness {
    fn table(&self) -> Arc<Table> {
        self.shared.registry.snapshot()
    }

    async fn attempt(&self, backend: &Backend) -> Attempt {
        let core = &backend.core;
        match get(core, &self.shared.config.health.path).await {
            Ok((status, mode, body)) => {
                if let Some(mode) = mode {
                    core.learn_mode(mode);
                }
                if status.is_success() {
                    Attempt::Pass
                } else {
                    Attempt::Fail(reason_of(status, &body))
                }
            }
            Err(ProbeError::Connect(e)) if crate::error::is_local_exhaustion(&e) => {
                tracing::warn!(backend = %core.id, error = %e, "health check skipped: the balancer is out of resources");
                Attempt::Skip
            }
            Err(e) => {
                tracing::debug!(backend = %core.id, error = %e, "health check failed");
                Attempt::Fail(match e {
                    ProbeError::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        DownReason::Refused
                    }
                    _ => DownReason::Failing,
                })
            }
        }
    }

    fn timed_out(&self, backend: &Backend, timeout: Duration) {
        tracing::debug!(backend = %backend.core.id, ?timeout, "health check timed out");
    }

    fn changed(&self, backend: &Backend, up: bool) {
        let core = &backend.core;
        if up {
            tracing::info!(backend = %core.id, "backend is up again (health checks pass)");
        } else {
            tracing::warn!(backend = %core.id, reason = core.health.reason().as_str(), "backend is down (health checks fail)");
            // Requests waiting on it (for a connection slot or an answer) need not wait
            // out their timeouts: those that may be sent again go elsewhere now.
            backend.wake_waiters();
        }
    }

    async fn passed(&self, backend: &Backend, timeout: Duration) {
        let core = &backend.core;
        if !core.mode_unknown() {
            return;
        }
        let info_path = &self.shared.config.health.info_path;
        match tokio::time::timeout(timeout, get(core, info_path)).await {
            Ok(Ok((status, header_mode, body))) if status.is_success() => {
                if let Some(mode) = header_mode.or_else(|| mode_from_json(&body)) {
                    tracing::info!(backend = %core.id, %mode, "learned the backend's mode");
                    core.learn_mode(mode);
                }
            }
            Ok(Ok((status, _, _))) => {
                tracing::debug!(backend = %core.id, %status, "mode probe refused")
            }
            Ok(Err(e)) => tracing::debug!(backend = %core.id, error = %e, "mode probe failed"),
            Err(_) => tracing::debug!(backend = %core.id, "mode probe timed out"),
        }
    }

    fn round_done(&self, table: &Table) {
        note_round(&self.shared, table);
    }
}

/// Says once when the balancer enters panic mode and when it leaves it, and likewise
/// when every backend is out because its store is unavailable; the flags feed
/// `/metrics` and the admin API.
fn note_round(shared: &Shared, table: &Table) {
    let now_ms = shared.clock.now_ms();
    let panic = shared.in_panic(table, now_ms);
    if shared.set_panic_seen(panic) {
        if panic {
            tracing::warn!(
                threshold_percent = shared.settings.panic_threshold_percent,
                "panic mode: too few backends are healthy; balancing over every backend not known to be gone"
            );
        } else {
            tracing::info!("panic mode over: enough backends are healthy again");
        }
    }
    let backends = table.backends();
    let outage = !backends.is_empty()
        && backends.iter().all(|b| {
            !b.core.health.is_available(now_ms)
                && b.core.health.reason() == DownReason::StoreUnavailable
        });
    if shared.set_store_outage(outage) {
        if outage {
            tracing::warn!(
                backends = backends.len(),
                "every waiter reports its store unavailable: a store outage, not waiter faults; \
                 forwarding to them anyway (panic mode) so they answer for themselves"
            );
        } else {
            tracing::info!("the store outage is over: waiters report ready again");
        }
    }
}

/// Why a backend answered its readiness probe with `status`: the problem `type` of a
/// waiter's `/readyz` answer names the cause.
pub(crate) fn reason_of(status: StatusCode, body: &[u8]) -> DownReason {
    #[derive(serde::Deserialize)]
    struct Problem {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    let kind = serde_json::from_slice::<Problem>(body)
        .ok()
        .and_then(|p| p.kind)
        .unwrap_or_default();
    match kind.rsplit('/').next() {
        Some("store-unavailable") if status == StatusCode::SERVICE_UNAVAILABLE => {
            DownReason::StoreUnavailable
        }
        Some("shutting-down") => DownReason::ShuttingDown,
        _ => DownReason::Failing,
    }
}

/// The `"mode"` field of a `/v1/waiter` answer.
pub(crate) fn mode_from_json(body: &[u8]) -> Option<Mode> {
    #[derive(serde::Deserialize)]
    struct Info {
        mode: Option<String>,
    }
    let info: Info = serde_json::from_slice(body).ok()?;
    Mode::from_wire(info.mode?.as_bytes())
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("body: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("request: {0}")]
    Request(#[from] http::Error),
}

/// `GET path` on a fresh connection: status, `Bistro-Mode` header, body.
async fn get(core: &Core, path: &str) -> Result<(StatusCode, Option<Mode>, Bytes), ProbeError> {
    let stream = TcpStream::connect(core.addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::trace!(error = %e, "health probe connection ended with an error");
        }
    });
    let request = Request::get(path)
        .header(header::HOST, core.addr.to_string())
        .header(header::USER_AGENT, "bistro-balancer-health")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let mode = response
        .headers()
        .get(&bistro_proto::headers::MODE)
        .and_then(|v| Mode::from_wire(v.as_bytes()));
    let body = Limited::new(response.into_body(), MAX_INFO_BODY)
        .collect()
        .await
        .map_err(ProbeError::Body)?;
    drop(sender);
    driver.abort();
    Ok((status, mode, body.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BalancingConfig;
    use crate::slots::Capacity;
    use crate::spec::BackendSpec;
    use crate::table::Registry;
    use std::sync::Mutex;

    /// A probe that answers from a script, one step per round, and stops the loop when
    /// the script ends.
    struct Scripted {
        table: Arc<Table>,
        script: Mutex<Vec<Option<Attempt>>>,
        round: Mutex<usize>,
        changes: Mutex<Vec<(usize, bool)>>,
        timeouts: Mutex<usize>,
        passes: Mutex<usize>,
        stop: CancellationToken,
    }

    impl Probe for Scripted {
        fn table(&self) -> Arc<Table> {
            self.table.clone()
        }

        async fn attempt(&self, _backend: &Backend) -> Attempt {
            // `None` hangs: only the loop's timeout ends it.
            let step = self.script.lock().unwrap().remove(0);
            match step {
                Some(attempt) => attempt,
                None => std::future::pending().await,
            }
        }

        fn timed_out(&self, _backend: &Backend, _timeout: Duration) {
            *self.timeouts.lock().unwrap() += 1;
        }

        fn changed(&self, _backend: &Backend, up: bool) {
            let round = *self.round.lock().unwrap();
            self.changes.lock().unwrap().push((round, up));
        }

        async fn passed(&self, _backend: &Backend, _timeout: Duration) {
            *self.passes.lock().unwrap() += 1;
        }

        fn round_done(&self, _table: &Table) {
            *self.round.lock().unwrap() += 1;
            if self.script.lock().unwrap().is_empty() {
                self.stop.cancel();
            }
        }
    }

    fn scripted(script: Vec<Option<Attempt>>) -> (Arc<Scripted>, CancellationToken) {
        let spec = BackendSpec::new("w1", "127.0.0.1:1".parse().unwrap());
        let registry = Registry::new(&[spec], BalancingConfig::default(), 1, Capacity::UNUSED);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let probe = Scripted {
            table: registry.snapshot(),
            script: Mutex::new(script),
            round: Mutex::new(0),
            changes: Mutex::new(Vec::new()),
            timeouts: Mutex::new(0),
            passes: Mutex::new(0),
            stop,
        };
        (Arc::new(probe), stopped)
    }

    fn health() -> HealthConfig {
        HealthConfig {
            interval_ms: 100,
            timeout_ms: 300,
            rise: 1,
            fall: 2,
            ..HealthConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_times_out_counts_and_skips_as_configured() {
        let (probe, stopped) = scripted(vec![
            Some(Attempt::Fail(DownReason::Failing)),
            // Says nothing about the backend: had it counted, round 1 would take it down.
            Some(Attempt::Skip),
            None,
            Some(Attempt::Pass),
        ]);
        run_loop(probe.clone(), &health(), Clock::system(), stopped).await;
        assert_eq!(*probe.round.lock().unwrap(), 4);
        assert_eq!(
            *probe.changes.lock().unwrap(),
            [(2, false), (3, true)],
            "down at the second counted failure (the timeout), up at the first pass"
        );
        assert_eq!(*probe.timeouts.lock().unwrap(), 1);
        assert_eq!(*probe.passes.lock().unwrap(), 1, "only after a pass");
        let backend = &probe.table.backends()[0];
        assert!(backend.core.health.is_available(1));
    }

    #[tokio::test(start_paused = true)]
    async fn no_loop_when_active_checks_are_off() {
        let (probe, stopped) = scripted(vec![Some(Attempt::Pass)]);
        let config = HealthConfig {
            active: false,
            ..health()
        };
        run_loop(probe.clone(), &config, Clock::system(), stopped).await;
        assert_eq!(*probe.round.lock().unwrap(), 0);
        assert_eq!(probe.script.lock().unwrap().len(), 1, "never probed");
    }

    #[test]
    fn the_readiness_problem_names_the_reason() {
        let store = br#"{"type":"https://bistro.dev/problems/store-unavailable","status":503}"#;
        assert_eq!(
            reason_of(StatusCode::SERVICE_UNAVAILABLE, store),
            DownReason::StoreUnavailable
        );
        let stopping = br#"{"type":"https://bistro.dev/problems/shutting-down"}"#;
        assert_eq!(
            reason_of(StatusCode::SERVICE_UNAVAILABLE, stopping),
            DownReason::ShuttingDown
        );
        assert_eq!(
            reason_of(StatusCode::INTERNAL_SERVER_ERROR, b"oops"),
            DownReason::Failing
        );
        assert_eq!(
            reason_of(StatusCode::INTERNAL_SERVER_ERROR, store),
            DownReason::Failing,
            "a store problem counts only as the 503 the waiter gives for it"
        );
    }

    #[test]
    fn mode_is_read_from_the_waiter_info() {
        assert_eq!(
            mode_from_json(br#"{"id":"w1","mode":"stateful","sessions":3}"#),
            Some(Mode::Stateful)
        );
        assert_eq!(
            mode_from_json(br#"{"id":"w1","mode":"stateless"}"#),
            Some(Mode::Stateless)
        );
        assert_eq!(
            mode_from_json(br#"{"id":"w1","mode":"replicated"}"#),
            Some(Mode::Replicated)
        );
        assert_eq!(mode_from_json(br#"{"id":"w1"}"#), None);
        assert_eq!(mode_from_json(b"not json"), None);
    }
}
