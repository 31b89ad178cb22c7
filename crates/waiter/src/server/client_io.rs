//! Timeouts on an HTTP client's socket: the request head timeout (slowloris) and the
//! keep-alive idle timeout.
//!
//! hyper 1.x has one timer for both: its header timer starts whenever it begins waiting
//! for a head, so it also runs while a keep-alive connection waits for its next
//! request, and the two cannot be given different lengths. So hyper's timer is off and
//! the socket is wrapped in [`ClientIo`], which knows from the connection's
//! [`Exchanges`] whether a request is being served, and judges each stalled read by
//! what the connection is doing:
//!
//! | the connection is | a read that waits is cut after | and then |
//! |---|---|---|
//! | new, nothing received | `header_read_timeout` from the accept | closed silently |
//! | between requests, nothing received | `keep_alive_idle` since the last response | closed silently |
//! | receiving a head | `header_read_timeout` from its first byte | answered `408 request-timeout`, closed |
//! | serving a request | never here (`request_timeout` bounds the request) | — |
//! | draining (shutdown), nothing received | at once | closed silently |
//!
//! "Closed silently" is an end of stream handed to hyper, which then closes the
//! connection as if the client had. The `408` is written straight to the socket: hyper
//! has no response to send for a head it never finished reading.
//!
//! One subtlety: hyper polls the socket while a request is served (to notice a client
//! that left), and with its own timer off it does not poll again when the response
//! ends; it waits for the socket to become readable. A read that was parked without a
//! deadline during the request would then never start the idle timer. So the end of a
//! response wakes the parked read ([`InFlight`]'s drop), which then arms the timer.
//!
//! The balancer wraps its client sockets the same way (`bistro-balancer`'s
//! `client_io`); the waiter keeps its own small copy rather than depend on the proxy.

use crate::config::HttpLimits;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// What one connection's request path tells its socket: how many requests started and
/// how many responses ended, and whether the server is draining.
#[derive(Debug, Default)]
pub(crate) struct Exchanges {
    started: AtomicU32,
    finished: AtomicU32,
    draining: AtomicBool,
    /// A read parked while a request was served, to wake when its response ends.
    parked: Mutex<Option<Waker>>,
}

impl Exchanges {
    /// A request's handling starts; the returned guard ends it when dropped (with the
    /// response's body, see [`Tracked`]).
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// The server is shutting down: a connection waiting for a request closes at once.
    pub(crate) fn drain(&self) {
        self.draining.store(true, Relaxed);
    }

    /// (started, finished) request counts.
    fn counts(&self) -> (u32, u32) {
        (self.started.load(Relaxed), self.finished.load(Relaxed))
    }

    fn parked(&self) -> MutexGuard<'_, Option<Waker>> {
        // A waker slot: a panic elsewhere cannot leave it inconsistent.
        self.parked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One request being served; counts its response as finished when dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Exchanges>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Relaxed);
        // Taken out before waking: the woken task may poll (and park) at once.
        let parked = self.0.parked().take();
        if let Some(waker) = parked {
            waker.wake();
        }
    }
}

/// A response body that holds its request's [`InFlight`]: hyper drops the body once it
/// has written the response's last byte, which is when the connection goes idle. (A
/// guard dropped with the handler's future would end too early, before the body.)
#[derive(Debug)]
pub(crate) struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl Tracked {
    pub(crate) fn new(body: Body, in_flight: InFlight) -> Tracked {
        Tracked {
            body,
            _in_flight: in_flight,
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What a waiting read is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The first byte of the connection's first request.
    First,
    /// The first byte of the next request.
    Idle,
    /// The rest of a head whose first bytes arrived.
    Head,
}

/// The deadline bookkeeping, apart from the socket so it can be tested as plain data.
#[derive(Debug, Clone)]
struct Deadlines {
    limits: HttpLimits,
    /// When the connection became idle (accepted, or its last response ended).
    idle_since: Instant,
    /// The `finished` count when last looked at.
    seen_finished: u32,
    /// The first byte of a head: for which request (the `started` count then), when.
    head: Option<(u32, Instant)>,
}

impl Deadlines {
    fn new(limits: HttpLimits, accepted: Instant) -> Deadlines {
        Deadlines {
            limits,
            idle_since: accepted,
            seen_finished: 0,
            head: None,
        }
    }

    /// Bytes arrived at `now`: between requests, they start the next head.
    fn received(&mut self, (started, finished): (u32, u32), now: Instant) {
        let fresh = self.head.is_none_or(|(n, _)| n != started);
        if started == finished && fresh {
            self.head = Some((started, now));
        }
    }

    /// What a read that has to wait at `now` waits for, and until when; `None` while a
    /// request is being served.
    fn next(&mut self, (started, finished): (u32, u32), now: Instant) -> Option<(Wait, Instant)> {
        if started != finished {
            return None;
        }
        if finished != self.seen_finished {
            self.seen_finished = finished;
            self.idle_since = now;
        }
        match self.head {
            Some((n, at)) if n == started => {
                Some((Wait::Head, at + self.limits.header_read_timeout))
            }
            _ if started == 0 => Some((
                Wait::First,
                self.idle_since + self.limits.header_read_timeout,
            )),
            _ => Some((Wait::Idle, self.idle_since + self.limits.keep_alive_idle)),
        }
    }
}

/// A client's socket with the timeouts of the module docs.
#[derive(Debug)]
pub(crate) struct ClientIo {
    stream: TcpStream,
    exchanges: Arc<Exchanges>,
    deadlines: Deadlines,
    /// The raw `408` written when a head times out.
    head_timeout_answer: Bytes,
    timer: Option<Pin<Box<Sleep>>>,
    timer_at: Option<Instant>,
}

impl ClientIo {
    /// Wraps a socket accepted just now.
    pub(crate) fn new(
        stream: TcpStream,
        exchanges: Arc<Exchanges>,
        limits: HttpLimits,
        head_timeout_answer: Bytes,
    ) -> ClientIo {
        ClientIo {
            stream,
            exchanges,
            deadlines: Deadlines::new(limits, Instant::now()),
            head_timeout_answer,
            timer: None,
            timer_at: None,
        }
    }

    /// Arms the timer for `due`; `true` when it has already fired.
    fn expired(&mut self, due: Instant, cx: &mut Context<'_>) -> bool {
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
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let counts = this.exchanges.counts();
        if let Poll::Ready(result) = polled {
            if result.is_ok() && buf.filled().len() > before {
                this.deadlines.received(counts, Instant::now());
            }
            return Poll::Ready(result);
        }
        let now = Instant::now();
        let Some((wait, due)) = this.deadlines.next(counts, now) else {
            // Serving a request: no deadline, but the response's end must wake this
            // read so the idle timer starts (see the module docs).
            *this.exchanges.parked() = Some(cx.waker().clone());
            if this.exchanges.counts() != counts {
                cx.waker().wake_by_ref(); // it ended meanwhile
            }
            return Poll::Pending;
        };
        let draining = this.exchanges.draining.load(Relaxed) && wait != Wait::Head;
        if !draining && now < due && !this.expired(due, cx) {
            return Poll::Pending;
        }
        match wait {
            Wait::Head => {
                tracing::debug!(
                    "a request head did not arrive within the header read timeout; answering 408"
                );
                // Best effort: between requests the socket's send buffer is empty, so
                // this small answer fits; if not, the close says enough.
                if let Err(e) = this.stream.try_write(&this.head_timeout_answer) {
                    tracing::trace!(error = %e, "could not write the 408 before closing");
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request head did not arrive within the header read timeout",
                )))
            }
            Wait::First | Wait::Idle => {
                if !draining {
                    tracing::trace!(?wait, "closing a connection that sent no request in time");
                }
                Poll::Ready(Ok(())) // end of stream: hyper closes quietly
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
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    fn deadlines(at: Instant) -> Deadlines {
        let limits = HttpLimits {
            header_read_timeout: HEAD,
            keep_alive_idle: IDLE,
            max_connections: 1,
        };
        Deadlines::new(limits, at)
    }

    #[test]
    fn a_new_connection_gets_the_header_timeout_from_its_accept() {
        let t0 = Instant::now();
        let mut d = deadlines(t0);
        let later = t0 + Duration::from_secs(3);
        assert_eq!(d.next((0, 0), later), Some((Wait::First, t0 + HEAD)));
    }

    #[test]
    fn a_started_head_gets_the_header_timeout_from_its_first_byte() {
        let t0 = Instant::now();
        let mut d = deadlines(t0);
        let first_byte = t0 + Duration::from_secs(2);
        d.received((0, 0), first_byte);
        // More bytes of the same head do not move its deadline.
        d.received((0, 0), first_byte + Duration::from_secs(5));
        assert_eq!(
            d.next((0, 0), first_byte + Duration::from_secs(6)),
            Some((Wait::Head, first_byte + HEAD))
        );
    }

    #[test]
    fn no_deadline_while_a_request_is_served() {
        let t0 = Instant::now();
        let mut d = deadlines(t0);
        d.received((0, 0), t0);
        assert_eq!(d.next((1, 0), t0 + Duration::from_secs(100)), None);
        // Body bytes read while serving do not start a head.
        d.received((1, 0), t0 + Duration::from_secs(101));
        assert_eq!(d.head, Some((0, t0)));
    }

    /// The bug this module exists for: with hyper's single timer an idle keep-alive
    /// connection would be cut after the header timeout.
    #[test]
    fn between_requests_the_idle_timeout_runs_from_the_last_response() {
        let t0 = Instant::now();
        let mut d = deadlines(t0);
        d.received((0, 0), t0);
        let done = t0 + Duration::from_secs(1);
        assert_eq!(d.next((1, 1), done), Some((Wait::Idle, done + IDLE)));
        // Looking again later keeps the same deadline.
        assert_eq!(
            d.next((1, 1), done + Duration::from_secs(30)),
            Some((Wait::Idle, done + IDLE))
        );
        // The next head's first byte switches to the header timeout.
        let next = done + Duration::from_secs(40);
        d.received((1, 1), next);
        assert_eq!(d.next((1, 1), next), Some((Wait::Head, next + HEAD)));
    }

    #[test]
    fn the_guard_counts_a_request_until_its_body_is_dropped_and_wakes_the_parked_read() {
        struct Flag(AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Relaxed);
            }
        }
        let exchanges = Arc::new(Exchanges::default());
        let body = Tracked::new(Body::from("hi"), exchanges.start());
        assert_eq!(exchanges.counts(), (1, 0));
        let woken = Arc::new(Flag(AtomicBool::new(false)));
        *exchanges.parked() = Some(Waker::from(woken.clone()));
        drop(body);
        assert_eq!(exchanges.counts(), (1, 1));
        assert!(woken.0.load(Relaxed), "the parked read is woken");
        assert!(exchanges.parked().is_none());
    }
}
