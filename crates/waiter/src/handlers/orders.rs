//! The session's orders: list, read, create, change.
//!
//! Creating an order is the request that starts a session: without one, the waiter
//! creates it, stores the order under it and answers with `Set-Cookie` (and the id in a
//! `Bistro-Session` header). A request that names a session the store does not know
//! gets 404 `unknown-session` instead: it never silently starts an empty one. With an
//! `Idempotency-Key` and no session, the session is the one the key names, so a retry
//! whose first answer was lost finds it (see [`idempotency`](crate::idempotency)).

use super::{OrderRequest, order_reply};
use crate::Waiter;
use crate::body::RawBody;
use crate::idempotency::{self, IdempotencyKey};
use crate::problem::Problem;
use crate::reply::Reply;
use crate::session::{SESSION_HEADER, SessionRef, forwarded_https, session_header, set_cookie};
use crate::view::{OrderList, OrderView, ProblemDoc};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bistro_orders::{NewOrder, Order, OrderPatch};
use bistro_store::new_order_id;
use http::header::{LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

/// Lists the session's orders.
#[utoipa::path(
    get,
    path = "/v1/orders",
    tag = "orders",
    params(("Bistro-Session" = Option<String>, Header, description = "Session id, for clients without cookies")),
    responses(
        (status = 200, description = "The session's orders, oldest first (none without a session)", body = OrderList),
        (status = 404, description = "unknown-session", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 421, description = "session-moved: another waiter leads the session now (Bistro-Leader names it); nothing was applied", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "store-unavailable, timeout", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn list(State(waiter): State<Waiter>, session: SessionRef) -> Response {
    let session = match session {
        SessionRef::Absent => {
            return Reply::json(StatusCode::OK, &OrderList { orders: Vec::new() }).into_response();
        }
        SessionRef::Malformed => return waiter.unknown_session().into_response(),
        SessionRef::Named(id) => id,
    };
    match waiter.orders().list(session).await {
        Ok(orders) => {
            let (menu, now) = (&waiter.config().menu, waiter.clock().now());
            let orders = orders
                .iter()
                .map(|o| OrderView::new(o, menu, now))
                .collect();
            Reply::json(StatusCode::OK, &OrderList { orders }).into_response()
        }
        Err(e) => waiter.problem(&e).into_response(),
    }
}

/// Reads one order, with its progress.
#[utoipa::path(
    get,
    path = "/v1/orders/{id}",
    tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = OrderView, headers(("ETag" = String, description = "The order's version, quoted"))),
        (status = 404, description = "order-not-found, unknown-session", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 421, description = "session-moved: another waiter leads the session now (Bistro-Leader names it); nothing was applied", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "store-unavailable, timeout", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn get(State(waiter): State<Waiter>, req: OrderRequest) -> Response {
    let (session, id) = match req.target(&waiter) {
        Ok(t) => t,
        Err(p) => return p.into_response(),
    };
    match waiter.orders().read(session, &id).await {
        Ok(order) => {
            order_reply(StatusCode::OK, &order, &waiter, waiter.clock().now()).into_response()
        }
        Err(e) => waiter.problem(&e).into_response(),
    }
}

/// Creates an order (and the session, when the request has none).
#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    request_body(content = NewOrder, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters; repeats replay the first response (16 or more, without a session: the key names the session a retry finds)", pattern = "^[!-~]{1,255}$")),
    responses(
        (status = 201, description = "Created", body = OrderView, headers(
            ("Location" = String, description = "/v1/orders/{id}"),
            ("ETag" = String, description = "The order's version, quoted"),
            ("Set-Cookie" = String, description = "bistro_session, when this request started the session"),
        )),
        (status = 400, description = "malformed-json, invalid-idempotency-key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "unknown-session", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "idempotency-in-progress, too-many-orders, too-many-idempotency-keys", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "body-too-large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 421, description = "session-moved: another waiter leads the session now (Bistro-Leader names it); nothing was applied", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid-body, unknown-dish, dish-contains-allergen, idempotency-key-reused, ...", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "store-unavailable, too-many-sessions, too-many-new-sessions, timeout", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(waiter): State<Waiter>,
    session: SessionRef,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: RawBody,
) -> Response {
    let key = match IdempotencyKey::from_headers(&headers) {
        Ok(k) => k,
        Err(p) => return p.into_response(),
    };
    let new: NewOrder = match body.json(Some(NewOrder::default())) {
        Ok(n) => n,
        Err(p) => return p.into_response(),
    };
    let now = waiter.clock().now();
    // Judge the order before touching the store, so a refused order starts no session.
    let order = match Order::create(new_order_id(), new, &waiter.config().menu, now) {
        Ok(o) => o,
        Err(e) => return Problem::order(&e).into_response(),
    };
    let (session, created) = match session {
        SessionRef::Named(id) => (id, false),
        SessionRef::Malformed => return waiter.unknown_session().into_response(),
        SessionRef::Absent => {
            let opened = match &key {
                // The session the key names: a retry of this request finds it again.
                Some(key) => match idempotency::check_session_key(key) {
                    Ok(()) => {
                        let id = idempotency::session_for_key(key);
                        waiter.orders().open_session(id).await.map(|_| id)
                    }
                    Err(p) => return p.into_response(),
                },
                None => waiter.orders().start_session().await,
            };
            match opened {
                Ok(id) => (id, true),
                Err(e) => return waiter.problem(&e).into_response(),
            }
        }
    };
    let fingerprint = idempotency::fingerprint(&method, uri.path(), &body.bytes);
    let work = async {
        waiter.orders().create(session, &order).await?;
        let location = HeaderValue::from_str(&format!("/v1/orders/{}", order.id))
            .expect("an order id is base64url, a valid header value");
        Ok(order_reply(StatusCode::CREATED, &order, &waiter, now).header(LOCATION, location))
    };
    let mut resp = idempotency::once(&waiter, session, key.as_ref(), &fingerprint, work).await;
    if created {
        // Sent whatever the outcome: the session exists, and a retry that carries it
        // finds its idempotency key there.
        resp.headers_mut().append(
            SET_COOKIE,
            set_cookie(
                session,
                waiter.config().cookie_secure || forwarded_https(&headers),
            ),
        );
        resp.headers_mut()
            .insert(SESSION_HEADER, session_header(session));
    }
    resp
}

/// Changes an order's items and/or notes.
#[utoipa::path(
    patch,
    path = "/v1/orders/{id}",
    tag = "orders",
    request_body(content = OrderPatch, content_type = "application/json"),
    params(
        ("id" = String, Path, description = "Order id"),
        ("If-Match" = Option<String>, Header, description = "Apply only if the order is at this version (its ETag)"),
    ),
    responses(
        (status = 200, description = "Changed", body = OrderView, headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 400, description = "malformed-json, invalid-if-match", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "order-not-found, unknown-session", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "kitchen-started, invalid-transition, conflict", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "version-mismatch", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "body-too-large", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 421, description = "session-moved: another waiter leads the session now (Bistro-Leader names it); nothing was applied", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "invalid-body, unknown-dish, dish-contains-allergen, ...", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "store-unavailable, timeout", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn patch(State(waiter): State<Waiter>, req: OrderRequest) -> Response {
    let checked = (|| -> Result<_, Problem> {
        let (session, id) = req.target(&waiter)?;
        let if_match = req.if_match()?;
        let patch: OrderPatch = req.body.json(None)?;
        let changes = patch.into_changes();
        if changes.is_empty() {
            return Err(Problem::invalid_body(
                "the patch changes nothing; send \"items\" and/or \"notes\"",
            ));
        }
        Ok((session, id, if_match, changes))
    })();
    let (session, id, if_match, changes) = match checked {
        Ok(c) => c,
        Err(p) => return p.into_response(),
    };
    match waiter
        .orders()
        .change(session, &id, if_match.as_ref(), &changes)
        .await
    {
        Ok(order) => {
            order_reply(StatusCode::OK, &order, &waiter, waiter.clock().now()).into_response()
        }
        Err(e) => waiter.problem(&e).into_response(),
    }
}
