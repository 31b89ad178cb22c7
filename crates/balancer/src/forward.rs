//! One attempt at one backend: lease a connection, send the request, await the head.
//!
//! [`Outgoing`] holds the request as it will be sent on each attempt; the exchange
//! writes it from there (its headers are borrowed, never copied), so a request that is
//! sent again, or followed to another backend after `421`, is the same request.
//!
//! The exchange runs in the request's own task: the request head (and a buffered body)
//! goes out in one write, the response head is read and parsed here (see [`h1`]), and
//! the connection, held by the [`Lease`], moves into the response body.
//!
//! [`attempt`] prefers a pooled connection. If writing to a pooled connection fails
//! before any byte left (the backend closed it a moment ago), the attempt retries once
//! on a fresh connection: the request never left, so this is safe for any method and
//! does not count as a retry.

use crate::backend::Local;
use crate::body::{BodyError, Lease, RequestBody, Slot};
use crate::error::{ProxyError, is_local_exhaustion};
use crate::h1::{self, BodyFraming, RequestFraming, UpstreamError};
use crate::metrics::{Refusal, Timeout};
use crate::pool::{self, Conn, ConnectFailure, READ_CHUNK};
use crate::slots::NoSlot;
use crate::state::Worker;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, Uri, header};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::futures::Notified;

/// A buffered body at most this large goes out in the same write as the head (one
/// system call, one copy); a larger one is written from where it is.
const INLINE_BODY: usize = 16 * 1024;

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

/// How one exchange failed.
#[derive(Debug)]
enum Failure {
    /// Nothing of the request left (the first write failed).
    NotSent(UpstreamError),
    /// The request left, at least in part.
    Sent(UpstreamError),
    /// The client's body failed while it was being forwarded.
    Body(BodyError),
}

fn body_error(error: BodyError) -> ProxyError {
    match error {
        BodyError::TooLarge { limit } => ProxyError::BodyTooLarge { limit },
        BodyError::Timeout => ProxyError::BodyTimeout,
        BodyError::Client(e) => ProxyError::ClientBody(e),
    }
}

/// Writes `bytes`, the start of a request: a failure of the first write means nothing
/// left.
async fn write_start(io: &mut tokio::net::TcpStream, bytes: &[u8]) -> Result<(), Failure> {
    let n = match io.write(bytes).await {
        Ok(0) => return Err(Failure::NotSent(UpstreamError::Closed)),
        Ok(n) => n,
        Err(e) => return Err(Failure::NotSent(e.into())),
    };
    io.write_all(&bytes[n..])
        .await
        .map_err(|e| Failure::Sent(e.into()))
}

/// Reads the response head.
async fn read_head(
    conn: &mut Conn,
    head_request: bool,
    limit: usize,
) -> Result<h1::ResponseHead, Failure> {
    loop {
        if !conn.buf.is_empty()
            && let Some(head) =
                h1::parse_response(&mut conn.buf, head_request, limit, &mut conn.fields)
                    .map_err(Failure::Sent)?
        {
            conn.reusable &= head.keep_alive;
            return Ok(head);
        }
        conn.buf.reserve(READ_CHUNK);
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) => return Err(Failure::Sent(UpstreamError::Closed)),
            Ok(_) => {}
            Err(e) => return Err(Failure::Sent(e.into())),
        }
    }
}

/// Writes a streamed body after its head. A backend may answer before it has read the
/// whole body (a refusal, say): then the rest is not sent, and the connection is not
/// reused.
async fn send_stream(
    conn: &mut Conn,
    body: &mut RequestBody,
    chunked: bool,
) -> Result<(), Failure> {
    let Conn {
        io,
        buf,
        out,
        reusable,
        ..
    } = conn;
    let (mut reader, mut writer) = io.split();
    let send = async {
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(Failure::Body)?.into_data() else {
                continue; // trailers are not forwarded
            };
            if data.is_empty() {
                continue;
            }
            let written = if chunked {
                out.clear();
                h1::encode_chunk(out, &data);
                writer.write_all(out).await
            } else {
                writer.write_all(&data).await
            };
            written.map_err(|e| Failure::Sent(e.into()))?;
        }
        if chunked {
            writer
                .write_all(h1::LAST_CHUNK)
                .await
                .map_err(|e| Failure::Sent(e.into()))?;
        }
        Ok(())
    };
    let mut send = pin!(send);
    loop {
        tokio::select! {
            sent = &mut send => return sent,
            early = reader.read_buf(buf) => {
                match early {
                    Ok(0) => {
                        *reusable = false;
                        return Err(Failure::Sent(UpstreamError::Closed));
                    }
                    Ok(_) if h1::only_interim(buf) => {} // `100 Continue`: go on sending
                    Ok(_) => {
                        *reusable = false; // the rest of the body is not sent
                        return Ok(());
                    }
                    Err(e) => {
                        *reusable = false;
                        return Err(Failure::Sent(e.into()));
                    }
                }
            }
        }
    }
}

/// One exchange on `conn`: writes the request and reads the response head.
async fn exchange(
    conn: &mut Conn,
    out: &mut Outgoing,
    limit: usize,
) -> Result<h1::ResponseHead, Failure> {
    let head_request = out.method == Method::HEAD;
    conn.out.clear();
    match &mut out.source {
        Source::Empty => {
            let framing = h1::empty_framing(&out.method);
            h1::encode_request(&mut conn.out, &out.method, &out.uri, &out.headers, framing);
            write_start(&mut conn.io, &conn.out).await?;
        }
        Source::Buffered(bytes) => {
            let framing = RequestFraming::Length(bytes.len() as u64);
            h1::encode_request(&mut conn.out, &out.method, &out.uri, &out.headers, framing);
            if bytes.len() <= INLINE_BODY {
                conn.out.extend_from_slice(bytes);
                write_start(&mut conn.io, &conn.out).await?;
            } else {
                write_start(&mut conn.io, &conn.out).await?;
                conn.io
                    .write_all(bytes)
                    .await
                    .map_err(|e| Failure::Sent(e.into()))?;
            }
        }
        Source::Stream(slot) => {
            let Some(mut body) = slot.take() else {
                return Err(Failure::NotSent(UpstreamError::Malformed(
                    "the request body was already sent",
                )));
            };
            let framing = match http_body::Body::size_hint(&body).exact() {
                Some(n) => RequestFraming::Length(n),
                None => RequestFraming::Chunked,
            };
            h1::encode_request(&mut conn.out, &out.method, &out.uri, &out.headers, framing);
            if let Err(failure) = write_start(&mut conn.io, &conn.out).await {
                if matches!(failure, Failure::NotSent(_)) {
                    *slot = Some(body); // nothing left: another attempt may send it
                }
                return Err(failure);
            }
            // Rare and large: boxed, so the request's future stays small.
            Box::pin(send_stream(
                conn,
                &mut body,
                framing == RequestFraming::Chunked,
            ))
            .await?;
        }
    }
    read_head(conn, head_request, limit).await
}

/// Sends `out` to `local`'s backend and waits for the response head.
///
/// The request first takes one of the worker's connection slots to the backend
/// (waiting in line when all are busy, see [`slots`](crate::slots)). While it waits,
/// for a slot or for the answer, it also listens for the backend going down (see
/// [`checker`](crate::checker)): then it stops waiting, and the caller decides whether
/// it may go elsewhere.
///
/// The response comes back with its body's framing in place of a body: the body is
/// still on the connection the [`Lease`] holds.
///
/// # Errors
/// [`ProxyError`] saying whether the request left (see [`RetrySafety`](crate::RetrySafety)).
pub(crate) async fn attempt(
    worker: &Worker,
    local: &Arc<Local>,
    out: &mut Outgoing,
    started: Instant,
) -> Result<(Response<BodyFraming>, Lease), ProxyError> {
    let settings = &worker.shared.settings;
    // Listening before anything waits, so a backend going down from now on wakes us.
    let mut down = pin!(local.down.notified());
    down.as_mut().enable();
    let backend_down = |sent| ProxyError::BackendDown {
        backend: local.core.id.to_string(),
        sent,
    };
    // The paths that wait on something other than the answer (a slot, a new
    // connection) are boxed: the request's future lives as long as its client
    // connection (hyper keeps it), ten thousand of them at once, so its size is memory
    // per connection; these paths are the rare ones.
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
        local.stats.requests.fetch_add(1, Relaxed);
        let mut lease = Lease::new(conn, slot, started, &settings.pool);
        // A reused timer rather than `tokio::time::timeout` (see `timers`); polled after
        // the answer, as `timeout` does, so an answer that is there wins.
        let timer = worker
            .timers
            .until(response_deadline(settings.response_timeout));
        let answer = tokio::select! {
            biased;
            answer = exchange(lease.conn_mut(), out, settings.max_response_head) => Ok(answer),
            () = timer => Err(()),
            // The lease is dropped unreleased: the connection, mid-exchange, is closed.
            () = down.as_mut() => return Err(backend_down(true)),
        };
        match answer {
            Ok(Ok(head)) => {
                lease.answered();
                let mut response = Response::new(head.framing);
                *response.status_mut() = head.status;
                *response.version_mut() = head.version;
                *response.headers_mut() = head.headers;
                return Ok((response, lease));
            }
            Ok(Err(Failure::NotSent(error))) => {
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
            Ok(Err(Failure::Sent(error))) => {
                return Err(ProxyError::Exchange {
                    backend: local.core.id.to_string(),
                    source: error,
                });
            }
            Ok(Err(Failure::Body(error))) => return Err(body_error(error)),
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
