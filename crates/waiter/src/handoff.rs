//! Handoff: a stateful waiter moves its diners' sessions to other waiters while it keeps
//! serving, so an operator can take it down without losing a diner (the balancer's
//! "drain with handoff", docs/balancer.md).
//!
//! The balancer drives it. It lists the sessions the draining waiter holds
//! (`GET /v1/handoff`), picks a target for each with its own strategy over the other
//! healthy waiters, and asks this waiter to move them (`POST /v1/handoff`). For each
//! target this waiter then:
//!
//! 1. **offers** copies of the sessions (whole, at their change counter `seq`) to the
//!    target's peer endpoint (`POST /v1/peer/handoff`); the target sets them aside:
//!    not served, no kitchen;
//! 2. **forgets** each session here only if it is still at the offered `seq`
//!    ([`MemoryStore::remove_if_seq`]), leaving a forwarding note that names the
//!    target. A session changed meanwhile is offered again (up to [`ROUNDS`] times), so
//!    a change acknowledged during its move is never left behind;
//! 3. **commits** the moved sessions on the target, which then leads them. Should a
//!    commit be lost, the target adopts a set-aside copy on the first request for it:
//!    requests only go there once the balancer has learned of the move, which is
//!    after step 2.
//!
//! A request that reaches this waiter for a moved session (in flight during the move,
//! or from a balancer that did not drive it) is answered `421 session-moved` naming the
//! target in `Bistro-Leader`, which the balancer follows; nothing of it was applied
//! here. The session is never live on two waiters: the target serves it only after
//! this waiter forgot it.
//!
//! Every handoff request, from the balancer or from a waiter, carries the group's
//! secret (`--peer-secret`) as a bearer token.

use crate::clock::Clock;
use crate::replication::Moved;
use bistro_store::{MemoryStore, SessionId, SessionSnapshot};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpStream;

/// The peer endpoint a target waiter takes offered sessions on.
pub const PEER_HANDOFF_PATH: &str = "/v1/peer/handoff";
/// The endpoint the balancer drives a handoff through.
pub const HANDOFF_PATH: &str = "/v1/handoff";
/// How many times a session that keeps changing is offered again before the move is
/// given up for now (the balancer asks again later).
pub const ROUNDS: usize = 3;
/// Most moves in one `POST /v1/handoff`.
pub const MAX_MOVES: usize = 1_000;
/// Largest answer read from a target.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// What the balancer asks: move `session` to waiter `to` at `address`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// Which session.
    pub session: SessionId,
    /// The target waiter's id (named to diners' balancers in `Bistro-Leader`).
    pub to: String,
    /// The target waiter's HTTP address.
    pub address: SocketAddr,
}

/// What became of one move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveResult {
    /// The target leads the session now; this waiter forwards to it.
    Moved,
    /// This waiter held no live session by that id (it expired, or moved already).
    Gone,
    /// The session kept changing during [`ROUNDS`] offers; it stays here for now.
    Busy,
    /// The target holds a live session by that id already and refused the copy.
    Refused,
    /// The target could not be reached or answered something else; the session
    /// stays here.
    Failed,
}

/// One move's outcome, as answered to the balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveOutcome {
    /// Which session.
    pub session: SessionId,
    /// Where it was to go.
    pub to: String,
    /// What became of it.
    pub result: MoveResult,
}

/// What one waiter sends another (`POST /v1/peer/handoff`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerHandoff {
    /// The sending waiter's id.
    pub from: String,
    /// The items, answered in order.
    pub items: Vec<HandoffItem>,
}

/// One thing a moving waiter asks its target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HandoffItem {
    /// "Set this copy aside; I still lead the session."
    Offer {
        /// The whole session.
        snapshot: SessionSnapshot,
    },
    /// "I forgot the session at `seq`: lead it."
    Commit {
        /// Which session.
        session: SessionId,
        /// The change counter of the copy offered last.
        seq: u64,
    },
    /// "The move is off: forget the copy set aside."
    Drop {
        /// Which session.
        session: SessionId,
    },
}

/// The answer to one [`HandoffItem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffReply {
    /// Done.
    Ok,
    /// Refused: this waiter leads a live session by that id already.
    Held,
    /// A commit for a copy that is not set aside here (expired, or never offered).
    Missing,
}

/// The answer to one [`PeerHandoff`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerHandoffReplies {
    /// One reply per item, in order.
    pub replies: Vec<HandoffReply>,
}

#[derive(Debug, Default)]
struct Counters {
    moved_out: AtomicU64,
    moved_in: AtomicU64,
    busy: AtomicU64,
    failed: AtomicU64,
}

/// A stateful waiter's handoff (see the module docs).
#[derive(Debug)]
pub struct Handoff {
    me: String,
    secret: String,
    led: Arc<MemoryStore>,
    /// Copies offered by a moving waiter, not served until committed.
    aside: MemoryStore,
    /// Sessions this waiter moved away: to whom, until when (ms of the waiter's clock).
    forwards: Mutex<HashMap<SessionId, (Arc<str>, u64)>>,
    timeout: Duration,
    clock: Clock,
    counters: Counters,
}

/// The status `/v1/waiter` and `/metrics` show.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct HandoffStatus {
    /// Sessions moved to other waiters.
    pub moved_out: u64,
    /// Sessions taken from other waiters.
    pub moved_in: u64,
    /// Moves given up because the session kept changing.
    pub busy: u64,
    /// Moves that failed (target unreachable or refusing).
    pub failed: u64,
    /// Sessions this waiter forwards requests for.
    pub forwarding: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single insert or remove: a panic cannot leave it half-done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why an exchange with a target failed.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("could not reach {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("{0} took longer than {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("{0}: {1}")]
    Http(SocketAddr, String),
}

impl Handoff {
    /// The handoff of waiter `me`, whose sessions live in `led`, for a group sharing
    /// `secret`; `timeout` bounds one exchange with a target.
    pub fn new(
        me: &str,
        secret: String,
        led: Arc<MemoryStore>,
        timeout: Duration,
        clock: Clock,
    ) -> Handoff {
        let aside = MemoryStore::for_copies(led.config().clone());
        Handoff {
            me: me.to_string(),
            secret,
            led,
            aside,
            forwards: Mutex::new(HashMap::new()),
            timeout,
            clock,
            counters: Counters::default(),
        }
    }

    /// Whether `token` is the group's secret (compared in constant time).
    pub fn authorized(&self, token: &str) -> bool {
        let (a, b) = (token.as_bytes(), self.secret.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The live sessions held at `now` and up to `limit` of their ids.
    pub fn sessions(&self, now: u64, limit: usize) -> (usize, Vec<SessionId>) {
        self.led.live_sessions(now, limit)
    }

    /// Before a request for `session`: adopts a copy set aside for it (its move was not
    /// committed, but the request shows the balancer sent the diner here); if the
    /// session moved away, says where.
    ///
    /// # Errors
    /// [`Moved`] when this waiter handed the session to another.
    pub fn locate(&self, session: SessionId, now: u64) -> Result<(), Moved> {
        if self.led.seq(session).is_some() {
            return Ok(());
        }
        if let Some(copy) = self.aside.snapshot(session).filter(|c| c.expires_at > now) {
            self.adopt(copy, now);
            return Ok(());
        }
        match self.forwarded_to(session, now) {
            Some(to) => Err(Moved {
                to: Some(to.to_string()),
            }),
            None => Ok(()),
        }
    }

    /// The waiter this one handed `session` to, if it did (and no longer holds it).
    pub fn forwarded_to(&self, session: SessionId, now: u64) -> Option<Arc<str>> {
        if self.led.seq(session).is_some() {
            return None;
        }
        lock(&self.forwards)
            .get(&session)
            .filter(|(_, until)| *until > now)
            .map(|(to, _)| Arc::clone(to))
    }

    fn adopt(&self, copy: SessionSnapshot, now: u64) -> bool {
        let session = copy.session;
        let installed = self.led.install(copy, now);
        self.aside.remove(session);
        lock(&self.forwards).remove(&session);
        if installed {
            self.counters.moved_in.fetch_add(1, Ordering::Relaxed);
        }
        installed
    }

    /// Takes what a moving waiter sends (see [`HandoffItem`]).
    pub fn receive(&self, handoff: PeerHandoff, now: u64) -> PeerHandoffReplies {
        let replies = handoff
            .items
            .into_iter()
            .map(|item| match item {
                HandoffItem::Offer { snapshot } => {
                    let live_here = self
                        .led
                        .expires_at(snapshot.session)
                        .is_some_and(|e| e > now);
                    if live_here {
                        tracing::warn!(from = %handoff.from, "refused a handed-off session: a live one by that id is held here");
                        HandoffReply::Held
                    } else {
                        self.aside.install(snapshot, now);
                        HandoffReply::Ok
                    }
                }
                HandoffItem::Commit { session, seq } => {
                    match self.aside.snapshot(session).filter(|c| c.seq == seq) {
                        Some(copy) => {
                            if self.adopt(copy, now) {
                                HandoffReply::Ok
                            } else {
                                HandoffReply::Held
                            }
                        }
                        None if self.led.seq(session).is_some() => HandoffReply::Ok,
                        None => HandoffReply::Missing,
                    }
                }
                HandoffItem::Drop { session } => {
                    self.aside.remove(session);
                    HandoffReply::Ok
                }
            })
            .collect();
        PeerHandoffReplies { replies }
    }

    /// Moves sessions as the balancer asks (see the module docs), one target at a time.
    pub async fn move_sessions(&self, moves: Vec<MoveRequest>) -> Vec<MoveOutcome> {
        let mut by_target: Vec<((String, SocketAddr), Vec<SessionId>)> = Vec::new();
        for m in &moves {
            let key = (m.to.clone(), m.address);
            match by_target.iter_mut().find(|(k, _)| *k == key) {
                Some((_, sessions)) => sessions.push(m.session),
                None => by_target.push((key, vec![m.session])),
            }
        }
        let mut outcomes = HashMap::new();
        for ((to, address), sessions) in by_target {
            let results = self.move_to(&to, address, sessions).await;
            for (session, result) in results {
                outcomes.insert((session, to.clone()), result);
            }
        }
        moves
            .into_iter()
            .map(|m| MoveOutcome {
                result: outcomes
                    .get(&(m.session, m.to.clone()))
                    .copied()
                    .unwrap_or(MoveResult::Failed),
                session: m.session,
                to: m.to,
            })
            .collect()
    }

    async fn move_to(
        &self,
        to: &str,
        address: SocketAddr,
        sessions: Vec<SessionId>,
    ) -> Vec<(SessionId, MoveResult)> {
        let now = || self.clock.now();
        let target: Arc<str> = Arc::from(to);
        let mut done = Vec::new();
        let mut pending = sessions;
        let mut committed: Vec<HandoffItem> = Vec::new();
        for _ in 0..ROUNDS {
            if pending.is_empty() {
                break;
            }
            let mut offers = Vec::new();
            for session in pending.drain(..) {
                match self.led.snapshot(session).filter(|s| s.expires_at > now()) {
                    Some(snapshot) => offers.push(snapshot),
                    None => done.push((session, MoveResult::Gone)),
                }
            }
            if offers.is_empty() {
                break;
            }
            let seqs: Vec<(SessionId, u64, u64)> = offers
                .iter()
                .map(|s| (s.session, s.seq, s.expires_at))
                .collect();
            let items = offers
                .into_iter()
                .map(|snapshot| HandoffItem::Offer { snapshot })
                .collect();
            let replies = match self.send(address, items).await {
                Ok(replies) if replies.len() == seqs.len() => replies,
                Ok(_) | Err(_) => {
                    // Unreachable or confused target: nothing was forgotten here.
                    self.counters
                        .failed
                        .fetch_add(seqs.len() as u64, Ordering::Relaxed);
                    done.extend(seqs.iter().map(|(s, _, _)| (*s, MoveResult::Failed)));
                    self.drop_aside(address, seqs.iter().map(|(s, _, _)| *s).collect())
                        .await;
                    return done;
                }
            };
            for ((session, seq, expires_at), reply) in seqs.into_iter().zip(replies) {
                if reply != HandoffReply::Ok {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    done.push((session, MoveResult::Refused));
                    continue;
                }
                // The forwarding note goes first: a request that finds the session gone
                // must find where it went (the note is read only once it is gone).
                {
                    let mut forwards = lock(&self.forwards);
                    if forwards.len() >= 4 * MAX_MOVES {
                        let t = now();
                        forwards.retain(|_, (_, until)| *until > t);
                    }
                    forwards.insert(
                        session,
                        (Arc::clone(&target), expires_at.max(now()) + 60_000),
                    );
                }
                // Forget it only as offered: a change since then is offered again.
                if self.led.remove_if_seq(session, seq) {
                    committed.push(HandoffItem::Commit { session, seq });
                    done.push((session, MoveResult::Moved));
                } else {
                    lock(&self.forwards).remove(&session);
                    pending.push(session);
                }
            }
        }
        if !pending.is_empty() {
            self.counters
                .busy
                .fetch_add(pending.len() as u64, Ordering::Relaxed);
            self.drop_aside(address, pending.clone()).await;
            done.extend(pending.into_iter().map(|s| (s, MoveResult::Busy)));
        }
        let moved = committed.len() as u64;
        if !committed.is_empty() {
            // Best effort: a target that missed the commit adopts its copy on the first
            // request for it.
            if let Err(e) = self.send(address, committed).await {
                tracing::warn!(target = to, error = %e, "a handoff commit failed; the target adopts the sessions on their next request");
            }
        }
        self.counters.moved_out.fetch_add(moved, Ordering::Relaxed);
        if moved > 0 {
            tracing::info!(target = to, moved, "sessions handed off");
        }
        done
    }

    /// Best effort: the target forgets copies whose move is off, so it can never serve
    /// a stale one.
    async fn drop_aside(&self, address: SocketAddr, sessions: Vec<SessionId>) {
        if sessions.is_empty() {
            return;
        }
        let items = sessions
            .into_iter()
            .map(|session| HandoffItem::Drop { session })
            .collect();
        if let Err(e) = self.send(address, items).await {
            tracing::debug!(error = %e, "could not drop set-aside copies (they expire with their sessions)");
        }
    }

    /// One exchange with a target: a fresh connection (a handoff is rare, and a drain
    /// sends at most a few requests a second).
    async fn send(
        &self,
        address: SocketAddr,
        items: Vec<HandoffItem>,
    ) -> Result<Vec<HandoffReply>, SendError> {
        let body = serde_json::to_vec(&PeerHandoff {
            from: self.me.clone(),
            items,
        })
        .map_err(|e| SendError::Http(address, e.to_string()))?;
        let exchange = async {
            let stream = TcpStream::connect(address)
                .await
                .map_err(|e| SendError::Connect(address, e))?;
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| SendError::Http(address, e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let request = Request::post(PEER_HANDOFF_PATH)
                .header(header::HOST, address.to_string())
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, format!("Bearer {}", self.secret))
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| SendError::Http(address, e.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| SendError::Http(address, e.to_string()))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_REPLY_BYTES)
                .collect()
                .await
                .map_err(|e| SendError::Http(address, e.to_string()))?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(SendError::Http(
                    address,
                    format!("answered {status}: {}", String::from_utf8_lossy(&bytes)),
                ));
            }
            serde_json::from_slice::<PeerHandoffReplies>(&bytes)
                .map(|r| r.replies)
                .map_err(|e| SendError::Http(address, format!("unreadable answer: {e}")))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| SendError::Timeout(address, self.timeout))?
    }

    /// What `/v1/waiter` shows.
    pub fn status(&self) -> HandoffStatus {
        HandoffStatus {
            moved_out: self.counters.moved_out.load(Ordering::Relaxed),
            moved_in: self.counters.moved_in.load(Ordering::Relaxed),
            busy: self.counters.busy.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            forwarding: lock(&self.forwards).len(),
        }
    }

    /// Forgets forwarding notes and set-aside copies past their time.
    pub async fn sweep(&self, now: u64) {
        use bistro_store::OrderStore as _;
        lock(&self.forwards).retain(|_, (_, until)| *until > now);
        if let Err(e) = self.aside.sweep(now, usize::MAX).await {
            tracing::debug!(error = %e, "could not sweep set-aside copies");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bistro_store::{OrderStore, StoreConfig};

    async fn store_with_session(now: u64) -> (Arc<MemoryStore>, SessionId) {
        let store = Arc::new(MemoryStore::new(StoreConfig::default()));
        let session = SessionId::generate();
        store.create_session(session, now).await.unwrap();
        (store, session)
    }

    #[tokio::test]
    async fn an_offer_is_set_aside_until_committed() {
        let (source, session) = store_with_session(1_000).await;
        let copy = source.snapshot(session).unwrap();
        let target = Handoff::new(
            "w3",
            "s".into(),
            Arc::new(MemoryStore::new(StoreConfig::default())),
            Duration::from_secs(1),
            Clock::new(),
        );
        let offer = PeerHandoff {
            from: "w2".into(),
            items: vec![HandoffItem::Offer {
                snapshot: copy.clone(),
            }],
        };
        assert_eq!(target.receive(offer, 1_000).replies, [HandoffReply::Ok]);
        assert!(
            target.led.seq(session).is_none(),
            "not served before the commit"
        );
        let wrong = PeerHandoff {
            from: "w2".into(),
            items: vec![HandoffItem::Commit {
                session,
                seq: copy.seq + 1,
            }],
        };
        assert_eq!(
            target.receive(wrong, 1_000).replies,
            [HandoffReply::Missing]
        );
        let commit = PeerHandoff {
            from: "w2".into(),
            items: vec![HandoffItem::Commit {
                session,
                seq: copy.seq,
            }],
        };
        assert_eq!(target.receive(commit, 1_000).replies, [HandoffReply::Ok]);
        assert_eq!(target.led.seq(session), Some(copy.seq));
        assert_eq!(target.status().moved_in, 1);
    }

    #[tokio::test]
    async fn an_offer_for_a_live_session_here_is_refused() {
        let (led, session) = store_with_session(1_000).await;
        let copy = led.snapshot(session).unwrap();
        let target = Handoff::new("w3", "s".into(), led, Duration::from_secs(1), Clock::new());
        let offer = PeerHandoff {
            from: "w2".into(),
            items: vec![HandoffItem::Offer { snapshot: copy }],
        };
        assert_eq!(target.receive(offer, 1_000).replies, [HandoffReply::Held]);
    }

    #[tokio::test]
    async fn a_request_adopts_a_copy_whose_commit_was_lost() {
        let (source, session) = store_with_session(1_000).await;
        let target = Handoff::new(
            "w3",
            "s".into(),
            Arc::new(MemoryStore::new(StoreConfig::default())),
            Duration::from_secs(1),
            Clock::new(),
        );
        let offer = PeerHandoff {
            from: "w2".into(),
            items: vec![HandoffItem::Offer {
                snapshot: source.snapshot(session).unwrap(),
            }],
        };
        target.receive(offer, 1_000);
        assert_eq!(target.locate(session, 1_001), Ok(()));
        assert!(target.led.seq(session).is_some());
    }

    #[test]
    fn the_secret_is_compared_whole() {
        let h = Handoff::new(
            "w1",
            "secret".into(),
            Arc::new(MemoryStore::new(StoreConfig::default())),
            Duration::from_secs(1),
            Clock::new(),
        );
        assert!(h.authorized("secret"));
        assert!(!h.authorized("secreT"));
        assert!(!h.authorized(""));
    }
}
