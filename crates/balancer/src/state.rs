//! What the proxy, the admin API and the health checker share, and what each worker
//! thread owns.
//!
//! [`Shared`] is built once from the configuration and read by everyone: the backend
//! registry, routes, the pre-keyed affinity signer, metrics and the settings the hot
//! path needs as plain values. [`Worker`] is one proxy thread's own state: its index
//! (which picks its `Local` in every backend and its metrics shard), its retry budget
//! and its memory of recently checked affinity cookies.

use crate::affinity::{Affinity, RecentVerdicts};
use crate::clock::Clock;
use crate::config::{BalancerConfig, ResendPolicy, ms};
use crate::health::Ejection;
use crate::metrics::{Counters, Metrics};
use crate::pool::PoolSettings;
use crate::retry::RetryBudget;
use crate::route::Routes;
use crate::strategy::KeySource;
use crate::table::Registry;
use std::sync::Arc;
use std::time::Duration;

/// The hot path's settings, copied out of the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) pool: PoolSettings,
    pub(crate) response_timeout: Duration,
    pub(crate) ejection: Ejection,
    pub(crate) max_retries: u32,
    pub(crate) max_buffered_body: u64,
    pub(crate) max_body: u64,
    pub(crate) after_send: ResendPolicy,
}

/// Everything shared by the workers, the admin API and the health checker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: BalancerConfig,
    pub(crate) settings: Settings,
    pub(crate) routes: Routes,
    pub(crate) registry: Registry,
    pub(crate) affinity: Affinity,
    pub(crate) key_source: KeySource,
    pub(crate) metrics: Metrics,
    pub(crate) clock: Clock,
}

impl Shared {
    /// Builds the shared state; `key` is the affinity signing key already chosen.
    pub(crate) fn new(config: BalancerConfig, key: &[u8], workers: usize) -> Shared {
        let settings = Settings {
            pool: PoolSettings {
                max_idle: config.upstream.pool_max_idle,
                idle_timeout: ms(config.upstream.pool_idle_timeout_ms),
                connect_timeout: ms(config.upstream.connect_timeout_ms),
            },
            response_timeout: ms(config.upstream.response_timeout_ms),
            ejection: Ejection::from(&config.health),
            max_retries: config.retry.max_retries,
            max_buffered_body: config.retry.max_buffered_body,
            max_body: config.client.max_body_bytes,
            after_send: config.retry.after_send,
        };
        Shared {
            settings,
            routes: Routes::new(&config.routes),
            registry: Registry::new(&config.backends, config.balancing.clone(), workers),
            affinity: Affinity::new(&config.affinity, key),
            key_source: KeySource::from(&config.balancing.hash_key),
            metrics: Metrics::new(workers),
            clock: Clock::new(),
            config,
        }
    }
}

/// One proxy worker thread's state.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) budget: RetryBudget,
    /// Verdicts on affinity cookies this worker checked recently.
    pub(crate) verdicts: RecentVerdicts,
}

impl Worker {
    pub(crate) fn new(index: usize, shared: Arc<Shared>) -> Worker {
        let retry = &shared.config.retry;
        let budget = RetryBudget::new(retry.budget_ratio, retry.budget_min_per_sec);
        Worker {
            index,
            shared,
            budget,
            verdicts: RecentVerdicts::default(),
        }
    }

    /// This worker's metrics shard.
    pub(crate) fn counters(&self) -> &Counters {
        self.shared.metrics.shard(self.index)
    }
}
