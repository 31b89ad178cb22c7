//! Moving an order through its life: place, cancel, serve, pay.
//!
//! Each action is a `POST` without a body (an empty body or `{}`), honours `If-Match`
//! like a `PATCH`, and `Idempotency-Key` like every `POST`. The kitchen's own steps
//! (cooking, ready) are not actions: the kitchen task makes them when they are due.

use super::{OrderRequest, order_reply};
use crate::Waiter;
use crate::idempotency::{self, IdempotencyKey};
use crate::problem::Problem;
use crate::view::{OrderView, ProblemDoc};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bistro_orders::Change;
use http::StatusCode;
use serde::Deserialize;

/// The body an action accepts: nothing, or an empty JSON object.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoBody {}

async fn act(waiter: Waiter, req: OrderRequest, change: Change) -> Response {
    let checked = (|| -> Result<_, Problem> {
        let key = IdempotencyKey::from_headers(&req.headers)?;
        req.body.json::<NoBody>(Some(NoBody::default()))?;
        let (session, id) = req.target(&waiter)?;
        let if_match = req.if_match()?;
        Ok((key, session, id, if_match))
    })();
    let (key, session, id, if_match) = match checked {
        Ok(c) => c,
        Err(p) => return p.into_response(),
    };
    let fingerprint = idempotency::fingerprint(&req.method, &req.path, &req.body.bytes);
    let work = async {
        let order = waiter
            .orders()
            .change(
                session,
                &id,
                if_match.as_ref(),
                std::slice::from_ref(&change),
            )
            .await?;
        Ok(order_reply(
            StatusCode::OK,
            &order,
            &waiter,
            waiter.clock().now(),
        ))
    };
    idempotency::once(&waiter, session, key.as_ref(), &fingerprint, work).await
}

/// Sends an open order to the kitchen.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/place",
    tag = "actions",
    params(
        ("id" = String, Path, description = "Order id"),
        ("If-Match" = Option<String>, Header, description = "Apply only if the order is at this version"),
        ("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters; repeats replay the first response", pattern = "^[!-~]{1,255}$"),
    ),
    responses(
        (status = 200, description = "Placed; the kitchen takes it from here", body = OrderView, headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 400, description = "malformed-json, invalid-idempotency-key, invalid-if-match", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "order-not-found, unknown-session", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "invalid-transition, conflict, idempotency-in-progress", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "version-mismatch", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "body-too-large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 421, description = "session-moved: another waiter leads the session now (Bistro-Leader names it); nothing was applied", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "empty-order, invalid-body (an action takes no body or {}), idempotency-key-reused", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "store-unavailable, timeout", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn place(State(waiter): State<Waiter>, req: OrderRequest) -> Response {
    let timings = waiter.config().kitchen;
    act(waiter, req, Change::Place(timings)).await
}

/// Cancels an order the kitchen has not started.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/cancel",
    tag = "actions",
    params(
        ("id" = String, Path, description = "Order id"),
        ("If-Match" = Option<String>, Header, description = "Apply only if the order is at this version"),
        ("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters; repeats replay the first response", pattern = "^[!-~]{1,255}$"),
    ),
    responses(
        (status = 200, description = "Cancelled", body = OrderView, headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 400, description = "malformed-json, invalid-idempotency-key, invalid-if-match", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "order-not-found, unknown-session", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "invalid-transition, conflict, idempotency-in-progress", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "version-mismatch", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "body-too-large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 421, description = "session-moved: another waiter leads the session now (Bistro-Leader names it); nothing was applied", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid-body (an action takes no body or {}), idempotency-key-reused", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "store-unavailable, timeout", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(State(waiter): State<Waiter>, req: OrderRequest) -> Response {
    act(waiter, req, Change::Cancel).await
}

/// Serves a ready order.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/serve",
    tag = "actions",
    params(
        ("id" = String, Path, description = "Order id"),
        ("If-Match" = Option<String>, Header, description = "Apply only if the order is at this version"),
        ("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters; repeats replay the first response", pattern = "^[!-~]{1,255}$"),
    ),
    responses(
        (status = 200, description = "Served", body = OrderView, headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 400, description = "malformed-json, invalid-idempotency-key, invalid-if-match", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "order-not-found, unknown-session", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "invalid-transition, conflict, idempotency-in-progress", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "version-mismatch", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "body-too-large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 421, description = "session-moved: another waiter leads the session now (Bistro-Leader names it); nothing was applied", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid-body (an action takes no body or {}), idempotency-key-reused", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "store-unavailable, timeout", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn serve(State(waiter): State<Waiter>, req: OrderRequest) -> Response {
    act(waiter, req, Change::Serve).await
}

/// Pays a served order.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/pay",
    tag = "actions",
    params(
        ("id" = String, Path, description = "Order id"),
        ("If-Match" = Option<String>, Header, description = "Apply only if the order is at this version"),
        ("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters; repeats replay the first response", pattern = "^[!-~]{1,255}$"),
    ),
    responses(
        (status = 200, description = "Paid", body = OrderView, headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 400, description = "malformed-json, invalid-idempotency-key, invalid-if-match", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "order-not-found, unknown-session", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "invalid-transition, conflict, idempotency-in-progress", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "version-mismatch", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "body-too-large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 421, description = "session-moved: another waiter leads the session now (Bistro-Leader names it); nothing was applied", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid-body (an action takes no body or {}), idempotency-key-reused", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "store-unavailable, timeout", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn pay(State(waiter): State<Waiter>, req: OrderRequest) -> Response {
    act(waiter, req, Change::Pay).await
}
