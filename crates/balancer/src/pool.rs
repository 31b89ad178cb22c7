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
//! - An idle connection has no task watching it. Whether the backend closed it (or
//!   wrote to it unasked) is what the runtime's reactor saw: a connection the reactor
//!   found readable is probed with one non-blocking read when taken, swept or returned;
//!   one it did not costs no system call.
//! - A taken connection may still have been closed by the backend an instant ago. When
//!   writing the request fails before any byte left, the proxy retries once on a fresh
//!   connection (see [`forward`](crate::forward)).

use bytes::BytesMut;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Bytes a connection's read buffer starts with (and asks for per read).
pub(crate) const READ_CHUNK: usize = 8 * 1024;

/// A connection to a backend, spoken to in HTTP/1.1 by the request that holds it (see
/// [`h1`](crate::h1)).
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) io: TcpStream,
    /// Bytes read from the backend and not consumed yet.
    pub(crate) buf: BytesMut,
    /// The request head being written (kept for its allocation).
    pub(crate) out: Vec<u8>,
    /// Scratch space for parsing response heads (see [`h1::parse_response`](crate::h1::parse_response)).
    pub(crate) fields: Vec<crate::h1::Field>,
    /// Whether the connection may carry another request once this exchange ends: the
    /// backend did not say `close`, and nothing was cut short.
    pub(crate) reusable: bool,
}

impl Conn {
    fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(1024),
            fields: Vec::new(),
            reusable: true,
        }
    }

    /// Whether the backend closed the connection, or sent something nobody asked for,
    /// while it sat idle.
    pub(crate) fn is_closed(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            // Readable: end of stream, an error, or unasked bytes (all end it), or a
            // readiness left from the last response (the probe finds nothing).
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                !matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Whether it can go back to the pool after an exchange that ended cleanly.
    fn may_idle(&self) -> bool {
        self.reusable && self.buf.is_empty() && !self.is_closed()
    }
}

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
        if max_idle == 0 || !conn.may_idle() {
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

/// Opens a connection to `addr`, registered with the current runtime (the worker's
/// own, so the connection stays on this core).
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, ConnectFailure> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(ConnectFailure::Io(e)),
        Err(_) => return Err(ConnectFailure::Timeout),
    };
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%addr, error = %e, "could not set TCP_NODELAY on an upstream connection");
    }
    Ok(Conn::new(stream))
}
