//! The [`Waiter`]: one order service's shared state, and the HTTP routes over it.
//!
//! Everything a request needs hangs off one `Arc`: the configuration, the store (wrapped
//! in [`Instrumented`] for per-operation timeouts and counters), the clock and the
//! metrics. Cloning a `Waiter` clones the `Arc`, so axum's handlers, the kitchen and the
//! sweeper all share one waiter.

use crate::clock::Clock;
use crate::config::WaiterConfig;
use crate::handlers::{actions, handoff, ops, orders, peer};
use crate::handoff::{HANDOFF_PATH, Handoff, PEER_HANDOFF_PATH};
use crate::metrics::Metrics;
use crate::middleware;
use crate::problem::Problem;
use crate::replication::{Replication, ReplicationConfig};
use crate::service::{Orders, ServiceError, SessionRate};
use axum::Router;
use axum::routing::{get, post};
use bistro_store::{Instrumented, MemoryStore, OrderStore, StoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// An order service: cheap to clone, all clones share one state.
#[derive(Clone)]
pub struct Waiter {
    inner: Arc<Inner>,
}

struct Inner {
    config: WaiterConfig,
    store: Instrumented,
    clock: Clock,
    metrics: Metrics,
    session_rate: Option<SessionRate>,
    replication: Option<Arc<Replication>>,
    handoff: Option<Arc<Handoff>>,
    /// `Bistro-Waiter`'s value, made once (`None`: the id is not a valid header value).
    id_header: Option<http::HeaderValue>,
    shutting_down: AtomicBool,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter")
            .field("id", &self.inner.config.id)
            .field("mode", &self.inner.config.mode)
            .field("store", &self.inner.store.kind())
            .finish_non_exhaustive()
    }
}

impl Waiter {
    /// A waiter over `store`, which it wraps in [`Instrumented`] with
    /// [`WaiterConfig::store_timeout`].
    pub fn new(config: WaiterConfig, store: Arc<dyn OrderStore>) -> Waiter {
        Waiter::build(config, store, None, None, Clock::new())
    }

    /// A stateful waiter over `store` (`config.mode` is set to
    /// [`Mode::Stateful`](crate::Mode)) that can hand its sessions to other waiters of
    /// a group sharing `secret`, when a balancer drains it with handoff (see
    /// [`handoff`](crate::handoff)).
    pub fn stateful_with_handoff(
        mut config: WaiterConfig,
        store: Arc<MemoryStore>,
        secret: String,
    ) -> Waiter {
        config.mode = crate::Mode::Stateful;
        let clock = Clock::new();
        let handoff = Arc::new(Handoff::new(
            &config.id,
            secret,
            Arc::clone(&store),
            config.handoff_timeout,
            clock.clone(),
        ));
        Waiter::build(config, store, None, Some(handoff), clock)
    }

    /// A replicated waiter (`config.mode` is set to [`Mode::Replicated`](crate::Mode)):
    /// its sessions live in `store`, and each is copied to a peer of `replication`
    /// before a change is acknowledged (see [`replication`](crate::replication)).
    pub fn replicated(
        mut config: WaiterConfig,
        store: Arc<MemoryStore>,
        replication: ReplicationConfig,
    ) -> Waiter {
        config.mode = crate::Mode::Replicated;
        let clock = Clock::new();
        let store_config = store.config().clone();
        let replication = Replication::start(
            &config.id,
            replication,
            Arc::clone(&store),
            &store_config,
            clock.clone(),
        );
        Waiter::build(config, store, Some(replication), None, clock)
    }

    fn build(
        config: WaiterConfig,
        store: Arc<dyn OrderStore>,
        replication: Option<Arc<Replication>>,
        handoff: Option<Arc<Handoff>>,
        clock: Clock,
    ) -> Waiter {
        let store = Instrumented::new(store, config.store_timeout);
        let session_rate = SessionRate::new(config.session_rate_per_sec, config.session_burst);
        let id_header = http::HeaderValue::from_str(&config.id).ok();
        if id_header.is_none() {
            tracing::warn!(id = %config.id, "the waiter id is not a valid header value; answers will not name it");
        }
        Waiter {
            inner: Arc::new(Inner {
                config,
                store,
                clock,
                metrics: Metrics::default(),
                session_rate,
                replication,
                handoff,
                id_header,
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    /// The replication, in replicated mode.
    pub fn replication(&self) -> Option<&Replication> {
        self.inner.replication.as_deref()
    }

    /// `Bistro-Waiter`'s value.
    pub(crate) fn id_header(&self) -> Option<&http::HeaderValue> {
        self.inner.id_header.as_ref()
    }

    /// The handoff, for a stateful waiter started with a group secret.
    pub fn handoff(&self) -> Option<&Handoff> {
        self.inner.handoff.as_deref()
    }

    /// The whole HTTP application; [`run`](crate::run) serves it, tests call it with
    /// `oneshot`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/menu", get(ops::menu))
            .route("/v1/orders", get(orders::list).post(orders::create))
            .route("/v1/orders/{id}", get(orders::get).patch(orders::patch))
            .route("/v1/orders/{id}/place", post(actions::place))
            .route("/v1/orders/{id}/cancel", post(actions::cancel))
            .route("/v1/orders/{id}/serve", post(actions::serve))
            .route("/v1/orders/{id}/pay", post(actions::pay))
            .route("/v1/waiter", get(ops::waiter_info))
            .route(crate::replication::link::PEER_PATH, post(peer::batch))
            .route(HANDOFF_PATH, get(handoff::list).post(handoff::moves))
            .route(PEER_HANDOFF_PATH, post(handoff::peer))
            .route("/healthz", get(ops::healthz))
            .route("/readyz", get(ops::readyz))
            .route("/metrics", get(ops::metrics))
            .route("/openapi.json", get(ops::openapi))
            .fallback(ops::not_found)
            .method_not_allowed_fallback(ops::method_not_allowed)
            // Identify every answer, count it, bound its time, and (replicated mode)
            // locate the session before the request and make it safe before the answer.
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                middleware::around,
            ))
            .with_state(self.clone())
    }

    /// The clock every `now` comes from.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The configuration.
    pub fn config(&self) -> &WaiterConfig {
        &self.inner.config
    }

    /// The (instrumented) store, e.g. for its operation counts. Orders are read and
    /// changed through [`Waiter::orders`], never on the store directly.
    pub fn store(&self) -> &Instrumented {
        &self.inner.store
    }

    /// The one write path: every read and change of an order (see [`service`](crate::service)).
    pub fn orders(&self) -> Orders<'_> {
        Orders::new(self)
    }

    pub(crate) fn session_rate(&self) -> Option<&SessionRate> {
        self.inner.session_rate.as_ref()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The problem answering a failure, with this waiter's advice for a missing
    /// session.
    pub(crate) fn problem(&self, err: &ServiceError) -> Problem {
        Problem::service(err, self.inner.config.mode, &self.inner.config.id)
    }

    /// The problem answering a failed store read outside the order operations
    /// (readiness, counts).
    pub(crate) fn store_problem(&self, err: StoreError) -> Problem {
        self.problem(&ServiceError::read(err))
    }

    /// 404 `unknown-session` as this waiter words it.
    pub(crate) fn unknown_session(&self) -> Problem {
        Problem::unknown_session(self.inner.config.mode, &self.inner.config.id)
    }

    /// Marks the waiter as draining: `/readyz` answers 503 from now on.
    pub(crate) fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }
}
