//! # bistro-balancer: the manager who assigns a waiter
//!
//! An HTTP/1.1 reverse proxy for bistro's waiters. In *stateful* mode a diner's notes
//! live in one waiter's memory, so the balancer must keep sending that diner to the same
//! waiter (sticky sessions), and must say so clearly when that waiter is gone. In
//! *stateless* mode any waiter will do, and the balancer spreads load freely.
//!
//! ## A request's path
//!
//! ```text
//! diner ──► worker thread (accept, hyper server)
//!             │ route: sticky? ── affinity cookie: valid? ── pinned backend available?
//!             │                                      └─ lost: strict 503 │ redispatch
//!             │ otherwise: strategy.select(accept = up ∧ ¬ejected ∧ ¬draining)
//!             ▼
//!           own pool of keep-alive connections ──► waiter
//!             ▲ retry: never-sent → elsewhere; sent → only idempotent / Idempotency-Key
//!             │ response: learn mode, count 5xx, issue cookie, stream body back;
//!             └ the connection returns to the pool when the body ends
//! ```
//!
//! Modules, one concept each: [`config`] (what can be configured), `spec` (one backend
//! and the `--backend` flag), `strategy` (round robin, smooth weighted round robin,
//! least connections, power of two choices, consistent hashing; all behind one public
//! trait, [`Selection`], with an accept filter, so a [`CustomStrategy`] can come from
//! outside), `clock` (the time every decision reads; a [`ManualClock`] moves it in
//! tests), `affinity` (HMAC-signed tokens), `route` (per-path
//! stickiness), `target` (affinity resolved or a backend selected), `health` and
//! `checker` (passive ejection, active checks), `table` (the live backend set),
//! `framing` (ambiguous requests), `pool`, `body` and `forward` (upstream connections
//! and one attempt), `retry` (when, and the budget), `proxy` (the request path),
//! `admin` (and `plan`: what an admin change would move; `dashboard`: the live page on the
//! admin listener), `metrics`, `server`
//! (thread-per-core workers, limits, graceful drain), and `tcp`: a layer-4 proxy to
//! the waiters' line-protocol ports, one backend per connection, sharing the
//! strategies and health state (run it with [`serve`]).
//!
//! ## Running it
//!
//! The caller binds; the library serves. [`run_blocking`] is what a CLI's plain `main`
//! calls: it makes a small runtime for the control plane (admin API, health checks,
//! the shutdown future) and starts [`BalancerConfig::workers`] proxy threads, each with
//! its own current-thread runtime (thread-per-core). [`run`] does the same from inside
//! an existing runtime. Both return after `shutdown` resolves and in-flight requests
//! finished (or the grace period passed).
//!
//! ## Shutdown
//!
//! One [`CancellationToken`] tree says "stop":
//!
//! ```text
//! root (cancelled when `shutdown` resolves, a worker fails, or `serve` is dropped)
//! ├─ HTTP proxy ── one per worker: accept loop, TLS handshakes, drain ── pool sweeper
//! ├─ health checks (GET /readyz)
//! ├─ admin API: accept loop, connections ── dashboard event streams
//! └─ TCP proxy ─┬─ accept loop, then the tunnels' drain
//!               └─ connect checks
//! ```
//!
//! The root is cancelled as a whole, so every component hears it at once; then the
//! workers drain their connections within `shutdown_grace_ms` (the TCP proxy its
//! tunnels alongside), and `serve` returns once every task has ended. Each component
//! has a token of its own under the root, so that one can be stopped without the rest.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = bistro_balancer::BalancerConfig::from_toml(r#"
//!     [[backends]]
//!     id = "w1"
//!     address = "127.0.0.1:7001"
//! "#)?;
//! let listener = std::net::TcpListener::bind("127.0.0.1:8080")?;
//! let admin = std::net::TcpListener::bind("127.0.0.1:8081")?;
//! let shutdown = async {
//!     if let Err(e) = tokio::signal::ctrl_c().await {
//!         eprintln!("cannot listen for ctrl-c ({e}); stopping");
//!     }
//! };
//! bistro_balancer::run_blocking(listener, Some(admin), config, shutdown)?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod admin;
mod affinity;
mod backend;
mod body;
mod checker;
mod client_io;
mod client_ip;
mod clock;
pub mod config;
mod dashboard;
mod drain;
mod error;
mod fd_limit;
mod forward;
mod framing;
mod h1;
mod headers;
mod health;
mod metrics;
mod moves;
mod per_ip;
mod plan;
mod pool;
mod problem;
mod proxy;
mod retry;
mod route;
mod server;
mod slots;
mod spec;
mod state;
mod strategy;
mod table;
mod target;
mod tcp;
mod throttle;
mod timers;
mod tls;

pub use backend::Backend;
pub use clock::{Clock, ManualClock};
pub use config::{
    AFFINITY_KEY_ENV, AdminConfig, AffinityConfig, BalancerConfig, BalancingConfig, Cidr,
    ClientConfig, HashKey, HealthConfig, LostPolicy, ResendPolicy, RetryConfig, RouteConfig,
    Stickiness, StrategyKind, TcpConfig, TcpStrategy, TlsConfig, UpstreamConfig,
};
pub use error::{BalancerError, ConfigError, FramingError, Origin, ProxyError, RetrySafety};
pub use fd_limit::{FdLimit, fd_limit, raise_fd_limit};
pub use h1::UpstreamError;
pub use problem::PROBLEM_BASE;
pub use spec::{BackendSpec, MAX_WEIGHT, Mode, parse_backend_flag, resolve_address};
pub use strategy::{CustomStrategy, Pick, Selection};
pub use tls::loopback::{LoopbackCerts, write_loopback_certs};
pub use tls::{CertInfo, TlsCerts, TlsError};

use server::Exit;
use state::Shared;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Runs the proxy on `listener` (and the admin API on `admin`, if any) until `shutdown`
/// resolves, then drains in-flight requests and returns.
///
/// Starts [`BalancerConfig::effective_workers`] proxy threads, each serving a clone of
/// `listener` (one socket, one accept queue); the admin API and health checks run on the
/// caller's runtime. Must be called from within a tokio runtime with I/O and timers.
///
/// # Errors
/// [`BalancerError`] when the configuration is invalid, the admin API would be exposed
/// on a non-loopback address without a token, a listener cannot be prepared, or a
/// worker dies.
pub async fn run(
    listener: TcpListener,
    admin: Option<TcpListener>,
    config: BalancerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BalancerError> {
    let workers = config.effective_workers();
    let mut listeners = Vec::with_capacity(workers);
    for _ in 1..workers {
        listeners.push(listener.try_clone().map_err(|source| BalancerError::Io {
            what: "could not clone the listener for a worker",
            source,
        })?);
    }
    listeners.insert(0, listener);
    run_on(listeners, admin, config, shutdown).await
}

/// Like [`run`], with one listener per worker (for example from [`bind_reuseport`], so
/// the kernel spreads new connections over the workers). `config.workers` is ignored:
/// there is one worker per listener.
///
/// # Errors
/// See [`run`].
pub async fn run_on(
    listeners: Vec<TcpListener>,
    admin: Option<TcpListener>,
    config: BalancerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BalancerError> {
    let listeners = Listeners {
        proxy: listeners,
        admin,
        tcp: None,
        tls: None,
    };
    serve(listeners, config, shutdown).await
}

/// Everything a balancer serves on; the caller binds them all.
#[derive(Debug)]
pub struct Listeners {
    /// The HTTP proxy: one listener per worker thread (at least one).
    pub proxy: Vec<TcpListener>,
    /// The admin API, if any.
    pub admin: Option<TcpListener>,
    /// The layer-4 proxy to [`BalancerConfig::tcp`]'s backends, if any.
    pub tcp: Option<TcpListener>,
    /// The certificate the proxy listeners serve when [`BalancerConfig::tls`] is on.
    /// Load it with [`TlsCerts::load`] and keep a clone to [`TlsCerts::reload`] it (on
    /// `SIGHUP`, say); `None` with TLS configured loads it from the configured files.
    pub tls: Option<TlsCerts>,
}

/// Runs the HTTP proxy, the admin API and (with a TCP listener) the TCP proxy until
/// `shutdown` resolves, then drains both proxies and returns. See [`run_on`].
///
/// # Errors
/// See [`run`]; also when a TCP listener is given but `config.tcp` has no backends.
pub async fn serve(
    listeners: Listeners,
    config: BalancerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BalancerError> {
    let Listeners {
        proxy: listeners,
        admin,
        tcp,
        tls,
    } = listeners;
    config.validate()?;
    if listeners.is_empty() {
        return Err(ConfigError::invalid("listeners", "at least one listener is needed").into());
    }
    if tcp.is_some() && config.tcp.backends.is_empty() {
        return Err(ConfigError::invalid(
            "tcp.backends",
            "a TCP listener needs at least one TCP backend (--tcp-backend ID=HOST:PORT)",
        )
        .into());
    }
    let io = |what: &'static str| move |source| BalancerError::Io { what, source };
    if let Some(admin) = &admin {
        let addr = admin
            .local_addr()
            .map_err(io("could not read the admin listener's address"))?;
        if !addr.ip().is_loopback() && config.admin.token.is_none() {
            return Err(BalancerError::AdminTokenRequired { addr });
        }
        admin
            .set_nonblocking(true)
            .map_err(io("could not make the admin listener non-blocking"))?;
    }
    for listener in listeners.iter().chain(&tcp) {
        listener
            .set_nonblocking(true)
            .map_err(io("could not make the listener non-blocking"))?;
    }
    let tls = match (tls, config.tls.enabled()) {
        (Some(certs), true) => Some(certs),
        (None, true) => Some(TlsCerts::load(&config.tls)?),
        (Some(_), false) => {
            return Err(ConfigError::invalid(
                "tls",
                "certificates were given but tls.cert and tls.key are not set",
            )
            .into());
        }
        (None, false) => None,
    };
    let key = affinity_key(&config);
    let workers = listeners.len();
    let mut shared = Shared::new(config, &key, workers);
    if let Some(certs) = tls {
        shared = shared.with_tls(certs);
    }
    let shared = Arc::new(shared);
    // The balancer's shutdown tree (see the crate docs): `shutdown` or a worker's
    // failure cancels the root, and with it every component at once; each component
    // has a child of its own, so that one can also be stopped alone. The guard cancels
    // the tree if this future is dropped or unwinds first (a dropped token, unlike a
    // dropped channel sender, stops nothing): the workers run on threads of their own
    // and would otherwise serve on.
    let root = CancellationToken::new();
    let _dropped = root.clone().drop_guard();
    let proxy_stop = root.child_token();
    let checks_stop = root.child_token();
    let admin_stop = root.child_token();
    let tcp_stop = root.child_token();
    let (exit_tx, mut exits) = mpsc::unbounded_channel();
    fit_connections_to_fds(&shared);
    let mut started = 0;
    let mut failure = None;
    let runtimes = listeners
        .iter()
        .map(|_| server::runtime())
        .collect::<Result<Vec<_>, _>>()?;
    for ((index, listener), rt) in listeners.into_iter().enumerate().zip(runtimes) {
        match server::spawn(
            index,
            rt,
            listener,
            shared.clone(),
            proxy_stop.child_token(),
            exit_tx.clone(),
        ) {
            Ok(()) => started += 1,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(exit_tx);
    let checker = tokio::spawn(checker::run(shared.clone(), checks_stop));
    let tcp_proxy = tcp.map(|listener| {
        let proxy = Arc::new(tcp::TcpProxy::new(&shared.config.tcp, shared.clone()));
        let grace = config::ms(shared.config.shutdown_grace_ms);
        let tasks = [
            tokio::spawn(tcp::serve(
                listener,
                proxy.clone(),
                tcp_stop.child_token(),
                grace,
            )),
            tokio::spawn(tcp::run_checker(proxy.clone(), tcp_stop.child_token())),
        ];
        (proxy, tasks)
    });
    let admin = admin.map(|l| {
        let proxy = tcp_proxy.as_ref().map(|(p, _)| p.clone());
        tokio::spawn(admin::serve(l, shared.clone(), proxy, admin_stop))
    });
    if failure.is_none() {
        tracing::info!(
            workers,
            backends = shared.config.backends.len(),
            tcp_backends = if tcp_proxy.is_some() {
                shared.config.tcp.backends.len()
            } else {
                0
            },
            "balancer running"
        );
        tokio::select! {
            () = shutdown => tracing::info!("shutting down: finishing in-flight requests"),
            Some(exit) = exits.recv() => {
                started -= 1;
                failure = Some(exit.result.err().unwrap_or(BalancerError::WorkerPanicked(exit.index)));
            }
        }
    }
    root.cancel();
    for _ in 0..started {
        match exits.recv().await {
            Some(Exit {
                result: Err(e),
                index,
            }) => {
                tracing::error!(worker = index, error = %e, "proxy worker failed");
                failure.get_or_insert(e);
            }
            Some(_) => {}
            None => break,
        }
    }
    let tcp_tasks = tcp_proxy.into_iter().flat_map(|(_, tasks)| tasks);
    for task in std::iter::once(checker).chain(admin).chain(tcp_tasks) {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a balancer task panicked");
        }
    }
    failure.map_or(Ok(()), Err)
}

/// [`run`] on a runtime of its own: call it from a plain `fn main`. The runtime (one
/// thread, the caller's) carries the control plane and polls `shutdown`; the proxy
/// workers get their own threads.
///
/// # Errors
/// See [`run`]; also when the runtime cannot be built.
pub fn run_blocking(
    listener: TcpListener,
    admin: Option<TcpListener>,
    config: BalancerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BalancerError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| BalancerError::Io {
            what: "could not start the control runtime",
            source,
        })?
        .block_on(run(listener, admin, config, shutdown))
}

/// Binds `n` listeners to `addr` with `SO_REUSEPORT`, for [`run_on`]: the kernel then
/// spreads incoming connections over the workers by hashing their addresses.
///
/// # Errors
/// The socket error when a socket cannot be created, configured or bound.
pub fn bind_reuseport(addr: SocketAddr, n: usize) -> std::io::Result<Vec<TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut listeners = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener: TcpListener = socket.into();
        // With port 0, the first socket picks the port and the others join it.
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Lowers the client-connection cap to what the file-descriptor limit can hold, keeping
/// a share of the descriptors for upstream connections, health checks and logs, so the
/// cap (a clear `503`) is met before the limit (an `EMFILE`) is.
fn fit_connections_to_fds(shared: &Shared) {
    let configured = shared.config.client.max_connections;
    let Some(limit) = fd_limit().map(|l| l.soft) else {
        return;
    };
    let headroom = (limit / 4).min(2048);
    let fits = usize::try_from(limit.saturating_sub(headroom))
        .unwrap_or(usize::MAX)
        .max(1);
    if fits < configured {
        tracing::warn!(
            configured,
            fd_limit = limit,
            cap = fits,
            "client.max_connections lowered to fit the file-descriptor limit (raise `ulimit -n` to hold more)"
        );
        shared
            .max_connections
            .store(fits, std::sync::atomic::Ordering::Relaxed);
    }
    // Refused sockets linger on descriptors too: they get half the headroom.
    let lingering = usize::try_from(headroom / 2).unwrap_or(usize::MAX).max(1);
    shared
        .max_lingering
        .fetch_min(lingering, std::sync::atomic::Ordering::Relaxed);
}

/// The configured affinity key, or a random one (with a warning).
fn affinity_key(config: &BalancerConfig) -> Vec<u8> {
    if let Some(key) = &config.affinity.key {
        return key.as_bytes().to_vec();
    }
    tracing::warn!(
        "no affinity key configured (affinity.key or {AFFINITY_KEY_ENV}); using a random key: \
         balancer replicas will not accept each other's cookies, and a restart unpins every diner"
    );
    let mut key = vec![0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut key);
    key
}
