//! The bodies the proxy moves, and the lease that returns a connection to its pool.
//!
//! - [`RequestBody`] goes to the backend: empty, buffered (so a retryable request can be
//!   sent again) or streamed from the client with the size limit and the body timeouts
//!   ([`BodyClock`]) enforced on the way. A buffered body is read through the same
//!   stream, so the same limits apply while it is collected.
//! - [`ResponseBody`] goes to the client: a body the balancer wrote itself (problems,
//!   admin answers) or the backend's body streamed through an [`UpstreamBody`], which
//!   reads it off the connection (framed as the head said, see [`h1`](crate::h1)) and
//!   cuts an exchange whose body stalls for `upstream.body_idle_timeout_ms`.
//! - [`Lease`] is one exchange's hold on an upstream connection and on its connection
//!   slot (see [`slots`](crate::slots)). It counts the request as in flight, and when
//!   the response body has ended it puts the connection back in the pool, gives the
//!   slot back and records the latency. The upstream body releases it as soon as it
//!   has read the body's last byte, and its `Drop` covers bodies hyper never polls
//!   (empty, `HEAD`) and clients that leave mid-body (then the connection is closed,
//!   since half a body is still on the wire).

use crate::backend::Local;
use crate::h1::{BodyFraming, Decoded, UpstreamError};
use crate::pool::{Conn, PoolSettings, READ_CHUNK};

/// Largest single read of a response body. Reads start at [`READ_CHUNK`] and double
/// while each fills what it asked for, so a large body moves in few system calls while
/// a small one never holds more than it needs (measured, one 200 MB body: 24 456 reads
/// at a fixed 8 KiB, 854 growing to this, 396 for hyper's client with its larger
/// buffer, in about the same time). The body is only read as fast as the client takes
/// it, so this bounds a connection's buffered body.
const MAX_BODY_READ: usize = 256 * 1024;
use bistro_http_io::Alarm;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Why a request body could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The client's body failed (reset, bad chunk encoding).
    #[error("reading the client's body failed: {0}")]
    Client(#[from] hyper::Error),
    /// The client sent more than the limit.
    #[error("the request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The body took longer than allowed, or came slower than the minimum rate.
    #[error("the request body did not arrive in time")]
    Timeout,
}

/// The request body's time limits, copied out of the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// The whole body must arrive within this.
    pub(crate) total: Duration,
    /// After `grace`, at least this many bytes per second on average (0: no minimum).
    pub(crate) min_bytes_per_sec: u64,
    pub(crate) grace: Duration,
}

/// The clock of one request body: when it must be complete, given what arrived.
///
/// With `read` bytes in after `t`, the body fails when `t` reaches `total`, or when `t`
/// is past `grace` and `read < min_rate × t`. Since `read` only grows, the moment of
/// failure is a single deadline, `start + min(total, max(grace, read / min_rate))`,
/// pushed later by each chunk; one timer serves both rules.
#[derive(Debug)]
pub(crate) struct BodyClock {
    start: Instant,
    limits: BodyLimits,
    read: u64,
    alarm: Alarm,
}

impl BodyClock {
    pub(crate) fn new(start: Instant, limits: BodyLimits) -> BodyClock {
        BodyClock {
            start,
            limits,
            read: 0,
            alarm: Alarm::default(),
        }
    }

    /// When the body fails if nothing more arrives.
    fn deadline(&self) -> Instant {
        let by_rate = match self.limits.min_bytes_per_sec {
            0 => self.limits.total,
            rate => {
                Duration::from_millis(self.read.saturating_mul(1000) / rate).max(self.limits.grace)
            }
        };
        self.start + by_rate.min(self.limits.total)
    }

    /// Whether the body's time is up; otherwise the timer wakes the task when it is.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let due = self.deadline();
        self.alarm.expired(due, cx)
    }
}

/// The client's request body on its way to a backend, streamed (a body small enough
/// to resend is collected from it first, see [`proxy`](crate::proxy)); fails once more
/// than `limit` bytes arrived or its clock runs out.
#[derive(Debug)]
pub(crate) struct RequestBody {
    pub(crate) inner: Incoming,
    pub(crate) clock: Box<BodyClock>,
    pub(crate) limit: u64,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let RequestBody {
            inner,
            clock,
            limit,
        } = self.get_mut();
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    clock.read += data.len() as u64;
                    if clock.read > *limit {
                        return Poll::Ready(Some(Err(BodyError::TooLarge { limit: *limit })));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Client(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending if clock.expired(cx) => Poll::Ready(Some(Err(BodyError::Timeout))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One worker's hold on one connection slot of a backend; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(pub(crate) Arc<Local>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slots.give_back();
    }
}

/// One exchange's hold on an upstream connection; see the module docs.
#[derive(Debug)]
pub(crate) struct Lease {
    conn: Option<Conn>,
    slot: Option<Slot>,
    started: std::time::Instant,
    max_idle: usize,
    answered: bool,
    reuse: bool,
}

impl Lease {
    /// Takes `conn` for one exchange that started at `started`, holding `slot`.
    pub(crate) fn new(
        conn: Conn,
        slot: Slot,
        started: std::time::Instant,
        settings: &PoolSettings,
    ) -> Lease {
        slot.0.stats.active.fetch_add(1, Relaxed);
        Lease {
            conn: Some(conn),
            slot: Some(slot),
            started,
            max_idle: settings.max_idle,
            answered: false,
            reuse: false,
        }
    }

    /// The connection (held until the lease ends or gives it up).
    pub(crate) fn conn_mut(&mut self) -> &mut Conn {
        // Only `into_slot` (consuming) and `Drop` take the connection.
        self.conn
            .as_mut()
            .expect("a lease holds its connection until it ends")
    }

    /// The backend answered: its latency will be recorded on release.
    pub(crate) fn answered(&mut self) {
        self.answered = true;
    }

    /// Ends the lease; `reuse` when the exchange finished cleanly.
    pub(crate) fn release(mut self, reuse: bool) {
        self.reuse = reuse;
    }

    /// Gives up the connection (it is closed) but keeps the slot, for another try.
    pub(crate) fn into_slot(mut self) -> Slot {
        self.conn = None;
        // `Lease::new` always sets the slot and only this (consuming) method takes it.
        let slot = self
            .slot
            .take()
            .expect("a lease holds its slot until dropped");
        slot.0.stats.active.fetch_sub(1, Relaxed);
        slot
    }

    fn local(&self) -> Option<&Local> {
        self.slot.as_ref().map(|s| &*s.0)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(slot) = &self.slot else {
            return; // handed on by `into_slot`
        };
        let local = &*slot.0;
        local.stats.active.fetch_sub(1, Relaxed);
        let now = std::time::Instant::now();
        if self.answered {
            local
                .core
                .latency
                .observe(now.saturating_duration_since(self.started));
        }
        if self.reuse
            && let Some(conn) = self.conn.take()
        {
            // Back in the pool before the slot is given back (the `slot` field drops
            // after this), so the next request in line finds the connection there.
            local.pool.put(conn, now, self.max_idle);
        }
    }
}

/// Why a response body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResponseBodyError {
    /// The backend's connection failed mid-body, or the body broke its framing.
    #[error("the waiter's response body failed: {0}")]
    Upstream(#[from] UpstreamError),
    /// The backend sent nothing for the body idle timeout.
    #[error("the waiter's response body stalled for {0:?}")]
    Stalled(Duration),
}

/// A backend's response body on its way to the client, read off the leased connection.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    framing: BodyFraming,
    /// `None` once the body ended (or failed) and the connection was released.
    lease: Option<Lease>,
    idle_timeout: Duration,
    /// Armed the first time the body has to wait (most bodies never do: they arrive
    /// with the head), re-armed after each chunk.
    idle: Option<Pin<Box<Sleep>>>,
    progressed: bool,
    /// Bytes the next read asks for (see [`MAX_BODY_READ`]).
    read_size: usize,
}

/// What one look at the connection's buffer gave.
enum Step {
    Data(Bytes),
    End,
    Failed(UpstreamError),
    Wait,
}

impl UpstreamBody {
    pub(crate) fn new(framing: BodyFraming, lease: Lease, idle_timeout: Duration) -> UpstreamBody {
        UpstreamBody {
            framing,
            lease: Some(lease),
            idle_timeout,
            idle: None,
            progressed: false,
            read_size: READ_CHUNK,
        }
    }

    fn finish(&mut self, reuse: bool) {
        if let Some(lease) = self.lease.take() {
            lease.release(reuse);
        }
    }

    /// Whether the body has stalled for the idle timeout; arms the timer otherwise.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let due = Instant::now() + self.idle_timeout;
        match &mut self.idle {
            None => self.idle = Some(Box::pin(tokio::time::sleep_until(due))),
            Some(timer) if self.progressed => timer.as_mut().reset(due),
            Some(_) => {}
        }
        self.progressed = false;
        self.idle
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
    }

    /// The next piece of the body: what is buffered first, then what the connection
    /// brings.
    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        loop {
            let Some(lease) = self.lease.as_mut() else {
                return Poll::Ready(None);
            };
            let conn = lease.conn_mut();
            let step = match &mut self.framing {
                BodyFraming::Empty | BodyFraming::Length(0) => Step::End,
                BodyFraming::Length(_) | BodyFraming::Close if conn.buf.is_empty() => Step::Wait,
                BodyFraming::Length(left) => {
                    let take = (*left).min(conn.buf.len() as u64);
                    *left -= take;
                    Step::Data(conn.buf.split_to(take as usize).freeze())
                }
                BodyFraming::Close => Step::Data(conn.buf.split().freeze()),
                BodyFraming::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                    Ok(Decoded::Data(data)) => Step::Data(data),
                    Ok(Decoded::More) => Step::Wait,
                    Ok(Decoded::End) => Step::End,
                    Err(e) => Step::Failed(e),
                },
            };
            match step {
                Step::Data(data) => {
                    self.progressed = true;
                    if self.framing.is_done() {
                        // Back to the pool before the client has even seen the bytes.
                        self.finish(true);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Step::End => {
                    self.framing = BodyFraming::Empty;
                    self.finish(true);
                    return Poll::Ready(None);
                }
                Step::Failed(e) => {
                    self.finish(false);
                    return Poll::Ready(Some(Err(e.into())));
                }
                Step::Wait => {}
            }
            conn.buf.reserve(self.read_size);
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                Poll::Ready(Ok(0)) if matches!(self.framing, BodyFraming::Close) => {
                    self.framing = BodyFraming::Empty; // the end of the body
                }
                Poll::Ready(Ok(0)) => {
                    self.finish(false);
                    return Poll::Ready(Some(Err(UpstreamError::Closed.into())));
                }
                Poll::Ready(Ok(n)) => {
                    self.progressed = true;
                    if n >= self.read_size {
                        self.read_size = (self.read_size * 2).min(MAX_BODY_READ);
                    }
                }
                Poll::Ready(Err(e)) => {
                    self.finish(false);
                    return Poll::Ready(Some(Err(UpstreamError::Io(e).into())));
                }
                Poll::Pending => {
                    if self.stalled(cx) {
                        if let Some(local) = self.lease.as_ref().and_then(Lease::local) {
                            local.stats.body_timeouts.fetch_add(1, Relaxed);
                        }
                        self.finish(false);
                        return Poll::Ready(Some(Err(ResponseBodyError::Stalled(
                            self.idle_timeout,
                        ))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.lease.is_none() || self.framing.is_done()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        let ended = self.framing.is_done();
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
    /// Written by the balancer as it goes (the dashboard's event stream): each chunk
    /// sent on the channel is one frame; the body ends when the sender is dropped.
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
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
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Channel(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
            ResponseBody::Upstream(up) => up.poll_data(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(bytes) => bytes.is_none(),
            ResponseBody::Channel(rx) => rx.is_closed() && rx.is_empty(),
            ResponseBody::Upstream(up) => up.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Channel(_) => SizeHint::default(),
            ResponseBody::Upstream(up) => match up.framing.remaining() {
                Some(n) if up.lease.is_some() => SizeHint::with_exact(n),
                Some(_) => SizeHint::with_exact(0),
                None => SizeHint::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(total: u64, rate: u64, grace: u64) -> BodyClock {
        BodyClock::new(
            Instant::now(),
            BodyLimits {
                total: Duration::from_millis(total),
                min_bytes_per_sec: rate,
                grace: Duration::from_millis(grace),
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_follows_the_bytes_up_to_the_total() {
        let mut c = clock(30_000, 1_000, 5_000);
        let start = c.start;
        assert_eq!(
            c.deadline() - start,
            Duration::from_secs(5),
            "the grace first"
        );
        c.read = 10_000;
        assert_eq!(
            c.deadline() - start,
            Duration::from_secs(10),
            "10 kB buys 10 s"
        );
        c.read = 1_000_000;
        assert_eq!(
            c.deadline() - start,
            Duration::from_secs(30),
            "never past the total"
        );
        let mut no_rate = clock(30_000, 0, 5_000);
        no_rate.read = 1;
        assert_eq!(no_rate.deadline() - no_rate.start, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_expires_only_at_its_deadline() {
        let mut c = clock(30_000, 1_000, 2_000);
        let waker = futures_noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(!c.expired(&mut cx));
        tokio::time::advance(Duration::from_millis(1_999)).await;
        assert!(!c.expired(&mut cx));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(c.expired(&mut cx), "one byte in 2 s is below 1000 B/s");
    }

    fn futures_noop_waker() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }
}
