//! What happens around every request, whatever its route: naming the waiter, counting,
//! and bounding the time.
//!
//! These are plain `axum::middleware::from_fn` functions rather than tower-http layers:
//! each is a few lines, and owning them means a timeout or a rejection is answered as a
//! problem document like every other error.

use crate::Waiter;
use crate::metrics::UNMATCHED_ROUTE;
use crate::problem::Problem;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue};
use tokio::time::Instant;

/// The header naming the waiter that answered.
pub const WAITER_HEADER: HeaderName = HeaderName::from_static("bistro-waiter");
/// The header naming the waiter's mode.
pub const MODE_HEADER: HeaderName = HeaderName::from_static("bistro-mode");

/// Adds `Bistro-Waiter` and `Bistro-Mode` to every response, so users can see which
/// waiter served them and watch stickiness at work.
pub async fn identify(State(waiter): State<Waiter>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let config = waiter.config();
    match HeaderValue::from_str(&config.id) {
        Ok(id) => {
            resp.headers_mut().insert(WAITER_HEADER, id);
        }
        Err(_) => tracing::warn!(id = %config.id, "the waiter id is not a valid header value"),
    }
    resp.headers_mut()
        .insert(MODE_HEADER, HeaderValue::from_static(config.mode.as_str()));
    resp
}

/// Counts the request and its latency by matched route.
pub async fn track(State(waiter): State<Waiter>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let resp = next.run(req).await;
    let route = route.as_deref().unwrap_or(UNMATCHED_ROUTE);
    waiter
        .metrics()
        .record_request(route, &method, resp.status().as_u16(), started.elapsed());
    resp
}

/// Answers 503 `timeout` when the request takes longer than
/// [`WaiterConfig::request_timeout`](crate::WaiterConfig).
pub async fn timeout(State(waiter): State<Waiter>, req: Request, next: Next) -> Response {
    let limit = waiter.config().request_timeout;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(%method, %path, ?limit, "request timed out");
            Problem::timeout(limit).into_response()
        }
    }
}
