//! Drain with progress, and handoff: taking a waiter out without losing its diners.
//!
//! `POST /backends/{id}/drain` stops new sessions going to the backend (its pinned
//! diners are still served) and starts a [`Drain`]: a task that asks the waiter, four
//! times a second, how many live sessions it still holds, until none is left (`done`)
//! or the deadline passes (`expired`). With `remove_when_done` the backend is then
//! removed from the table.
//!
//! With `handoff`, the task also moves the sessions: it lists those the waiter holds
//! (`GET /v1/handoff`), picks a target for each with the balancer's own strategy over
//! the other available, non-draining waiters (keyed by the session id, so a
//! consistent-hash ring places it where a new key would go), and asks the waiter to
//! move them (`POST /v1/handoff`, see the waiter's `handoff` module: offer, forget if
//! unchanged, commit). Each moved session is noted in [`Moves`](crate::moves::Moves):
//! the diner's next request goes straight to the new waiter, and its affinity cookie
//! is issued again naming it (`Bistro-Rerouted`). A request already on its way to the
//! old waiter is answered `421 session-moved` there, with nothing applied, and the
//! proxy follows it to the new one (a draining backend's small request bodies are
//! buffered so they can be sent on). A target that fails a move is left out for the
//! rest of the drain; a session that kept changing is moved in a later round.
//!
//! Handoff needs the waiters' group secret (`admin.peer_secret`, the waiters'
//! `--peer-secret`), which the handoff endpoints require. Stateless waiters hold no
//! sessions (their drain is done at once); replicated waiters' sessions already have a
//! copy on a peer, which takes over when the waiter is removed, so they are drained
//! without handoff.

use crate::backend::Core;
use crate::spec::Mode;
use crate::state::Shared;
use crate::strategy::{Pick, hash_bytes};
use crate::table::Table;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// How often a drain asks the waiter how many sessions it holds.
const POLL: Duration = Duration::from_millis(250);
/// Sessions listed (and moved) per round.
const BATCH: usize = 500;
/// Longest one exchange with the draining waiter may take (a move round sends up to
/// [`BATCH`] sessions on to their targets).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from a waiter.
const MAX_ANSWER: usize = 4 * 1024 * 1024;
/// Default and largest deadline.
pub(crate) const DEFAULT_DEADLINE_SECS: u64 = 300;
const MAX_DEADLINE_SECS: u64 = 7 * 24 * 3600;

/// The optional body of `POST /backends/{id}/drain`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DrainRequest {
    /// Move the waiter's sessions to the others.
    pub(crate) handoff: bool,
    /// How long the drain may take before it is `expired`.
    pub(crate) deadline_seconds: u64,
    /// Remove the backend from the table once the drain ends.
    pub(crate) remove_when_done: bool,
}

impl Default for DrainRequest {
    fn default() -> Self {
        DrainRequest {
            handoff: false,
            deadline_seconds: DEFAULT_DEADLINE_SECS,
            remove_when_done: false,
        }
    }
}

impl DrainRequest {
    /// Why the request cannot be taken, if it cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(1..=MAX_DEADLINE_SECS).contains(&self.deadline_seconds) {
            return Err(format!(
                "deadline_seconds must be 1 to {MAX_DEADLINE_SECS}, got {}",
                self.deadline_seconds
            ));
        }
        Ok(())
    }
}

/// Where a drain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DrainState {
    /// Sessions are left (or not counted yet).
    Draining,
    /// No session is left.
    Done,
    /// The deadline passed with sessions left.
    Expired,
}

/// A drain as `GET /backends` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DrainView {
    pub(crate) state: DrainState,
    pub(crate) handoff: bool,
    /// Live sessions the waiter still holds (`null` until it answered once).
    pub(crate) sessions_left: Option<u64>,
    /// Sessions moved to other waiters.
    pub(crate) moved: u64,
    /// Sessions lost: left on the waiter when it was removed at the deadline.
    pub(crate) lost: u64,
    pub(crate) started_at: u64,
    pub(crate) deadline_at: u64,
    pub(crate) remove_when_done: bool,
    /// Why the last round could not count or move sessions, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_error: Option<String>,
}

/// One backend's drain.
#[derive(Debug)]
pub(crate) struct Drain {
    id: Arc<str>,
    request: DrainRequest,
    /// Unix seconds on the balancer's clock.
    started_at: u64,
    /// When it expires, in the balancer clock's milliseconds.
    deadline_ms: u64,
    state: Mutex<DrainState>,
    /// `u64::MAX` until the waiter answered once.
    left: AtomicU64,
    moved: AtomicU64,
    lost: AtomicU64,
    last_error: Mutex<Option<String>>,
    cancelled: AtomicBool,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drain {
    /// What the admin API shows.
    pub(crate) fn view(&self) -> DrainView {
        let left = self.left.load(Relaxed);
        DrainView {
            state: *lock(&self.state),
            handoff: self.request.handoff,
            sessions_left: (left != u64::MAX).then_some(left),
            moved: self.moved.load(Relaxed),
            lost: self.lost.load(Relaxed),
            started_at: self.started_at,
            deadline_at: self.started_at + self.request.deadline_seconds,
            remove_when_done: self.request.remove_when_done,
            last_error: lock(&self.last_error).clone(),
        }
    }

    fn cancel(&self) {
        self.cancelled.store(true, Relaxed);
        self.wake.notify_one();
    }

    fn finish(&self, state: DrainState) {
        *lock(&self.state) = state;
    }

    fn note_error(&self, error: Option<String>) {
        *lock(&self.last_error) = error;
    }
}

/// The drains of every backend (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Drains {
    drains: Mutex<HashMap<Arc<str>, Arc<Drain>>>,
}

impl Drains {
    /// Starts draining `id` (replacing a drain already running for it).
    pub(crate) fn start(&self, shared: &Arc<Shared>, id: &str, request: DrainRequest) {
        let drain = Arc::new(Drain {
            id: Arc::from(id),
            request,
            started_at: shared.clock.unix_secs(),
            deadline_ms: shared
                .clock
                .now_ms()
                .saturating_add(request.deadline_seconds.saturating_mul(1000)),
            state: Mutex::new(DrainState::Draining),
            left: AtomicU64::new(u64::MAX),
            moved: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            last_error: Mutex::new(None),
            cancelled: AtomicBool::new(false),
            wake: Notify::new(),
        });
        if let Some(old) = lock(&self.drains).insert(Arc::from(id), Arc::clone(&drain)) {
            old.cancel();
        }
        tracing::info!(
            backend = id,
            handoff = request.handoff,
            deadline_seconds = request.deadline_seconds,
            remove_when_done = request.remove_when_done,
            "drain started"
        );
        tokio::spawn(run(Arc::clone(shared), drain));
    }

    /// Stops and forgets `id`'s drain (undrain, or the backend removed by hand).
    pub(crate) fn stop(&self, id: &str) {
        if let Some(old) = lock(&self.drains).remove(id) {
            old.cancel();
        }
    }

    /// `id`'s drain, if one was started and not stopped.
    pub(crate) fn view(&self, id: &str) -> Option<DrainView> {
        lock(&self.drains).get(id).map(|d| d.view())
    }

    /// Every drain started and not stopped, by backend id, also those whose backend was
    /// removed when done (what they moved and lost stays readable).
    pub(crate) fn all(&self) -> std::collections::BTreeMap<String, DrainView> {
        lock(&self.drains)
            .iter()
            .map(|(id, d)| (id.to_string(), d.view()))
            .collect()
    }

    /// The sessions `id` was last seen to hold, when a drain counted them.
    pub(crate) fn sessions_left(&self, id: &str) -> Option<u64> {
        self.view(id).and_then(|v| v.sessions_left)
    }
}

/// What the draining waiter holds, as it says.
struct Held {
    sessions: u64,
    ids: Vec<String>,
}

#[derive(Deserialize)]
struct HandoffList {
    sessions: u64,
    ids: Vec<String>,
}

#[derive(Deserialize)]
struct WaiterInfo {
    sessions: u64,
    #[serde(default)]
    replication: Option<ReplicationInfo>,
}

#[derive(Deserialize)]
struct ReplicationInfo {
    sessions_led: u64,
}

#[derive(Serialize)]
struct MoveRequest<'a> {
    session: &'a str,
    to: &'a str,
    address: SocketAddr,
}

#[derive(Deserialize)]
struct MoveAnswer {
    results: Vec<MoveOutcome>,
    sessions: u64,
}

#[derive(Deserialize)]
struct MoveOutcome {
    session: String,
    to: String,
    result: String,
}

async fn run(shared: Arc<Shared>, drain: Arc<Drain>) {
    // Targets that failed a move: left out for the rest of this drain.
    let mut failed: HashSet<Arc<str>> = HashSet::new();
    loop {
        if drain.cancelled.load(Relaxed) {
            return;
        }
        let table = shared.registry.snapshot();
        let Some(core) = table.find(&drain.id).map(|b| Arc::clone(&b.core)) else {
            // Removed by hand: nothing left to drain here.
            drain.finish(DrainState::Done);
            return;
        };
        let mut progressed = false;
        match round(&shared, &table, &core, &drain, &mut failed).await {
            Ok(moved_some) => {
                drain.note_error(None);
                progressed = moved_some;
            }
            Err(e) => {
                tracing::debug!(backend = %drain.id, error = %e, "drain round failed");
                drain.note_error(Some(e));
            }
        }
        let left = drain.left.load(Relaxed);
        let expired = shared.clock.now_ms() >= drain.deadline_ms;
        if left == 0 || expired {
            let state = if left == 0 {
                DrainState::Done
            } else {
                DrainState::Expired
            };
            if drain.cancelled.load(Relaxed) {
                return;
            }
            drain.finish(state);
            let moved = drain.moved.load(Relaxed);
            if drain.request.remove_when_done {
                // A replicated waiter's sessions have copies on its peers, which take
                // them over: removing it loses none of them.
                if state == DrainState::Expired
                    && left != u64::MAX
                    && core.mode() != Some(Mode::Replicated)
                {
                    drain.lost.store(left, Relaxed);
                }
                match shared.registry.remove(&drain.id) {
                    Ok(()) => {
                        tracing::info!(backend = %drain.id, ?state, moved, "drain ended; backend removed")
                    }
                    Err(e) => {
                        tracing::warn!(backend = %drain.id, error = %e, "drain ended; could not remove the backend")
                    }
                }
            } else {
                tracing::info!(backend = %drain.id, ?state, moved, sessions_left = left, "drain ended");
            }
            return;
        }
        if !progressed {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = drain.wake.notified() => {}
            }
        }
    }
}

/// One round: count the sessions left and, with handoff, move a batch. `true` when
/// sessions moved (the next round follows at once).
async fn round(
    shared: &Shared,
    table: &Table,
    core: &Core,
    drain: &Drain,
    failed: &mut HashSet<Arc<str>>,
) -> Result<bool, String> {
    if core.mode() == Some(Mode::Stateless) {
        drain.left.store(0, Relaxed);
        return Ok(false);
    }
    let held = held(shared, core, drain.request.handoff).await?;
    drain.left.store(held.sessions, Relaxed);
    if !drain.request.handoff || held.ids.is_empty() {
        return Ok(false);
    }
    let now_ms = shared.clock.now_ms();
    let mut moves = Vec::new();
    let mut targets: Vec<(Arc<str>, SocketAddr)> = Vec::new();
    for id in &held.ids {
        let pick = Pick {
            worker: 0,
            key: hash_bytes(id.as_bytes()),
        };
        let chosen = table.select(pick, &mut |b| {
            b.id() != &*drain.id
                && !b.core.is_draining()
                && b.core.health.is_available(now_ms)
                && matches!(b.core.mode(), None | Some(Mode::Stateful))
                && !failed.contains(&b.core.id)
        });
        if let Some(b) = chosen {
            targets.push((Arc::clone(&b.core.id), b.core.addr));
            moves.push(MoveRequest {
                session: id,
                to: b.id(),
                address: b.core.addr,
            });
        }
    }
    if moves.is_empty() {
        return Err("no other stateful waiter is available to take the sessions".into());
    }
    let body =
        serde_json::to_vec(&serde_json::json!({ "moves": moves })).map_err(|e| e.to_string())?;
    let secret = shared.config.admin.peer_secret.as_deref().unwrap_or("");
    let (status, answer) = exchange(core.addr, "POST", "/v1/handoff", secret, Some(body)).await?;
    if status != StatusCode::OK {
        return Err(format!(
            "the waiter answered the handoff with {status}: {}",
            String::from_utf8_lossy(&answer)
        ));
    }
    let answer: MoveAnswer =
        serde_json::from_slice(&answer).map_err(|e| format!("unreadable handoff answer: {e}"))?;
    drain.left.store(answer.sessions, Relaxed);
    let until_ms = now_ms + shared.config.affinity.max_age_secs * 1000;
    let mut moved = 0;
    for outcome in answer.results {
        let Some((to, _)) = targets.iter().find(|(id, _)| **id == *outcome.to) else {
            continue;
        };
        match outcome.result.as_str() {
            "moved" => {
                moved += 1;
                if !shared
                    .moves
                    .insert(&outcome.session, &core.id, to, until_ms, now_ms)
                {
                    tracing::warn!(
                        "the table of moved sessions is full; the old waiter forwards them while it runs"
                    );
                }
            }
            "failed" | "refused" if failed.insert(Arc::clone(to)) => {
                tracing::warn!(backend = %drain.id, target = %to, result = %outcome.result, "a handoff target failed; leaving it out of this drain");
            }
            _ => {}
        }
    }
    drain.moved.fetch_add(moved, Relaxed);
    Ok(moved > 0)
}

/// What the waiter holds: through the handoff endpoint when the balancer has the
/// group's secret (the exact live count, and ids to move), else `GET /v1/waiter`.
async fn held(shared: &Shared, core: &Core, handoff: bool) -> Result<Held, String> {
    if let Some(secret) = shared.config.admin.peer_secret.as_deref() {
        let limit = if handoff { BATCH } else { 0 };
        let path = format!("/v1/handoff?limit={limit}");
        let (status, body) = exchange(core.addr, "GET", &path, secret, None).await?;
        if status == StatusCode::OK {
            let list: HandoffList = serde_json::from_slice(&body)
                .map_err(|e| format!("unreadable session list: {e}"))?;
            return Ok(Held {
                sessions: list.sessions,
                ids: list.ids,
            });
        }
        // Without handoff, a waiter that cannot list (no secret, or another one) is
        // still counted through `/v1/waiter`.
        if handoff || !matches!(status, StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED) {
            return Err(format!(
                "the waiter cannot list its sessions ({status}): {}",
                String::from_utf8_lossy(&body)
            ));
        }
    } else if handoff {
        return Err("handoff needs the waiters' group secret (admin.peer_secret)".into());
    }
    let (status, body) = exchange(core.addr, "GET", "/v1/waiter", "", None).await?;
    if status != StatusCode::OK {
        return Err(format!("GET /v1/waiter answered {status}"));
    }
    let info: WaiterInfo =
        serde_json::from_slice(&body).map_err(|e| format!("unreadable /v1/waiter: {e}"))?;
    Ok(Held {
        sessions: info.replication.map_or(info.sessions, |r| r.sessions_led),
        ids: Vec::new(),
    })
}

/// One request to a waiter on a fresh connection (a drain sends a few a second; the
/// dashboard and the process control use it too), with `secret`, when not empty, as
/// the bearer token.
pub(crate) async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    secret: &str,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), String> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("could not reach {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string())
            .header(header::USER_AGENT, "bistro-balancer-drain");
        if !secret.is_empty() {
            request = request.header(header::AUTHORIZATION, format!("Bearer {secret}"));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        driver.abort();
        Ok((status, bytes))
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{addr} took longer than {EXCHANGE_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_request_defaults_and_bounds() {
        let r: DrainRequest = serde_json::from_str("{}").unwrap();
        assert!(!r.handoff && !r.remove_when_done);
        assert_eq!(r.deadline_seconds, DEFAULT_DEADLINE_SECS);
        assert!(r.check().is_ok());
        let r: DrainRequest = serde_json::from_str(r#"{"deadline_seconds":0}"#).unwrap();
        assert!(r.check().is_err());
        assert!(serde_json::from_str::<DrainRequest>(r#"{"handof":true}"#).is_err());
    }
}
