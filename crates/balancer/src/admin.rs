//! The admin API, on its own listener (loopback by default).
//!
//! | request | effect |
//! |---|---|
//! | `GET /backends` | every backend: id, address, weight, health, mode, draining, connections, pinned sessions, counters |
//! | `POST /backends` `{"id","address","weight"?,"mode"?}` | adds a backend (201) |
//! | `DELETE /backends/{id}` | removes it (204); its in-flight requests finish, its pinned diners count as lost |
//! | `POST /backends/{id}/weight` `{"weight":3}` | changes its weight |
//! | `POST /backends/{id}/drain` | no new sessions; its pinned diners are still served |
//! | `POST /backends/{id}/undrain` | takes new sessions again |
//! | `GET /metrics` | Prometheus text (see [`metrics`](crate::metrics)) |
//! | `GET /tcp/backends` | the TCP proxy's backends: id, address, health and where it comes from, connections (404 without a TCP proxy) |
//!
//! Changes swap a new backend table in (see [`table`](crate::table)): no connection is
//! dropped. When an admin token is configured, every request needs
//! `Authorization: Bearer <token>`; [`run`](crate::run) refuses to expose the API on a
//! non-loopback address without one.
//!
//! `sessions_pinned` is approximate: affinity cookies issued naming the backend, minus
//! those the balancer saw cleared or moved away. Diners who just leave are never
//! subtracted, so it is an upper bound on the diners who still hold a pin.

use crate::body::ResponseBody;
use crate::config::ms;
use crate::problem::Problem;
use crate::server::signalled;
use crate::spec::{BackendSpec, Mode};
use crate::state::Shared;
use crate::table::TableError;
use crate::tcp::{self, TcpProxy};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::watch;

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// Serves the admin API on `listener` (non-blocking) until shutdown.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    tcp: Option<Arc<TcpProxy>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "could not register the admin listener; the admin API is unavailable");
            return;
        }
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(ms(shared.config.client.header_read_timeout_ms));
    loop {
        let (stream, peer) = tokio::select! {
            () = signalled(&mut shutdown) => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let (shared, tcp) = (shared.clone(), tcp.clone());
        let service = service_fn(move |request| {
            let (shared, tcp) = (shared.clone(), tcp.clone());
            async move { Ok::<_, Infallible>(handle(&shared, tcp.as_deref(), request).await) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = signalled(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

/// One backend as the admin API shows it.
#[derive(Debug, Serialize)]
struct BackendView {
    id: String,
    address: String,
    weight: u32,
    health: &'static str,
    mode: &'static str,
    draining: bool,
    active_connections: i64,
    idle_connections: usize,
    sessions_pinned: i64,
    requests: u64,
    errors: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBackend {
    id: String,
    address: String,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    mode: Option<Mode>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWeight {
    weight: u32,
}

fn problem(
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
) -> Response<ResponseBody> {
    Problem {
        status,
        kind,
        title,
        detail,
    }
    .into_response()
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(
        serde_json::to_vec(value).unwrap_or_default(),
    ));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn table_error(error: &TableError) -> Response<ResponseBody> {
    match error {
        TableError::NotFound(_) => problem(
            StatusCode::NOT_FOUND,
            "unknown-backend",
            "Unknown backend",
            error.to_string(),
        ),
        TableError::Duplicate(_) => problem(
            StatusCode::CONFLICT,
            "backend-exists",
            "Backend exists",
            error.to_string(),
        ),
        TableError::Invalid(_) => invalid(error.to_string()),
    }
}

fn invalid(detail: String) -> Response<ResponseBody> {
    problem(
        StatusCode::BAD_REQUEST,
        "invalid-request",
        "Invalid admin request",
        detail,
    )
}

/// Compares without an early exit, so the token cannot be guessed byte by byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(shared: &Shared, request: &Request<Incoming>) -> bool {
    let Some(token) = &shared.config.admin.token else {
        return true;
    };
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, Response<ResponseBody>> {
    let body: Bytes = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| invalid(format!("could not read the body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("the body is not the expected JSON: {e}")))
}

fn view(shared: &Shared, id: &str) -> Response<ResponseBody> {
    let table = shared.registry.load();
    let now_ms = shared.clock.now_ms();
    match table.find(id) {
        Some(b) => json(StatusCode::OK, &view_of(b, now_ms)),
        None => table_error(&TableError::NotFound(id.to_string())),
    }
}

fn view_of(b: &crate::backend::Backend, now_ms: u64) -> BackendView {
    BackendView {
        id: b.id().to_string(),
        address: b.core.addr.to_string(),
        weight: b.core.weight(),
        health: b.core.health.state(now_ms).as_str(),
        mode: b.core.mode().map_or("unknown", Mode::as_str),
        draining: b.core.is_draining(),
        active_connections: b.active(),
        idle_connections: b.idle(),
        sessions_pinned: b.core.pinned(),
        requests: b.requests(),
        errors: b.errors(),
    }
}

async fn add(shared: &Shared, request: Request<Incoming>) -> Response<ResponseBody> {
    let new: NewBackend = match read_json(request).await {
        Ok(new) => new,
        Err(response) => return response,
    };
    let address = match new.address.parse() {
        Ok(address) => address,
        Err(_) => match tokio::net::lookup_host(new.address.as_str())
            .await
            .map(|mut a| a.next())
        {
            Ok(Some(address)) => address,
            Ok(None) | Err(_) => {
                return invalid(format!("address {:?} does not resolve", new.address));
            }
        },
    };
    let spec = BackendSpec {
        id: new.id,
        address,
        weight: new.weight,
        mode: new.mode,
    };
    match shared.registry.add(&spec) {
        Ok(()) => {
            tracing::info!(backend = %spec.id, %address, weight = spec.weight, "backend added");
            let mut response = view(shared, &spec.id);
            *response.status_mut() = StatusCode::CREATED;
            response
        }
        Err(e) => table_error(&e),
    }
}

/// Answers one admin request.
pub(crate) async fn handle(
    shared: &Shared,
    tcp: Option<&TcpProxy>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    if !authorized(shared, &request) {
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Admin token required",
            "send the admin token as `Authorization: Bearer <token>`".into(),
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let path = request.uri().path().trim_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').collect();
    let method = request.method().clone();
    let result = match (&method, segments.as_slice()) {
        (&Method::GET, ["backends"]) => {
            let now_ms = shared.clock.now_ms();
            let table = shared.registry.snapshot();
            let views: Vec<BackendView> = table
                .backends()
                .iter()
                .map(|b| view_of(b, now_ms))
                .collect();
            return json(StatusCode::OK, &views);
        }
        (&Method::POST, ["backends"]) => return add(shared, request).await,
        (&Method::DELETE, ["backends", id]) => shared.registry.remove(id).map(|()| {
            tracing::info!(backend = %id, "backend removed");
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }),
        (&Method::POST, ["backends", id, "weight"]) => {
            match read_json::<NewWeight>(request).await {
                Ok(new) => shared.registry.set_weight(id, new.weight).map(|()| {
                    tracing::info!(backend = %id, weight = new.weight, "backend weight changed");
                    view(shared, id)
                }),
                Err(response) => return response,
            }
        }
        (&Method::POST, ["backends", id, action @ ("drain" | "undrain")]) => {
            let draining = *action == "drain";
            shared.registry.set_draining(id, draining).map(|()| {
                tracing::info!(backend = %id, draining, "backend drain flag changed");
                view(shared, id)
            })
        }
        (&Method::GET, ["tcp", "backends"]) => {
            return match tcp {
                Some(tcp) => {
                    let mut response = Response::new(ResponseBody::full(tcp::backends_json(tcp)));
                    response
                        .headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    response
                }
                None => problem(
                    StatusCode::NOT_FOUND,
                    "no-tcp-proxy",
                    "No TCP proxy",
                    "this balancer runs no TCP proxy; start it with --tcp-listen and --tcp-backend"
                        .into(),
                ),
            };
        }
        (&Method::GET, ["metrics"]) => {
            let mut text = shared
                .metrics
                .render(&shared.registry.snapshot(), shared.clock.now_ms());
            if let Some(tcp) = tcp {
                text.push_str(&tcp::render_metrics(tcp));
            }
            let mut response = Response::new(ResponseBody::full(text));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return response;
        }
        (_, ["backends", ..] | ["metrics"] | ["tcp", "backends"]) => {
            return problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                format!("{method} is not supported on /{path}"),
            );
        }
        _ => {
            return problem(
                StatusCode::NOT_FOUND,
                "not-found",
                "No such admin endpoint",
                format!("/{path} is not an admin endpoint; see GET /backends and GET /metrics"),
            );
        }
    };
    result.unwrap_or_else(|e| table_error(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
    }
}
