//! The HTTP handlers, one module per resource: [`orders`] (the session's orders),
//! [`actions`] (moving an order through its life) and [`ops`] (menu, health, metrics,
//! API description, and the answers for unknown routes); [`peer`] is replicated mode's
//! waiter-to-waiter endpoint; [`handoff`] moves a stateful waiter's sessions to others.
//!
//! Handlers are thin: they read the request into plain values, call the one write path
//! ([`Waiter::orders`], see [`service`](crate::service)), and turn every failure into a
//! [`Problem`].

pub mod actions;
pub mod handoff;
pub mod ops;
pub mod orders;
pub mod peer;

use crate::Waiter;
use crate::body::RawBody;
use crate::precondition::{IfMatch, etag};
use crate::problem::Problem;
use crate::reply::Reply;
use crate::session::SessionRef;
use crate::view::OrderView;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use bistro_orders::Order;
use bistro_store::{SessionId, is_order_id};
use http::header::ETAG;
use http::{HeaderMap, Method, StatusCode};

/// A request about one order (`/v1/orders/{id}...`), read into plain values.
pub struct OrderRequest {
    /// The session it names.
    pub session: SessionRef,
    /// The order id, `None` when the path segment cannot be an order id.
    pub order_id: Option<String>,
    /// The method, for idempotency fingerprints.
    pub method: Method,
    /// The path, for idempotency fingerprints.
    pub path: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: RawBody,
}

impl FromRequest<Waiter> for OrderRequest {
    type Rejection = Problem;

    async fn from_request(req: Request, waiter: &Waiter) -> Result<Self, Problem> {
        let (mut parts, body) = req.into_parts();
        let order_id = match Path::<String>::from_request_parts(&mut parts, waiter).await {
            Ok(Path(id)) if is_order_id(&id) => Some(id),
            _ => None,
        };
        let session = SessionRef::from_headers(&parts.headers);
        let method = parts.method.clone();
        let path = parts.uri.path().to_string();
        let headers = parts.headers.clone();
        let body = RawBody::from_request(Request::from_parts(parts, body), waiter).await?;
        Ok(OrderRequest {
            session,
            order_id,
            method,
            path,
            headers,
            body,
        })
    }
}

impl OrderRequest {
    /// The session and order this request is about.
    ///
    /// # Errors
    /// 404 `order-not-found` for an id of the wrong shape or a request without a session
    /// (no session can own the order); 404 `unknown-session` for a malformed session id.
    pub fn target(&self, waiter: &Waiter) -> Result<(SessionId, String), Problem> {
        let id = self.order_id.clone().ok_or_else(Problem::order_not_found)?;
        match self.session {
            SessionRef::Named(session) => Ok((session, id)),
            SessionRef::Absent => Err(Problem::order_not_found()),
            SessionRef::Malformed => Err(waiter.unknown_session()),
        }
    }

    /// The parsed `If-Match` header.
    ///
    /// # Errors
    /// 400 `invalid-if-match`.
    pub fn if_match(&self) -> Result<Option<IfMatch>, Problem> {
        IfMatch::from_headers(&self.headers).map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-if-match",
                "Invalid If-Match",
                e.to_string(),
            )
        })
    }
}

/// The answer showing `order` at `now`, with its ETag.
pub fn order_reply(status: StatusCode, order: &Order, waiter: &Waiter, now: u64) -> Reply {
    Reply::json(status, &OrderView::new(order, &waiter.config().menu, now))
        .header(ETAG, etag(order.version))
}
