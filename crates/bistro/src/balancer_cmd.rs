//! `bistro balancer`: the manager in front of the waiters.
//!
//! The library (`bistro-balancer`) owns the proxy; this module turns flags, `BISTRO_*`
//! variables and the config file's `[balancer]` table into its `BalancerConfig`, binds
//! the listeners, and runs it until SIGINT/SIGTERM.

use anyhow::{Context, bail};
use bistro_balancer::{
    BackendSpec, BalancerConfig, HashKey, Listeners, LostPolicy, RouteConfig, Stickiness,
    StrategyKind, TcpStrategy,
};
use clap::{Args, ValueEnum};
use std::net::SocketAddr;

/// Balancing strategy names on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyFlag {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    PowerOfTwoChoices,
    ConsistentHash,
}

impl From<StrategyFlag> for StrategyKind {
    fn from(s: StrategyFlag) -> StrategyKind {
        match s {
            StrategyFlag::RoundRobin => StrategyKind::RoundRobin,
            StrategyFlag::WeightedRoundRobin => StrategyKind::WeightedRoundRobin,
            StrategyFlag::LeastConnections => StrategyKind::LeastConnections,
            StrategyFlag::PowerOfTwoChoices => StrategyKind::PowerOfTwoChoices,
            StrategyFlag::ConsistentHash => StrategyKind::ConsistentHash,
        }
    }
}

/// TCP (layer-4) balancing strategies on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TcpStrategyFlag {
    RoundRobin,
    LeastConnections,
    /// On the client IP: a client keeps reaching the same waiter across reconnects
    ConsistentHash,
}

impl From<TcpStrategyFlag> for TcpStrategy {
    fn from(s: TcpStrategyFlag) -> TcpStrategy {
        match s {
            TcpStrategyFlag::RoundRobin => TcpStrategy::RoundRobin,
            TcpStrategyFlag::LeastConnections => TcpStrategy::LeastConnections,
            TcpStrategyFlag::ConsistentHash => TcpStrategy::ConsistentHash,
        }
    }
}

/// Stickiness on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StickyFlag {
    /// Sticky for stateful backends, not for stateless ones
    Auto,
    On,
    Off,
}

/// What to do when the sticky backend is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LostFlag {
    /// strict for stateful backends, redispatch for stateless ones
    Auto,
    /// 503 session-lost
    Strict,
    /// another backend, cookie re-issued
    Redispatch,
}

/// Options of `bistro balancer`. The full set of settings (timeouts, health checks,
/// retries, routes) lives in the config file's `[balancer]` table; flags override it.
#[derive(Debug, Clone, Default, Args)]
pub struct BalancerOpts {
    /// Address diners connect to [default: 127.0.0.1:8080]
    #[arg(long, env = "BISTRO_BALANCER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin API address (backends, drain, metrics) [default: 127.0.0.1:8081]
    #[arg(long, env = "BISTRO_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Run without the admin API
    #[arg(long)]
    pub no_admin: bool,
    /// Bearer token for the admin API (required when it binds a non-loopback address)
    #[arg(long, env = "BISTRO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The waiters' group secret (their --peer-secret), so a drain can hand their sessions off
    #[arg(long, env = "BISTRO_PEER_SECRET", hide_env_values = true)]
    pub peer_secret: Option<String>,
    /// `bistro up`'s process control (http://127.0.0.1:PORT), so the admin API and its dashboard can kill, pause, resume and restart the waiters
    #[arg(long, env = "BISTRO_CONTROL_URL", value_name = "URL")]
    pub control_url: Option<String>,
    /// A backend: ID=HOST:PORT, optionally followed by ,weight=N and ,mode=stateful|stateless; repeat for more
    #[arg(long = "backend", value_name = "ID=HOST:PORT")]
    pub backends: Vec<String>,
    /// How a backend is chosen for a request without affinity [default: least-connections]
    #[arg(long, value_enum)]
    pub strategy: Option<StrategyFlag>,
    /// Key for consistent-hash: client_ip, header:NAME or cookie:NAME
    #[arg(long)]
    pub hash_key: Option<String>,
    /// Sticky sessions on every path [default: auto]
    #[arg(long, value_enum)]
    pub sticky: Option<StickyFlag>,
    /// When the sticky backend is down, ejected or removed [default: auto]
    #[arg(long, value_enum)]
    pub on_session_lost: Option<LostFlag>,
    /// Key signing affinity cookies (at least 16 bytes); replicas must share it
    #[arg(long, env = "BISTRO_AFFINITY_KEY", hide_env_values = true)]
    pub affinity_key: Option<String>,
    /// Proxy worker threads (0 = one per core)
    #[arg(long, env = "BISTRO_BALANCER_WORKERS")]
    pub workers: Option<usize>,
    /// Most client connections open at once; beyond it 503 balancer-busy [default: 20000]
    #[arg(long, env = "BISTRO_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most connections from one client IP, 0 for no limit; beyond it 429 [default: 1000]
    #[arg(long, env = "BISTRO_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Session-creating requests per second and client IP, 0 for no limit; beyond it 429 [default: 20]
    #[arg(long, env = "BISTRO_SESSION_RATE_PER_IP")]
    pub session_rate_per_ip: Option<u32>,
    /// A proxy (address or CIDR block) whose X-Forwarded-For is believed; repeat for more
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<bistro_balancer::Cidr>,
    /// Also proxy TCP connections (the waiters' line protocol) from this address [default: off]
    #[arg(long, env = "BISTRO_BALANCER_TCP_LISTEN")]
    pub tcp_listen: Option<SocketAddr>,
    /// A TCP backend: ID=HOST:PORT[,weight=N]; an ID shared with a --backend reuses its health; repeat for more
    #[arg(long = "tcp-backend", value_name = "ID=HOST:PORT")]
    pub tcp_backends: Vec<String>,
    /// How a TCP connection's backend is chosen [default: least-connections]
    #[arg(long, value_enum)]
    pub tcp_strategy: Option<TcpStrategyFlag>,
    /// Serve diners TLS with this PEM certificate chain (leaf first); reloaded on SIGHUP
    #[arg(
        long,
        env = "BISTRO_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's PEM private key
    #[arg(
        long,
        env = "BISTRO_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// Send Strict-Transport-Security with this max-age (seconds) under TLS [default: off]
    #[arg(long, value_name = "SECS")]
    pub hsts_max_age: Option<u64>,
    /// Offer only HTTP/1.1 under TLS (no h2 by ALPN)
    #[arg(long)]
    pub no_http2: bool,
}

impl BalancerOpts {
    /// Builds the balancer's config: the file's `[balancer]` table, then the flags.
    pub fn resolve(&self, file: Option<&BalancerConfig>) -> anyhow::Result<BalancerConfig> {
        let mut config = file.cloned().unwrap_or_default();
        if !self.backends.is_empty() {
            config.backends = self
                .backends
                .iter()
                .map(|b| {
                    bistro_balancer::parse_backend_flag(b).with_context(|| format!("--backend {b}"))
                })
                .collect::<anyhow::Result<Vec<BackendSpec>>>()?;
        }
        if !self.tcp_backends.is_empty() {
            config.tcp.backends = self
                .tcp_backends
                .iter()
                .map(|b| {
                    bistro_balancer::parse_backend_flag(b)
                        .with_context(|| format!("--tcp-backend {b}"))
                })
                .collect::<anyhow::Result<Vec<BackendSpec>>>()?;
        }
        if let Some(s) = self.tcp_strategy {
            config.tcp.strategy = s.into();
        }
        if let Some(s) = self.strategy {
            config.balancing.strategy = s.into();
        }
        if let Some(k) = &self.hash_key {
            config.balancing.hash_key = k.parse::<HashKey>().context("--hash-key")?;
        }
        if self.sticky.is_some() || self.on_session_lost.is_some() {
            let sticky = match self.sticky {
                Some(StickyFlag::On) => Stickiness::On,
                Some(StickyFlag::Off) => Stickiness::Off,
                _ => Stickiness::Auto,
            };
            let on_session_lost = match self.on_session_lost {
                Some(LostFlag::Strict) => LostPolicy::Strict,
                Some(LostFlag::Redispatch) => LostPolicy::Redispatch,
                _ => LostPolicy::Auto,
            };
            // A catch-all route; routes from the file with longer prefixes still win.
            config.routes.retain(|r| r.prefix != "/");
            config.routes.push(RouteConfig {
                prefix: "/".into(),
                sticky,
                on_session_lost,
            });
        }
        if let Some(key) = &self.affinity_key {
            config.affinity.key = Some(key.clone());
        }
        config.apply_env();
        if let Some(token) = &self.admin_token {
            config.admin.token = Some(token.clone());
        }
        if let Some(secret) = &self.peer_secret {
            config.admin.peer_secret = Some(secret.clone());
        }
        if let Some(url) = &self.control_url {
            config.admin.control_url = Some(url.clone());
        }
        if let Some(w) = self.workers {
            config.workers = w;
        }
        if let Some(n) = self.max_connections {
            config.client.max_connections = n;
        }
        if let Some(n) = self.max_connections_per_ip {
            config.client.max_connections_per_ip = n;
        }
        if let Some(n) = self.session_rate_per_ip {
            config.client.session_rate_per_ip = n;
        }
        if !self.trusted_proxies.is_empty() {
            config.client.trusted_proxies = self.trusted_proxies.clone();
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls.cert = Some(cert.clone());
            config.tls.key = Some(key.clone());
        }
        if let Some(age) = self.hsts_max_age {
            config.tls.hsts_max_age_secs = age;
        }
        if self.no_http2 {
            config.tls.http2 = false;
        }
        if config.backends.is_empty() && config.tcp.backends.is_empty() {
            bail!(
                "no backends: give at least one --backend ID=HOST:PORT (or [[balancer.backends]] in the config file)"
            );
        }
        if self.tcp_listen.is_some() && config.tcp.backends.is_empty() {
            bail!(
                "--tcp-listen needs at least one --tcp-backend ID=HOST:PORT (or [[balancer.tcp.backends]] in the config file)"
            );
        }
        config.validate().context("invalid balancer settings")?;
        Ok(config)
    }
}

/// Runs the balancer until SIGINT/SIGTERM.
pub async fn run(
    opts: BalancerOpts,
    file: Option<&BalancerConfig>,
    ready_json: bool,
) -> anyhow::Result<()> {
    let config = opts.resolve(file)?;
    crate::fd_limit::raise("balancer");
    let shutdown = crate::signal::shutdown_signal();
    let addr = opts
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let proxy = bind_proxy(addr, config.effective_workers())?;
    let admin = if opts.no_admin {
        None
    } else {
        let admin_addr = opts
            .admin_listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081)));
        Some(
            std::net::TcpListener::bind(admin_addr)
                .with_context(|| format!("cannot listen on {admin_addr} (admin)"))?,
        )
    };
    let tcp = match opts.tcp_listen {
        Some(tcp_addr) => Some(
            std::net::TcpListener::bind(tcp_addr)
                .with_context(|| format!("cannot listen on {tcp_addr} (--tcp-listen)"))?,
        ),
        None => None,
    };
    // Read now, so a bad file stops the start with its reason; kept to reload on SIGHUP.
    let tls = if config.tls.enabled() {
        let certs = bistro_balancer::TlsCerts::load(&config.tls).context("cannot serve TLS")?;
        reload_on_sighup(certs.clone())?;
        Some(certs)
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let local = proxy[0].local_addr()?;
    let ids: Vec<&str> = config.backends.iter().map(|b| b.id.as_str()).collect();
    // The TCP line comes first and never says "listening on http://", which tools
    // (bistro up, the lab) take as the HTTP address.
    if let Some(tcp) = &tcp {
        let tcp_ids: Vec<&str> = config.tcp.backends.iter().map(|b| b.id.as_str()).collect();
        tracing::info!(backends = ?tcp_ids, strategy = ?config.tcp.strategy, "balancer tcp proxy on tcp://{}", tcp.local_addr()?);
    }
    match &admin {
        Some(a) => {
            tracing::info!(backends = ?ids, "balancer listening on {scheme}://{local} admin on http://{}", a.local_addr()?)
        }
        None => tracing::info!(backends = ?ids, "balancer listening on {scheme}://{local}"),
    }
    if ready_json {
        bistro_supervise::announce(&bistro_proto::Ready {
            role: "balancer".into(),
            id: None,
            pid: std::process::id(),
            http: local,
            scheme: tls.is_some().then(|| "https".to_string()),
            tcp: tcp.as_ref().and_then(|l| l.local_addr().ok()),
            admin: admin.as_ref().and_then(|l| l.local_addr().ok()),
        });
    }
    let listeners = Listeners {
        proxy,
        admin,
        tcp,
        tls,
    };
    let served = bistro_balancer::serve(listeners, config, shutdown).await;
    served.context("the balancer failed")?;
    tracing::info!("balancer stopped");
    Ok(())
}

/// Reads the certificate files again on every `SIGHUP` (a renewal): new handshakes get
/// the new certificate, open connections keep theirs, and a pair that does not load
/// leaves the old one serving, with the reason logged.
fn reload_on_sighup(certs: bistro_balancer::TlsCerts) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match certs.reload() {
                Ok(info) => tracing::info!(
                    fingerprint = %info.sha256_fingerprint,
                    reloads = info.reloads,
                    "SIGHUP: TLS certificate reloaded"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: TLS certificate not reloaded; the one in use keeps serving"
                ),
            }
        }
    });
    Ok(())
}

/// The proxy's listeners: one `SO_REUSEPORT` socket per worker thread, so the kernel
/// spreads new connections evenly over the workers (by a hash of their addresses)
/// instead of whichever worker wakes first taking them from one shared queue, which
/// can leave one worker with most of a burst of connections and the other idle.
///
/// `SO_REUSEPORT` would also let a second balancer started by the same user on the
/// same port share it silently; a plain bind of the port first keeps that an error.
fn bind_proxy(addr: SocketAddr, workers: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        drop(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr}"))?,
        );
    }
    bistro_balancer::bind_reuseport(addr, workers)
        .with_context(|| format!("cannot listen on {addr}"))
}
