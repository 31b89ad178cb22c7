//! Balancing strategies: which backend gets a request that has no (valid) affinity.
//!
//! Like pingora's `BackendSelection`, a strategy is built from one snapshot of the
//! backend set (so precomputation, such as a hash ring or a weighted sequence, happens
//! when the set or a weight changes, never per request) and selects with an `accept`
//! filter. The filter is how everything else combines with the strategy without the
//! strategy knowing about it: health and ejection, draining ("no new sessions"), and
//! backends a retry already tried. A strategy asks `accept` about the backends it would
//! pick, in its own order of preference, and returns the first accepted one.
//!
//! Strategies that keep a cursor or a random state keep one per worker thread, so the
//! workers never contend on it; each worker balances its own share of the traffic.
//!
//! | strategy | state | uses weight | uses load | uses key |
//! |---|---|---|---|---|
//! | [`RoundRobin`] | cursor | no | no | no |
//! | [`WeightedRoundRobin`] | cursor over a precomputed smooth sequence | yes | no | no |
//! | [`LeastConnections`] | rotating tie-break | yes | yes | no |
//! | [`PowerOfTwoChoices`] | seeded random state | yes | yes | no |
//! | [`ConsistentHash`] | ring with virtual nodes | yes | no | yes |

mod consistent;
mod hash;
mod least_conn;
mod p2c;
mod round_robin;
mod weighted;

pub(crate) use consistent::{
    ConsistentHash, RingArc, overlap, owned_arcs, owned_keys, ring_points,
};
pub(crate) use hash::{KeySource, hash_bytes};
pub(crate) use least_conn::LeastConnections;
pub(crate) use p2c::PowerOfTwoChoices;
pub(crate) use round_robin::RoundRobin;
pub(crate) use weighted::WeightedRoundRobin;

use crate::backend::Backend;
use crate::config::{BalancingConfig, StrategyKind};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What a selection may look at besides the backends.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pick {
    /// The selecting worker (indexes per-worker state and loads).
    pub(crate) worker: usize,
    /// The request's hash key, for strategies that use one (see [`Selection::uses_key`]).
    pub(crate) key: u64,
}

/// A balancing strategy over one snapshot of the backend set.
pub(crate) trait Selection: Send + Sync + fmt::Debug {
    /// Returns the index in `backends` (the snapshot the strategy was built for) of the
    /// preferred backend that `accept` allows, or `None` when it allows none.
    ///
    /// `accept` may be called several times, also for the same backend; it must not
    /// change its answer during one call.
    fn select(
        &self,
        backends: &[Backend],
        pick: Pick,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<usize>;

    /// Whether [`Pick::key`] matters; when `false` the proxy does not compute it.
    fn uses_key(&self) -> bool {
        false
    }
}

/// Builds the configured strategy for `backends`, with per-worker state for `workers`.
pub(crate) fn build(
    config: &BalancingConfig,
    backends: &[Backend],
    workers: usize,
) -> Box<dyn Selection> {
    match config.strategy {
        StrategyKind::RoundRobin => Box::new(RoundRobin::new(workers)),
        StrategyKind::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(backends, workers)),
        StrategyKind::LeastConnections => Box::new(LeastConnections::new(workers)),
        StrategyKind::PowerOfTwoChoices => Box::new(PowerOfTwoChoices::new(config.seed, workers)),
        StrategyKind::ConsistentHash => {
            Box::new(ConsistentHash::new(backends, config.virtual_nodes))
        }
    }
}

/// A counter per worker, each on its own cache line. Only its worker writes it, so a
/// plain load and store (no read-modify-write) is enough.
#[derive(Debug)]
pub(crate) struct PerWorker {
    slots: Box<[Padded]>,
}

#[derive(Debug)]
#[repr(align(128))]
struct Padded(AtomicU64);

impl PerWorker {
    /// `workers` counters, worker `i` starting at `init(i)`.
    pub(crate) fn new(workers: usize, init: impl Fn(usize) -> u64) -> PerWorker {
        PerWorker {
            slots: (0..workers.max(1))
                .map(|i| Padded(AtomicU64::new(init(i))))
                .collect(),
        }
    }

    /// The current value of `worker`'s counter, replaced by `f(value)`.
    pub(crate) fn advance(&self, worker: usize, f: impl FnOnce(u64) -> u64) -> u64 {
        let slot = &self.slots[worker % self.slots.len()].0;
        let v = slot.load(Relaxed);
        slot.store(f(v), Relaxed);
        v
    }
}

/// Greatest common divisor (weights are divided by it: only their ratios matter).
pub(crate) fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `a_load / a_weight < b_load / b_weight`, without division.
pub(crate) fn less_loaded(a_load: u64, a_weight: u32, b_load: u64, b_weight: u32) -> bool {
    u128::from(a_load) * u128::from(b_weight) < u128::from(b_load) * u128::from(a_weight)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the strategies' distribution tests.
    use crate::backend::Backend;
    use crate::spec::BackendSpec;

    /// Backends `w1..=wN` with the given weights, for one worker.
    pub(crate) fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let mut spec =
                    BackendSpec::new(format!("w{}", i + 1), "127.0.0.1:1".parse().unwrap());
                spec.weight = w;
                Backend::new(&spec, 1, 1, 0)
            })
            .collect()
    }

    /// How many of `n` selections (without load changes) each backend got.
    pub(crate) fn histogram(
        s: &dyn super::Selection,
        backends: &[Backend],
        n: usize,
    ) -> Vec<usize> {
        let mut counts = vec![0; backends.len()];
        for i in 0..n {
            let pick = super::Pick {
                worker: 0,
                key: super::hash_bytes(&i.to_le_bytes()),
            };
            counts[s.select(backends, pick, &mut |_| true).unwrap()] += 1;
        }
        counts
    }
}
