//! `bistro waiter`: run one waiter (the order service) until SIGINT/SIGTERM.
//!
//! HTTP always; with `--tcp-listen` also the line protocol on a second port. Both serve
//! the same [`Waiter`] and stop on the same signal: the one signal future is turned into
//! a watch channel that each server waits on.

use crate::config_file::ConfigFile;
use anyhow::{Context, bail};
use bistro_orders::{KitchenTimings, Menu};
use bistro_store::{StoreConfig, StoreUrl};
use bistro_waiter::replication::{Peer, ReplicationConfig};
use bistro_waiter::{HttpLimits, Mode, TcpConfig, Waiter, WaiterConfig};
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Options of `bistro waiter`. Every one can also come from `BISTRO_*` or the config file.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaiterOpts {
    /// This waiter's id, shown in `Bistro-Waiter` and used by the balancer [default: w1]
    #[arg(long, env = "BISTRO_ID")]
    pub id: Option<String>,
    /// Address to serve HTTP on [default: 127.0.0.1:7001]
    #[arg(long, env = "BISTRO_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// stateful (notes in this process's memory), stateless (notes in a central store) or replicated (in memory, with a copy on a --peer) [default: stateful]
    #[arg(long, env = "BISTRO_MODE")]
    pub mode: Option<Mode>,
    /// Central store for stateless mode: sqlite://PATH, postgres://..., redis://... [default: sqlite://bistro.db]
    #[arg(long, env = "BISTRO_STORE")]
    pub store: Option<String>,
    /// A custom menu (TOML, same format as crates/orders/menu.toml) [default: the built-in menu]
    #[arg(long, env = "BISTRO_MENU")]
    pub menu: Option<PathBuf>,
    /// Seconds an order cooks before it is ready [default: 3]
    #[arg(long, env = "BISTRO_KITCHEN_SECONDS")]
    pub kitchen_seconds: Option<f64>,
    /// Seconds a placed order waits before the kitchen starts it [default: 1]
    #[arg(long, env = "BISTRO_KITCHEN_QUEUE_SECONDS")]
    pub kitchen_queue_seconds: Option<f64>,
    /// Largest request body in bytes; larger bodies get 413 [default: 65536]
    #[arg(long, env = "BISTRO_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most sessions the store holds (exact in memory, checked every sweep on a central store); beyond it new diners get 503 [default: 100000]
    #[arg(long, env = "BISTRO_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    /// Most orders one session may hold; one more gets 409 too-many-orders [default: 100]
    #[arg(long, env = "BISTRO_MAX_ORDERS_PER_SESSION")]
    pub max_orders_per_session: Option<usize>,
    /// Most idempotency keys one session may hold at once; one more gets 409 [default: 1000]
    #[arg(long, env = "BISTRO_MAX_IDEMPOTENCY_KEYS_PER_SESSION")]
    pub max_idempotency_keys_per_session: Option<usize>,
    /// New sessions this waiter starts per second (bursts of twice as many); beyond it 503, 0 for no limit [default: 200]
    #[arg(long, env = "BISTRO_SESSION_RATE")]
    pub session_rate: Option<u32>,
    /// Idle seconds after which a session and its orders are forgotten [default: 1800]
    #[arg(long, env = "BISTRO_SESSION_TTL_SECONDS")]
    pub session_ttl_seconds: Option<u64>,
    /// Milliseconds a request may take before it is answered 503 timeout [default: 10000]
    #[arg(long, env = "BISTRO_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Milliseconds one store operation may take before it counts as an outage [default: 2000]
    #[arg(long, env = "BISTRO_STORE_TIMEOUT_MS")]
    pub store_timeout_ms: Option<u64>,
    /// Mark the session cookie `Secure` (when served behind HTTPS)
    #[arg(long, env = "BISTRO_COOKIE_SECURE")]
    pub cookie_secure: Option<bool>,
    /// Milliseconds a client may take to send a request head; then 408 and closed [default: 10000]
    #[arg(long, env = "BISTRO_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Milliseconds a keep-alive connection may wait for its next request; then closed [default: 60000]
    #[arg(long, env = "BISTRO_KEEP_ALIVE_IDLE_MS")]
    pub keep_alive_idle_ms: Option<u64>,
    /// Most HTTP connections served at once; more are answered 503 too-many-connections [default: 10000]
    // Not BISTRO_MAX_CONNECTIONS: that one is the balancer's, and `bistro up` hands its
    // environment to both.
    #[arg(long, env = "BISTRO_HTTP_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Largest request head (request line and headers) in bytes; larger ones are answered 431 request-header-too-large [default: 16384]
    // BISTRO_HTTP_*, as above: the balancer's own limit is `client.max_header_bytes`.
    #[arg(long, env = "BISTRO_HTTP_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Also serve the line protocol (docs/protocol.md) on this address, e.g. 127.0.0.1:7101 [default: off]
    #[arg(long, env = "BISTRO_TCP_LISTEN")]
    pub tcp_listen: Option<SocketAddr>,
    /// Seconds a TCP connection may stay silent before it is closed with BYE [default: 300]
    #[arg(long, env = "BISTRO_TCP_IDLE_TIMEOUT_SECS")]
    pub tcp_idle_timeout_secs: Option<u64>,
    /// Most TCP connections served at once; more are refused with ERR too-many-connections [default: 1024]
    #[arg(long, env = "BISTRO_TCP_MAX_CONNECTIONS")]
    pub tcp_max_connections: Option<usize>,
    /// Seconds a TCP reply may take to be written; a client that does not read is disconnected [default: 10]
    #[arg(long, env = "BISTRO_TCP_WRITE_TIMEOUT_SECS")]
    pub tcp_write_timeout_secs: Option<u64>,
    /// Most TCP connections from one address; more are refused with ERR too-many-connections [default: 64]
    #[arg(long, env = "BISTRO_TCP_MAX_CONNECTIONS_PER_IP")]
    pub tcp_max_connections_per_ip: Option<usize>,
    /// Replicated mode: another waiter of the group, as ID=HOST:PORT (its --id and --listen); repeat for each, or comma-separate in BISTRO_PEERS
    #[arg(long = "peer", env = "BISTRO_PEERS", value_delimiter = ',')]
    #[serde(default)]
    pub peers: Vec<String>,
    /// The group's shared secret (16+ characters), which peers and the balancer present: replicated mode needs it; a stateful waiter given one can hand its sessions to others when a balancer drains it with handoff
    #[arg(long, env = "BISTRO_PEER_SECRET", hide_env_values = true)]
    pub peer_secret: Option<String>,
    /// Replicated mode: milliseconds a peer may take to acknowledge a copy before it counts as down and another peer is used [default: 500]
    #[arg(long, env = "BISTRO_REPLICATION_TIMEOUT_MS")]
    pub replication_timeout_ms: Option<u64>,
}

/// The `[waiter]` table of the config file: the same options.
pub type WaiterFile = WaiterOpts;

impl WaiterOpts {
    /// Fills every option not given on the command line or environment from `file`.
    pub fn merged_with(self, file: &ConfigFile) -> WaiterOpts {
        let f = file.waiter.clone();
        WaiterOpts {
            id: self.id.or(f.id),
            listen: self.listen.or(f.listen),
            mode: self.mode.or(f.mode),
            store: self.store.or(f.store),
            menu: self.menu.or(f.menu),
            kitchen_seconds: self.kitchen_seconds.or(f.kitchen_seconds),
            kitchen_queue_seconds: self.kitchen_queue_seconds.or(f.kitchen_queue_seconds),
            max_body_bytes: self.max_body_bytes.or(f.max_body_bytes),
            max_sessions: self.max_sessions.or(f.max_sessions),
            max_orders_per_session: self.max_orders_per_session.or(f.max_orders_per_session),
            max_idempotency_keys_per_session: self
                .max_idempotency_keys_per_session
                .or(f.max_idempotency_keys_per_session),
            session_rate: self.session_rate.or(f.session_rate),
            session_ttl_seconds: self.session_ttl_seconds.or(f.session_ttl_seconds),
            request_timeout_ms: self.request_timeout_ms.or(f.request_timeout_ms),
            store_timeout_ms: self.store_timeout_ms.or(f.store_timeout_ms),
            cookie_secure: self.cookie_secure.or(f.cookie_secure),
            header_read_timeout_ms: self.header_read_timeout_ms.or(f.header_read_timeout_ms),
            keep_alive_idle_ms: self.keep_alive_idle_ms.or(f.keep_alive_idle_ms),
            max_connections: self.max_connections.or(f.max_connections),
            max_header_bytes: self.max_header_bytes.or(f.max_header_bytes),
            tcp_listen: self.tcp_listen.or(f.tcp_listen),
            tcp_idle_timeout_secs: self.tcp_idle_timeout_secs.or(f.tcp_idle_timeout_secs),
            tcp_max_connections: self.tcp_max_connections.or(f.tcp_max_connections),
            tcp_write_timeout_secs: self.tcp_write_timeout_secs.or(f.tcp_write_timeout_secs),
            tcp_max_connections_per_ip: self
                .tcp_max_connections_per_ip
                .or(f.tcp_max_connections_per_ip),
            peers: if self.peers.is_empty() {
                f.peers
            } else {
                self.peers
            },
            peer_secret: self.peer_secret.or(f.peer_secret),
            replication_timeout_ms: self.replication_timeout_ms.or(f.replication_timeout_ms),
        }
    }

    /// The listen address after defaults.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7001)))
    }

    /// The TCP front end's limits after defaults.
    pub fn tcp_config(&self) -> anyhow::Result<TcpConfig> {
        let defaults = TcpConfig::default();
        let idle = self
            .tcp_idle_timeout_secs
            .unwrap_or(defaults.idle_timeout.as_secs());
        let max = self.tcp_max_connections.unwrap_or(defaults.max_connections);
        let write = self
            .tcp_write_timeout_secs
            .unwrap_or(defaults.write_timeout.as_secs());
        let per_ip = self
            .tcp_max_connections_per_ip
            .unwrap_or(defaults.max_connections_per_ip);
        if idle == 0 || idle > 86_400 {
            bail!("--tcp-idle-timeout-secs must be 1 to 86400, got {idle}");
        }
        if max == 0 || max > 1_000_000 {
            bail!("--tcp-max-connections must be 1 to 1000000, got {max}");
        }
        if write == 0 || write > 3_600 {
            bail!("--tcp-write-timeout-secs must be 1 to 3600, got {write}");
        }
        if per_ip == 0 || per_ip > 1_000_000 {
            bail!(
                "--tcp-max-connections-per-ip must be 1 to 1000000, got {per_ip} (behind a TCP balancer, set it to --tcp-max-connections)"
            );
        }
        Ok(TcpConfig {
            idle_timeout: Duration::from_secs(idle),
            write_timeout: Duration::from_secs(write),
            max_connections: max,
            max_connections_per_ip: per_ip,
        })
    }

    /// The HTTP server's connection limits after defaults.
    pub fn http_limits(&self) -> anyhow::Result<HttpLimits> {
        let defaults = HttpLimits::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let header = self
            .header_read_timeout_ms
            .unwrap_or(ms(defaults.header_read_timeout));
        let idle = self
            .keep_alive_idle_ms
            .unwrap_or(ms(defaults.keep_alive_idle));
        let max = self.max_connections.unwrap_or(defaults.max_connections);
        if header == 0 || header > 600_000 {
            bail!("--header-read-timeout-ms must be 1 to 600000 (10 minutes), got {header}");
        }
        if idle == 0 || idle > 3_600_000 {
            bail!("--keep-alive-idle-ms must be 1 to 3600000 (an hour), got {idle}");
        }
        if max == 0 || max > 1_000_000 {
            bail!("--max-connections must be 1 to 1000000, got {max}");
        }
        let head = self.max_header_bytes.unwrap_or(defaults.max_header_bytes);
        if !(1024..=1024 * 1024).contains(&head) {
            bail!("--max-header-bytes must be 1024 to 1048576 (1 MiB), got {head}");
        }
        Ok(HttpLimits {
            header_read_timeout: Duration::from_millis(header),
            keep_alive_idle: Duration::from_millis(idle),
            max_connections: max,
            max_header_bytes: head,
        })
    }

    /// The group of a replicated waiter: `None` in the other modes.
    ///
    /// # Errors
    /// Peers given outside replicated mode, no peer or no secret in it, a malformed
    /// peer, a peer that is this waiter, or a timeout out of range.
    pub fn replication(&self) -> anyhow::Result<Option<ReplicationConfig>> {
        let mode = self.mode.unwrap_or(Mode::Stateful);
        if mode != Mode::Replicated {
            if !self.peers.is_empty() {
                bail!("--peer is for --mode replicated");
            }
            if mode == Mode::Stateless && self.peer_secret.is_some() {
                bail!(
                    "--peer-secret is for --mode replicated (the group) and --mode stateful (handoff); a stateless waiter's sessions are in its store already"
                );
            }
            return Ok(None);
        }
        let me = self.id.clone().unwrap_or_else(|| "w1".into());
        let mut peers: Vec<Peer> = Vec::new();
        for text in &self.peers {
            let peer: Peer = text.parse()?;
            if peer.id == me {
                bail!("--peer {text} names this waiter itself (--id {me}); list the others");
            }
            if peers.iter().any(|p| p.id == peer.id) {
                bail!("--peer {} is given twice", peer.id);
            }
            peers.push(peer);
        }
        if peers.is_empty() {
            bail!(
                "replicated mode needs its group: --peer ID=HOST:PORT for each other waiter (e.g. --peer w2=127.0.0.1:7002)"
            );
        }
        let Some(secret) = self.peer_secret.clone() else {
            bail!(
                "replicated mode needs --peer-secret (or BISTRO_PEER_SECRET): the same secret on every waiter of the group"
            );
        };
        check_secret(&secret)?;
        let timeout = self.replication_timeout_ms.unwrap_or(500);
        if !(1..=60_000).contains(&timeout) {
            bail!("--replication-timeout-ms must be 1 to 60000, got {timeout}");
        }
        let mut config = ReplicationConfig::new(peers, secret);
        config.timeout = Duration::from_millis(timeout);
        Ok(Some(config))
    }

    /// A stateful waiter's secret for handoff, when one is given.
    ///
    /// # Errors
    /// A secret that is too short.
    pub fn handoff_secret(&self) -> anyhow::Result<Option<String>> {
        if self.mode.unwrap_or(Mode::Stateful) != Mode::Stateful {
            return Ok(None);
        }
        match &self.peer_secret {
            Some(secret) => check_secret(secret).map(|()| Some(secret.clone())),
            None => Ok(None),
        }
    }

    /// Resolves defaults and validates into the waiter's and store's configs.
    pub fn resolve(&self) -> anyhow::Result<(WaiterConfig, StoreUrl, StoreConfig)> {
        let mode = self.mode.unwrap_or(Mode::Stateful);
        let store_url = match (&self.store, mode) {
            (Some(url), _) => StoreUrl::parse(url)?,
            (None, Mode::Stateful | Mode::Replicated) => StoreUrl::Memory,
            (None, Mode::Stateless) => StoreUrl::parse("sqlite://bistro.db")?,
        };
        match (mode, &store_url) {
            (Mode::Replicated, StoreUrl::Memory) => {}
            (Mode::Replicated, other) => bail!(
                "replicated mode keeps notes in the waiter's own memory and a copy on a peer; drop --store {other}"
            ),
            (Mode::Stateful, StoreUrl::Memory)
            | (Mode::Stateless, StoreUrl::Sqlite { .. })
            | (Mode::Stateless, StoreUrl::Postgres { .. })
            | (Mode::Stateless, StoreUrl::Redis { .. }) => {}
            (Mode::Stateful, other) => bail!(
                "stateful mode keeps notes in the waiter's own memory; drop --store {other} or use --mode stateless"
            ),
            (Mode::Stateless, StoreUrl::Memory) => bail!(
                "stateless mode needs a central store shared by the waiters: --store sqlite://PATH, postgres://... or redis://..."
            ),
        }
        let menu = match &self.menu {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read menu {}", path.display()))?;
                Menu::from_toml(&text)
                    .with_context(|| format!("menu {} is invalid", path.display()))?
            }
            None => Menu::default_menu(),
        };
        let secs = |v: Option<f64>, default: f64, name: &str| -> anyhow::Result<u64> {
            let v = v.unwrap_or(default);
            if !(0.0..=86_400.0).contains(&v) {
                bail!("--{name} must be between 0 and 86400 seconds, got {v}");
            }
            Ok((v * 1000.0).round() as u64)
        };
        let kitchen = KitchenTimings {
            cook_ms: secs(self.kitchen_seconds, 3.0, "kitchen-seconds")?,
            queue_ms: secs(self.kitchen_queue_seconds, 1.0, "kitchen-queue-seconds")?,
        };
        let positive = |v: u64, name: &str| -> anyhow::Result<u64> {
            if v == 0 {
                bail!("--{name} must be greater than 0");
            }
            Ok(v)
        };
        let max_body_bytes = positive(
            self.max_body_bytes.unwrap_or(64 * 1024) as u64,
            "max-body-bytes",
        )? as usize;
        let max_sessions =
            positive(self.max_sessions.unwrap_or(100_000) as u64, "max-sessions")? as usize;
        let ttl_secs = positive(
            self.session_ttl_seconds.unwrap_or(1800),
            "session-ttl-seconds",
        )?;
        let request_timeout = positive(
            self.request_timeout_ms.unwrap_or(10_000),
            "request-timeout-ms",
        )?;
        let store_timeout = positive(self.store_timeout_ms.unwrap_or(2_000), "store-timeout-ms")?;
        let max_orders_per_session = positive(
            self.max_orders_per_session.unwrap_or(100) as u64,
            "max-orders-per-session",
        )? as usize;
        let max_idempotency_keys_per_session = positive(
            self.max_idempotency_keys_per_session.unwrap_or(1_000) as u64,
            "max-idempotency-keys-per-session",
        )? as usize;
        let session_rate = self.session_rate.unwrap_or(200);

        let config = WaiterConfig {
            id: self.id.clone().unwrap_or_else(|| "w1".into()),
            mode,
            menu: Arc::new(menu),
            kitchen,
            max_body_bytes,
            request_timeout: Duration::from_millis(request_timeout),
            store_timeout: Duration::from_millis(store_timeout),
            cookie_secure: self.cookie_secure.unwrap_or(false),
            store_url: store_url.clone(),
            http: self.http_limits()?,
            max_sessions,
            max_orders_per_session,
            max_idempotency_keys_per_session,
            session_rate_per_sec: session_rate,
            session_burst: session_rate.saturating_mul(2),
            ..WaiterConfig::default()
        };
        if config.id.is_empty()
            || config.id.len() > 64
            || !config
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!(
                "--id must be 1-64 letters, digits, '-' or '_', got {:?}",
                config.id
            );
        }
        let store_config = StoreConfig {
            session_ttl_ms: ttl_secs * 1000,
            max_sessions,
            max_orders_per_session,
            max_idempotency_per_session: max_idempotency_keys_per_session,
            op_timeout: Duration::from_millis(store_timeout),
            ..StoreConfig::default()
        };
        Ok((config, store_url, store_config))
    }
}

fn check_secret(secret: &str) -> anyhow::Result<()> {
    if secret.len() < 16 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("--peer-secret must be at least 16 visible ASCII characters");
    }
    Ok(())
}

/// Runs a waiter until SIGINT/SIGTERM.
/// `ready_json`: print the readiness line (see [`bistro_supervise::announce`]) once listening.
pub async fn run(opts: WaiterOpts, ready_json: bool) -> anyhow::Result<()> {
    let (config, store_url, store_config) = opts.resolve()?;
    let replication = opts.replication()?;
    let handoff = opts.handoff_secret()?;
    crate::fd_limit::raise("waiter");
    let tcp_config = opts.tcp_config()?;
    let shutdown = crate::signal::shutdown_signal();
    let addr = opts.listen_addr();
    // A replicated waiter needs its memory store as such, to copy sessions from it.
    let memory = (replication.is_some() || handoff.is_some())
        .then(|| Arc::new(bistro_store::MemoryStore::new(store_config.clone())));
    let store = match &memory {
        Some(memory) => Arc::clone(memory) as Arc<dyn bistro_store::OrderStore>,
        None => bistro_store::open(&store_url, store_config)
            .await
            .with_context(|| format!("cannot open store {store_url}"))?,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let tcp_listener = match opts.tcp_listen {
        Some(tcp_addr) => Some(
            tokio::net::TcpListener::bind(tcp_addr)
                .await
                .with_context(|| format!("cannot listen on {tcp_addr} (--tcp-listen)"))?,
        ),
        None => None,
    };
    let local = listener.local_addr()?;
    // The TCP line comes first: tools that wait for "listening on http://" (bistro up,
    // the lab) then know both addresses once they see it.
    if let Some(tcp) = &tcp_listener {
        tracing::info!(id = %config.id, "tcp protocol on tcp://{}", tcp.local_addr()?);
    }
    tracing::info!(id = %config.id, mode = %config.mode, store = %store_url, "waiter listening on http://{local}");
    if ready_json {
        bistro_supervise::announce(&bistro_proto::Ready {
            role: "waiter".into(),
            id: Some(config.id.clone()),
            pid: std::process::id(),
            http: local,
            scheme: None,
            tcp: tcp_listener.as_ref().and_then(|l| l.local_addr().ok()),
            admin: None,
        });
    }
    let waiter = match (memory, replication) {
        (Some(memory), Some(replication)) => {
            tracing::info!(
                peers = %replication.peers.iter().map(|p| format!("{}={}", p.id, p.addr)).collect::<Vec<_>>().join(","),
                "replicating to peers"
            );
            drop(store);
            Waiter::replicated(config, memory, replication)
        }
        (Some(memory), None) if let Some(secret) = handoff => {
            drop(store);
            tracing::info!("sessions can be handed off to other waiters (--peer-secret given)");
            Waiter::stateful_with_handoff(config, memory, secret)
        }
        _ => Waiter::new(config, store),
    };

    // The process's shutdown tree: the signal cancels the root, each server waits on a
    // child of it (and builds its own tree below: drain, background tasks, connections).
    let root = tokio_util::sync::CancellationToken::new();
    let cancel = root.clone();
    tokio::spawn(async move {
        // Cancels however the wait ends: the signal's log line, written to a closed
        // stderr (`bistro up` was killed), panics in the subscriber, and a token, unlike
        // the sender of a watch, is not cancelled by being dropped.
        let _cancel = cancel.drop_guard();
        shutdown.await;
    });
    let stopped = |token: tokio_util::sync::CancellationToken| token.cancelled_owned();
    let http = bistro_waiter::run(listener, waiter.clone(), stopped(root.child_token()));
    match tcp_listener {
        Some(tcp) => {
            let tcp =
                bistro_waiter::run_tcp_with(tcp, waiter, tcp_config, stopped(root.child_token()));
            // Either failing ends both: the other is dropped.
            tokio::try_join!(
                async { http.await.context("the HTTP server failed") },
                async { tcp.await.context("the TCP protocol server failed") },
            )?;
        }
        None => http.await.context("the HTTP server failed")?,
    }
    tracing::info!("waiter stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits_default_to_the_library_defaults() {
        let opts = WaiterOpts::default();
        assert_eq!(opts.http_limits().unwrap(), HttpLimits::default());
        assert_eq!(opts.tcp_config().unwrap(), TcpConfig::default());
        let (config, _, _) = opts.resolve().unwrap();
        assert_eq!(config.http, HttpLimits::default());
    }

    #[test]
    fn connection_limits_are_taken_and_range_checked() {
        let opts = WaiterOpts {
            header_read_timeout_ms: Some(500),
            keep_alive_idle_ms: Some(90_000),
            max_connections: Some(20),
            max_header_bytes: Some(4096),
            tcp_write_timeout_secs: Some(3),
            tcp_max_connections_per_ip: Some(5),
            ..WaiterOpts::default()
        };
        let http = opts.http_limits().unwrap();
        assert_eq!(http.header_read_timeout, Duration::from_millis(500));
        assert_eq!(http.keep_alive_idle, Duration::from_secs(90));
        assert_eq!(http.max_connections, 20);
        assert_eq!(http.max_header_bytes, 4096);
        let tcp = opts.tcp_config().unwrap();
        assert_eq!(tcp.write_timeout, Duration::from_secs(3));
        assert_eq!(tcp.max_connections_per_ip, 5);

        let with = |set: fn(&mut WaiterOpts)| {
            let mut opts = WaiterOpts::default();
            set(&mut opts);
            opts
        };
        let bad = [
            (
                with(|o| o.header_read_timeout_ms = Some(0)),
                "--header-read-timeout-ms must be 1 to 600000",
            ),
            (
                with(|o| o.header_read_timeout_ms = Some(600_001)),
                "got 600001",
            ),
            (
                with(|o| o.keep_alive_idle_ms = Some(3_600_001)),
                "--keep-alive-idle-ms must be 1 to 3600000",
            ),
            (
                with(|o| o.max_connections = Some(0)),
                "--max-connections must be 1 to 1000000",
            ),
            (
                with(|o| o.max_header_bytes = Some(1023)),
                "--max-header-bytes must be 1024 to 1048576",
            ),
            (
                with(|o| o.tcp_write_timeout_secs = Some(0)),
                "--tcp-write-timeout-secs must be 1 to 3600",
            ),
            (
                with(|o| o.tcp_max_connections_per_ip = Some(0)),
                "--tcp-max-connections-per-ip must be 1 to 1000000",
            ),
        ];
        for (opts, needle) in bad {
            let err = match opts.http_limits().and_then(|_| opts.tcp_config()) {
                Ok(_) => panic!("{needle}: accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(needle), "{err}");
        }
        let resolved = WaiterOpts {
            max_connections: Some(0),
            ..WaiterOpts::default()
        }
        .resolve();
        assert!(resolved.is_err(), "resolve validates the HTTP limits too");
    }
}
