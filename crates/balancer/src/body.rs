//! The bodies the proxy moves, and the lease that returns a connection to its pool.
//!
//! - [`RequestBody`] goes to the backend: empty, buffered (so a retryable request can be
//!   sent again) or streamed from the client with the size limit enforced on the way.
//! - [`ResponseBody`] goes to the client: a body the balancer wrote itself (problems,
//!   admin answers) or the backend's body streamed through an [`UpstreamBody`].
//! - [`Lease`] is one exchange's hold on an upstream connection. It counts the request
//!   as in flight, and when the response body has ended it puts the connection back in
//!   the pool and records the latency. The upstream body releases it as soon as hyper
//!   reports the end of the stream, and its `Drop` covers bodies hyper never polls
//!   (empty, `HEAD`) and clients that leave mid-body (then the connection is closed,
//!   since half a body is still on the wire).

use crate::backend::Local;
use crate::pool::{Conn, PoolSettings};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, ready};
use std::time::Instant;

/// Why a request body could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The client's body failed (reset, bad chunk encoding).
    #[error("reading the client's body failed: {0}")]
    Client(#[from] hyper::Error),
    /// The client sent more than the limit.
    #[error("the request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
}

/// A request body on its way to a backend.
#[derive(Debug)]
pub(crate) enum RequestBody {
    /// No body.
    Empty,
    /// A buffered body (sent once per attempt; the `Bytes` clone is a reference count).
    Full(Option<Bytes>),
    /// The client's body, streamed; fails once more than `limit` bytes arrived.
    Stream {
        inner: Incoming,
        read: u64,
        limit: u64,
    },
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Stream { inner, read, limit } => {
                match ready!(Pin::new(inner).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            *read += data.len() as u64;
                            if *read > *limit {
                                return Poll::Ready(Some(Err(BodyError::TooLarge {
                                    limit: *limit,
                                })));
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => Poll::Ready(Some(Err(BodyError::Client(e)))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Full(bytes) => bytes.is_none(),
            RequestBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty | RequestBody::Full(None) => SizeHint::with_exact(0),
            RequestBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RequestBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

/// One exchange's hold on an upstream connection; see the module docs.
#[derive(Debug)]
pub(crate) struct Lease {
    conn: Option<Conn>,
    local: Arc<Local>,
    started: Instant,
    max_idle: usize,
    answered: bool,
    reuse: bool,
}

impl Lease {
    /// Takes `conn` for one exchange that started at `started`.
    pub(crate) fn new(
        conn: Conn,
        local: Arc<Local>,
        started: Instant,
        settings: &PoolSettings,
    ) -> Lease {
        local.stats.active.fetch_add(1, Relaxed);
        Lease {
            conn: Some(conn),
            local,
            started,
            max_idle: settings.max_idle,
            answered: false,
            reuse: false,
        }
    }

    /// The backend answered: its latency will be recorded on release.
    pub(crate) fn answered(&mut self) {
        self.answered = true;
    }

    /// Ends the lease; `reuse` when the exchange finished cleanly.
    pub(crate) fn release(mut self, reuse: bool) {
        self.reuse = reuse;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.local.stats.active.fetch_sub(1, Relaxed);
        let now = Instant::now();
        if self.answered {
            self.local
                .core
                .latency
                .observe(now.saturating_duration_since(self.started));
        }
        if self.reuse
            && let Some(conn) = self.conn.take()
        {
            self.local.pool.put(conn, now, self.max_idle);
        }
    }
}

/// A backend's response body on its way to the client.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl UpstreamBody {
    pub(crate) fn new(inner: Incoming, lease: Lease) -> UpstreamBody {
        UpstreamBody {
            inner,
            lease: Some(lease),
        }
    }

    fn finish(&mut self, reuse: bool) {
        if let Some(lease) = self.lease.take() {
            lease.release(reuse);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        let ended = self.inner.is_end_stream();
        self.finish(ended);
    }
}

/// A response body on its way to the client.
#[derive(Debug)]
pub(crate) enum ResponseBody {
    /// Written by the balancer.
    Full(Option<Bytes>),
    /// Streamed from a backend.
    Upstream(UpstreamBody),
}

impl ResponseBody {
    /// A body the balancer wrote.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        ResponseBody::Full(Some(bytes.into()))
    }

    /// No body.
    pub(crate) fn empty() -> ResponseBody {
        ResponseBody::Full(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Upstream(up) => {
                let polled = ready!(Pin::new(&mut up.inner).poll_frame(cx));
                match &polled {
                    Some(Ok(_)) if up.inner.is_end_stream() => up.finish(true),
                    Some(Ok(_)) => {}
                    Some(Err(_)) => up.finish(false),
                    None => up.finish(true),
                }
                Poll::Ready(polled)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(bytes) => bytes.is_none(),
            ResponseBody::Upstream(up) => up.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Upstream(up) => up.inner.size_hint(),
        }
    }
}
