//! Replicated mode: each waiter keeps its diners' notes in memory, and a colleague keeps a
//! copy, so a waiter's death loses nothing.
//!
//! The waiter that starts a session **leads** it (is its primary): it serves every read
//! from its own memory, with no network hop. After each change, and before the change is
//! acknowledged to the diner, it sends the whole session to one **backup** peer
//! ([`Replication::settle`]), chosen by rendezvous hashing over the peers that are up, and
//! waits for the backup's reply. An acknowledged change therefore exists on two waiters.
//!
//! - **Backup dies**: its link goes down; the next change (or the watch task, at once)
//!   picks the next peer by rendezvous and sends it the whole session. When no peer is
//!   up the waiter carries on alone, as a stateful waiter, and says so
//!   (`Bistro-Replication: alone`, a metric, `/v1/waiter`); its sessions are copied again
//!   as soon as a peer returns.
//! - **Primary dies**: the balancer's affinity token names the backup too (the waiter
//!   tells it in `Bistro-Backup`), so the diner's next request reaches the backup. The
//!   backup **takes the session over** ([`Replication::locate`]): it claims the session
//!   from every peer that is up at a new [`Epoch`], takes the newest copy
//!   any of them holds (its own, or a newer one if the primary had moved the copy
//!   meanwhile), leads it, copies it to a new backup, and only then answers.
//! - **No split brain**: a claim fences the session on every peer it reaches; a primary
//!   that was paused past the takeover and resumes sends its next change to its backup,
//!   which refuses it ([`wire::Reply::Fenced`]): the primary steps down without
//!   acknowledging, and answers `421 session-moved` naming the new primary, which the
//!   balancer follows. Until then it may still answer reads from its old copy.
//!
//! The rules for what a peer sends are in [`ledger`], pure and property-tested; the
//! transport (persistent connections, batching, liveness) in [`link`].

pub mod ledger;
pub mod link;
pub mod rendezvous;
pub mod wire;

use crate::clock::Clock;
use bistro_metrics::{Encoder, Histogram, LATENCY_BUCKETS};
use bistro_store::{MemoryStore, SessionId, StoreConfig};
use ledger::{Backup, Ledger, newest_of};
use link::{Identity, Link};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use wire::{Batch, Epoch, Item, Replies, Reply};

/// Another waiter of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its id (`--id`), unique in the group.
    pub id: String,
    /// Its HTTP address (`--listen`).
    pub addr: SocketAddr,
}

/// A `--peer` value that is not `ID=HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a peer is ID=HOST:PORT (e.g. w2=127.0.0.1:7002), got {0:?}")]
pub struct BadPeer(pub String);

impl std::str::FromStr for Peer {
    type Err = BadPeer;

    fn from_str(s: &str) -> Result<Peer, BadPeer> {
        let (id, addr) = s.split_once('=').ok_or_else(|| BadPeer(s.to_string()))?;
        let id = id.trim();
        let valid_id = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        match addr.trim().parse() {
            Ok(addr) if valid_id => Ok(Peer {
                id: id.to_string(),
                addr,
            }),
            _ => Err(BadPeer(s.to_string())),
        }
    }
}

/// How a replicated waiter reaches its group.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// The other waiters of the group.
    pub peers: Vec<Peer>,
    /// The group's shared secret: peers send it as a bearer token, and a request to
    /// the peer endpoint without it is refused.
    pub secret: String,
    /// How long one exchange with a peer may take before the peer counts as down.
    pub timeout: Duration,
    /// How often peers that are down are probed.
    pub probe_interval: Duration,
}

impl ReplicationConfig {
    /// A group of `peers` sharing `secret`, with the default timings.
    pub fn new(peers: Vec<Peer>, secret: String) -> ReplicationConfig {
        ReplicationConfig {
            peers,
            secret,
            timeout: Duration::from_millis(500),
            probe_interval: Duration::from_millis(250),
        }
    }
}

/// What [`Replication::settle`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The session is not held here (it expired, or the request named none).
    Gone,
    /// A copy of the session as it is now is on `backup`.
    Copied {
        /// The backup's id.
        backup: String,
    },
    /// No peer is up: the session lives on this waiter only.
    Alone,
}

/// This waiter does not lead the session: another does (named, when known).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the session moved to {}", to.as_deref().unwrap_or("another waiter"))]
pub struct Moved {
    /// The waiter that leads it now.
    pub to: Option<String>,
}

/// A peer request that cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// Missing or wrong bearer token.
    #[error("the peer secret is missing or wrong")]
    Unauthorized,
    /// The sender is not one of this waiter's peers.
    #[error("{0:?} is not a peer of this waiter")]
    UnknownPeer(String),
}

#[derive(Debug, Default)]
struct Counters {
    copies_ok: AtomicU64,
    copies_failed: AtomicU64,
    fenced: AtomicU64,
    takeovers: AtomicU64,
    copy_seconds: Option<Histogram>,
}

/// A replicated waiter's replication (see the module docs).
#[derive(Debug)]
pub struct Replication {
    me: Arc<Identity>,
    links: Vec<Arc<Link>>,
    led: Arc<MemoryStore>,
    copies: MemoryStore,
    ledger: Mutex<Ledger>,
    /// Takeovers one at a time: they are rare, and two at once for one session would
    /// claim against each other.
    takeover: tokio::sync::Mutex<()>,
    changed: Arc<Notify>,
    ttl_ms: u64,
    slack_ms: u64,
    probe_interval: Duration,
    clock: Clock,
    searches: Searches,
    counters: Counters,
}

/// Searches of peers for sessions this waiter holds nothing of (see
/// [`Replication::locate`]): a rate, and the sessions recently found nowhere.
#[derive(Debug)]
struct Searches {
    /// Tokens left, and when they were last counted (ms of the waiter's clock).
    bucket: Mutex<(f64, u64)>,
    /// Sessions no peer held, until when that answer stands.
    misses: Mutex<HashMap<SessionId, u64>>,
}

/// Searches per second a waiter makes (bursts of twice as many).
const SEARCHES_PER_SEC: f64 = 100.0;
/// How long "no peer holds it" is remembered.
const MISS_MS: u64 = 5_000;
/// Most remembered misses; more empty the table.
const MAX_MISSES: usize = 10_000;

impl Searches {
    fn new() -> Searches {
        Searches {
            bucket: Mutex::new((2.0 * SEARCHES_PER_SEC, 0)),
            misses: Mutex::new(HashMap::new()),
        }
    }

    fn allow(&self, session: SessionId, now: u64) -> bool {
        if lock(&self.misses)
            .get(&session)
            .is_some_and(|until| *until > now)
        {
            return false;
        }
        let mut bucket = lock(&self.bucket);
        let (tokens, at) = *bucket;
        let refilled = (tokens + now.saturating_sub(at) as f64 * SEARCHES_PER_SEC / 1000.0)
            .min(2.0 * SEARCHES_PER_SEC);
        if refilled < 1.0 {
            *bucket = (refilled, now);
            return false;
        }
        *bucket = (refilled - 1.0, now);
        true
    }

    fn not_found(&self, session: SessionId, now: u64) {
        let mut misses = lock(&self.misses);
        if misses.len() >= MAX_MISSES {
            misses.clear();
        }
        misses.insert(session, now + MISS_MS);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The ledger is updated in single statements; a panic elsewhere cannot leave it
    // half-changed.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Replication {
    /// The replication of waiter `me` over `led` (the waiter's own store), and its
    /// watch task (probing peers that are down, copying sessions again after a peer
    /// change, keeping copies' expiries, sweeping copies), which ends when the
    /// replication is dropped.
    pub fn start(
        me: &str,
        config: ReplicationConfig,
        led: Arc<MemoryStore>,
        store: &StoreConfig,
        clock: Clock,
    ) -> Arc<Replication> {
        let mut incarnation = [0u8; 8];
        incarnation.copy_from_slice(&SessionId::generate().as_bytes()[..8]);
        let identity = Arc::new(Identity {
            id: me.to_string(),
            incarnation: u64::from_le_bytes(incarnation).max(1),
            secret: config.secret.clone(),
        });
        let changed = Arc::new(Notify::new());
        let links = config
            .peers
            .iter()
            .filter(|p| p.id != me)
            .map(|p| {
                Arc::new(Link::start(
                    p.id.clone(),
                    p.addr,
                    Arc::clone(&identity),
                    config.timeout,
                    Arc::clone(&changed),
                ))
            })
            .collect();
        let replication = Arc::new(Replication {
            me: identity,
            links,
            led,
            copies: MemoryStore::for_copies(store.clone()),
            ledger: Mutex::new(Ledger::default()),
            takeover: tokio::sync::Mutex::new(()),
            changed,
            ttl_ms: store.session_ttl_ms,
            slack_ms: store.touch_slack_ms().max(1_000),
            probe_interval: config.probe_interval,
            clock,
            searches: Searches::new(),
            counters: Counters {
                copy_seconds: Some(Histogram::new(LATENCY_BUCKETS)),
                ..Counters::default()
            },
        });
        tokio::spawn(watch(Arc::downgrade(&replication)));
        replication
    }

    /// This waiter's id.
    pub fn id(&self) -> &str {
        &self.me.id
    }

    fn link(&self, id: &str) -> Option<&Arc<Link>> {
        self.links.iter().find(|l| l.id == id)
    }

    /// Makes the session's current state safe before a change is acknowledged: a
    /// backup holds it (or no peer is up).
    ///
    /// # Errors
    /// [`Moved`] when a peer refused the copy because another waiter took the session
    /// over: this waiter stepped down, the change was not acknowledged anywhere.
    pub async fn settle(&self, session: SessionId, now: u64) -> Result<Settled, Moved> {
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let Some(snapshot) = self.led.snapshot(session) else {
                return Ok(Settled::Gone);
            };
            let seq = snapshot.seq;
            let (epoch, target) = {
                let mut ledger = lock(&self.ledger);
                let led = ledger.lead_or_start(session, &self.me.id, snapshot.expires_at);
                if let Some(b) = led.backup {
                    let link = &self.links[b.peer];
                    if b.acked_seq >= seq && link.is_up() && link.generation() == b.generation {
                        return Ok(Settled::Copied {
                            backup: link.id.clone(),
                        });
                    }
                }
                let usable = |i: &usize| self.links[*i].is_up() && !tried.contains(i);
                let target = led.backup.map(|b| b.peer).filter(usable).or_else(|| {
                    rendezvous::choose(
                        session,
                        (0..self.links.len())
                            .filter(usable)
                            .map(|i| (i, self.links[i].id.as_str())),
                    )
                });
                if target.is_none() {
                    led.backup = None;
                }
                (led.epoch.clone(), target)
            };
            let Some(target) = target else {
                return Ok(Settled::Alone);
            };
            let link = Arc::clone(&self.links[target]);
            let started = Instant::now();
            let sent = link
                .send(Item::Copy {
                    epoch: epoch.clone(),
                    snapshot,
                })
                .await;
            match sent {
                Ok((Reply::Ok, generation)) => {
                    if let Some(h) = &self.counters.copy_seconds {
                        h.observe(started.elapsed());
                    }
                    self.counters.copies_ok.fetch_add(1, Ordering::Relaxed);
                    let previous = {
                        let mut ledger = lock(&self.ledger);
                        match ledger.led_mut(session) {
                            Some(led) if led.epoch == epoch => {
                                let previous = led.backup.map(|b| b.peer);
                                let acked_seq = match led.backup {
                                    Some(b) if b.peer == target && b.generation == generation => {
                                        b.acked_seq.max(seq)
                                    }
                                    _ => seq,
                                };
                                led.backup = Some(Backup {
                                    peer: target,
                                    generation,
                                    acked_seq,
                                });
                                previous.filter(|p| *p != target)
                            }
                            _ => None,
                        }
                    };
                    if let Some(previous) = previous {
                        // The old backup's copy would only mislead a later takeover.
                        self.drop_copy_on(previous, session, epoch);
                    }
                    return Ok(Settled::Copied {
                        backup: link.id.clone(),
                    });
                }
                Ok((Reply::Fenced { epoch: newer }, _)) => {
                    self.counters.fenced.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = %link.id, leader = %newer.by, "a peer refused a copy: the session was taken over; stepping down");
                    let to = newer.by.clone();
                    lock(&self.ledger).step_down(
                        session,
                        newer,
                        now + self.ttl_ms,
                        &self.led,
                        &self.copies,
                        now,
                    );
                    return Err(Moved { to: Some(to) });
                }
                Ok((other, _)) => {
                    tracing::error!(peer = %link.id, reply = ?other, "a peer answered a copy with something else");
                    self.counters.copies_failed.fetch_add(1, Ordering::Relaxed);
                    tried.push(target);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a copy failed; trying another peer");
                    self.counters.copies_failed.fetch_add(1, Ordering::Relaxed);
                    tried.push(target);
                }
            }
        }
    }

    fn drop_copy_on(&self, peer: usize, session: SessionId, epoch: Epoch) {
        let link = Arc::clone(&self.links[peer]);
        tokio::spawn(async move {
            if let Err(e) = link.send(Item::Drop { session, epoch }).await {
                tracing::debug!(error = %e, "could not drop an old copy (it expires by itself)");
            }
        });
    }

    /// Before serving a request for `session`: if this waiter holds only a copy of it
    /// (its primary is gone), takes it over; if another waiter took it over, says which.
    /// If it holds nothing of it, asks its peers (a waiter restarted empty is still the
    /// one its diners' cookies name): a peer's copy is taken over, and when none has one
    /// the store answers `unknown-session`. Such searches are rate-limited and remembered
    /// briefly, so made-up session ids cannot turn into a storm of peer requests.
    ///
    /// # Errors
    /// [`Moved`] when another waiter leads the session.
    pub async fn locate(&self, session: SessionId, now: u64) -> Result<(), Moved> {
        if self.led.seq(session).is_some() {
            return Ok(());
        }
        let (has_copy, claimed_by) = {
            let ledger = lock(&self.ledger);
            (
                ledger.copy_epoch(session).is_some(),
                ledger.claimed_by(session, now).map(str::to_string),
            )
        };
        if let Some(by) = claimed_by
            && self.link(&by).is_some_and(|l| l.is_up())
        {
            return Err(Moved { to: Some(by) });
        }
        if !has_copy && !self.searches.allow(session, now) {
            return Ok(());
        }
        self.take_over(session, now).await
    }

    async fn take_over(&self, session: SessionId, now: u64) -> Result<(), Moved> {
        let _one_at_a_time = self.takeover.lock().await;
        if self.led.seq(session).is_some() {
            return Ok(());
        }
        let own = {
            let ledger = lock(&self.ledger);
            ledger
                .copy_epoch(session)
                .cloned()
                .zip(self.copies.snapshot(session))
        };
        let mut epoch = {
            let ledger = lock(&self.ledger);
            let known = ledger
                .newest(session, now)
                .or_else(|| own.as_ref().map(|(e, _)| e.clone()));
            match known {
                Some(e) => e.next(&self.me.id),
                None => Epoch::first(&self.me.id),
            }
        };
        // A claim can find an epoch this waiter itself led in an earlier life (it
        // restarted): claim again above it. Anyone else's newer epoch means it leads.
        let (held, holders) = loop {
            match self.claim(session, &epoch).await {
                Ok(found) => break found,
                Err(newer) if newer.by == self.me.id && newer.n < epoch.n + 8 => {
                    epoch = newer.next(&self.me.id);
                }
                Err(newer) => {
                    tracing::info!(leader = %newer.by, "a takeover found a newer leader");
                    return Err(Moved { to: Some(newer.by) });
                }
            }
        };
        let Some((from, best)) = newest_of(own.into_iter().chain(held)) else {
            self.searches.not_found(session, now);
            return Ok(());
        };
        let expires_at = best.expires_at;
        self.led.install(best, now);
        {
            let mut ledger = lock(&self.ledger);
            ledger.lead(session, epoch.clone(), expires_at);
            ledger.forget_copy(session);
        }
        self.copies.remove(session);
        self.counters.takeovers.fetch_add(1, Ordering::Relaxed);
        tracing::info!(previous = %from.by, epoch = epoch.n, "took a session over");
        let settled = self.settle(session, now).await?;
        let backup = match &settled {
            Settled::Copied { backup } => Some(backup.as_str()),
            _ => None,
        };
        for peer in holders.iter().filter(|p| Some(p.as_str()) != backup) {
            if let Some(i) = self.links.iter().position(|l| &l.id == peer) {
                self.drop_copy_on(i, session, epoch.clone());
            }
        }
        Ok(())
    }

    /// Claims `session` at `epoch` from every peer that is up: what they hold of it,
    /// and who holds it; or the newer epoch one of them has seen.
    async fn claim(
        &self,
        session: SessionId,
        epoch: &Epoch,
    ) -> Result<(Vec<(Epoch, bistro_store::SessionSnapshot)>, Vec<String>), Epoch> {
        let mut claims = JoinSet::new();
        for link in self.links.iter().filter(|l| l.is_up()) {
            let link = Arc::clone(link);
            let item = Item::Claim {
                session,
                epoch: epoch.clone(),
            };
            claims.spawn(async move { (link.id.clone(), link.send(item).await) });
        }
        let (mut held, mut holders, mut newer) = (Vec::new(), Vec::new(), None::<Epoch>);
        while let Some(done) = claims.join_next().await {
            let Ok((peer, reply)) = done else { continue };
            match reply {
                Ok((Reply::Held { epoch, snapshot }, _)) => {
                    holders.push(peer);
                    held.push((epoch, snapshot));
                }
                Ok((Reply::NotHeld | Reply::Ok, _)) => {}
                Ok((Reply::Fenced { epoch }, _)) => {
                    newer = Some(newer.map_or(epoch.clone(), |n| n.max(epoch)));
                }
                Err(e) => tracing::debug!(error = %e, "a peer missed the claim"),
            }
        }
        match newer {
            Some(newer) => Err(newer),
            None => Ok((held, holders)),
        }
    }

    /// The peer holding the copy of a session this waiter leads, if one does.
    pub fn backup_of(&self, session: SessionId) -> Option<String> {
        let ledger = lock(&self.ledger);
        let b = ledger.led(session)?.backup?;
        let link = &self.links[b.peer];
        (link.is_up() && link.generation() == b.generation).then(|| link.id.clone())
    }

    /// Applies a batch a peer sent.
    ///
    /// # Errors
    /// [`PeerError::UnknownPeer`] when the sender is not one of the configured peers.
    pub fn receive(&self, batch: Batch, now: u64) -> Result<Replies, PeerError> {
        if self.link(&batch.from).is_none() {
            return Err(PeerError::UnknownPeer(batch.from));
        }
        let until = now + self.ttl_ms;
        let mut ledger = lock(&self.ledger);
        let replies = batch
            .items
            .into_iter()
            .map(|item| ledger.receive(item, now, until, &self.led, &self.copies))
            .collect();
        Ok(Replies {
            incarnation: self.me.incarnation,
            replies,
        })
    }

    /// Whether `token` is the group's secret (compared in constant time).
    pub fn authorized(&self, token: &str) -> bool {
        let (a, b) = (token.as_bytes(), self.me.secret.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// What `/v1/waiter` shows.
    pub fn status(&self) -> ReplicationStatus {
        let (led, copies) = lock(&self.ledger).counts();
        ReplicationStatus {
            peers: self
                .links
                .iter()
                .map(|l| PeerStatus {
                    id: l.id.clone(),
                    addr: l.addr.to_string(),
                    up: l.is_up(),
                })
                .collect(),
            alone: !self.links.iter().any(|l| l.is_up()),
            sessions_led: led,
            copies_held: copies,
            unsynced: self.unsynced(),
            takeovers: self.counters.takeovers.load(Ordering::Relaxed),
        }
    }

    /// Led sessions whose backup lacks their latest change (the replication lag).
    fn unsynced(&self) -> usize {
        let entries = lock(&self.ledger).led_sessions();
        entries
            .iter()
            .filter(|(s, led)| {
                let seq = self.led.seq(*s).unwrap_or(0);
                !led.backup.is_some_and(|b| {
                    let link = &self.links[b.peer];
                    b.acked_seq >= seq && link.is_up() && link.generation() == b.generation
                })
            })
            .count()
    }

    /// The replication's metric families.
    pub fn render(&self, enc: &mut Encoder) {
        let status = self.status();
        let c = &self.counters;
        enc.counter(
            "bistro_replication_copies_total",
            "Sessions sent to a backup, by result.",
            &[
                (&[("result", "ok")][..], c.copies_ok.load(Ordering::Relaxed)),
                (
                    &[("result", "failed")][..],
                    c.copies_failed.load(Ordering::Relaxed),
                ),
                (
                    &[("result", "fenced")][..],
                    c.fenced.load(Ordering::Relaxed),
                ),
            ],
        );
        if let Some(h) = &c.copy_seconds {
            enc.histogram(
                "bistro_replication_copy_seconds",
                "Time for a backup to acknowledge a copy (the replication latency).",
                &[(&[][..], h)],
            );
        }
        enc.counter(
            "bistro_replication_takeovers_total",
            "Sessions this waiter took over from a primary that was gone.",
            &[(&[][..], status.takeovers)],
        );
        enc.gauge(
            "bistro_replication_sessions",
            "Sessions this waiter leads, and copies it keeps for its peers.",
            &[
                (&[("role", "led")][..], status.sessions_led as f64),
                (&[("role", "copy")][..], status.copies_held as f64),
            ],
        );
        enc.gauge(
            "bistro_replication_unsynced_sessions",
            "Led sessions whose backup lacks their latest change (the replication lag).",
            &[(&[][..], status.unsynced as f64)],
        );
        let ids: Vec<[(&str, &str); 1]> = status
            .peers
            .iter()
            .map(|p| [("peer", p.id.as_str())])
            .collect();
        let series: Vec<(&[(&str, &str)], f64)> = ids
            .iter()
            .zip(&status.peers)
            .map(|(l, p)| (&l[..], if p.up { 1.0 } else { 0.0 }))
            .collect();
        enc.gauge(
            "bistro_replication_peer_up",
            "Whether a peer answers (1) or is taken to be down (0).",
            &series,
        );
    }

    /// Copies again every led session whose copy is missing or out of date (a backup
    /// went down or restarted, or a peer returned after this waiter was alone).
    async fn resync(&self, now: u64) {
        let entries = lock(&self.ledger).led_sessions();
        let any_up = self.links.iter().any(|l| l.is_up());
        for (session, led) in entries {
            let fine = led.backup.is_some_and(|b| {
                let link = &self.links[b.peer];
                link.is_up() && link.generation() == b.generation
            });
            if fine || (led.backup.is_none() && !any_up) {
                continue;
            }
            if let Err(moved) = self.settle(session, now).await {
                tracing::debug!(%moved, "a session moved while being copied again");
            }
        }
    }

    /// Tells backups how long the sessions they copy live: a session that is only read
    /// is extended on its primary without a copy being sent.
    async fn extend_copies(&self) {
        let entries = lock(&self.ledger).led_sessions();
        let mut pending = JoinSet::new();
        for (session, led) in entries {
            let Some(b) = led.backup else { continue };
            let Some(snapshot_expiry) = self
                .led
                .expires_at(session)
                .filter(|e| *e > led.extended_to + self.slack_ms)
            else {
                continue;
            };
            let link = Arc::clone(&self.links[b.peer]);
            let item = Item::Extend {
                session,
                epoch: led.epoch.clone(),
                expires_at: snapshot_expiry,
            };
            pending.spawn(async move { (session, snapshot_expiry, link.send(item).await) });
            if pending.len() >= link::MAX_BATCH {
                self.finish_extends(&mut pending).await;
            }
        }
        self.finish_extends(&mut pending).await;
    }

    async fn finish_extends(&self, pending: &mut JoinSet<(SessionId, u64, link::Sent)>) {
        while let Some(done) = pending.join_next().await {
            if let Ok((session, expires_at, Ok((Reply::Ok, _)))) = done
                && let Some(led) = lock(&self.ledger).led_mut(session)
            {
                led.extended_to = led.extended_to.max(expires_at);
            }
        }
    }

    /// Sweeps expired copies and the ledger entries of sessions gone from both stores.
    async fn sweep(&self, now: u64) {
        use bistro_store::OrderStore;
        if let Err(e) = self.copies.sweep(now, 100_000).await {
            tracing::warn!(error = %e, "sweeping copies failed");
        }
        lock(&self.ledger).prune(now, &self.led, &self.copies);
    }
}

/// The replication's part of `/v1/waiter`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplicationStatus {
    /// The other waiters of the group, and whether each answers.
    pub peers: Vec<PeerStatus>,
    /// No peer answers: sessions live on this waiter only, as in stateful mode.
    pub alone: bool,
    /// Sessions this waiter leads.
    pub sessions_led: usize,
    /// Copies this waiter keeps for its peers.
    pub copies_held: usize,
    /// Led sessions whose backup lacks their latest change.
    pub unsynced: usize,
    /// Sessions this waiter took over from a primary that was gone.
    pub takeovers: u64,
}

/// One peer in [`ReplicationStatus`].
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PeerStatus {
    /// Its id.
    pub id: String,
    /// Its address.
    pub addr: String,
    /// Whether it answers.
    pub up: bool,
}

/// The watch task (see [`Replication::start`]): ends when the replication is dropped.
async fn watch(replication: Weak<Replication>) {
    let Some(first) = replication.upgrade() else {
        return;
    };
    let (changed, probe_every, extend_every) = (
        Arc::clone(&first.changed),
        first.probe_interval,
        Duration::from_millis(first.slack_ms),
    );
    drop(first);
    let mut last_extend = Instant::now();
    let mut last_sweep = Instant::now();
    let mut last_resync = Instant::now();
    loop {
        let woke = tokio::select! {
            () = changed.notified() => true,
            () = tokio::time::sleep(probe_every) => false,
        };
        let Some(r) = replication.upgrade() else {
            return;
        };
        let mut probes = JoinSet::new();
        for link in r.links.iter().filter(|l| !l.is_up()) {
            let link = Arc::clone(link);
            probes.spawn(async move { link.probe().await });
        }
        let came_back = probes.join_all().await.into_iter().any(|up| up);
        let now = r.clock.now();
        if woke || came_back || last_resync.elapsed() >= Duration::from_secs(5) {
            r.resync(now).await;
            last_resync = Instant::now();
        }
        if last_extend.elapsed() >= extend_every {
            r.extend_copies().await;
            last_extend = Instant::now();
        }
        if last_sweep.elapsed() >= Duration::from_secs(10) {
            r.sweep(now).await;
            last_sweep = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_as_id_equals_address() {
        assert_eq!(
            "w2=127.0.0.1:7002".parse::<Peer>(),
            Ok(Peer {
                id: "w2".into(),
                addr: "127.0.0.1:7002".parse().unwrap()
            })
        );
        for bad in [
            "w2",
            "=127.0.0.1:1",
            "w 2=127.0.0.1:1",
            "w2=localhost",
            "w2=1.2.3.4",
        ] {
            assert!(bad.parse::<Peer>().is_err(), "{bad}");
        }
    }
}
