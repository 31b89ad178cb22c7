//! Timeouts on a client connection's socket: the keep-alive idle timeout, the request
//! head timeout (slowloris), and the send timeout (a client that does not read).
//!
//! hyper has one timer for the first two (its header timer starts when it begins
//! waiting for a head, so it is also the idle timeout) and none for writes. So the
//! client's socket is wrapped in [`ClientIo`], which knows, from two counters the
//! request path keeps on the connection ([`Downstream`]), whether a request is being
//! served, and judges each stall by what the connection is doing:
//!
//! | the connection is | a read that waits is cut after | a write that waits is cut after |
//! |---|---|---|
//! | new, nothing received | `header_read_timeout_ms` from the accept, closed silently | — |
//! | between requests, nothing received | `keep_alive_idle_ms` since the last response, closed silently | — |
//! | receiving a head | `header_read_timeout_ms` from its first byte, answered `408` | — |
//! | serving a request | never here (the body's own timeouts apply, see [`body`](crate::body)) | `send_timeout_ms` without progress |
//!
//! One timer per connection serves all of them; it is re-armed only when the earliest
//! deadline changes.

use crate::config::ms;
use crate::metrics::Timeout;
use crate::problem::Problem;
use crate::proxy::Downstream;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// The three client timeouts, copied out of the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientTimeouts {
    pub(crate) header: Duration,
    pub(crate) idle: Duration,
    pub(crate) send: Duration,
}

impl From<&crate::config::ClientConfig> for ClientTimeouts {
    fn from(c: &crate::config::ClientConfig) -> Self {
        ClientTimeouts {
            header: ms(c.header_read_timeout_ms),
            idle: ms(c.keep_alive_idle_ms),
            send: ms(c.send_timeout_ms),
        }
    }
}

/// What a waiting read is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The first byte of a connection's first request.
    First,
    /// The first byte of the next request.
    Idle,
    /// The rest of a head whose first bytes arrived.
    Head,
}

/// A client's socket with the timeouts of the module docs.
#[derive(Debug)]
pub(crate) struct ClientIo {
    stream: TcpStream,
    cx: Arc<Downstream>,
    timeouts: ClientTimeouts,
    /// When the connection became idle (accepted, or its last response ended).
    idle_since: Instant,
    /// Responses seen ended (the connection's `finished` counter when last looked at).
    seen_finished: u32,
    /// The first byte of a head: for which request (the `started` counter then), when.
    head: Option<(u32, Instant)>,
    read_due: Option<Instant>,
    write_due: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    timer_at: Option<Instant>,
}

impl ClientIo {
    pub(crate) fn new(stream: TcpStream, cx: Arc<Downstream>, timeouts: ClientTimeouts) -> Self {
        ClientIo {
            stream,
            cx,
            timeouts,
            idle_since: Instant::now(),
            seen_finished: 0,
            head: None,
            read_due: None,
            write_due: None,
            timer: None,
            timer_at: None,
        }
    }

    /// What a read that has to wait now is waiting for, and until when; `None` while a
    /// request is being served.
    fn read_deadline(&mut self, now: Instant) -> Option<(Wait, Instant)> {
        let (started, finished) = self.cx.requests();
        if started != finished {
            return None;
        }
        if finished != self.seen_finished {
            self.seen_finished = finished;
            self.idle_since = now;
        }
        match self.head {
            Some((n, at)) if n == started => Some((Wait::Head, at + self.timeouts.header)),
            _ if started == 0 => Some((Wait::First, self.idle_since + self.timeouts.header)),
            _ => Some((Wait::Idle, self.idle_since + self.timeouts.idle)),
        }
    }

    /// Arms the timer for the earliest deadline; `true` when that deadline has passed.
    fn arm(&mut self, cx: &mut Context<'_>) -> bool {
        let due = match (self.read_due, self.write_due) {
            (Some(r), Some(w)) => r.min(w),
            (Some(d), None) | (None, Some(d)) => d,
            (None, None) => return false,
        };
        if self.timer_at != Some(due) {
            self.timer_at = Some(due);
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(due),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(due))),
            }
        }
        self.timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
    }

    fn timed_out(&self, kind: Timeout) {
        self.cx.worker.counters().timeout(kind);
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.read_due = None;
                if result.is_ok() && buf.filled().len() > before {
                    let (started, finished) = this.cx.requests();
                    let fresh = this.head.is_none_or(|(n, _)| n != started);
                    if started == finished && fresh {
                        this.head = Some((started, Instant::now()));
                    }
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let now = Instant::now();
                let Some((wait, due)) = this.read_deadline(now) else {
                    this.read_due = None;
                    return Poll::Pending;
                };
                this.read_due = Some(due);
                if now < due && !this.arm(cx) {
                    return Poll::Pending;
                }
                this.read_due = None;
                match wait {
                    Wait::Head => {
                        this.timed_out(Timeout::Header);
                        // Best effort: the socket's buffer is empty between requests,
                        // so this small answer fits; if not, the close says enough.
                        if this.stream.try_write(request_timeout_answer()).is_err() {
                            tracing::trace!("could not write the 408 before closing");
                        }
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the request head did not arrive within the header timeout",
                        )))
                    }
                    Wait::First => {
                        this.timed_out(Timeout::Header);
                        Poll::Ready(Ok(())) // end of stream: hyper closes quietly
                    }
                    Wait::Idle => {
                        this.timed_out(Timeout::KeepAlive);
                        Poll::Ready(Ok(()))
                    }
                }
            }
        }
    }
}

impl ClientIo {
    /// The send timeout around one write-side poll.
    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.write_due = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let now = Instant::now();
                let due = *self.write_due.get_or_insert(now + self.timeouts.send);
                if now < due && !self.arm(cx) {
                    return Poll::Pending;
                }
                self.write_due = None;
                self.timed_out(Timeout::Send);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read its response within the send timeout",
                )))
            }
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.on_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.on_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.on_write(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.on_write(cx, polled)
    }
}

/// The raw `408` written when a head times out.
fn request_timeout_answer() -> &'static [u8] {
    static ANSWER: OnceLock<Vec<u8>> = OnceLock::new();
    ANSWER.get_or_init(|| {
        Problem::request_timeout(
            "the request head did not arrive within the balancer's header timeout; \
             send the whole head at once",
        )
        .raw(None)
    })
}
