//! Upstream connections: opening them and keeping the idle ones for reuse.
//!
//! The pool is the proxy's biggest performance lever (see the anchors: hyper-util's
//! general-purpose client pool cost ~15% against this simple one). Each worker has its
//! own pool per backend (in [`Local`](crate::backend::Local)), so taking and returning a
//! connection is an uncontended lock and a `Vec` push or pop.
//!
//! Rules:
//! - Last in, first out: the most recently used connection is the least likely to have
//!   been closed by the backend.
//! - A connection returns to the pool when the *response body ends* (see
//!   [`body`](crate::body)), not when the response head arrives: HTTP/1.1 cannot send the
//!   next request before the body is read.
//! - Capped: at most `pool_max_idle` idle connections per backend and worker (the oldest
//!   is closed first), and none older than `pool_idle_timeout_ms`; a periodic sweep
//!   closes connections no request picked up.
//! - A taken connection may still have been closed by the backend an instant ago. The
//!   proxy uses hyper's `try_send_request`, which hands back a request it could not
//!   write, and then retries once on a fresh connection.

use crate::body::RequestBody;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// A connection to a backend, ready to send requests.
pub(crate) type Conn = SendRequest<RequestBody>;

/// Pool and connect settings, copied into every lease.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    pub(crate) max_idle: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) connect_timeout: Duration,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

/// Idle connections of one worker to one backend.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<VecDeque<Idle>>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        // The data is a list of connections; a panic elsewhere cannot leave it invalid.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently returned live connection, if any; stale ones found on the way
    /// are closed.
    pub(crate) fn take(&self, now: Instant, idle_timeout: Duration) -> Option<Conn> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop_back() {
            if !entry.conn.is_closed() && now.saturating_duration_since(entry.since) < idle_timeout
            {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Returns a connection whose exchange finished cleanly.
    pub(crate) fn put(&self, conn: Conn, now: Instant, max_idle: usize) {
        if max_idle == 0 || conn.is_closed() {
            return;
        }
        let evicted = {
            let mut idle = self.lock();
            let evicted = if idle.len() >= max_idle {
                idle.pop_front()
            } else {
                None
            };
            idle.push_back(Idle { conn, since: now });
            evicted
        };
        drop(evicted); // closes the oldest connection outside the lock
    }

    /// Closes connections idle for `idle_timeout` or closed by the backend.
    pub(crate) fn sweep(&self, now: Instant, idle_timeout: Duration) {
        let stale: VecDeque<Idle> = {
            let mut idle = self.lock();
            let (keep, stale) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|e: &Idle| {
                    !e.conn.is_closed() && now.saturating_duration_since(e.since) < idle_timeout
                });
            *idle = keep;
            stale
        };
        drop(stale);
    }

    /// Idle connections held.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Why a new connection could not be opened.
#[derive(Debug)]
pub(crate) enum ConnectFailure {
    Io(std::io::Error),
    Timeout,
}

/// Opens a connection to `addr` and starts its driver task on the current runtime
/// (the worker's own, so the connection stays on this core).
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, ConnectFailure> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(ConnectFailure::Io(e)),
        Err(_) => return Err(ConnectFailure::Timeout),
    };
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%addr, error = %e, "could not set TCP_NODELAY on an upstream connection");
    }
    let (conn, driver) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ConnectFailure::Io(std::io::Error::other(e)))?;
    tokio::spawn(async move {
        // Ends when the backend closes the connection or the last `Conn` is dropped.
        if let Err(e) = driver.await {
            tracing::debug!(%addr, error = %e, "upstream connection ended with an error");
        }
    });
    Ok(conn)
}
