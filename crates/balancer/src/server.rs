//! Proxy workers: thread-per-core accept loops, client connections, graceful drain.
//!
//! Each worker is an OS thread running a current-thread tokio runtime with its own
//! listener (a clone of the caller's socket, or its own `SO_REUSEPORT` socket from
//! [`bind_reuseport`](crate::bind_reuseport)), its own connection pools and its own
//! counters. A request is served start to finish on the core that accepted it, with no
//! cross-thread wake-ups; the anchors measured this as the best layout on two cores.
//!
//! ## Admission
//!
//! Every connection is accepted, then admitted or refused with a clear answer, rather
//! than left unanswered in the kernel's backlog (where a client only sees its connect
//! time out):
//!
//! - beyond `client.max_connections` (over all workers): `503 balancer-busy`;
//! - beyond `client.max_connections_per_ip` from one address: `429 too-many-connections`;
//! - out of file descriptors (`EMFILE`/`ENFILE`), the accept itself fails: the worker
//!   keeps one spare descriptor for exactly this, gives it up to accept the waiting
//!   client, answers `503 balancer-busy`, closes, and takes the spare back; then it
//!   backs off a moment. Each case is counted, and logged at most once a second.
//!
//! A refusal is written before any request is read and the socket then lingers
//! briefly, reading and discarding, so that the client's request arriving after our
//! answer does not make the kernel reset the connection and destroy the answer.
//! None of this is a backend's fault, and none counts towards ejection.
//!
//! ## Connections
//!
//! A client's socket is wrapped in [`ClientIo`] (idle, head and send timeouts), and
//! hyper's read buffer is capped at `client.read_buffer_bytes`. On shutdown each worker
//! stops accepting, asks every connection to finish its in-flight request and close
//! (hyper's graceful shutdown), and waits for them up to the grace period.
//!
//! Shutdown reaches a worker as the cancellation of its own token, a child of the HTTP
//! proxy's in the balancer's tree (see [`serve`](crate::serve)); its pool sweeper has a
//! child of that one. The connections hear of it through the worker's `Drain` instead
//! of a token each: a registered waker costs a connection far less than a token and
//! the future waiting on it, and every byte here is paid per client connection.

use crate::body::ResponseBody;
use crate::client_io::request_timeout_answer;
use crate::client_ip;
use crate::config::{BalancerConfig, ClientConfig, ms};
use crate::error::{BalancerError, is_local_exhaustion};
use crate::metrics::{Handshake, Refusal};
use crate::problem::Problem;
use crate::proxy::{self, Downstream};
use crate::state::{Shared, Worker};
use bistro_http_io::{ClientIo, InFlight, Tracked, linger, write_refusal};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The client-side HTTP/1.1 settings: header limit, read buffer, `writev(false)` (one
/// flattened write per response measured faster here than vectored writes). hyper's
/// own header timer is off: [`ClientIo`] keeps the head and idle timeouts apart.
///
/// `half_close(true)`: hyper does not read from a client while its request is being
/// served. Reading then would only detect a client that left, and it costs a second
/// 8 KiB read buffer for every request in flight (the first is still referenced by
/// the request's headers) — 80 MiB at ten thousand queued requests. A client that
/// left is noticed when its answer is written, as HAProxy does without
/// `option abortonclose`; its request is bounded by the queue and response timeouts.
pub(crate) fn http_builder(client: &ClientConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .header_read_timeout(None)
        .half_close(true)
        // `client.max_header_bytes` is the proxy's own check, which answers with a
        // problem document (see `bistro_http_io::head_size`); hyper's limit, whose answer is a
        // bare 431, only backs it up for heads that do not even fit the read buffer.
        .max_header_size(client.read_buffer_bytes)
        .max_buf_size(client.read_buffer_bytes)
        .keep_alive(client.keep_alive)
        .writev(false);
    builder
}

/// The HTTP/2 settings for diners who choose it by ALPN: the stream cap, and the
/// header limit of HTTP/1.1 applied to a request's header list.
pub(crate) fn http2_builder(config: &BalancerConfig) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .max_concurrent_streams(config.tls.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(config.client.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// A TLS connection: the handshake (bounded by the header read timeout, which
/// [`ClientIo`] under the TLS layer applies to it), then HTTP/2 or HTTP/1.1 as ALPN
/// agreed. A drain that starts during the handshake ends it.
async fn serve_tls<S>(
    handshake: tokio_rustls::Accept<ClientIo<Downstream>>,
    worker: Arc<Worker>,
    http: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    service: S,
    place: Place,
    shutdown: CancellationToken,
) where
    S: hyper::service::HttpService<Incoming, ResBody = ClientBody> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::select! {
        biased;
        () = shutdown.cancelled() => return,
        stream = handshake => stream,
    };
    let stream = match stream {
        Ok(stream) => stream,
        Err(e) => {
            let outcome = if e.kind() == std::io::ErrorKind::TimedOut {
                Handshake::TimedOut
            } else {
                Handshake::Failed
            };
            worker.counters().handshake(outcome);
            tracing::debug!(client = %place.client, error = %e, "TLS handshake failed");
            return;
        }
    };
    let h2_agreed = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    if h2_agreed {
        worker.counters().handshake(Handshake::H2);
        place
            .serve(h2.serve_connection(TokioIo::new(stream), service))
            .await;
    } else {
        worker.counters().handshake(Handshake::Http1);
        place
            .serve(http.serve_connection(TokioIo::new(stream), service))
            .await;
    }
}

/// A hyper server connection of either protocol: what [`Served`] drives.
pub(crate) trait ServerConnection:
    Future<Output = Result<(), hyper::Error>> + Unpin
{
    /// Finish the requests in flight, take no more, then close.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> ServerConnection for http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = ClientBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    http1::Connection<I, S>: Unpin,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::Connection::graceful_shutdown(self);
    }
}

impl<I, S, E> ServerConnection for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = ClientBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, ClientBody>,
    http2::Connection<I, S, E>: Unpin,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

/// How a worker thread ended; sent when the thread exits, even by panic.
pub(crate) struct Exit {
    pub(crate) index: usize,
    pub(crate) result: Result<(), BalancerError>,
}

struct ExitReport {
    index: usize,
    tx: mpsc::UnboundedSender<Exit>,
    result: Option<Result<(), BalancerError>>,
}

impl Drop for ExitReport {
    fn drop(&mut self) {
        let result = self
            .result
            .take()
            .unwrap_or(Err(BalancerError::WorkerPanicked(self.index)));
        if self
            .tx
            .send(Exit {
                index: self.index,
                result,
            })
            .is_err()
        {
            tracing::debug!(
                worker = self.index,
                "worker exited after the balancer stopped listening"
            );
        }
    }
}

/// A worker's runtime. Every worker's is built before any worker accepts: a runtime
/// needs descriptors (epoll, an eventfd), and one built once the first worker's
/// clients took them all would fail and take the whole balancer down (regression).
///
/// # Errors
/// When the runtime cannot be built.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, BalancerError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| BalancerError::Io {
            what: "could not start a worker runtime",
            source,
        })
}

/// Starts worker thread `index` serving `listener` (already non-blocking) on `rt`
/// until `shutdown` is cancelled.
pub(crate) fn spawn(
    index: usize,
    rt: tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    exits: mpsc::UnboundedSender<Exit>,
) -> Result<(), BalancerError> {
    let thread = std::thread::Builder::new().name(format!("bistro-proxy-{index}"));
    thread
        .spawn(move || {
            let mut report = ExitReport {
                index,
                tx: exits,
                result: None,
            };
            let result = rt.block_on(serve(
                Arc::new(Worker::new(index, shared)),
                listener,
                shutdown,
            ));
            report.result = Some(result);
        })
        .map_err(|source| BalancerError::Io {
            what: "could not start a worker thread",
            source,
        })?;
    Ok(())
}

/// The answers written to refused connections, rendered once.
struct Refusals {
    busy: Bytes,
    per_ip: Bytes,
    no_fds: Bytes,
}

impl Refusals {
    fn new(client: &ClientConfig) -> Refusals {
        let raw = |p: Problem| Bytes::from(p.raw(None));
        Refusals {
            busy: raw(Problem::balancer_busy(
                "holds its most client connections (client.max_connections)",
            )),
            per_ip: raw(Problem::too_many_connections(client.max_connections_per_ip)),
            no_fds: raw(Problem::balancer_busy("has no file descriptors left")),
        }
    }
}

/// Sockets lingering after a refusal (over all workers); beyond
/// `Shared::max_lingering` they close at once.
static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// Answers a refused connection and closes it (see the module docs).
fn refuse(stream: TcpStream, answer: Bytes, max_lingering: usize) {
    write_refusal(&stream, &answer);
    if LINGERING.fetch_add(1, Relaxed) >= max_lingering {
        LINGERING.fetch_sub(1, Relaxed);
        return;
    }
    tokio::spawn(async move {
        linger(stream).await;
        LINGERING.fetch_sub(1, Relaxed);
    });
}

/// A spare file descriptor, given up to refuse a client when the process has none left.
struct Spare(Option<std::fs::File>);

impl Spare {
    fn open() -> Spare {
        Spare(std::fs::File::open("/dev/null").ok())
    }
}

/// The accept loop ran out of file descriptors: refuse one waiting client with the
/// spare descriptor (see the module docs), count it, say so at most once a second, and
/// back off a moment so connections can close.
async fn out_of_fds(
    worker: &Worker,
    listener: &TcpListener,
    spare: &mut Spare,
    refusals: &Refusals,
    error: &std::io::Error,
) {
    let counters = worker.counters();
    counters.accept_error();
    counters.refused(Refusal::OutOfFds);
    let now_ms = worker.shared.clock.now_ms();
    if let Some(held) = worker.throttles.accept.allow(now_ms, 1_000) {
        tracing::warn!(
            error = %error,
            similar_before = held,
            connections = worker.shared.connections.load(Relaxed),
            "accept failed: the balancer is out of file descriptors; refusing new clients until connections close"
        );
    }
    if spare.0.take().is_some() {
        match tokio::time::timeout(Duration::from_millis(5), listener.accept()).await {
            Ok(Ok((stream, _))) => {
                write_refusal(&stream, &refusals.no_fds);
                // No descriptor to spare for lingering: read what the client already
                // sent, so closing sends a FIN after the answer rather than a reset
                // that could destroy it.
                let mut sink = [0u8; 4096];
                while matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {}
                drop(stream);
            }
            Ok(Err(e)) => {
                tracing::trace!(error = %e, "accept failed even with the spare descriptor")
            }
            Err(_) => {}
        }
        *spare = Spare::open();
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// One worker's accept loop, until `shutdown` is cancelled; then the drain.
async fn serve(
    worker: Arc<Worker>,
    listener: std::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), BalancerError> {
    let listener = TcpListener::from_std(listener).map_err(|source| BalancerError::Io {
        what: "could not register the listener",
        source,
    })?;
    let shared = worker.shared.clone();
    let http = http_builder(&shared.config.client);
    let h2 = http2_builder(&shared.config);
    let refusals = Refusals::new(&shared.config.client);
    let timeouts = shared.settings.client;
    let sweeper = tokio::spawn(sweep_pools(worker.clone(), shutdown.child_token()));
    let (alive, mut drained) = mpsc::channel::<()>(1);
    let drain = Arc::new(Drain::default());
    let mut spare = Spare::open();
    loop {
        // Full, and no descriptor left to refuse with a lingering close: leave the
        // next clients in the kernel's backlog for a moment rather than accept them
        // only to reset them. They are served, or refused properly, once something
        // closes.
        if shared.connections.load(Relaxed) >= shared.max_connections.load(Relaxed)
            && LINGERING.load(Relaxed) >= shared.max_lingering.load(Relaxed)
        {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(10)) => continue,
            }
        }
        let (stream, client) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_local_exhaustion(&e) => {
                    out_of_fds(&worker, &listener, &mut spare, &refusals, &e).await;
                    continue;
                }
                Err(e) => {
                    worker.counters().accept_error();
                    if let Some(held) = worker.throttles.accept.allow(shared.clock.now_ms(), 1_000) {
                        tracing::warn!(error = %e, similar_before = held, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let cx = match admission(&worker, client) {
            Ok(cx) => cx,
            Err(refused) => {
                let (reason, answer, what) = match refused {
                    Refused::Busy => (
                        Refusal::MaxConnections,
                        &refusals.busy,
                        "the balancer holds client.max_connections",
                    ),
                    Refused::PerIp => (
                        Refusal::PerIpConnections,
                        &refusals.per_ip,
                        "the client's address holds client.max_connections_per_ip",
                    ),
                };
                worker.counters().refused(reason);
                if let Some(held) = worker.throttles.refused.allow(shared.clock.now_ms(), 1_000) {
                    tracing::warn!(%client, similar_before = held, "refusing a connection: {what}");
                }
                refuse(stream, answer.clone(), shared.max_lingering.load(Relaxed));
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a client connection");
        }
        let tls = shared.tls.as_ref();
        // Under TLS the raw `408` would be garbage inside the encrypted stream: a slow
        // head is closed without an answer there, as nginx does.
        let answer = if tls.is_some() {
            Bytes::new()
        } else {
            request_timeout_answer()
        };
        let io = ClientIo::new(stream, cx.clone(), timeouts, answer);
        let hsts = tls.and_then(|t| t.hsts.clone());
        let service = service_fn(move |request| {
            // Counted from the call, and ended with the response's body.
            let in_flight = InFlight::start(&cx);
            let hsts = hsts.clone();
            async move {
                let mut response = proxy::handle(in_flight.connection(), request).await;
                if let Some(hsts) = hsts {
                    response
                        .headers_mut()
                        .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts);
                }
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
            }
        });
        let place = Place {
            drain: drain.clone(),
            registered: None,
            draining: false,
            client,
            _alive: alive.clone(),
        };
        match tls {
            None => {
                let conn = http.serve_connection(TokioIo::new(io), service);
                tokio::spawn(place.serve(conn));
            }
            Some(tls) => {
                let handshake = tls.acceptor.accept(io);
                tokio::spawn(serve_tls(
                    handshake,
                    worker.clone(),
                    http.clone(),
                    h2.clone(),
                    service,
                    place,
                    shutdown.clone(),
                ));
            }
        }
    }
    drain.start();
    drop(listener);
    drop(alive);
    let grace = ms(shared.config.shutdown_grace_ms);
    if tokio::time::timeout(grace, drained.recv()).await.is_err() {
        tracing::warn!(
            worker = worker.index,
            ?grace,
            "client connections still open after the grace period; closing them"
        );
    }
    sweeper.abort();
    Ok(())
}

/// Why a connection was not admitted.
enum Refused {
    Busy,
    PerIp,
}

/// Counts a new connection in, or says why it cannot come in.
fn admission(
    worker: &Arc<Worker>,
    client: std::net::SocketAddr,
) -> Result<Arc<Downstream>, Refused> {
    let shared = &worker.shared;
    let open = shared.connections.fetch_add(1, Relaxed);
    if open >= shared.max_connections.load(Relaxed) {
        shared.connections.fetch_sub(1, Relaxed);
        return Err(Refused::Busy);
    }
    let trusted = client_ip::is_trusted(&shared.config.client.trusted_proxies, client.ip());
    let place = if trusted {
        None
    } else {
        match shared.per_ip.admit(client.ip()) {
            Some(place) => place,
            None => {
                shared.connections.fetch_sub(1, Relaxed);
                return Err(Refused::PerIp);
            }
        }
    };
    // From here the connection's `Drop` gives its places back.
    Ok(Arc::new(Downstream::new(
        worker.clone(),
        client,
        trusted,
        shared.tls.is_some(),
        place,
    )))
}

/// Tells one worker's connections to finish their request and close.
///
/// Each connection registers its task's waker once, on its first poll, and reads the
/// flag whenever it is polled; starting the drain wakes every registered connection,
/// so idle keep-alive connections close at once too.
#[derive(Debug, Default)]
struct Drain {
    draining: AtomicBool,
    wakers: std::sync::Mutex<std::collections::HashMap<u64, std::task::Waker>>,
    next: AtomicU64,
}

impl Drain {
    fn wakers(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, std::task::Waker>> {
        // Wakers only: a panic elsewhere cannot leave the map inconsistent.
        self.wakers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn start(&self) {
        self.draining.store(true, Release);
        let wakers: Vec<_> = self.wakers().drain().map(|(_, w)| w).collect();
        for waker in wakers {
            waker.wake();
        }
    }
}

/// One client connection's task: drives the hyper connection; when the worker drains,
/// lets the request in flight finish and closes the connection.
///
/// A hand-written future rather than an `async` block: such a block would hold the
/// connection (800 bytes) once as its capture and again as the awaited future, and
/// every byte of this task is held per client connection.
struct Served<C> {
    conn: C,
    place: Place,
}

/// A connection task's place in its worker's drain, given back when the task ends.
struct Place {
    drain: Arc<Drain>,
    /// The key of this task's waker in the drain's registry.
    registered: Option<u64>,
    draining: bool,
    client: std::net::SocketAddr,
    /// Dropped with the task: the worker's drain waits for every sender to go.
    _alive: mpsc::Sender<()>,
}

impl Place {
    /// The task serving `conn` in this place.
    fn serve<C: ServerConnection>(self, conn: C) -> Served<C> {
        Served { conn, place: self }
    }
}

impl<C: ServerConnection> Future for Served<C> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Served { conn, place } = &mut *self;
        if place.registered.is_none() && !place.draining {
            let key = place.drain.next.fetch_add(1, Relaxed);
            place.drain.wakers().insert(key, cx.waker().clone());
            place.registered = Some(key);
        }
        if !place.draining && place.drain.draining.load(Acquire) {
            place.draining = true;
            Pin::new(&mut *conn).graceful_shutdown();
        }
        match Pin::new(conn).poll(cx) {
            Poll::Ready(Err(e)) => {
                tracing::debug!(client = %place.client, error = %e, "client connection ended with an error");
                Poll::Ready(())
            }
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(key) = self.registered {
            self.drain.wakers().remove(&key);
        }
    }
}

/// Closes pooled connections nobody picked up within the idle timeout.
async fn sweep_pools(worker: Arc<Worker>, shutdown: CancellationToken) {
    let idle_timeout = worker.shared.settings.pool.idle_timeout;
    let period = (idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let now = Instant::now();
        for backend in worker.shared.registry.load().backends() {
            backend.local(worker.index).pool.sweep(now, idle_timeout);
        }
    }
}

/// The body of a response to a client: ends the connection's exchange when hyper is
/// done with it, which is when the connection goes idle (see [`ClientIo`]).
pub(crate) type ClientBody = Tracked<ResponseBody, Downstream>;
