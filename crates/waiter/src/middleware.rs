//! What happens around every request, whatever its route: naming the waiter, counting,
//! bounding the time, and (replicated mode) making a change safe before it is answered;
//! one layer, [`around`].
//!
//! These are plain `axum::middleware::from_fn` functions rather than tower-http layers:
//! each is a few lines, and owning them means a timeout or a rejection is answered as a
//! problem document like every other error.

use crate::Waiter;
use crate::metrics::UNMATCHED_ROUTE;
use crate::problem::Problem;
use crate::replication::Settled;
use crate::service::ServiceError;
use crate::session::{SESSION_HEADER, SessionRef};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bistro_http_io::head_size;
use bistro_store::SessionId;
use http::{HeaderValue, Method};
use tokio::time::Instant;

/// The header naming the waiter's mode.
pub use bistro_proto::headers::MODE as MODE_HEADER;
/// The header naming the waiter that answered.
pub use bistro_proto::headers::WAITER as WAITER_HEADER;

/// Everything around a request, in one layer (one boxed future per request instead of
/// four: on `/healthz` the separate layers were a measurable share of the waiter's
/// CPU). From the outside in:
///
/// 1. **identify**: `Bistro-Waiter` and `Bistro-Mode` on every response, so users can
///    see which waiter served them and watch stickiness at work;
/// 2. **count**: the request and its latency by matched route;
/// 3. **bound its time**: 503 `timeout` past
///    [`WaiterConfig::request_timeout`](crate::WaiterConfig);
/// 4. **replicate** (replicated mode, or a stateful waiter that hands sessions off):
///    see [`replicate`].
pub async fn around(State(waiter): State<Waiter>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    // A clone of the matched path shares its string, and a `Uri` clone its bytes:
    // nothing is allocated per request.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let uri = req.uri().clone();
    let limit = waiter.config().request_timeout;
    let max_head = waiter.config().http.max_header_bytes;
    let mut resp = if head_size(req.method(), req.uri(), req.headers()) > max_head {
        Problem::head_too_large(max_head).into_response()
    } else {
        match tokio::time::timeout(limit, replicate(waiter.clone(), req, next)).await {
            Ok(resp) => resp,
            Err(_) => {
                let path = uri.path();
                tracing::warn!(%method, %path, ?limit, "request timed out");
                Problem::timeout(limit).into_response()
            }
        }
    };
    let route = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    waiter
        .metrics()
        .record_request(route, &method, resp.status().as_u16(), started.elapsed());
    let headers = resp.headers_mut();
    if let Some(id) = waiter.id_header() {
        headers.insert(WAITER_HEADER, id.clone());
    }
    headers.insert(
        MODE_HEADER,
        HeaderValue::from_static(waiter.config().mode.as_str()),
    );
    resp
}

/// The header naming the waiter that keeps the copy of the session (replicated mode), so
/// a balancer can send the diner there when this waiter is gone.
pub use bistro_proto::headers::BACKUP as BACKUP_HEADER;
/// The header naming the waiter that leads a session now, on `421 session-moved`.
pub use bistro_proto::headers::LEADER as LEADER_HEADER;
/// The header saying a change was acknowledged with no copy anywhere (replicated mode,
/// no peer up): `alone`.
pub use bistro_proto::headers::REPLICATION as REPLICATION_HEADER;

/// In replicated mode: before the request, takes over a session this waiter holds only
/// a copy of; after a request that may have changed it, waits until a backup holds the
/// change (the acknowledgement is the response), and names the backup in
/// `Bistro-Backup`. Peer requests and the other modes pass through.
async fn replicate(waiter: Waiter, req: Request, next: Next) -> Response {
    if waiter.handoff().is_some() {
        return forward(waiter, req, next).await;
    }
    if waiter.replication().is_none() || req.uri().path() == crate::replication::link::PEER_PATH {
        return next.run(req).await;
    }
    let named = match locate(&waiter, req.headers()).await {
        Ok(named) => named,
        Err(resp) => return resp,
    };
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let mut resp = next.run(req).await;
    // The session is the one the request named, or the one it started.
    let session = named.or_else(|| {
        resp.headers()
            .get(&SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(SessionId::parse)
    });
    let Some(session) = session else {
        return resp;
    };
    let backup = if writes {
        match waiter.orders().settle(session).await {
            Ok(Settled::Copied { backup }) => Some(backup),
            Ok(Settled::Alone) => {
                resp.headers_mut()
                    .insert(REPLICATION_HEADER, HeaderValue::from_static("alone"));
                None
            }
            Ok(Settled::Gone) => None,
            Err(e) => return moved(&waiter, &e),
        }
    } else {
        waiter.replication().and_then(|r| r.backup_of(session))
    };
    if let Some(backup) = backup.and_then(|b| HeaderValue::from_str(&b).ok()) {
        resp.headers_mut().insert(BACKUP_HEADER, backup);
    }
    resp
}

/// A stateful waiter that hands sessions off: a request for a session it handed to
/// another waiter is answered `421 session-moved` naming that waiter, also when the
/// move happened while the request was being served (the store then no longer knew the
/// session: nothing of the request was applied). The handoff endpoints pass through.
async fn forward(waiter: Waiter, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.starts_with("/v1/peer/") || path == crate::handoff::HANDOFF_PATH {
        return next.run(req).await;
    }
    let named = match locate(&waiter, req.headers()).await {
        Ok(named) => named,
        Err(resp) => return resp,
    };
    let resp = next.run(req).await;
    if resp.status() == http::StatusCode::NOT_FOUND
        && let Some(session) = named
        && let Some(to) = waiter
            .handoff()
            .and_then(|h| h.forwarded_to(session, waiter.clock().now()))
    {
        let e = ServiceError::SessionMoved {
            to: Some(to.to_string()),
        };
        return moved(&waiter, &e);
    }
    resp
}

/// The session the request names, located first (taken over, adopted, or found moved:
/// then the answer is `421 session-moved`).
async fn locate(waiter: &Waiter, headers: &http::HeaderMap) -> Result<Option<SessionId>, Response> {
    let named = match SessionRef::from_headers(headers) {
        SessionRef::Named(s) => Some(s),
        SessionRef::Absent | SessionRef::Malformed => None,
    };
    if let Some(session) = named
        && let Err(e) = waiter.orders().locate(session).await
    {
        return Err(moved(waiter, &e));
    }
    Ok(named)
}

/// The problem answering a failed locate or settle; `421 session-moved` names the waiter
/// that leads the session in `Bistro-Leader`, which a balancer follows.
fn moved(waiter: &Waiter, e: &ServiceError) -> Response {
    let mut resp = waiter.problem(e).into_response();
    if let ServiceError::SessionMoved { to: Some(to) } = e
        && let Ok(value) = HeaderValue::from_str(to)
    {
        resp.headers_mut().insert(LEADER_HEADER, value);
    }
    resp
}
