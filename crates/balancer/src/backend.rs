//! One backend at run time: identity, weight, mode, drain flag, health, statistics and
//! its connection pools.
//!
//! The layout follows the thread-per-core design. What every worker shares lives in
//! [`Core`] and is mostly read (id, address, weight, health). What one worker changes on
//! every request lives in that worker's own [`Local`]: its idle connection pool and its
//! counters. A request holds an `Arc<Local>`, whose reference count only its own worker
//! touches, so the hot path never bounces a cache line between cores; the only shared
//! writes per request are the latency histogram's.
//!
//! [`Backend`] is the cheap-to-clone handle the backend table stores: rebuilding the
//! table (a weight change, an added backend) keeps every other backend's `Core` and
//! `Local`s, so pools, counters and health survive admin changes.

use crate::health::Health;
use crate::pool::Pool;
use crate::slots::Slots;
use crate::spec::{BackendSpec, Mode};
use bistro_metrics::{Histogram, LATENCY_BUCKETS};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use tokio::sync::Notify;

/// What all workers share about one backend.
#[derive(Debug)]
pub(crate) struct Core {
    /// The operator's name for it, carried in affinity tokens.
    pub(crate) id: Arc<str>,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    weight: AtomicU32,
    mode_override: Option<Mode>,
    /// 0 unknown, 1 stateful, 2 stateless.
    learned_mode: AtomicU8,
    draining: AtomicBool,
    /// Availability (active checks, passive ejection).
    pub(crate) health: Health,
    /// Request durations, from sending the request to the end of the response body.
    pub(crate) latency: Histogram,
    pinned: AtomicI64,
}

impl Core {
    /// The configured weight.
    pub(crate) fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    pub(crate) fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Relaxed);
    }

    /// The mode: the configured override, else what the waiter said, else unknown.
    pub(crate) fn mode(&self) -> Option<Mode> {
        self.mode_override
            .or(match self.learned_mode.load(Relaxed) {
                1 => Some(Mode::Stateful),
                2 => Some(Mode::Stateless),
                3 => Some(Mode::Replicated),
                _ => None,
            })
    }

    /// Records the mode the waiter reported (ignored when the config overrides it).
    pub(crate) fn learn_mode(&self, mode: Mode) {
        let code = match mode {
            Mode::Stateful => 1,
            Mode::Stateless => 2,
            Mode::Replicated => 3,
        };
        if self.learned_mode.load(Relaxed) != code {
            self.learned_mode.store(code, Relaxed);
        }
    }

    /// Whether the mode is still unknown (and not overridden).
    pub(crate) fn mode_unknown(&self) -> bool {
        self.mode().is_none()
    }

    /// Whether its sessions must stay on it: stateful, or unknown (the safe guess).
    pub(crate) fn holds_sessions(&self) -> bool {
        self.mode() != Some(Mode::Stateless)
    }

    /// A draining backend takes no new sessions but keeps serving its pinned diners.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    pub(crate) fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Relaxed);
    }

    /// Approximate sessions pinned to it: affinity cookies issued naming it, minus those
    /// the balancer saw cleared or moved away. Diners who simply leave are never
    /// subtracted, so this is an upper bound that only admin insight needs.
    pub(crate) fn pinned(&self) -> i64 {
        self.pinned.load(Relaxed)
    }

    pub(crate) fn pin(&self) {
        self.pinned.fetch_add(1, Relaxed);
    }

    pub(crate) fn unpin(&self) {
        // Never below zero: a token issued by another replica can be unpinned here.
        let mut n = self.pinned.load(Relaxed);
        while n > 0 {
            match self
                .pinned
                .compare_exchange_weak(n, n - 1, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(actual) => n = actual,
            }
        }
    }
}

/// One worker's counters for one backend.
#[derive(Debug, Default)]
pub(crate) struct LocalStats {
    /// Requests in flight from this worker (connection leased, body not finished).
    pub(crate) active: AtomicI64,
    /// Requests sent.
    pub(crate) requests: AtomicU64,
    /// Failed exchanges and 5xx answers.
    pub(crate) errors: AtomicU64,
    /// Response bodies cut because they stalled (`upstream.body_idle_timeout_ms`).
    pub(crate) body_timeouts: AtomicU64,
}

/// What one worker owns for one backend. Aligned so two workers' `Local`s never share
/// a cache line.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Local {
    pub(crate) core: Arc<Core>,
    pub(crate) pool: Pool,
    pub(crate) stats: LocalStats,
    /// This worker's connection slots to the backend (see [`slots`](crate::slots)).
    pub(crate) slots: Slots,
    /// Woken when the backend goes down, so requests waiting on it stop waiting.
    pub(crate) down: Notify,
}

/// One backend as a balancing strategy sees it: its id, address, weight, mode and
/// load, read-only (see [`Selection`](crate::Selection)).
///
/// A cheap handle: cloning it clones two reference counts. Health, draining and
/// whatever else decides whether a backend may take a request is not here but behind
/// the `accept` filter a strategy is handed, so a strategy cannot get it wrong.
#[derive(Debug, Clone)]
pub struct Backend {
    // Inside the crate: the shared core plus one `Local` per worker.
    pub(crate) core: Arc<Core>,
    locals: Arc<[Arc<Local>]>,
}

impl Backend {
    /// A fresh backend (healthy, not draining, empty pools) for `workers` workers, each
    /// with `slots` connection slots and `queue` places to wait for one.
    pub(crate) fn new(spec: &BackendSpec, workers: usize, slots: usize, queue: usize) -> Backend {
        let core = Arc::new(Core {
            id: spec.id.as_str().into(),
            addr: spec.address,
            weight: AtomicU32::new(spec.weight),
            mode_override: spec.mode,
            learned_mode: AtomicU8::new(0),
            draining: AtomicBool::new(false),
            health: Health::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
            pinned: AtomicI64::new(0),
        });
        let locals = (0..workers.max(1))
            .map(|_| {
                Arc::new(Local {
                    core: core.clone(),
                    pool: Pool::default(),
                    stats: LocalStats::default(),
                    slots: Slots::new(slots, queue),
                    down: Notify::new(),
                })
            })
            .collect();
        Backend { core, locals }
    }

    /// The operator's name for it (unique in the table).
    pub fn id(&self) -> &str {
        &self.core.id
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.core.addr
    }

    /// Its weight now (1 to [`MAX_WEIGHT`](crate::MAX_WEIGHT); the admin API can change
    /// it, and the strategy is then built again).
    pub fn weight(&self) -> u32 {
        self.core.weight()
    }

    /// Its mode: the configured one, else what the waiter said, else `None` (unknown).
    pub fn mode(&self) -> Option<Mode> {
        self.core.mode()
    }

    /// Worker `worker`'s part.
    pub(crate) fn local(&self, worker: usize) -> &Arc<Local> {
        &self.locals[worker % self.locals.len()]
    }

    /// Requests in flight from worker `worker` (a [`Pick::worker`](crate::Pick::worker)):
    /// the load the strategies compare. Each worker balances its own requests (as nginx
    /// workers do without a shared zone), which keeps selection free of cross-core reads.
    pub fn load(&self, worker: usize) -> u64 {
        self.local(worker).stats.active.load(Relaxed).max(0) as u64
    }

    /// Requests in flight from all workers.
    pub(crate) fn active(&self) -> i64 {
        self.locals
            .iter()
            .map(|l| l.stats.active.load(Relaxed))
            .sum()
    }

    /// Requests sent by all workers.
    pub(crate) fn requests(&self) -> u64 {
        self.locals
            .iter()
            .map(|l| l.stats.requests.load(Relaxed))
            .sum()
    }

    /// Errors seen by all workers.
    pub(crate) fn errors(&self) -> u64 {
        self.locals
            .iter()
            .map(|l| l.stats.errors.load(Relaxed))
            .sum()
    }

    /// Idle pooled connections over all workers.
    pub(crate) fn idle(&self) -> usize {
        self.locals.iter().map(|l| l.pool.len()).sum()
    }

    /// Response bodies cut because they stalled, over all workers.
    pub(crate) fn body_timeouts(&self) -> u64 {
        self.locals
            .iter()
            .map(|l| l.stats.body_timeouts.load(Relaxed))
            .sum()
    }

    /// Connection slots in use, over all workers.
    pub(crate) fn slots_busy(&self) -> usize {
        self.locals.iter().map(|l| l.slots.busy()).sum()
    }

    /// Requests waiting for a connection slot, over all workers.
    pub(crate) fn queued(&self) -> usize {
        self.locals.iter().map(|l| l.slots.queued()).sum()
    }

    /// Wakes every request waiting on this backend (for a slot or an answer): it went
    /// down, and they should not wait out their timeouts.
    pub(crate) fn wake_waiters(&self) {
        for local in self.locals.iter() {
            local.down.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(mode: Option<Mode>) -> Backend {
        let mut spec = BackendSpec::new("w1", "127.0.0.1:1".parse().unwrap());
        spec.mode = mode;
        Backend::new(&spec, 2, 4, 4)
    }

    #[test]
    fn configured_mode_overrides_the_learned_one() {
        let b = backend(Some(Mode::Stateless));
        b.core.learn_mode(Mode::Stateful);
        assert_eq!(b.core.mode(), Some(Mode::Stateless));
        assert!(!b.core.holds_sessions());
    }

    #[test]
    fn unknown_mode_is_treated_as_holding_sessions() {
        let b = backend(None);
        assert!(b.core.mode_unknown());
        assert!(b.core.holds_sessions());
        b.core.learn_mode(Mode::Stateless);
        assert!(!b.core.holds_sessions());
    }

    #[test]
    fn counters_sum_over_workers() {
        let b = backend(None);
        b.local(0).stats.active.fetch_add(2, Relaxed);
        b.local(1).stats.active.fetch_add(3, Relaxed);
        assert_eq!(b.active(), 5);
        assert_eq!(b.load(1), 3);
    }

    #[test]
    fn pinned_never_goes_negative() {
        let b = backend(None);
        b.core.unpin();
        b.core.pin();
        assert_eq!(b.core.pinned(), 1);
    }
}
