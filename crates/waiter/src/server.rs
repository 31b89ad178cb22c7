//! Serving: the HTTP server plus the kitchen and the sweeper, with a graceful stop.
//!
//! The caller binds the listener (port 0 in tests) and decides when to stop (ctrl-c,
//! SIGTERM, a test's oneshot). On the stop signal the waiter reports not-ready, stops
//! accepting connections, closes idle keep-alive connections and lets requests in flight
//! finish, for at most `request_timeout` (each request is bounded by it anyway) plus a
//! second. Then the kitchen and the sweeper finish their current round and stop.
//!
//! ## Connections
//!
//! The accept loop is written here on hyper rather than left to `axum::serve`, which
//! sets no limit on connections: a client could hold one forever by sending its request
//! head a byte at a time (slowloris), by opening keep-alive connections and never using
//! them, or by opening more connections than the process has file descriptors. The
//! limits are [`HttpLimits`] in the waiter's configuration:
//!
//! - **header read timeout** and **keep-alive idle timeout**: kept apart by wrapping each
//!   socket in a [`ClientIo`] (see [`bistro_http_io`] for why hyper's own timer cannot do
//!   it; the balancer wraps its client sockets the same way);
//! - **connection cap**: a [`Semaphore`] of `max_connections` permits, one held by each
//!   connection's task. A client over the cap is still accepted, answered `503
//!   too-many-connections` with `Retry-After: 1` and closed: left in the kernel's backlog
//!   it would only see its connect time out, without knowing why or what to do.
//!
//! A request, once its head is in, is bounded by `request_timeout` (the `timeout`
//! middleware), not by these.

mod answer;

use crate::config::HttpLimits;
use crate::{Waiter, kitchen, sweeper};
use answer::Answers;
use axum::Router;
use bistro_http_io::{ClientIo, Exchanges, InFlight, Timeouts, Tracked, linger, write_refusal};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service as _, service_fn};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Refused sockets lingering at once (see [`refuse`]); beyond, they close at once.
const MAX_LINGERING: usize = 1024;

/// Serves HTTP on `listener` and runs the kitchen and the session sweeper until
/// `shutdown` resolves; then stops accepting, lets in-flight requests finish (bounded by
/// `request_timeout`), stops the background tasks and returns.
///
/// # Errors
/// When the listener's address cannot be read.
pub async fn run(
    listener: TcpListener,
    waiter: Waiter,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    // The server's shutdown tree: the background tasks and the connections each get a
    // child of it; `serve` cancels the connections' token first (the drain), the
    // background tasks stop after the last request.
    let stop = CancellationToken::new();
    let background = stop.child_token();
    let kitchen = tokio::spawn(kitchen::run(waiter.clone(), background.clone()));
    let sweeper = tokio::spawn(sweeper::run(waiter.clone(), background));

    let config = waiter.config();
    tracing::info!(
        %addr,
        id = %config.id,
        mode = %config.mode,
        store = %config.store_url,
        max_connections = config.http.max_connections,
        header_read_timeout_ms = config.http.header_read_timeout.as_millis(),
        keep_alive_idle_ms = config.http.keep_alive_idle.as_millis(),
        "waiter listening"
    );
    serve(listener, &waiter, shutdown, stop.child_token()).await;
    stop.cancel();
    for (name, task) in [("kitchen", kitchen), ("sweeper", sweeper)] {
        if let Err(e) = task.await {
            tracing::error!(task = name, error = %e, "a background task failed");
        }
    }
    tracing::info!(id = %config.id, "waiter stopped");
    Ok(())
}

/// The accept loop until `shutdown`, then the drain (see the module docs).
async fn serve(
    listener: TcpListener,
    waiter: &Waiter,
    shutdown: impl Future<Output = ()>,
    drain: CancellationToken,
) {
    let limits = waiter.config().http;
    let answers = Answers::render(waiter).await;
    let router = waiter.router();
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING));
    let mut refusals = Throttle::default();
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                reap(done);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning;
                    // clients wait in the backlog until connections close.
                    tracing::warn!(error = %e, "accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(similar) = refusals.allow(Instant::now()) {
                tracing::warn!(
                    %peer,
                    similar_before = similar,
                    max_connections = limits.max_connections,
                    "refusing a connection: the waiter serves its most HTTP connections"
                );
            }
            refuse(stream, answers.busy.clone(), &lingering, &mut tasks);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        tasks.spawn(connection(Connection {
            stream,
            peer,
            router: router.clone(),
            limits,
            answers: answers.clone(),
            drain: drain.clone(),
            _slot: slot,
        }));
    }

    waiter.begin_shutdown();
    tracing::info!("shutting down: accepting no new connections, finishing requests in flight");
    drop(listener);
    drain.cancel();
    let grace = waiter.config().request_timeout + Duration::from_secs(1);
    let drained = tokio::time::timeout(grace, async {
        while let Some(done) = tasks.join_next().await {
            reap(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            ?grace,
            open = tasks.len(),
            "requests still in flight after the grace period; abandoning them"
        );
        tasks.shutdown().await;
    }
}

/// Logs a connection task that panicked.
fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "an HTTP connection task failed");
    }
}

/// What one connection's task needs.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: HttpLimits,
    answers: Answers,
    drain: CancellationToken,
    /// The connection's place under the cap, given back when the task ends.
    _slot: OwnedSemaphorePermit,
}

/// Serves one connection until the client or a timeout closes it; on the drain signal,
/// lets the request in flight finish and closes.
async fn connection(c: Connection) {
    let exchanges = Arc::new(Exchanges::default());
    let timeouts = Timeouts {
        header: c.limits.header_read_timeout,
        idle: c.limits.keep_alive_idle,
        // A request, writes included, is bounded by `request_timeout`.
        send: None,
    };
    let io = ClientIo::new(
        c.stream,
        exchanges.clone(),
        timeouts,
        c.answers.head_timeout.clone(),
    );
    let app = TowerToHyperService::new(c.router);
    let counted = exchanges.clone();
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = InFlight::start(&counted);
        let response = app.call(request);
        async move {
            let response = response.await?;
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
        }
    });
    let conn = http1::Builder::new()
        // Off: ClientIo keeps the head and idle timeouts apart (see bistro_http_io).
        .header_read_timeout(None)
        // The head's own limit is checked in `middleware::around`, with a problem
        // answer; hyper's bare 431 only stops heads far over it.
        .max_buf_size(c.limits.read_buffer_bytes())
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = c.drain.cancelled() => {
            // A connection waiting for a request closes now; one serving a request
            // finishes it, without keep-alive, then closes.
            exchanges.drain();
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = served {
        tracing::debug!(peer = %c.peer, error = %e, "HTTP connection ended with an error");
    }
}

/// Writes `answer` to a refused connection and closes it.
///
/// The answer is written before the client's request is read, so the socket then
/// lingers briefly, reading and discarding: closing a socket with unread input makes
/// the kernel send a reset, which can destroy the answer before the client reads it.
/// At most [`MAX_LINGERING`] sockets linger at once, so a flood cannot turn refusals
/// into a pile of open sockets; beyond that they close at once.
fn refuse(
    stream: TcpStream,
    answer: bytes::Bytes,
    lingering: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
) {
    write_refusal(&stream, &answer);
    let Ok(place) = lingering.clone().try_acquire_owned() else {
        return;
    };
    tasks.spawn(async move {
        let _place = place;
        linger(stream).await;
    });
}

/// Lets a repeated warning through at most once a second, counting the ones held back.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// `Some(held back since the last one)` when a warning may be logged at `now`.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_lets_one_warning_a_second_through_and_counts_the_rest() {
        let mut throttle = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(throttle.allow(t0), Some(0));
        assert_eq!(throttle.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(throttle.allow(t0 + Duration::from_millis(999)), None);
        assert_eq!(throttle.allow(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(throttle.allow(t0 + Duration::from_millis(1500)), None);
    }
}
