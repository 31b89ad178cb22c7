//! Accepting clients and splicing each one to a backend for the connection's life.
//!
//! A [`Semaphore`] caps the open tunnels: at the cap the loop stops accepting and the
//! kernel's backlog holds new clients (as in mini-redis); a layer-4 proxy has no
//! protocol in which to say "too busy", and a client in the backlog is served as soon
//! as a tunnel closes. On shutdown the loop stops accepting and waits up to the grace
//! period for the tunnels to end on their own (waiters that are stopping say `BYE` and
//! close), then cuts what is left.
//!
//! Bytes are spliced both ways as by [`tokio::io::copy_bidirectional`], half-closes
//! passed on, with two additions: once the *backend* has finished (its `BYE` or `OK
//! bye` sent, its socket closed), the client gets [`FIN_TIMEOUT`] to finish too before
//! the tunnel is cut. Without it a client that never closes (a forgotten `nc`) would
//! keep a half-open tunnel, and a connection slot, forever, and hold up a shutdown for
//! the whole grace period. And a tunnel in which neither side sent a byte for
//! `tcp.idle_timeout_ms` is cut (HAProxy's `timeout tunnel`): a client that went away
//! without closing, or a peer that stopped reading, does not hold a slot forever.

use super::TcpProxy;
use crate::backend::Backend;
use crate::health::DownReason;
use crate::strategy::{Pick, hash_bytes};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a client may keep sending after the backend closed its side.
pub(crate) const FIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `listener` (already non-blocking) until `shutdown` is cancelled, then drains
/// for `grace`.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    proxy: Arc<TcpProxy>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "could not register the tcp listener; the tcp proxy is unavailable");
            return;
        }
    };
    let limit = Arc::new(Semaphore::new(
        proxy.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut tunnels = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            Some(done) = tunnels.join_next(), if !tunnels.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a tcp tunnel task failed");
                }
                continue;
            }
        };
        let (client, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed; retrying shortly");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        proxy.accepted.fetch_add(1, Relaxed);
        let proxy = proxy.clone();
        tunnels.spawn(async move {
            tunnel(&proxy, client, peer).await;
            drop(permit);
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while tunnels.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = tunnels.len(),
            ?grace,
            "tcp tunnels still open after the grace period; closing them"
        );
        tunnels.shutdown().await;
    }
}

/// Counts a tunnel as open on its backend while it lives.
struct Open(Arc<crate::backend::Local>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.stats.active.fetch_sub(1, Relaxed);
    }
}

async fn tunnel(proxy: &TcpProxy, mut client: TcpStream, peer: SocketAddr) {
    if let Err(e) = client.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
    }
    let Some((backend, mut upstream)) = connect(proxy, peer.ip()).await else {
        proxy.unrouted.fetch_add(1, Relaxed);
        tracing::warn!(%peer, "no tcp backend could take the connection; closing it");
        return;
    };
    let local = backend.local(0).clone();
    local.stats.requests.fetch_add(1, Relaxed);
    local.stats.active.fetch_add(1, Relaxed);
    let _open = Open(local);
    tracing::debug!(%peer, backend = %backend.id(), "tcp tunnel open");
    match splice(&mut client, &mut upstream, proxy.idle_timeout).await {
        Some((sent, received)) => {
            tracing::debug!(%peer, backend = %backend.id(), sent, received, "tcp tunnel closed");
        }
        None => {
            proxy.idle_timeouts.fetch_add(1, Relaxed);
            tracing::debug!(%peer, backend = %backend.id(), timeout = ?proxy.idle_timeout, "tcp tunnel idle for too long; closed");
        }
    }
}

/// Copies from `rx` to `tx` until `rx` ends, noting the time of every chunk in `last`
/// (milliseconds since `start`).
async fn pump(
    rx: &mut (impl tokio::io::AsyncRead + Unpin),
    tx: &mut (impl tokio::io::AsyncWrite + Unpin),
    last: &AtomicU64,
    start: Instant,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 8 * 1024];
    let mut total = 0u64;
    loop {
        let n = rx.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        tx.write_all(&buf[..n]).await?;
        total += n as u64;
        last.store(start.elapsed().as_millis() as u64, Relaxed);
    }
}

/// Copies both ways until both are done, or until [`FIN_TIMEOUT`] after the backend
/// finished; returns the bytes sent to and received from the backend, or `None` when
/// neither side sent a byte for `idle` (the tunnel is then cut).
async fn splice(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    idle: Duration,
) -> Option<(u64, u64)> {
    let (mut client_rx, mut client_tx) = client.split();
    let (mut upstream_rx, mut upstream_tx) = upstream.split();
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let to_backend = async {
        let copied = pump(&mut client_rx, &mut upstream_tx, &last, start).await;
        finish(copied, upstream_tx.shutdown().await, "client to backend")
    };
    let to_client = async {
        let copied = pump(&mut upstream_rx, &mut client_tx, &last, start).await;
        finish(copied, client_tx.shutdown().await, "backend to client")
    };
    let both = async {
        tokio::pin!(to_backend, to_client);
        tokio::select! {
            received = &mut to_client => {
                let sent = tokio::time::timeout(FIN_TIMEOUT, &mut to_backend).await.unwrap_or(0);
                (sent, received)
            }
            sent = &mut to_backend => (sent, to_client.await),
        }
    };
    let watchdog = async {
        loop {
            let due = start + Duration::from_millis(last.load(Relaxed)) + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    };
    tokio::select! {
        done = both => Some(done),
        () = watchdog => None,
    }
}

/// The bytes one direction copied; an error just ends that direction (the peer reset
/// or went away), and is worth a debug line.
fn finish(copied: std::io::Result<u64>, shutdown: std::io::Result<()>, way: &str) -> u64 {
    if let Err(e) = shutdown {
        tracing::trace!(way, error = %e, "half-close failed (the peer is already gone)");
    }
    copied.unwrap_or_else(|e| {
        tracing::debug!(way, error = %e, "tcp tunnel direction ended with an error");
        0
    })
}

/// Why a connect to a TCP backend failed.
enum Failure {
    Refused,
    Timeout,
    Other(String),
}

impl Failure {
    fn describe(&self, timeout: Duration) -> String {
        match self {
            Failure::Refused => "connection refused".into(),
            Failure::Timeout => format!("no answer within {timeout:?}"),
            Failure::Other(e) => e.clone(),
        }
    }
}

/// Chooses a backend and connects, trying the next choice after a failed connect.
async fn connect(proxy: &TcpProxy, client: IpAddr) -> Option<(Backend, TcpStream)> {
    let key = match client {
        IpAddr::V4(ip) => hash_bytes(&ip.octets()),
        IpAddr::V6(ip) => hash_bytes(&ip.octets()),
    };
    let mut tried: Vec<Arc<str>> = Vec::new();
    loop {
        let now_ms = proxy.now_ms();
        let backend = {
            let table = proxy.registry.load();
            let mut accept =
                |b: &Backend| !tried.iter().any(|t| **t == *b.id()) && proxy.available(b, now_ms);
            table.select(Pick { worker: 0, key }, &mut accept)?.clone()
        };
        let addr = backend.core.addr;
        let failure = match tokio::time::timeout(proxy.connect_timeout, TcpStream::connect(addr))
            .await
        {
            Ok(Ok(stream)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(backend = %backend.id(), error = %e, "could not set TCP_NODELAY");
                }
                backend.core.health.record_success();
                return Some((backend, stream));
            }
            Ok(Err(e)) if crate::error::is_local_exhaustion(&e) => {
                // The balancer's own trouble: no backend is to blame, and none would do
                // better.
                tracing::warn!(backend = %backend.id(), error = %e, "tcp proxy out of resources; closing the client's connection");
                return None;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Failure::Refused,
            Ok(Err(e)) => Failure::Other(e.to_string()),
            Err(_) => Failure::Timeout,
        };
        backend.local(0).stats.errors.fetch_add(1, Relaxed);
        let reason = match &failure {
            Failure::Refused => DownReason::Refused,
            Failure::Timeout => DownReason::Timeout,
            Failure::Other(_) => DownReason::Failing,
        };
        let may_eject = || proxy.http.may_eject(&proxy.registry.load(), now_ms);
        if backend
            .core
            .health
            .record_failure(now_ms, proxy.ejection, reason, may_eject)
        {
            tracing::warn!(backend = %backend.id(), %addr, "tcp backend ejected after failed connects");
        }
        tracing::warn!(backend = %backend.id(), %addr, error = %failure.describe(proxy.connect_timeout), "could not connect to the tcp backend; trying another");
        tried.push(backend.core.id.clone());
    }
}
