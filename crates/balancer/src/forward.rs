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
use crate::body::{BodyError, Lease, RequestBody};
use crate::error::ProxyError;
use crate::pool::{self, Conn, ConnectFailure};
use crate::state::Worker;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

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
        *request.headers_mut() = if self.resend {
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

/// Makes the request URI origin-form (`/path?query`) and gives it a `Host`.
pub(crate) fn origin_form(uri: Uri, headers: &mut HeaderMap, fallback_host: SocketAddr) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        if !headers.contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(&fallback_host.to_string())
        {
            headers.insert(header::HOST, host);
        }
        return uri;
    }
    if !headers.contains_key(header::HOST)
        && let Some(host) = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(header::HOST, host);
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    path.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

fn connect_error(
    local: &Local,
    failure: ConnectFailure,
    timeout: std::time::Duration,
) -> ProxyError {
    let backend = local.core.id.to_string();
    match failure {
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
    pool::connect(local.core.addr, timeout)
        .await
        .map_err(|f| connect_error(local, f, timeout))
}

/// Sends `out` to `local`'s backend and waits for the response head.
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
    let (mut conn, mut pooled) = match local.pool.take(started, settings.pool.idle_timeout) {
        Some(conn) => (conn, true),
        None => (fresh(worker, local).await?, false),
    };
    loop {
        // A connection returned the moment its last body ended may not have signalled
        // readiness yet; it does as soon as its driver task runs.
        if pooled && !conn.is_ready() {
            let ready = tokio::time::timeout(settings.pool.connect_timeout, conn.ready()).await;
            if !matches!(ready, Ok(Ok(()))) {
                conn = fresh(worker, local).await?;
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
        let mut lease = Lease::new(conn, local.clone(), started, &settings.pool);
        match tokio::time::timeout(settings.response_timeout, send).await {
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
                        drop(lease);
                        if pooled {
                            conn = fresh(worker, local).await?;
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
            Err(_elapsed) => {
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
