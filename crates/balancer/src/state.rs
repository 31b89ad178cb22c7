//! What the proxy, the admin API and the health checker share, and what each worker
//! thread owns.
//!
//! [`Shared`] is built once from the configuration and read by everyone: the backend
//! registry, routes, the pre-keyed affinity signer, metrics and the settings the hot
//! path needs as plain values. [`Worker`] is one proxy thread's own state: its index
//! (which picks its `Local` in every backend and its metrics shard), its retry budget
//! and its memory of recently checked affinity cookies.

use crate::affinity::{Affinity, RecentVerdicts};
use crate::body::BodyLimits;
use crate::client_io::ClientTimeouts;
use crate::clock::Clock;
use crate::config::{BalancerConfig, ResendPolicy, ms};
use crate::dashboard::Dashboard;
use crate::drain::Drains;
use crate::health::Ejection;
use crate::metrics::{Counters, Gauges, Metrics};
use crate::moves::Moves;
use crate::per_ip::{Connections, SessionRate};
use crate::pool::PoolSettings;
use crate::retry::RetryBudget;
use crate::route::Routes;
use crate::slots::Capacity;
use crate::strategy::KeySource;
use crate::table::{Registry, Table};
use crate::throttle::Throttle;
use crate::timers::Timers;
use http::HeaderValue;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
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
    pub(crate) queue_timeout: Duration,
    pub(crate) body: BodyLimits,
    pub(crate) upstream_body_idle: Duration,
    /// Largest response head read from a backend.
    pub(crate) max_response_head: usize,
    pub(crate) client: ClientTimeouts,
    /// How long a live stateful backend may be out before its diners' sessions are lost.
    pub(crate) lost_after_down_ms: u64,
    pub(crate) max_ejection_percent: u8,
    pub(crate) panic_threshold_percent: u8,
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
    /// Open connections per client IP.
    pub(crate) per_ip: Arc<Connections>,
    /// Session creations per client IP (`None`: no limit).
    pub(crate) session_rate: Option<SessionRate>,
    /// Client connections open now, over all workers.
    pub(crate) connections: AtomicUsize,
    /// The client-connection cap in force (the configured one, lowered to what the
    /// file-descriptor limit can hold).
    pub(crate) max_connections: AtomicUsize,
    /// Most refused sockets lingering at once (each holds a descriptor for up to half
    /// a second): lowered with `max_connections` to fit the descriptor limit.
    pub(crate) max_lingering: AtomicUsize,
    store_outage: AtomicBool,
    /// Sessions handed from one waiter to another, for re-pinning their diners.
    pub(crate) moves: Moves,
    /// Drains in progress (or ended and still shown).
    pub(crate) drains: Drains,
    /// The dashboard's open event streams and what the waiters said they hold.
    pub(crate) dashboard: Dashboard,
    /// Whether the last health round found the balancer in panic mode (for logging
    /// the transitions; requests decide for themselves).
    panic_seen: AtomicBool,
    /// Random per process, so request ids from two runs never collide.
    request_id_prefix: u32,
    /// TLS towards diners, when `[tls]` is configured.
    pub(crate) tls: Option<Tls>,
}

/// What a TLS listener needs, built once.
pub(crate) struct Tls {
    /// The certificate, reloadable.
    pub(crate) certs: crate::tls::TlsCerts,
    /// The handshake side: ALPN choices and the certificate resolver.
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    /// `Strict-Transport-Security` for every answer, when configured.
    pub(crate) hsts: Option<HeaderValue>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("certs", &self.certs)
            .field("hsts", &self.hsts)
            .finish_non_exhaustive()
    }
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
            queue_timeout: ms(config.upstream.queue_timeout_ms),
            body: BodyLimits {
                total: ms(config.client.body_timeout_ms),
                min_bytes_per_sec: config.client.body_min_bytes_per_sec,
                grace: ms(config.client.body_rate_grace_ms),
            },
            upstream_body_idle: ms(config.upstream.body_idle_timeout_ms),
            max_response_head: config.upstream.max_response_header_bytes,
            client: ClientTimeouts::from(&config.client),
            lost_after_down_ms: config.affinity.lost_after_down_ms,
            max_ejection_percent: config.health.max_ejection_percent,
            panic_threshold_percent: config.health.panic_threshold_percent,
        };
        let capacity = Capacity {
            slots: config.upstream.slots_per_worker(workers),
            queue: config.upstream.queue_per_worker(),
        };
        Shared {
            settings,
            routes: Routes::new(&config.routes),
            registry: Registry::new(
                &config.backends,
                config.balancing.clone(),
                workers,
                capacity,
            ),
            // A cookie issued over TLS is marked `Secure` whatever the setting: the
            // diner's browser then never sends it over plain HTTP.
            affinity: Affinity::new(
                &crate::config::AffinityConfig {
                    secure: config.affinity.secure || config.tls.enabled(),
                    ..config.affinity.clone()
                },
                key,
            ),
            key_source: KeySource::from(&config.balancing.hash_key),
            metrics: Metrics::new(workers),
            clock: config.clock.clone(),
            per_ip: Connections::new(config.client.max_connections_per_ip),
            session_rate: SessionRate::new(
                config.client.session_rate_per_ip,
                config.client.session_burst_per_ip,
            ),
            connections: AtomicUsize::new(0),
            max_connections: AtomicUsize::new(config.client.max_connections),
            max_lingering: AtomicUsize::new(1024),
            store_outage: AtomicBool::new(false),
            moves: Moves::default(),
            drains: Drains::default(),
            dashboard: Dashboard::default(),
            panic_seen: AtomicBool::new(false),
            request_id_prefix: rand::random(),
            tls: None,
            config,
        }
    }

    /// Serves TLS with `certs` (see [`crate::tls`]).
    pub(crate) fn with_tls(mut self, certs: crate::tls::TlsCerts) -> Shared {
        let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config(&self.config.tls));
        let hsts = self
            .config
            .tls
            .hsts()
            .and_then(|v| HeaderValue::try_from(v).ok());
        self.tls = Some(Tls {
            certs,
            acceptor,
            hsts,
        });
        self
    }

    /// Records whether the balancer is in panic mode; `true` when that changed.
    pub(crate) fn set_panic_seen(&self, panic: bool) -> bool {
        self.panic_seen.swap(panic, Relaxed) != panic
    }

    /// Records whether every backend reports a store outage; `true` when that changed.
    pub(crate) fn set_store_outage(&self, outage: bool) -> bool {
        self.store_outage.swap(outage, Relaxed) != outage
    }

    /// Whether too few of `table`'s (non-draining) backends are available at `now_ms`,
    /// so that every one of them takes traffic (see `health.panic_threshold_percent`).
    pub(crate) fn in_panic(&self, table: &Table, now_ms: u64) -> bool {
        let threshold = u64::from(self.settings.panic_threshold_percent);
        if threshold == 0 {
            return false;
        }
        let (mut eligible, mut healthy) = (0u64, 0u64);
        for b in table.backends() {
            if b.core.is_draining() {
                continue;
            }
            eligible += 1;
            if b.core.health.is_available(now_ms) {
                healthy += 1;
            }
        }
        eligible > 0 && healthy * 100 < threshold * eligible
    }

    /// Whether passive ejection may take one more of `table`'s backends out at
    /// `now_ms`: at most `health.max_ejection_percent` of them, but always one.
    pub(crate) fn may_eject(&self, table: &Table, now_ms: u64) -> bool {
        let backends = table.backends();
        let ejected = backends
            .iter()
            .filter(|b| b.core.health.is_ejected(now_ms))
            .count() as u64;
        ejected == 0
            || (ejected + 1) * 100
                <= u64::from(self.settings.max_ejection_percent) * backends.len() as u64
    }

    /// The gauges `/metrics` shows.
    pub(crate) fn gauges(&self, table: &Table, now_ms: u64) -> Gauges {
        Gauges {
            client_connections: self.connections.load(Relaxed),
            max_connections: self.max_connections.load(Relaxed),
            panic: self.in_panic(table, now_ms),
            store_outage: self.store_outage.load(Relaxed),
        }
    }

    /// Whether every backend reports its store unavailable.
    pub(crate) fn store_outage(&self) -> bool {
        self.store_outage.load(Relaxed)
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
    /// Request ids handed out by this worker.
    request_ids: AtomicU64,
    /// Log lines that could repeat thousands of times a second.
    pub(crate) throttles: Throttles,
    /// Response timers of finished attempts, for the next ones.
    pub(crate) timers: Timers,
}

/// One worker's throttled log lines (see [`Throttle`]).
#[derive(Debug, Default)]
pub(crate) struct Throttles {
    /// Accepts failing (out of file descriptors).
    pub(crate) accept: Throttle,
    /// Requests refused by the balancer's own limits.
    pub(crate) internal: Throttle,
    /// Connections refused at the caps.
    pub(crate) refused: Throttle,
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
            request_ids: AtomicU64::new(0),
            throttles: Throttles::default(),
            timers: Timers::default(),
        }
    }

    /// A new request id, unique in this process and unlikely across processes:
    /// `<process prefix>-<worker>-<counter>`, all hexadecimal.
    pub(crate) fn request_id(&self) -> HeaderValue {
        let n = self.request_ids.fetch_add(1, Relaxed);
        let id = format!(
            "{:08x}-{:x}-{n:x}",
            self.shared.request_id_prefix, self.index
        );
        HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("unknown"))
    }

    /// This worker's metrics shard.
    pub(crate) fn counters(&self) -> &Counters {
        self.shared.metrics.shard(self.index)
    }
}
