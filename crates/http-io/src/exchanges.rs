//! What a connection's request path tells its socket: how many requests started, how
//! many responses ended, and whether the server is draining.
//!
//! The request path counts ([`InFlight`], [`Tracked`]); the socket ([`ClientIo`])
//! reads the counts to tell "serving a request" from "between requests", which is all
//! it needs to pick a deadline. The counts are two atomics rather than a lock: the
//! socket reads them on every read that has to wait.
//!
//! [`ClientIo`]: crate::ClientIo

use crate::client_io::TimedOut;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// One connection's exchanges: requests started, responses ended, the drain, and the
/// read parked while a request is served (see the crate docs).
#[derive(Debug, Default)]
pub struct Exchanges {
    started: AtomicU32,
    finished: AtomicU32,
    draining: AtomicBool,
    /// A read parked while a request was served, to wake when its response ends.
    parked: Mutex<Option<Waker>>,
}

impl Exchanges {
    /// The server is shutting down: a connection waiting for a request closes at once
    /// (a head already started still gets its time).
    ///
    /// hyper's graceful shutdown closes a connection that is idle between requests, but
    /// not a new one that has not sent its first request yet; this covers both.
    pub fn drain(&self) {
        self.draining.store(true, Relaxed);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    /// (started, finished) request counts: equal while the connection is between
    /// requests.
    pub(crate) fn counts(&self) -> (u32, u32) {
        (self.started.load(Relaxed), self.finished.load(Relaxed))
    }

    /// Keeps `waker` to wake when the response being served ends.
    pub(crate) fn park(&self, waker: &Waker) {
        let mut parked = self.parked();
        match &*parked {
            Some(kept) if kept.will_wake(waker) => {}
            _ => *parked = Some(waker.clone()),
        }
    }

    fn parked(&self) -> MutexGuard<'_, Option<Waker>> {
        // A waker slot: a panic elsewhere cannot leave it inconsistent.
        self.parked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn finish(&self) {
        self.finished.fetch_add(1, Relaxed);
        // Taken out before waking: the woken task may poll (and park) at once. The lock
        // also orders this count before the parked read's second look (see `ClientIo`).
        let parked = self.parked().take();
        if let Some(waker) = parked {
            waker.wake();
        }
    }
}

/// A client connection as its [`ClientIo`](crate::ClientIo) sees it: its
/// [`Exchanges`], and where a timeout that cut it is reported.
///
/// The waiter uses [`Exchanges`] itself and reports nowhere; the balancer implements
/// this on its per-connection context, so its request path reaches the context through
/// the same `Arc` and its timeouts land in its metrics.
pub trait Connection {
    /// The connection's exchange counts.
    fn exchanges(&self) -> &Exchanges;

    /// A timeout cut the connection (not called for the drain's closes).
    fn timed_out(&self, timeout: TimedOut) {
        // Nowhere to report by default: the cut is logged where it happens.
        let _ = timeout;
    }
}

impl Connection for Exchanges {
    fn exchanges(&self) -> &Exchanges {
        self
    }
}

/// One request being served on a connection; counts its response as ended when
/// dropped, and wakes a read parked meanwhile.
#[derive(Debug)]
pub struct InFlight<C: Connection = Exchanges>(Arc<C>);

impl<C: Connection> InFlight<C> {
    /// A request's handling starts on `connection`; it ends when the guard is dropped,
    /// with the response's body (see [`Tracked`]).
    pub fn start(connection: &Arc<C>) -> InFlight<C> {
        connection.exchanges().started.fetch_add(1, Relaxed);
        InFlight(connection.clone())
    }

    /// The connection the request is served on.
    pub fn connection(&self) -> &C {
        &self.0
    }
}

impl<C: Connection> Drop for InFlight<C> {
    fn drop(&mut self) {
        self.0.exchanges().finish();
    }
}

/// A response body that holds its request's [`InFlight`]: hyper drops the body once it
/// has written the response's last byte, which is when the connection goes idle.
#[derive(Debug)]
pub struct Tracked<B, C: Connection = Exchanges> {
    body: B,
    _in_flight: InFlight<C>,
}

impl<B, C: Connection> Tracked<B, C> {
    /// `body`, ending `in_flight` when it is dropped.
    pub fn new(body: B, in_flight: InFlight<C>) -> Tracked<B, C> {
        Tracked {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B, C> Body for Tracked<B, C>
where
    B: Body + Unpin,
    C: Connection,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flag(AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Relaxed);
        }
    }

    #[test]
    fn the_guard_counts_a_request_until_its_body_is_dropped_and_wakes_the_parked_read() {
        let exchanges = Arc::new(Exchanges::default());
        let body = Tracked::new(String::from("hi"), InFlight::start(&exchanges));
        assert_eq!(exchanges.counts(), (1, 0));
        let woken = Arc::new(Flag(AtomicBool::new(false)));
        exchanges.park(&Waker::from(woken.clone()));
        drop(body);
        assert_eq!(exchanges.counts(), (1, 1));
        assert!(woken.0.load(Relaxed), "the parked read is woken");
        assert!(exchanges.parked().is_none());
    }

    #[test]
    fn a_tracked_body_is_the_body_it_wraps() {
        let exchanges = Arc::new(Exchanges::default());
        let body = Tracked::new(String::from("hello"), InFlight::start(&exchanges));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let empty = Tracked::new(String::new(), InFlight::start(&exchanges));
        assert!(empty.is_end_stream());
        assert_eq!(exchanges.counts(), (2, 0));
        drop((body, empty));
        assert_eq!(exchanges.counts(), (2, 2));
    }
}
