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
//!
//! The trait is public ([`Selection`], with [`Pick`] and the read-only [`Backend`]), so
//! a strategy can also be written outside the crate and configured as a
//! [`CustomStrategy`] in [`BalancingConfig::custom`].

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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What a selection may look at besides the backends.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Pick {
    /// The selecting worker, below the worker count the strategy was built for: index
    /// per-worker state (a cursor, a random state) and [`Backend::load`] with it, so
    /// workers never contend.
    pub worker: usize,
    /// The request's hash key (from `balancing.hash_key`), for strategies that use one
    /// (see [`Selection::uses_key`]); 0 otherwise.
    pub key: u64,
}

/// A balancing strategy over one snapshot of the backend set: which backend gets a
/// request that has no (valid) affinity.
///
/// A strategy is built for one backend table (see [`CustomStrategy`]) and asked to
/// select on every such request, on every worker at once: keep per-request work small
/// and mutable state per worker ([`Pick::worker`]).
pub trait Selection: Send + Sync + fmt::Debug {
    /// Returns the index in `backends` (the snapshot the strategy was built for) of the
    /// preferred backend that `accept` allows, or `None` when it allows none.
    ///
    /// `accept` is how health, ejection, draining and a retry's already-tried backends
    /// combine with the strategy without it knowing about them: ask it about the
    /// backends you would pick, in your order of preference, and return the first it
    /// allows. It may be called several times, also for the same backend; it does not
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

/// Builds a [`Selection`] for one backend table and a number of workers.
type Build = dyn Fn(&[Backend], usize) -> Box<dyn Selection> + Send + Sync;

/// A strategy defined outside the crate, for [`BalancingConfig::custom`]: it replaces
/// the built-in `strategy` for the HTTP proxy.
///
/// The function is called with the backends of every new table (at start, and after
/// each admin change: a backend added or removed, a weight changed) and the number of
/// proxy workers, and returns the [`Selection`] for that table, so precomputation
/// happens there and not per request. Affinity, health and draining stay the
/// balancer's: the strategy only chooses for requests without a (valid) pin, among the
/// backends its `accept` filter allows.
///
/// ```
/// use bistro_balancer::{Backend, CustomStrategy, Pick, Selection};
///
/// /// Always the first backend `accept` allows, in table order.
/// #[derive(Debug)]
/// struct First;
///
/// impl Selection for First {
///     fn select(
///         &self,
///         backends: &[Backend],
///         _pick: Pick,
///         accept: &mut dyn FnMut(&Backend) -> bool,
///     ) -> Option<usize> {
///         backends.iter().position(accept)
///     }
/// }
///
/// let mut config = bistro_balancer::BalancerConfig::default();
/// config.balancing.custom = Some(CustomStrategy::new("first", |_backends, _workers| {
///     Box::new(First)
/// }));
/// ```
#[derive(Clone)]
pub struct CustomStrategy {
    name: Arc<str>,
    build: Arc<Build>,
}

impl CustomStrategy {
    /// A strategy called `name` (in logs and errors), built by `build(backends,
    /// workers)` for each backend table.
    pub fn new(
        name: impl Into<String>,
        build: impl Fn(&[Backend], usize) -> Box<dyn Selection> + Send + Sync + 'static,
    ) -> CustomStrategy {
        CustomStrategy {
            name: name.into().into(),
            build: Arc::new(build),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for CustomStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CustomStrategy").field(&self.name).finish()
    }
}

impl PartialEq for CustomStrategy {
    /// The same strategy: made by the same [`CustomStrategy::new`] call (functions
    /// cannot be compared otherwise).
    fn eq(&self, other: &CustomStrategy) -> bool {
        Arc::ptr_eq(&self.build, &other.build)
    }
}

/// Builds the configured strategy for `backends`, with per-worker state for `workers`.
pub(crate) fn build(
    config: &BalancingConfig,
    backends: &[Backend],
    workers: usize,
) -> Box<dyn Selection> {
    if let Some(custom) = &config.custom {
        return (custom.build)(backends, workers.max(1));
    }
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
