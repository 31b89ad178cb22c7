//! [`ClientIo`]: a client's socket with the timeouts of the crate docs.
//!
//! The bookkeeping of which deadline applies ([`Deadlines`]) is plain data, apart from
//! the socket, so it can be tested without one; [`ClientIo`] adds the timer, the cuts
//! and the reports.

use crate::alarm::Alarm;
use crate::exchanges::Connection;
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The lengths of a client connection's timeouts (see the crate docs for when each
/// applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The request head: from the accept for the first request, from the head's first
    /// byte for later ones.
    pub header: Duration,
    /// Between requests: from the end of the last response to the next head's first
    /// byte.
    pub idle: Duration,
    /// A write that makes no progress for this long fails; `None`: writes wait as long
    /// as the client lets them (the request's own timeout still bounds it).
    pub send: Option<Duration>,
}

/// Which timeout cut a connection; reported through
/// [`Connection::timed_out`](crate::Connection::timed_out), and the error inside the
/// `io::Error` hyper gets for the cuts that are errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimedOut {
    /// A new connection sent nothing within the header timeout; closed silently.
    #[error("the connection sent no request within the header read timeout")]
    First,
    /// A keep-alive connection sent no next request within the idle timeout; closed
    /// silently.
    #[error("the connection sent no next request within the keep-alive idle timeout")]
    Idle,
    /// A request head was started but not finished in time; answered `408`.
    #[error("the request head did not arrive within the header read timeout")]
    Head,
    /// The client did not read its response: a write made no progress in time.
    #[error("the client did not read its response within the send timeout")]
    Send,
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

impl From<Wait> for TimedOut {
    fn from(wait: Wait) -> TimedOut {
        match wait {
            Wait::First => TimedOut::First,
            Wait::Idle => TimedOut::Idle,
            Wait::Head => TimedOut::Head,
        }
    }
}

/// The read deadlines' bookkeeping, apart from the socket so it can be tested as plain
/// data.
#[derive(Debug, Clone)]
struct Deadlines {
    timeouts: Timeouts,
    /// When the connection became idle (accepted, or its last response ended).
    idle_since: Instant,
    /// The `finished` count when last looked at.
    seen_finished: u32,
    /// The first byte of a head: for which request (the `started` count then), when.
    head: Option<(u32, Instant)>,
}

impl Deadlines {
    fn new(timeouts: Timeouts, accepted: Instant) -> Deadlines {
        Deadlines {
            timeouts,
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
            Some((n, at)) if n == started => Some((Wait::Head, at + self.timeouts.header)),
            _ if started == 0 => Some((Wait::First, self.idle_since + self.timeouts.header)),
            _ => Some((Wait::Idle, self.idle_since + self.timeouts.idle)),
        }
    }
}

/// A client's socket with the timeouts of the crate docs, for the connection `C`.
#[derive(Debug)]
pub struct ClientIo<C: Connection = crate::Exchanges> {
    stream: TcpStream,
    connection: Arc<C>,
    deadlines: Deadlines,
    /// The raw `408` written when a head times out.
    head_timeout_answer: Bytes,
    /// The deadline of the read waiting now, if any.
    read_due: Option<Instant>,
    /// The deadline of the write waiting now, if any.
    write_due: Option<Instant>,
    alarm: Alarm,
}

impl<C: Connection> ClientIo<C> {
    /// Wraps `stream`, accepted just now, of `connection`; `head_timeout_answer` is the
    /// complete HTTP/1.1 `408` (closing the connection) written when a head times out;
    /// empty, nothing is written (under TLS, which wraps this socket).
    pub fn new(
        stream: TcpStream,
        connection: Arc<C>,
        timeouts: Timeouts,
        head_timeout_answer: Bytes,
    ) -> ClientIo<C> {
        ClientIo {
            stream,
            connection,
            deadlines: Deadlines::new(timeouts, Instant::now()),
            head_timeout_answer,
            read_due: None,
            write_due: None,
            alarm: Alarm::default(),
        }
    }

    /// Whether `due`, the deadline of the read or the write waiting now, has passed;
    /// otherwise the one timer is set for the earliest deadline still ahead, so the task
    /// is woken in time for either. `now` is the clock, read just now.
    fn passed(&mut self, now: Instant, due: Instant, cx: &mut Context<'_>) -> bool {
        if now >= due {
            return true;
        }
        let earliest = [self.read_due, self.write_due]
            .into_iter()
            .flatten()
            .filter(|&d| d > now)
            .fold(due, Instant::min);
        if self.alarm.expired_at(now, earliest, cx) {
            if earliest == due {
                return true;
            }
            // The other side's deadline passed meanwhile: that side is cut when next
            // polled; poll again so this side's own deadline gets the timer.
            cx.waker().wake_by_ref();
        }
        false
    }

    /// Ends a read that waited too long, or that the drain ends.
    fn cut(&mut self, wait: Wait, draining: bool) -> Poll<io::Result<()>> {
        if wait == Wait::Head {
            tracing::debug!(
                "a request head did not arrive within the header read timeout; answering 408"
            );
            self.connection.timed_out(TimedOut::Head);
            // Best effort: between requests the socket's send buffer is empty, so this
            // small answer fits; if not, the close says enough. An empty answer (a TLS
            // connection, where raw bytes would be garbage) writes nothing.
            if !self.head_timeout_answer.is_empty()
                && let Err(e) = self.stream.try_write(&self.head_timeout_answer)
            {
                tracing::trace!(error = %e, "could not write the 408 before closing");
            }
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, TimedOut::Head)));
        }
        if !draining {
            tracing::trace!(?wait, "closing a connection that sent no request in time");
            self.connection.timed_out(wait.into());
        }
        Poll::Ready(Ok(())) // end of stream: hyper closes quietly
    }

    /// The send timeout around one write-side poll.
    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let Some(send) = self.deadlines.timeouts.send else {
            return polled;
        };
        if polled.is_ready() {
            self.write_due = None;
            return polled;
        }
        let now = Instant::now();
        let due = *self.write_due.get_or_insert_with(|| now + send);
        if !self.passed(now, due, cx) {
            return Poll::Pending;
        }
        self.write_due = None;
        self.connection.timed_out(TimedOut::Send);
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, TimedOut::Send)))
    }
}

impl<C: Connection> AsyncRead for ClientIo<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let exchanges = this.connection.exchanges();
        let counts = exchanges.counts();
        if let Poll::Ready(result) = polled {
            this.read_due = None;
            if result.is_ok() && buf.filled().len() > before {
                this.deadlines.received(counts, Instant::now());
            }
            return Poll::Ready(result);
        }
        let now = Instant::now();
        let Some((wait, due)) = this.deadlines.next(counts, now) else {
            // Serving a request: no deadline, but the response's end must wake this
            // read so the idle timer starts (see the crate docs).
            this.read_due = None;
            exchanges.park(cx.waker());
            if exchanges.counts() != counts {
                cx.waker().wake_by_ref(); // it ended meanwhile
            }
            return Poll::Pending;
        };
        let draining = exchanges.is_draining() && wait != Wait::Head;
        if !draining {
            this.read_due = Some(due);
            if !this.passed(now, due, cx) {
                return Poll::Pending;
            }
        }
        this.read_due = None;
        this.cut(wait, draining)
    }
}

impl<C: Connection> AsyncWrite for ClientIo<C> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::connected;
    use crate::{Exchanges, InFlight};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    fn deadlines(at: Instant) -> Deadlines {
        let timeouts = Timeouts {
            header: HEAD,
            idle: IDLE,
            send: None,
        };
        Deadlines::new(timeouts, at)
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

    /// The bug the crate exists for: with hyper's single timer an idle keep-alive
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

    /// A connection that records what cut it.
    #[derive(Debug, Default)]
    struct Recorder {
        exchanges: Exchanges,
        cuts: Mutex<Vec<TimedOut>>,
    }

    impl Connection for Recorder {
        fn exchanges(&self) -> &Exchanges {
            &self.exchanges
        }

        fn timed_out(&self, timeout: TimedOut) {
            self.cuts.lock().unwrap().push(timeout);
        }
    }

    impl Recorder {
        fn cuts(&self) -> Vec<TimedOut> {
            self.cuts.lock().unwrap().clone()
        }
    }

    const ANSWER: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\n\r\n";

    /// A connected pair on 127.0.0.1: the server's side wrapped, and the client's.
    async fn pair(timeouts: Timeouts) -> (ClientIo<Recorder>, Arc<Recorder>, TcpStream) {
        let (stream, client) = connected().await;
        let recorder = Arc::new(Recorder::default());
        let io = ClientIo::new(
            stream,
            recorder.clone(),
            timeouts,
            Bytes::from_static(ANSWER),
        );
        (io, recorder, client)
    }

    fn short(send: Option<Duration>) -> Timeouts {
        Timeouts {
            header: Duration::from_millis(150),
            idle: Duration::from_millis(100),
            send,
        }
    }

    #[tokio::test]
    async fn a_read_parked_during_a_request_starts_the_idle_timer_when_the_response_ends() {
        let (mut io, recorder, mut client) = pair(Timeouts {
            header: Duration::from_secs(30),
            ..short(None)
        })
        .await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let in_flight = InFlight::start(&recorder);
        let reader = tokio::spawn(async move {
            let started = Instant::now();
            let n = io.read(&mut buf).await.unwrap();
            (n, started.elapsed())
        });
        // The read parks with no deadline while the request is served, then the
        // response ends: only the wake can start its idle timer.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!reader.is_finished(), "no deadline while serving");
        drop(in_flight);
        let (n, waited) = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the idle timer cut the read")
            .unwrap();
        assert_eq!(n, 0, "an idle cut is an end of stream");
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert_eq!(recorder.cuts(), [TimedOut::Idle]);
    }

    #[tokio::test]
    async fn a_slow_head_is_answered_408_and_a_silent_connection_closed() {
        let (mut io, recorder, mut client) = pair(short(None)).await;
        client.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let error = io.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            error.get_ref().and_then(|e| e.downcast_ref::<TimedOut>()),
            Some(&TimedOut::Head)
        );
        let mut answer = Vec::new();
        drop(io);
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, ANSWER);
        assert_eq!(recorder.cuts(), [TimedOut::Head]);

        let (mut silent, recorder, _client) = pair(short(None)).await;
        assert_eq!(silent.read(&mut buf).await.unwrap(), 0);
        assert_eq!(recorder.cuts(), [TimedOut::First]);
    }

    #[tokio::test]
    async fn draining_ends_a_waiting_read_at_once_and_reports_nothing() {
        let (mut io, recorder, _client) = pair(Timeouts {
            header: Duration::from_secs(30),
            ..short(None)
        })
        .await;
        recorder.exchanges.drain();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(1), io.read(&mut buf))
            .await
            .expect("at once")
            .unwrap();
        assert_eq!(n, 0);
        assert!(recorder.cuts().is_empty());
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_cut_by_the_send_timeout() {
        let (mut io, recorder, _client) = pair(short(Some(Duration::from_millis(200)))).await;
        let chunk = vec![b' '; 1 << 20];
        let error = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Err(e) = io.write_all(&chunk).await {
                    return e;
                }
            }
        })
        .await
        .expect("the send timeout cut the write");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(recorder.cuts(), [TimedOut::Send]);
    }
}
