//! One attempt at one backend: lease a connection, send the request, await the head.
//!
//! [`Outgoing`] holds what is needed to build the request for each attempt. A request
//! that may be sent again after it reached a backend (idempotent or `Idempotency-Key`,
//! body buffered) keeps a copy of its headers; any other request moves its headers into
//! the first attempt, and gets them back only when hyper hands the request back unsent.
//!
//! [`attempt`] prefers a pooled connection. If hyper hands the request back from a pooled
//! connection (the backend closed it a moment ago), the attempt retries once on a fresh
//! connection: the request never left, so this is safe for any method and does not
//! count as a retry.

use crate::backend::Local;
use crate::body::{BodyError, Lease, RequestBody, Slot};
use crate::error::{ProxyError, is_local_exhaustion};
use crate::metrics::{Refusal, Timeout};
use crate::pool::{self, Conn, ConnectFailure};
use crate::slots::NoSlot;
use crate::state::Worker;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::futures::Notified;

/// Where the request body comes from on each attempt.
#[derive(Debug)]
pub(crate) enum Source {
    Empty,
    Buffered(Bytes),
    /// Streamed from the client; `None` once an attempt consumed it.
    Stream(Option<RequestBody>),
}

/// The request as it will be sent, rebuilt for each attempt.
#[derive(Debug)]
pub(crate) struct Outgoing {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    source: Source,
    resend: bool,
}

impl Outgoing {
    /// `resend` says the request may be sent again after reaching a backend; it only
    /// holds when the body is not streamed.
    pub(crate) fn new(
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        source: Source,
        resend: bool,
    ) -> Outgoing {
        let resend = resend && !matches!(source, Source::Stream(_));
        Outgoing {
            method,
            uri,
            headers,
            source,
            resend,
        }
    }

    /// Whether the request may be sent again after it (maybe) reached a backend.
    pub(crate) fn may_resend(&self) -> bool {
        self.resend
    }

    /// Whether the request can still be sent (a streamed body is used up once sent).
    pub(crate) fn available(&self) -> bool {
        !matches!(self.source, Source::Stream(None))
    }

    fn build(&mut self) -> Option<Request<RequestBody>> {
        let body = match &mut self.source {
            Source::Empty => RequestBody::Empty,
            Source::Buffered(bytes) => RequestBody::Full(Some(bytes.clone())),
            Source::Stream(body) => body.take()?,
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = Version::HTTP_11;
        // Headers are kept for another attempt whenever one is possible: a resendable
        // request, and any request whose body is still at hand (a `421 session-moved`
        // is followed with the same request; regression: a followed PATCH went out
        // without its headers, session cookie included).
        *request.headers_mut() = if self.resend || !matches!(self.source, Source::Stream(_)) {
            self.headers.clone()
        } else {
            std::mem::take(&mut self.headers)
        };
        Some(request)
    }

    /// Takes back a request hyper did not send.
    fn restore(&mut self, request: Request<RequestBody>) {
        let (parts, body) = request.into_parts();
        if !self.resend {
            self.headers = parts.headers;
        }
        if let Source::Stream(slot) = &mut self.source {
            *slot = Some(body);
        }
    }
}

/// Makes the request URI origin-form (`/path?query`) and gives it a `Host`. An
/// absolute-form target (`GET http://host/path`) names the host itself: its authority
/// replaces whatever `Host` says (RFC 9112 §3.2.2).
pub(crate) fn origin_form(uri: Uri, headers: &mut HeaderMap, fallback_host: SocketAddr) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        if !headers.contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(&fallback_host.to_string())
        {
            headers.insert(header::HOST, host);
        }
        return uri;
    }
    if let Some(host) = uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(header::HOST, host);
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    path.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

fn connect_error(local: &Local, failure: ConnectFailure, timeout: Duration) -> ProxyError {
    let backend = local.core.id.to_string();
    match failure {
        ConnectFailure::Io(source) if is_local_exhaustion(&source) => {
            ProxyError::LocalResources { backend, source }
        }
        ConnectFailure::Io(source) => ProxyError::Connect {
            backend,
            addr: local.core.addr,
            source,
        },
        ConnectFailure::Timeout => ProxyError::ConnectTimeout { backend, timeout },
    }
}

/// Maps a failed exchange: a failure of the client's body is the client's, not the
/// backend's.
fn exchange_error(local: &Local, error: hyper::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&error);
    while let Some(e) = source {
        if let Some(body) = e.downcast_ref::<BodyError>() {
            return match body {
                BodyError::TooLarge { limit } => ProxyError::BodyTooLarge { limit: *limit },
                BodyError::Timeout => ProxyError::BodyTimeout,
                BodyError::Client(_) => ProxyError::ClientBody(error),
            };
        }
        source = e.source();
    }
    ProxyError::Exchange {
        backend: local.core.id.to_string(),
        source: error,
    }
}

async fn fresh(worker: &Worker, local: &Local) -> Result<Conn, ProxyError> {
    let timeout = worker.shared.settings.pool.connect_timeout;
    pool::connect(local.core.addr, timeout).await.map_err(|f| {
        let error = connect_error(local, f, timeout);
        match &error {
            ProxyError::ConnectTimeout { .. } => worker.counters().timeout(Timeout::Connect),
            ProxyError::LocalResources { .. } => worker.counters().local_error(),
            _ => {}
        }
        error
    })
}

/// Waits in line for one of the worker's connection slots to the backend.
async fn slot(
    worker: &Worker,
    local: &Arc<Local>,
    down: Pin<&mut Notified<'_>>,
) -> Result<Slot, ProxyError> {
    let backend = || local.core.id.to_string();
    match local
        .slots
        .take(worker.shared.settings.queue_timeout, down)
        .await
    {
        Ok(()) => Ok(Slot(local.clone())),
        Err(NoSlot::QueueFull) => {
            worker.counters().refused(Refusal::QueueFull);
            Err(ProxyError::QueueFull {
                backend: backend(),
                waited: None,
            })
        }
        Err(NoSlot::Timeout(waited)) => {
            worker.counters().timeout(Timeout::Queue);
            Err(ProxyError::QueueFull {
                backend: backend(),
                waited: Some(waited),
            })
        }
        Err(NoSlot::Abandoned) => Err(ProxyError::BackendDown {
            backend: backend(),
            sent: false,
        }),
    }
}

/// When an attempt sent now must have its response head: `timeout` from now, or, for a
/// timeout too long to add, so far ahead that it never comes (as `tokio::time::timeout`
/// does).
fn response_deadline(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// Sends `out` to `local`'s backend and waits for the response head.
///
/// The request first takes one of the worker's connection slots to the backend
/// (waiting in line when all are busy, see [`slots`](crate::slots)). While it waits,
/// for a slot or for the answer, it also listens for the backend going down (see
/// [`checker`](crate::checker)): then it stops waiting, and the caller decides whether
/// it may go elsewhere.
///
/// # Errors
/// [`ProxyError`] saying whether the request left (see [`RetrySafety`](crate::RetrySafety)).
pub(crate) async fn attempt(
    worker: &Worker,
    local: &Arc<Local>,
    out: &mut Outgoing,
    started: Instant,
) -> Result<(Response<Incoming>, Lease), ProxyError> {
    let settings = &worker.shared.settings;
    // Listening before anything waits, so a backend going down from now on wakes us.
    let mut down = pin!(local.down.notified());
    down.as_mut().enable();
    let backend_down = |sent| ProxyError::BackendDown {
        backend: local.core.id.to_string(),
        sent,
    };
    // The paths that wait on something other than the answer (a slot, a new
    // connection, a connection's readiness) are boxed: the request's future lives as
    // long as its client connection (hyper keeps it), ten thousand of them at once, so
    // its size is memory per connection; these paths are the rare ones.
    let mut slot = if local.slots.try_take() {
        Slot(local.clone())
    } else {
        Box::pin(slot(worker, local, down.as_mut())).await?
    };
    let (mut conn, mut pooled) = match local.pool.take(started, settings.pool.idle_timeout) {
        Some(conn) => (conn, true),
        None => (Box::pin(fresh(worker, local)).await?, false),
    };
    loop {
        // A connection returned the moment its last body ended may not have signalled
        // readiness yet; it does as soon as its driver task runs.
        if pooled && !conn.is_ready() {
            let ready = Box::pin(tokio::time::timeout(
                settings.pool.connect_timeout,
                conn.ready(),
            ))
            .await;
            if !matches!(ready, Ok(Ok(()))) {
                conn = Box::pin(fresh(worker, local)).await?;
                pooled = false;
            }
        }
        let Some(request) = out.build() else {
            // The proxy only attempts while `out.available()`; a used-up stream cannot be sent.
            return Err(ProxyError::NoBackend);
        };
        local.stats.requests.fetch_add(1, Relaxed);
        // The send future does not borrow the connection, so the lease can hold it.
        let send = conn.try_send_request(request);
        let mut lease = Lease::new(conn, slot, started, &settings.pool);
        // A reused timer rather than `tokio::time::timeout` (see `timers`); polled after
        // the answer, as `timeout` does, so an answer that is there wins.
        let timer = worker
            .timers
            .until(response_deadline(settings.response_timeout));
        let answer = tokio::select! {
            biased;
            answer = send => Ok(answer),
            () = timer => Err(()),
            // The lease is dropped unreleased: the connection, mid-exchange, is closed.
            () = down.as_mut() => return Err(backend_down(true)),
        };
        match answer {
            Ok(Ok(response)) => {
                lease.answered();
                return Ok((response, lease));
            }
            Ok(Err(mut failed)) => {
                let unsent = failed.take_message();
                let error = failed.into_error();
                match unsent {
                    Some(request) => {
                        out.restore(request);
                        slot = lease.into_slot();
                        if pooled {
                            conn = Box::pin(fresh(worker, local)).await?;
                            pooled = false;
                            continue;
                        }
                        return Err(ProxyError::NotSent {
                            backend: local.core.id.to_string(),
                            source: error,
                        });
                    }
                    None => return Err(exchange_error(local, error)),
                }
            }
            Err(()) => {
                worker.counters().timeout(Timeout::Response);
                return Err(ProxyError::ResponseTimeout {
                    backend: local.core.id.to_string(),
                    timeout: settings.response_timeout,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_form_becomes_origin_form_with_a_host() {
        let mut headers = HeaderMap::new();
        let uri = origin_form(
            "http://bistro.test:8080/v1/menu?x=1".parse().unwrap(),
            &mut headers,
            "127.0.0.1:1".parse().unwrap(),
        );
        assert_eq!(uri, "/v1/menu?x=1");
        assert_eq!(headers[header::HOST], "bistro.test:8080");
    }

    #[test]
    fn an_absolute_form_target_overrides_the_host_header() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("other.test"));
        let uri = origin_form(
            "http://bistro.test/v1".parse().unwrap(),
            &mut headers,
            "127.0.0.1:1".parse().unwrap(),
        );
        assert_eq!(uri, "/v1");
        assert_eq!(headers[header::HOST], "bistro.test");
    }

    #[test]
    fn origin_form_without_host_gets_the_fallback() {
        let mut headers = HeaderMap::new();
        let uri = origin_form(
            "/v1".parse().unwrap(),
            &mut headers,
            "127.0.0.1:7001".parse().unwrap(),
        );
        assert_eq!(uri, "/v1");
        assert_eq!(headers[header::HOST], "127.0.0.1:7001");
    }

    #[test]
    fn streamed_bodies_are_never_resent() {
        let out = Outgoing::new(
            Method::PUT,
            Uri::from_static("/"),
            HeaderMap::new(),
            Source::Stream(None),
            true,
        );
        assert!(!out.may_resend());
        assert!(!out.available());
    }
}
