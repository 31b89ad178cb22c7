//! The admin API, on its own listener (loopback by default).
//!
//! | request | effect |
//! |---|---|
//! | `GET /backends` | every backend: id, address, weight, health, mode, draining and drain progress, connections, pinned sessions, counters |
//! | `GET /backends/{id}` | one backend, as a row of `GET /backends` |
//! | `POST /backends` `{"id","address","weight"?,"mode"?}` | adds a backend (201) |
//! | `DELETE /backends/{id}` | removes it (204); its in-flight requests finish, its pinned diners count as lost |
//! | `POST /backends/{id}/weight` `{"weight":3}` | changes its weight |
//! | `POST /backends/{id}/drain` `{"handoff"?,"deadline_seconds"?,"remove_when_done"?}` | no new sessions; its pinned diners are still served, or handed to other waiters (see [`drain`](crate::drain)) |
//! | `POST /backends/{id}/undrain` | takes new sessions again (a drain in progress stops) |
//! | `GET /drains` | every drain started, by backend, also of backends removed when done |
//! | `GET /status` | backends available, panic mode, store outage, client connections and their cap |
//! | `GET /metrics` | Prometheus text (see [`metrics`](crate::metrics)) |
//! | `GET /plan?remove=ID&add=ID=HOST:PORT&weight=ID:N` | what those changes would move, computed without making them (see [`plan`](crate::plan)) |
//! | `GET /tcp/backends` | the TCP proxy's backends: id, address, health and where it comes from, connections (404 without a TCP proxy) |
//! | `GET /` | the live dashboard's page, **without** the token (it holds no data; see [`dashboard`](crate::dashboard)) |
//! | `GET /events` | the dashboard's server-sent events: a snapshot of every backend and the status each second |
//! | `POST /control/{id}/{kill\|pause\|resume\|restart}` | a fault on a waiter `bistro up` started, passed on to its control endpoint (404 without `admin.control_url`) |
//!
//! Changes swap a new backend table in (see [`table`](crate::table)): no connection is
//! dropped. When an admin token is configured, every request but the dashboard's page
//! needs `Authorization: Bearer <token>`; [`run`](crate::run) refuses to expose the API on a
//! non-loopback address without one.
//!
//! ## Browsers
//!
//! An operator's browser can be made to send requests to the admin API by any page it
//! opens: a cross-site `POST` with `Content-Type: text/plain` needs no preflight, and a
//! DNS name rebound to 127.0.0.1 makes the page same-origin. So, before anything else:
//!
//! - the `Host` must be the admin listener's own address (`127.0.0.1:8081`, and
//!   `localhost:8081` / `[::1]:8081` when on loopback) or one of `admin.allowed_hosts`,
//!   and an `Origin`, when sent, must name one of those too: otherwise `403`;
//! - a request with a body must say `Content-Type: application/json`: otherwise `415`
//!   (a browser cannot send that cross-site without a preflight, which is refused).
//!
//! ## Errors
//!
//! Every refusal is `application/problem+json`: `403`, `401` (with
//! `WWW-Authenticate: Bearer`) and `415` from the checks above, in that order and before
//! the path is looked at; `413` for a body over 64 KiB; `404 not-found` for a path that
//! is no endpoint; `405 method-not-allowed` (with `Allow`) for a method an endpoint does
//! not take. Every `GET` endpoint answers `HEAD` too (the headers alone). The slashes at
//! either end of a path do not count (`/backends/` is `/backends`), and `{id}` is
//! percent-decoded.
//!
//! The routes are an [axum](https://docs.rs/axum) router and the checks are middleware
//! around the routing itself, so an unknown path gets the same checks as a known one.
//!
//! `sessions_pinned` is approximate: affinity cookies issued naming the backend, minus
//! those the balancer saw cleared or moved away. Diners who just leave are never
//! subtracted, so it is an upper bound on the diners who still hold a pin.

use crate::body::ResponseBody;
use crate::config::ms;
use crate::drain::{DrainRequest, DrainView};
use crate::problem::Problem;
use crate::spec::{BackendSpec, Mode};
use crate::state::Shared;
use crate::table::TableError;
use crate::tcp::{self, TcpProxy};
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, RawQuery, Request, State};
use axum::middleware::{self, Next};
use axum::response::IntoResponse as _;
use axum::routing::{get, post};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// Serves the admin API on `listener` (non-blocking) until `shutdown` is cancelled.
///
/// Its connections finish their request and close then; the dashboard's event streams
/// hang on a child of `shutdown`, so that they end too (an open stream would hold its
/// connection's graceful shutdown forever) and could be ended alone.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    tcp: Option<Arc<TcpProxy>>,
    shutdown: CancellationToken,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "could not register the admin listener; the admin API is unavailable");
            return;
        }
    };
    let hosts = match listener.local_addr() {
        Ok(addr) => Arc::new(AllowedHosts::new(addr, &shared.config.admin.allowed_hosts)),
        Err(e) => {
            tracing::error!(error = %e, "could not read the admin listener's address; the admin API is unavailable");
            return;
        }
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(ms(shared.config.client.header_read_timeout_ms));
    let app = router(Admin {
        shared,
        tcp,
        hosts,
        stop: shutdown.child_token(),
    });
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stop.cancelled() => {
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

/// What the admin API's handlers and checks share.
#[derive(Clone)]
pub(crate) struct Admin {
    shared: Arc<Shared>,
    /// The TCP proxy, when the balancer runs one.
    tcp: Option<Arc<TcpProxy>>,
    /// The names the API answers to.
    hosts: Arc<AllowedHosts>,
    /// Cancelled when the dashboard's event streams are to end (a child of the admin
    /// API's token).
    stop: CancellationToken,
}

/// The admin API: the routes (see the module docs) behind the checks every request
/// passes, in this order: `Host`/`Origin`, token, content type.
///
/// The checks wrap the routing itself rather than each route, so they run before a
/// path is looked up: an unknown path or a wrong method without the token is a `401`
/// (which tells nothing about what exists), and the path is normalised
/// ([`normalize`]) before it is matched.
pub(crate) fn router(admin: Admin) -> Router {
    let routes = Router::new()
        .route("/", get(page))
        .route("/index.html", get(page))
        .route("/backends", get(list).post(add))
        .route("/backends/{id}", get(backend).delete(remove))
        .route("/backends/{id}/weight", post(weight))
        .route("/backends/{id}/drain", post(drain))
        .route("/backends/{id}/undrain", post(undrain))
        .route("/drains", get(drains))
        .route("/status", get(status_of))
        .route("/metrics", get(metrics))
        .route("/plan", get(plan))
        .route("/tcp/backends", get(tcp_backends))
        .route("/events", get(events))
        .route("/control/{id}/{action}", post(control))
        .route("/tls", get(tls))
        .route("/tls/reload", post(tls_reload))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(admin.clone());
    // `layer` wraps what is already there, so the last one added runs first.
    Router::new()
        .fallback_service(routes)
        .layer(middleware::map_request(normalize))
        .layer(middleware::from_fn(json_bodies))
        .layer(middleware::from_fn_with_state(admin.clone(), token))
        .layer(middleware::from_fn_with_state(admin, same_origin))
}

/// Refuses a request from another place than the admin API's own address (see the
/// module docs).
async fn same_origin(
    State(admin): State<Admin>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    if let Some(why) = admin.hosts.refuse(request.headers()) {
        tracing::warn!(reason = %why, "admin request refused");
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden-origin",
            "Request from outside the admin API's address",
            why,
        )
        .into_response();
    }
    next.run(request).await
}

/// Refuses a request without the admin token, when one is configured.
async fn token(
    State(admin): State<Admin>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    // The dashboard's page needs no token: it is the same bytes for everyone (compiled
    // in), holds no data, and sends the token itself with every request it makes for
    // data or changes. Asking for the token here would only make a browser show its
    // own login prompt, which cannot send a bearer token.
    let page = matches!(*request.method(), Method::GET | Method::HEAD)
        && matches!(request.uri().path(), "/" | "/index.html");
    if page || authorized(&admin.shared, request.headers()) {
        return next.run(request).await;
    }
    let mut response = problem(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Admin token required",
        "send the admin token as `Authorization: Bearer <token>`".into(),
    );
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response.into_response()
}

/// Refuses a request with a body that is not JSON (see the module docs).
async fn json_bodies(request: Request, next: Next) -> axum::response::Response {
    if request.method() != Method::GET && not_json(&request) {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Admin request bodies are JSON",
            "send the body as `Content-Type: application/json`".into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// Makes `/backends/`, `//backends` and `/backends` one path, as they have always been
/// here (the path's slashes at either end do not count), before it is matched.
async fn normalize(mut request: Request) -> Request {
    let path = request.uri().path();
    let trimmed = path.trim_matches('/');
    // `/` itself stays: trimming would leave an empty path. So does `//` (no route).
    if trimmed.is_empty() || path.strip_prefix('/') == Some(trimmed) {
        return request;
    }
    let normalized = match request.uri().query() {
        Some(query) => format!("/{trimmed}?{query}"),
        None => format!("/{trimmed}"),
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(normalized) = PathAndQuery::try_from(normalized) {
        parts.path_and_query = Some(normalized);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// A route's path parameters, percent-decoded; a parameter that is not UTF-8 once
/// decoded is a `400` problem (axum's own rejection is plain text).
struct Segments<T>(T);

impl<S, T> FromRequestParts<S> for Segments<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = Response<ResponseBody>;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(segments)) => Ok(Segments(segments)),
            Err(e) => Err(invalid(e.body_text())),
        }
    }
}

/// The `Host` (and `Origin`) values the admin API answers to.
#[derive(Debug)]
pub(crate) struct AllowedHosts {
    hosts: Vec<String>,
}

impl AllowedHosts {
    /// The listener's own address (with the loopback names when on loopback) and the
    /// configured extra names.
    pub(crate) fn new(addr: std::net::SocketAddr, extra: &[String]) -> AllowedHosts {
        let port = addr.port();
        let mut hosts = vec![addr.to_string()];
        if addr.ip().is_loopback() {
            hosts.extend([
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ]);
        }
        hosts.extend(extra.iter().map(|h| h.to_ascii_lowercase()));
        AllowedHosts { hosts }
    }

    fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// Why the request comes from the wrong place, if it does.
    fn refuse(&self, headers: &HeaderMap) -> Option<String> {
        // HTTP/1.1 requires `Host`; a client without one is not a browser.
        if let Some(host) = headers.get(HOST) {
            let host = host.to_str().unwrap_or("");
            if !self.allows(host) {
                return Some(format!(
                    "Host {host:?} is not this admin API's address; use one of {:?} (or add it to admin.allowed_hosts)",
                    self.hosts
                ));
            }
        }
        if let Some(origin) = headers.get(ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let host = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .map(|rest| rest.trim_end_matches('/'));
            if !host.is_some_and(|h| self.allows(h)) {
                return Some(format!(
                    "requests from the web page at {origin:?} may not use the admin API"
                ));
            }
        }
        None
    }
}

/// One backend as the admin API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct BackendView {
    id: String,
    address: String,
    weight: u32,
    health: &'static str,
    /// Why it last failed (`none` after a success): refused, timeout, failing,
    /// store-unavailable, shutting-down.
    reason: &'static str,
    /// How long it has been unavailable, in milliseconds (0 while available).
    down_for_ms: u64,
    mode: &'static str,
    draining: bool,
    active_connections: i64,
    idle_connections: usize,
    /// Requests waiting for one of its connection slots.
    queued: usize,
    sessions_pinned: i64,
    requests: u64,
    errors: u64,
    /// The backend's drain, when one was started (see [`drain`](crate::drain)).
    pub(crate) drain: Option<DrainView>,
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

/// The answer of the TLS endpoints on a balancer without TLS.
fn no_tls() -> Response<ResponseBody> {
    problem(
        StatusCode::NOT_FOUND,
        "no-tls",
        "No TLS",
        "this balancer serves plain HTTP; start it with --tls-cert and --tls-key".into(),
    )
}

fn problem(
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
) -> Response<ResponseBody> {
    Problem::other(status, kind, title, detail).into_response()
}

pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<ResponseBody> {
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

pub(crate) fn invalid(detail: String) -> Response<ResponseBody> {
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

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = &shared.config.admin.token else {
        return true;
    };
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

/// The body as JSON: `413` past [`MAX_BODY`], `400` when it is not the expected JSON.
async fn read_json<T: serde::de::DeserializeOwned>(
    body: Body,
) -> Result<T, Response<ResponseBody>> {
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err(problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request-too-large",
                "Request body too large",
                format!("admin request bodies are at most {MAX_BODY} bytes"),
            ));
        }
        Err(e) => return Err(invalid(format!("could not read the body: {e}"))),
    };
    serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("the body is not the expected JSON: {e}")))
}

fn view(shared: &Shared, id: &str) -> Response<ResponseBody> {
    let table = shared.registry.load();
    let now_ms = shared.clock.now_ms();
    match table.find(id) {
        Some(b) => json(StatusCode::OK, &view_of(shared, b, now_ms)),
        None => table_error(&TableError::NotFound(id.to_string())),
    }
}

pub(crate) fn view_of(shared: &Shared, b: &crate::backend::Backend, now_ms: u64) -> BackendView {
    BackendView {
        id: b.id().to_string(),
        address: b.core.addr.to_string(),
        weight: b.core.weight(),
        health: b.core.health.state(now_ms).as_str(),
        reason: b.core.health.reason().as_str(),
        down_for_ms: b.core.health.down_for(now_ms),
        mode: b.core.mode().map_or("unknown", Mode::as_str),
        draining: b.core.is_draining(),
        active_connections: b.active(),
        idle_connections: b.idle(),
        queued: b.queued(),
        sessions_pinned: b.core.pinned(),
        requests: b.requests(),
        errors: b.errors(),
        drain: shared.drains.view(b.id()),
    }
}

/// `POST /backends`.
async fn add(State(admin): State<Admin>, body: Body) -> Response<ResponseBody> {
    let shared = &admin.shared;
    let new: NewBackend = match read_json(body).await {
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

/// `POST /backends/{id}/drain` with an optional [`DrainRequest`] body.
async fn drain(
    State(admin): State<Admin>,
    Segments(id): Segments<String>,
    body: Body,
) -> Response<ResponseBody> {
    use http_body::Body as _;
    let (shared, id) = (&admin.shared, id.as_str());
    let asked: DrainRequest = if body.is_end_stream() {
        DrainRequest::default()
    } else {
        match read_json(body).await {
            Ok(asked) => asked,
            Err(response) => return response,
        }
    };
    if let Err(detail) = asked.check() {
        return invalid(detail);
    }
    let table = shared.registry.load();
    let Some(backend) = table.find(id) else {
        return table_error(&TableError::NotFound(id.to_string()));
    };
    if asked.handoff {
        if shared.config.admin.peer_secret.is_none() {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "handoff-unavailable",
                "Handoff needs the waiters' secret",
                "start the balancer with --peer-secret (or admin.peer_secret, BISTRO_PEER_SECRET) set to the waiters' --peer-secret, or drain without handoff".into(),
            );
        }
        if backend.core.mode() == Some(Mode::Replicated) {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "handoff-unsupported",
                "Replicated waiters are drained without handoff",
                format!(
                    "{id} is replicated: each of its sessions has a copy on a peer, which takes it over when {id} is removed; drain it without handoff"
                ),
            );
        }
    }
    drop(table);
    if let Err(e) = shared.registry.set_draining(id, true) {
        return table_error(&e);
    }
    shared.drains.start(shared, id, asked);
    view(shared, id)
}

/// Whether a request carries a body that is not JSON (see the module docs).
fn not_json(request: &Request) -> bool {
    use http_body::Body as _;
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match content_type {
        Some(t) => t != "application/json",
        None => !request.body().is_end_stream(),
    }
}

/// `GET /status`: backends available, panic mode, store outage, connections, and
/// whether faults can be put on the waiters (`control`).
pub(crate) fn status(shared: &Shared) -> serde_json::Value {
    let (table, now_ms) = (shared.registry.snapshot(), shared.clock.now_ms());
    let gauges = shared.gauges(&table, now_ms);
    let available = table
        .backends()
        .iter()
        .filter(|b| b.core.health.is_available(now_ms))
        .count();
    serde_json::json!({
        "backends": table.backends().len(),
        "backends_available": available,
        "panic_mode": gauges.panic,
        "store_outage": shared.store_outage(),
        "client_connections": gauges.client_connections,
        "max_connections": gauges.max_connections,
        "sessions_handed_off": shared.moves.len(),
        "control": shared.config.admin.control_url.is_some(),
    })
}

/// `GET /` and `GET /index.html`: the dashboard's page.
async fn page() -> Response<ResponseBody> {
    crate::dashboard::page()
}

/// `GET /backends`.
async fn list(State(admin): State<Admin>) -> Response<ResponseBody> {
    let shared = &admin.shared;
    let now_ms = shared.clock.now_ms();
    let table = shared.registry.snapshot();
    let views: Vec<BackendView> = table
        .backends()
        .iter()
        .map(|b| view_of(shared, b, now_ms))
        .collect();
    json(StatusCode::OK, &views)
}

/// `GET /backends/{id}`.
async fn backend(
    State(admin): State<Admin>,
    Segments(id): Segments<String>,
) -> Response<ResponseBody> {
    view(&admin.shared, &id)
}

/// `DELETE /backends/{id}`.
async fn remove(
    State(admin): State<Admin>,
    Segments(id): Segments<String>,
) -> Response<ResponseBody> {
    let shared = &admin.shared;
    match shared.registry.remove(&id) {
        Ok(()) => {
            shared.drains.stop(&id);
            tracing::info!(backend = %id, "backend removed");
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        Err(e) => table_error(&e),
    }
}

/// `POST /backends/{id}/weight`.
async fn weight(
    State(admin): State<Admin>,
    Segments(id): Segments<String>,
    body: Body,
) -> Response<ResponseBody> {
    let new: NewWeight = match read_json(body).await {
        Ok(new) => new,
        Err(response) => return response,
    };
    match admin.shared.registry.set_weight(&id, new.weight) {
        Ok(()) => {
            tracing::info!(backend = %id, weight = new.weight, "backend weight changed");
            view(&admin.shared, &id)
        }
        Err(e) => table_error(&e),
    }
}

/// `POST /backends/{id}/undrain`.
async fn undrain(
    State(admin): State<Admin>,
    Segments(id): Segments<String>,
) -> Response<ResponseBody> {
    let shared = &admin.shared;
    shared.drains.stop(&id);
    match shared.registry.set_draining(&id, false) {
        Ok(()) => {
            tracing::info!(backend = %id, "backend undrained");
            view(shared, &id)
        }
        Err(e) => table_error(&e),
    }
}

/// `GET /drains`.
async fn drains(State(admin): State<Admin>) -> Response<ResponseBody> {
    json(StatusCode::OK, &admin.shared.drains.all())
}

/// `GET /status`.
async fn status_of(State(admin): State<Admin>) -> Response<ResponseBody> {
    json(StatusCode::OK, &status(&admin.shared))
}

/// `GET /metrics`: the balancer's, and the TCP proxy's when there is one.
async fn metrics(State(admin): State<Admin>) -> Response<ResponseBody> {
    let shared = &admin.shared;
    let (table, now_ms) = (shared.registry.snapshot(), shared.clock.now_ms());
    let mut text = shared
        .metrics
        .render(&table, now_ms, shared.gauges(&table, now_ms));
    if let Some(tcp) = &admin.tcp {
        text.push_str(&tcp::render_metrics(tcp));
    }
    let mut response = Response::new(ResponseBody::full(text));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// `GET /plan?…`.
async fn plan(State(admin): State<Admin>, RawQuery(query): RawQuery) -> Response<ResponseBody> {
    crate::plan::respond(&admin.shared, query.as_deref())
}

/// `GET /tcp/backends`.
async fn tcp_backends(State(admin): State<Admin>) -> Response<ResponseBody> {
    match &admin.tcp {
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
            "this balancer runs no TCP proxy; start it with --tcp-listen and --tcp-backend".into(),
        ),
    }
}

/// `GET /events`: the dashboard's stream, which the balancer's shutdown ends.
async fn events(State(admin): State<Admin>) -> Response<ResponseBody> {
    crate::dashboard::events(&admin.shared, &admin.stop)
}

/// `POST /control/{id}/{action}`.
async fn control(
    State(admin): State<Admin>,
    Segments((id, action)): Segments<(String, String)>,
) -> Response<ResponseBody> {
    crate::dashboard::control(&admin.shared, &id, &action).await
}

/// `GET /tls`.
async fn tls(State(admin): State<Admin>) -> Response<ResponseBody> {
    match &admin.shared.tls {
        Some(tls) => json(StatusCode::OK, &tls.certs.info()),
        None => no_tls(),
    }
}

/// `POST /tls/reload`.
async fn tls_reload(State(admin): State<Admin>) -> Response<ResponseBody> {
    let Some(tls) = &admin.shared.tls else {
        return no_tls();
    };
    match tls.certs.reload() {
        Ok(info) => {
            tracing::info!(fingerprint = %info.sha256_fingerprint, "TLS certificate reloaded (admin API)");
            json(StatusCode::OK, &info)
        }
        Err(e) => {
            tracing::error!(error = %e, "TLS certificate reload failed; the old one keeps serving");
            problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "tls-reload-failed",
                "The certificate was not reloaded",
                format!("{e}; the certificate in use keeps serving"),
            )
        }
    }
}

/// Any path that is no route.
async fn not_found(uri: Uri) -> Response<ResponseBody> {
    let path = uri.path().trim_matches('/');
    problem(
        StatusCode::NOT_FOUND,
        "not-found",
        "No such admin endpoint",
        format!(
            "/{path} is not an admin endpoint; see GET /backends, GET /status, GET /metrics and GET /plan, or open / in a browser"
        ),
    )
}

/// A route asked with a method it does not take (axum adds `Allow`).
async fn method_not_allowed(method: Method, uri: Uri) -> Response<ResponseBody> {
    let path = uri.path().trim_matches('/');
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{method} is not supported on /{path}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BalancerConfig;
    use crate::problem::PROBLEM_BASE;
    use axum::body::Bytes;
    use http::header::{ALLOW, CACHE_CONTROL};
    use serde_json::{Value, json};
    use std::time::Duration;
    use tower::ServiceExt as _;

    /// The admin listener's address the requests below name in `Host`.
    const ADDR: &str = "127.0.0.1:8081";
    const TOKEN: &str = "t0ken";

    /// The admin router over a balancer with one backend (`w1`) and a token, as
    /// [`serve`] builds it; and the token that ends its event streams.
    fn app(extra: &str) -> (Router, CancellationToken) {
        let config = BalancerConfig::from_toml(&format!(
            r#"
            [[backends]]
            id = "w1"
            address = "127.0.0.1:1"
            mode = "stateful"
            [admin]
            token = "{TOKEN}"
            {extra}
            "#
        ))
        .unwrap();
        let shared = Arc::new(Shared::new(config, b"unit-test-key-0123456789", 1));
        let hosts = Arc::new(AllowedHosts::new(
            ADDR.parse().unwrap(),
            &shared.config.admin.allowed_hosts,
        ));
        let stop = CancellationToken::new();
        let admin = Admin {
            shared,
            tcp: None,
            hosts,
            stop: stop.clone(),
        };
        (router(admin), stop)
    }

    /// A request as the operator's tools send it: the admin address and the token.
    fn request(method: Method, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, ADDR)
            .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
    }

    fn empty(method: Method, path: &str) -> Request {
        request(method, path).body(Body::empty()).unwrap()
    }

    fn json_request(method: Method, path: &str, body: &Value) -> Request {
        request(method, path)
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Answer {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
        }

        /// Asserts a problem+json answer of this status and kind.
        fn problem(&self, status: StatusCode, kind: &str) -> Value {
            assert_eq!(
                self.status,
                status,
                "{}",
                String::from_utf8_lossy(&self.body)
            );
            assert_eq!(self.headers[CONTENT_TYPE], "application/problem+json");
            assert_eq!(self.headers[CACHE_CONTROL], "no-store");
            let body = self.json();
            assert_eq!(body["type"], format!("{PROBLEM_BASE}{kind}"), "{body}");
            assert_eq!(body["status"], status.as_u16(), "{body}");
            body
        }
    }

    async fn call(app: &Router, request: Request) -> Answer {
        let response = app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(5), body.collect())
            .await
            .expect("the body ends")
            .unwrap()
            .to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn backend_count(app: &Router) -> usize {
        let list = call(app, empty(Method::GET, "/backends")).await;
        assert_eq!(list.status, StatusCode::OK);
        list.json().as_array().unwrap().len()
    }

    #[tokio::test]
    async fn a_foreign_host_or_origin_is_refused_before_anything_else() {
        let (app, _stop) = app("");
        // DNS rebinding: the page's own name, resolved to the admin address. Refused
        // before the token is looked at, and before the path is.
        for path in ["/backends", "/nothing-here", "/"] {
            let rebound = Request::get(path)
                .header(HOST, "evil.example:8081")
                .body(Body::empty())
                .unwrap();
            let body = call(&app, rebound)
                .await
                .problem(StatusCode::FORBIDDEN, "forbidden-origin");
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("evil.example:8081"),
                "{body}"
            );
        }
        let foreign = request(Method::POST, "/backends")
            .header(ORIGIN, "http://evil.example")
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"id":"evil","address":"127.0.0.1:9"}"#))
            .unwrap();
        call(&app, foreign)
            .await
            .problem(StatusCode::FORBIDDEN, "forbidden-origin");
        assert_eq!(backend_count(&app).await, 1, "nothing was added");

        // The operator's own page, by any of the loopback names.
        for origin in ["http://127.0.0.1:8081", "http://localhost:8081/"] {
            let own = request(Method::GET, "/status")
                .header(ORIGIN, origin)
                .body(Body::empty())
                .unwrap();
            assert_eq!(call(&app, own).await.status, StatusCode::OK, "{origin}");
        }
    }

    #[tokio::test]
    async fn the_token_is_required_everywhere_but_on_the_page() {
        let (app, _stop) = app("");
        let bare = |method: Method, path: &str| {
            Request::builder()
                .method(method)
                .uri(path)
                .header(HOST, ADDR)
        };
        for (method, path) in [
            (Method::GET, "/backends"),
            (Method::DELETE, "/backends/w1"),
            // Unknown paths and wrong methods too: a 404 or 405 would tell what exists.
            (Method::GET, "/nothing-here"),
            (Method::PUT, "/backends"),
            (Method::POST, "/"),
        ] {
            let answer = call(
                &app,
                bare(method.clone(), path).body(Body::empty()).unwrap(),
            )
            .await;
            answer.problem(StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(
                answer.headers[WWW_AUTHENTICATE], "Bearer",
                "{method} {path}"
            );
        }
        for wrong in ["Bearer nope", "Bearer t0ke", "t0ken", "Basic dDBrZW4="] {
            let request = bare(Method::GET, "/status")
                .header(AUTHORIZATION, wrong)
                .body(Body::empty())
                .unwrap();
            call(&app, request)
                .await
                .problem(StatusCode::UNAUTHORIZED, "unauthorized");
        }
        assert_eq!(backend_count(&app).await, 1, "w1 is still there");

        for path in ["/", "/index.html"] {
            let page = call(&app, bare(Method::GET, path).body(Body::empty()).unwrap()).await;
            assert_eq!(page.status, StatusCode::OK, "{path}");
            assert_eq!(page.headers[CONTENT_TYPE], "text/html; charset=utf-8");
            assert!(String::from_utf8_lossy(&page.body).contains("bistro balancer"));
        }
        let head = call(&app, bare(Method::HEAD, "/").body(Body::empty()).unwrap()).await;
        assert_eq!(head.status, StatusCode::OK);
        assert!(head.body.is_empty());
        // `HEAD` is a `GET`, token and all.
        let head = call(&app, empty(Method::HEAD, "/status")).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers[CONTENT_TYPE], "application/json");
        assert!(head.body.is_empty());
        let head = call(
            &app,
            bare(Method::HEAD, "/status").body(Body::empty()).unwrap(),
        )
        .await;
        // (No body to look at: the wire carries none for a `HEAD`.)
        assert_eq!(head.status, StatusCode::UNAUTHORIZED);
        assert_eq!(head.headers[WWW_AUTHENTICATE], "Bearer");
    }

    #[tokio::test]
    async fn a_body_must_be_small_json() {
        let (app, _stop) = app("");
        let add = r#"{"id":"w4","address":"127.0.0.1:9"}"#;
        // What a web page can send cross-site without a preflight.
        let text_plain = request(Method::POST, "/backends")
            .header(CONTENT_TYPE, "text/plain")
            .body(Body::from(add))
            .unwrap();
        call(&app, text_plain)
            .await
            .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
        let untyped = request(Method::POST, "/backends")
            .body(Body::from(add))
            .unwrap();
        call(&app, untyped)
            .await
            .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
        // Before the path is looked up.
        let elsewhere = request(Method::POST, "/nothing-here")
            .header(CONTENT_TYPE, "text/plain")
            .body(Body::from(add))
            .unwrap();
        call(&app, elsewhere)
            .await
            .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");

        let padding = "x".repeat(MAX_BODY);
        let big = json!({"id": "w4", "address": "127.0.0.1:9", "pad": padding});
        let body = call(&app, json_request(Method::POST, "/backends", &big))
            .await
            .problem(StatusCode::PAYLOAD_TOO_LARGE, "request-too-large");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains(&MAX_BODY.to_string()),
            "{body}"
        );
        assert_eq!(backend_count(&app).await, 1, "nothing was added");

        // A charset is fine; JSON of the wrong shape is a 400.
        let with_charset = request(Method::POST, "/backends")
            .header(CONTENT_TYPE, "Application/JSON; charset=utf-8")
            .body(Body::from(add))
            .unwrap();
        assert_eq!(call(&app, with_charset).await.status, StatusCode::CREATED);
        for wrong in [
            json!({"id": "w5"}),
            json!({"id": "w5", "address": "127.0.0.1:9", "colour": "red"}),
        ] {
            call(&app, json_request(Method::POST, "/backends", &wrong))
                .await
                .problem(StatusCode::BAD_REQUEST, "invalid-request");
        }
        let not_json = request(Method::POST, "/backends")
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from("{"))
            .unwrap();
        call(&app, not_json)
            .await
            .problem(StatusCode::BAD_REQUEST, "invalid-request");
    }

    #[tokio::test]
    async fn unknown_paths_and_wrong_methods_are_problems() {
        let (app, _stop) = app("");
        for path in [
            "/nothing-here",
            "/backends/w1/nothing",
            "/tcp",
            "/control/w1",
        ] {
            let body = call(&app, empty(Method::GET, path))
                .await
                .problem(StatusCode::NOT_FOUND, "not-found");
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{path} is not an admin endpoint")),
                "{body}"
            );
        }
        for (method, path, allow) in [
            (Method::PUT, "/backends", "GET,HEAD,POST"),
            (Method::DELETE, "/status", "GET,HEAD"),
            (Method::GET, "/backends/w1/weight", "POST"),
            (Method::GET, "/control/w1/kill", "POST"),
            (Method::GET, "/tls/reload", "POST"),
        ] {
            let answer = call(&app, empty(method.clone(), path)).await;
            let body = answer.problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");
            assert_eq!(
                body["detail"],
                format!("{method} is not supported on {path}"),
                "{body}"
            );
            assert_eq!(answer.headers[ALLOW], allow, "{method} {path}");
        }
        // The slashes at either end of a path do not count.
        for path in ["/backends/", "//backends", "/backends/w1/"] {
            assert_eq!(
                call(&app, empty(Method::GET, path)).await.status,
                StatusCode::OK,
                "{path}"
            );
        }
        // Path parameters are percent-decoded; one that is not UTF-8 then is refused.
        let decoded = call(&app, empty(Method::GET, "/backends/w%31")).await;
        assert_eq!(decoded.status, StatusCode::OK);
        assert_eq!(decoded.json()["id"], "w1");
        call(&app, empty(Method::GET, "/backends/%FF"))
            .await
            .problem(StatusCode::BAD_REQUEST, "invalid-request");
    }

    #[tokio::test]
    async fn backends_are_added_read_reweighted_and_removed() {
        let (app, _stop) = app("");
        let new = json!({"id": "w4", "address": "127.0.0.1:9", "weight": 2, "mode": "stateless"});
        let added = call(&app, json_request(Method::POST, "/backends", &new)).await;
        assert_eq!(added.status, StatusCode::CREATED, "{}", added.json());
        assert_eq!(added.headers[CONTENT_TYPE], "application/json");
        let view = added.json();
        assert_eq!(view["id"], "w4");
        assert_eq!(view["address"], "127.0.0.1:9");
        assert_eq!(view["weight"], 2);
        assert_eq!(view["mode"], "stateless");
        assert_eq!(view["draining"], false);
        assert_eq!(view["drain"], Value::Null);

        let read = call(&app, empty(Method::GET, "/backends/w4")).await;
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(read.json()["address"], "127.0.0.1:9");
        assert_eq!(backend_count(&app).await, 2);

        let twice = json!({"id": "w4", "address": "127.0.0.1:10"});
        call(&app, json_request(Method::POST, "/backends", &twice))
            .await
            .problem(StatusCode::CONFLICT, "backend-exists");
        let bad_id = json!({"id": "bad id", "address": "127.0.0.1:10"});
        call(&app, json_request(Method::POST, "/backends", &bad_id))
            .await
            .problem(StatusCode::BAD_REQUEST, "invalid-request");

        let zero = json!({"weight": 0});
        call(
            &app,
            json_request(Method::POST, "/backends/w4/weight", &zero),
        )
        .await
        .problem(StatusCode::BAD_REQUEST, "invalid-request");
        let three = json!({"weight": 3});
        let weighted = call(
            &app,
            json_request(Method::POST, "/backends/w4/weight", &three),
        )
        .await;
        assert_eq!(weighted.status, StatusCode::OK);
        assert_eq!(weighted.json()["weight"], 3);
        call(
            &app,
            json_request(Method::POST, "/backends/w9/weight", &three),
        )
        .await
        .problem(StatusCode::NOT_FOUND, "unknown-backend");

        let removed = call(&app, empty(Method::DELETE, "/backends/w4")).await;
        assert_eq!(removed.status, StatusCode::NO_CONTENT);
        assert!(removed.body.is_empty());
        for (method, path) in [
            (Method::GET, "/backends/w4"),
            (Method::DELETE, "/backends/w4"),
        ] {
            call(&app, empty(method, path))
                .await
                .problem(StatusCode::NOT_FOUND, "unknown-backend");
        }
        assert_eq!(backend_count(&app).await, 1);
    }

    #[tokio::test]
    async fn drain_and_undrain() {
        let (app, _stop) = app("");
        let drained = call(&app, empty(Method::POST, "/backends/w1/drain")).await;
        assert_eq!(drained.status, StatusCode::OK);
        assert_eq!(drained.json()["draining"], true);
        assert!(drained.json()["drain"].is_object(), "{}", drained.json());
        let drains = call(&app, empty(Method::GET, "/drains")).await.json();
        assert!(drains.get("w1").is_some(), "{drains}");

        let undrained = call(&app, empty(Method::POST, "/backends/w1/undrain")).await;
        assert_eq!(undrained.status, StatusCode::OK);
        assert_eq!(undrained.json()["draining"], false);

        // Handoff needs the waiters' secret, which this balancer lacks.
        let handoff = json!({"handoff": true});
        call(
            &app,
            json_request(Method::POST, "/backends/w1/drain", &handoff),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "handoff-unavailable");
        call(&app, empty(Method::POST, "/backends/w9/drain"))
            .await
            .problem(StatusCode::NOT_FOUND, "unknown-backend");
        call(&app, empty(Method::POST, "/backends/w9/undrain"))
            .await
            .problem(StatusCode::NOT_FOUND, "unknown-backend");
    }

    #[tokio::test]
    async fn status_metrics_and_what_this_balancer_lacks() {
        let (app, _stop) = app("");
        let status = call(&app, empty(Method::GET, "/status")).await;
        assert_eq!(status.status, StatusCode::OK);
        assert_eq!(status.headers[CONTENT_TYPE], "application/json");
        let status = status.json();
        let mut keys: Vec<&str> = status
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "backends",
                "backends_available",
                "client_connections",
                "control",
                "max_connections",
                "panic_mode",
                "sessions_handed_off",
                "store_outage",
            ]
        );
        assert_eq!(status["backends"], 1);
        assert_eq!(status["client_connections"], 0);
        assert_eq!(status["sessions_handed_off"], 0);
        assert_eq!(status["store_outage"], false);
        assert_eq!(status["control"], false);

        let metrics = call(&app, empty(Method::GET, "/metrics")).await;
        assert_eq!(metrics.status, StatusCode::OK);
        assert_eq!(metrics.headers[CONTENT_TYPE], "text/plain; version=0.0.4");
        assert!(String::from_utf8_lossy(&metrics.body).contains("backend=\"w1\""));

        let plan = call(&app, empty(Method::GET, "/plan?remove=w1")).await;
        assert_eq!(plan.status, StatusCode::OK, "{}", plan.json());
        call(&app, empty(Method::GET, "/plan?remove=w9"))
            .await
            .problem(StatusCode::BAD_REQUEST, "invalid-request");

        call(&app, empty(Method::GET, "/tcp/backends"))
            .await
            .problem(StatusCode::NOT_FOUND, "no-tcp-proxy");
        call(&app, empty(Method::GET, "/tls"))
            .await
            .problem(StatusCode::NOT_FOUND, "no-tls");
        call(&app, empty(Method::POST, "/tls/reload"))
            .await
            .problem(StatusCode::NOT_FOUND, "no-tls");
        call(&app, empty(Method::POST, "/control/w1/kill"))
            .await
            .problem(StatusCode::NOT_FOUND, "no-control");
    }

    #[tokio::test]
    async fn the_event_stream_ends_on_shutdown() {
        let (app, stop) = app("");
        let response = app.oneshot(empty(Method::GET, "/events")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/event-stream");
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(first.starts_with(b"event: snapshot\ndata: "), "{first:?}");
        stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = body.frame().await {}
        })
        .await;
        assert!(ended.is_ok(), "the stream ends on shutdown");
    }

    #[test]
    fn only_the_admin_address_is_a_host() {
        let hosts = AllowedHosts::new(
            "127.0.0.1:8081".parse().unwrap(),
            &["Admin.Internal:9".into()],
        );
        for ok in [
            "127.0.0.1:8081",
            "localhost:8081",
            "[::1]:8081",
            "admin.internal:9",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "127.0.0.1:8080",
            "localhost",
            "evil.example:8081",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
        let public = AllowedHosts::new("10.0.0.5:8081".parse().unwrap(), &[]);
        assert!(
            !public.allows("localhost:8081"),
            "loopback names only on loopback"
        );
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
    }
}
