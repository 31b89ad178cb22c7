//! Everything around the orders: the menu, health and readiness, who the waiter is,
//! metrics, the API description, and the answers for routes that do not exist.
//!
//! `/healthz` says the process is alive and never touches the store (a balancer should
//! not kill a waiter because its database is slow). `/readyz` says whether the waiter
//! can serve orders now: the store answers a ping and the waiter is not draining.

use crate::Waiter;
use crate::idempotency::Reply;
use crate::problem::Problem;
use crate::view::{Health, MenuView, ProblemDoc, StoreInfo, WaiterInfo};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bistro_store::OrderStore;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};

/// The menu.
#[utoipa::path(get, path = "/v1/menu", tag = "menu", responses((status = 200, description = "Every dish", body = MenuView)))]
pub async fn menu(State(waiter): State<Waiter>) -> Response {
    Reply::json(StatusCode::OK, &MenuView::new(&waiter.config().menu)).into_response()
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Response {
    // The same bytes for every probe, so none are serialized or allocated per request
    // (a balancer probes every waiter every second; the benchmarks use it as the
    // cheapest request a waiter answers).
    let mut resp = Response::new(axum::body::Body::from(bytes::Bytes::from_static(HEALTHZ)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `/healthz`'s body: `Health { status: "alive" }` as JSON (a test keeps them equal).
const HEALTHZ: &[u8] = br#"{"status":"alive"}"#;

/// Readiness: the store answers and the waiter is not shutting down.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "store-unavailable or shutting-down", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(waiter): State<Waiter>) -> Response {
    if waiter.is_shutting_down() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "The waiter is shutting down",
            "this waiter is finishing its last requests before it stops; send new requests to another waiter",
        )
        .into_response();
    }
    match waiter.store().ping().await {
        Ok(()) => Reply::json(StatusCode::OK, &Health { status: "ready" }).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness probe: the store does not answer");
            Problem::store_unavailable(&e.to_string(), false).into_response()
        }
    }
}

/// Who this waiter is, its mode, its store and what the store holds.
#[utoipa::path(
    get,
    path = "/v1/waiter",
    tag = "ops",
    responses(
        (status = 200, description = "This waiter", body = WaiterInfo),
        (status = 503, description = "store-unavailable", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn waiter_info(State(waiter): State<Waiter>) -> Response {
    let counts = match waiter.store().counts().await {
        Ok(c) => c,
        Err(e) => return waiter.store_problem(e).into_response(),
    };
    waiter.metrics().set_counts(counts);
    let config = waiter.config();
    let info = WaiterInfo {
        id: config.id.clone(),
        mode: config.mode,
        store: StoreInfo {
            kind: waiter.store().kind().to_string(),
            url: config.store_url.to_string(),
        },
        sessions: counts.sessions,
        orders: counts.orders,
        uptime_seconds: waiter.clock().uptime().as_secs(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        replication: waiter.replication().map(|r| r.status()),
        handoff: waiter.handoff().map(|h| h.status()),
    };
    Reply::json(StatusCode::OK, &info).into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
pub async fn metrics(State(waiter): State<Waiter>) -> Response {
    let text = waiter
        .metrics()
        .render(waiter.store(), waiter.replication(), waiter.handoff());
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// This API's OpenAPI 3 description.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3 document", body = Object)))]
pub async fn openapi() -> Response {
    let mut resp = crate::openapi::document_json().into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// 404 `not-found` for any route that does not exist.
pub async fn not_found(req: Request) -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "No such route",
        format!(
            "there is no route {} {}; /openapi.json lists the routes",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}

/// 405 `method-not-allowed` for a route that exists with other methods.
pub async fn method_not_allowed(req: Request) -> Response {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!(
            "{} does not accept {}; the Allow header lists the methods it does accept",
            req.uri().path(),
            req.method()
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_healthz_bytes_are_the_health_view() {
        let view = super::Health { status: "alive" };
        assert_eq!(
            super::HEALTHZ,
            serde_json::to_vec(&view).unwrap().as_slice()
        );
    }
}
