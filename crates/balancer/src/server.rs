//! Proxy workers: thread-per-core accept loops, client connections, graceful drain.
//!
//! Each worker is an OS thread running a current-thread tokio runtime with its own
//! listener (a clone of the caller's socket, or its own `SO_REUSEPORT` socket from
//! [`bind_reuseport`](crate::bind_reuseport)), its own connection pools and its own
//! counters. A request is served start to finish on the core that accepted it, with no
//! cross-thread wake-ups; the anchors measured this as the best layout on two cores.
//!
//! A shared semaphore caps client connections: at the cap a worker stops accepting until
//! a connection closes, and the kernel's backlog holds the rest (as in mini-redis).
//! On shutdown each worker stops accepting, asks every connection to finish its
//! in-flight request and close (hyper's graceful shutdown), and waits for them up to the
//! grace period.

use crate::body::ResponseBody;
use crate::config::{ClientConfig, ms};
use crate::error::BalancerError;
use crate::proxy::{self, Downstream};
use crate::state::{Shared, Worker};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Acquire, Ordering::Release};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, mpsc, watch};

/// The client-side HTTP/1.1 settings: timeouts, header limit, `writev(false)` (one
/// flattened write per response measured faster here than vectored writes).
pub(crate) fn http_builder(client: &ClientConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ms(client.header_read_timeout_ms))
        .max_header_size(client.max_header_bytes)
        .keep_alive(client.keep_alive)
        .writev(false);
    builder
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

/// Starts worker thread `index` serving `listener` (already non-blocking).
pub(crate) fn spawn(
    index: usize,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
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
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| BalancerError::Io {
                    what: "could not start a worker runtime",
                    source,
                })
                .and_then(|rt| {
                    rt.block_on(serve(
                        Arc::new(Worker::new(index, shared)),
                        listener,
                        limit,
                        shutdown,
                    ))
                });
            report.result = Some(result);
        })
        .map_err(|source| BalancerError::Io {
            what: "could not start a worker thread",
            source,
        })?;
    Ok(())
}

/// Whether `shutdown` has been (or is now) signalled; a dropped sender counts.
pub(crate) async fn signalled(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|&stop| stop).await.is_err() {
        tracing::debug!("shutdown sender dropped; stopping");
    }
}

/// One worker's accept loop, until shutdown; then the drain.
async fn serve(
    worker: Arc<Worker>,
    listener: std::net::TcpListener,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), BalancerError> {
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|source| BalancerError::Io {
            what: "could not register the listener",
            source,
        })?;
    let shared = worker.shared.clone();
    let http = http_builder(&shared.config.client);
    let sweeper = tokio::spawn(sweep_pools(worker.clone(), shutdown.clone()));
    let (alive, mut drained) = mpsc::channel::<()>(1);
    let drain = Arc::new(Drain::default());
    loop {
        let permit = tokio::select! {
            biased;
            () = signalled(&mut shutdown) => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let (stream, client) = tokio::select! {
            biased;
            () = signalled(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a client connection");
        }
        let cx = Arc::new(Downstream::new(worker.clone(), client));
        let service = service_fn(move |request| {
            let cx = cx.clone();
            async move { Ok::<_, Infallible>(proxy::handle(&cx, request).await) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let drain = drain.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _alive = alive;
            if let Err(e) = serve_until_drained(conn, &drain).await {
                tracing::debug!(%client, error = %e, "client connection ended with an error");
            }
        });
    }
    drain.draining.store(true, Release);
    drain.notify.notify_waiters();
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

/// Tells one worker's connections to finish their request and close.
///
/// A `watch` receiver per connection would be polled on every wake-up of the
/// connection's task (a lock each time, twice per request); instead each connection
/// registers with the `Notify` once and otherwise reads the flag.
#[derive(Debug, Default)]
struct Drain {
    draining: AtomicBool,
    notify: Notify,
}

/// Drives one client connection; when the worker drains, lets the request in flight
/// finish and closes the connection.
async fn serve_until_drained<S>(
    conn: http1::Connection<TokioIo<TcpStream>, S>,
    drain: &Drain,
) -> hyper::Result<()>
where
    S: hyper::service::HttpService<Incoming, ResBody = ResponseBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = std::pin::pin!(conn);
    // Created before the first poll, so a `notify_waiters` from now on reaches it.
    let mut notified = std::pin::pin!(drain.notify.notified());
    let (mut watching, mut draining) = (false, false);
    std::future::poll_fn(|cx| {
        if !draining && drain.draining.load(Acquire) {
            draining = true;
            conn.as_mut().graceful_shutdown();
        }
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        if !draining && !watching {
            watching = true;
            if notified.as_mut().poll(cx).is_ready() {
                draining = true;
                conn.as_mut().graceful_shutdown();
                return conn.as_mut().poll(cx);
            }
        }
        Poll::Pending
    })
    .await
}

/// Closes pooled connections nobody picked up within the idle timeout.
async fn sweep_pools(worker: Arc<Worker>, mut shutdown: watch::Receiver<bool>) {
    let idle_timeout = worker.shared.settings.pool.idle_timeout;
    let period = (idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = signalled(&mut shutdown) => return,
        }
        let now = Instant::now();
        for backend in worker.shared.registry.load().backends() {
            backend.local(worker.index).pool.sweep(now, idle_timeout);
        }
    }
}
