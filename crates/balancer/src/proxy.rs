//! The request path: from a diner's request to a waiter's response.
//!
//! 1. **Framing.** Ambiguous framing is refused (see [`framing`](crate::framing)).
//! 2. **Target.** The route's stickiness, the affinity cookie and the strategy decide
//!    the backend, or answer at once (see [`target`](crate::target)).
//! 3. **Body.** A request that may be sent again has its (small) body buffered; others
//!    stream. Hop-by-hop headers go, forwarding headers come.
//! 4. **Attempts.** See [`forward`](crate::forward) for one attempt and
//!    [`retry`](crate::retry) for when another is allowed. A pinned request whose backend
//!    cannot be reached falls under the session-lost policy; a pinned request to a
//!    session-holding backend is only ever resent to that same backend.
//! 5. **Response.** 5xx answers count against the backend's health, the `Bistro-Mode`
//!    header teaches the balancer the backend's mode, a sticky route issues (or
//!    refreshes) the affinity cookie, and a rerouted request says `Bistro-Rerouted`.
//!    The body streams back and returns the connection to the pool when it ends.

use crate::affinity::{Verdict, VerdictCache};
use crate::backend::{Core, Local};
use crate::body::{ResponseBody, UpstreamBody};
use crate::clock::unix_secs;
use crate::error::{ProxyError, RetrySafety};
use crate::forward::{self, Outgoing, Source};
use crate::framing;
use crate::headers::{add_forwarded, add_via, strip_hop_by_hop};
use crate::metrics::AffinityOutcome;
use crate::problem::{closing, error_response};
use crate::retry::may_resend;
use crate::route::Route;
use crate::spec::Mode;
use crate::state::{Settings, Worker};
use crate::target::{Sticky, Target, choose, lose, pick};
use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

static REROUTED: HeaderName = HeaderName::from_static("bistro-rerouted");
static BISTRO_MODE: HeaderName = HeaderName::from_static("bistro-mode");

/// One client connection's context.
#[derive(Debug)]
pub(crate) struct Downstream {
    pub(crate) worker: Arc<Worker>,
    pub(crate) client: SocketAddr,
    /// The client IP rendered once, for `X-Forwarded-For`.
    pub(crate) client_ip: HeaderValue,
    /// The verdict on this connection's last affinity cookie.
    affinity: VerdictCache,
}

impl Downstream {
    pub(crate) fn new(worker: Arc<Worker>, client: SocketAddr) -> Downstream {
        let client_ip = HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Downstream {
            worker,
            client,
            client_ip,
            affinity: VerdictCache::default(),
        }
    }
}

/// Proxies one request; every failure becomes a response (a problem answer).
pub(crate) async fn handle(cx: &Downstream, request: Request<Incoming>) -> Response<ResponseBody> {
    let worker = &*cx.worker;
    let shared = &*worker.shared;
    let settings = &shared.settings;
    let started = Instant::now();
    let now_ms = shared.clock.millis(started);
    worker.counters().request();
    worker.budget.deposit();

    let (parts, body) = request.into_parts();
    let (method, uri, mut headers) = (parts.method, parts.uri, parts.headers);
    let declared = match framing::check(&headers) {
        Ok(declared) => declared,
        Err(e) => return closing(error_response(&ProxyError::Framing(e))),
    };
    let route = shared.routes.find(uri.path());
    let unix_now = if route.is_sticky() { unix_secs() } else { 0 };
    let table = shared.registry.load();
    let key = if table.uses_key() {
        shared.key_source.key(&headers, cx.client.ip())
    } else {
        0
    };
    let verdict = if route.is_sticky() {
        cx.affinity
            .read(&worker.verdicts, &shared.affinity, &headers, unix_now)
    } else {
        Verdict::Absent
    };
    let chosen = choose(worker, &table, route, verdict, key, now_ms);
    drop(table);
    let mut target = match chosen {
        Ok(target) => target,
        Err(response) => return *response,
    };

    let source = match prepare_body(&method, &headers, declared, body, settings).await {
        Ok(source) => source,
        Err(response) => return response,
    };
    let resend = may_resend(settings.after_send, &method, &headers);
    strip_hop_by_hop(&mut headers);
    add_forwarded(&mut headers, &cx.client_ip);
    let uri = forward::origin_form(uri, &mut headers, target.local.core.addr);
    let mut out = Outgoing::new(method, uri, headers, source, resend);

    let mut retries = 0;
    let mut tried: Vec<Arc<Core>> = Vec::new();
    loop {
        let error = match forward::attempt(worker, &target.local, &mut out, started).await {
            Ok((response, lease)) => {
                return respond(worker, route, &target, response, lease, now_ms, unix_now);
            }
            Err(error) => error,
        };
        let core = target.local.core.clone();
        blame(worker, &target.local, &error, now_ms);
        tried.push(core.clone());
        let exclude = |b: &Core| tried.iter().any(|t| std::ptr::eq(&**t, b));
        match error.retry_safety() {
            RetrySafety::NotSent if out.available() && target.pinned() => {
                // The diner's waiter cannot be reached: the session-lost policy decides.
                if let Err(response) = lose(worker, route, &core.id, core.mode(), Some(&core)) {
                    return *response;
                }
                let Some(local) = pick(worker, key, now_ms, &exclude) else {
                    return error_response(&error);
                };
                target = Target {
                    local,
                    sticky: Sticky {
                        issued_at: None,
                        replace: true,
                        rerouted_from: Some(core.id.clone()),
                    },
                };
            }
            RetrySafety::NotSent if out.available() => {
                if !may_retry(worker, &mut retries, now_ms) {
                    return error_response(&error);
                }
                let Some(local) = pick(worker, key, now_ms, &exclude) else {
                    return error_response(&error);
                };
                target.local = local;
            }
            RetrySafety::MaybeSent if out.may_resend() => {
                if !may_retry(worker, &mut retries, now_ms) {
                    return error_response(&error);
                }
                // A session-holding pinned backend is the only one with the diner's notes.
                let stay = target.pinned() && core.holds_sessions();
                if !stay && let Some(local) = pick(worker, key, now_ms, &exclude) {
                    if target.pinned() {
                        // The diner moves to another backend, as on a connect failure:
                        // say so and re-issue the cookie (regression: a pooled
                        // connection closed by a dying stateless waiter used to reroute
                        // silently, without `Bistro-Rerouted`).
                        target.sticky = Sticky {
                            issued_at: None,
                            replace: true,
                            rerouted_from: Some(core.id.clone()),
                        };
                    }
                    target.local = local;
                }
            }
            _ => return error_response(&error),
        }
        tracing::debug!(backend = %core.id, error = %error, "retrying on {}", target.local.core.id);
    }
}

/// Counts a failed attempt against the backend (and maybe ejects it).
fn blame(worker: &Worker, local: &Local, error: &ProxyError, now_ms: u64) {
    if !error.blames_backend() {
        return;
    }
    local.stats.errors.fetch_add(1, Relaxed);
    if local
        .core
        .health
        .record_failure(now_ms, worker.shared.settings.ejection)
    {
        tracing::warn!(backend = %local.core.id, error = %error, "backend ejected after consecutive failures");
    } else {
        tracing::debug!(backend = %local.core.id, error = %error, "request to backend failed");
    }
}

/// Takes a retry from the per-request limit and the budget.
fn may_retry(worker: &Worker, retries: &mut u32, now_ms: u64) -> bool {
    if *retries >= worker.shared.settings.max_retries {
        return false;
    }
    if !worker.budget.withdraw(now_ms) {
        worker.counters().budget_exhausted();
        return false;
    }
    *retries += 1;
    worker.counters().retry();
    true
}

/// Reads a retryable request's small body into memory; streams the rest.
async fn prepare_body(
    method: &Method,
    headers: &HeaderMap,
    declared: Option<u64>,
    body: Incoming,
    settings: &Settings,
) -> Result<Source, Response<ResponseBody>> {
    use http_body::Body as _;
    if declared.is_some_and(|n| n > settings.max_body) {
        return Err(closing(error_response(&ProxyError::BodyTooLarge {
            limit: settings.max_body,
        })));
    }
    if body.is_end_stream() {
        return Ok(Source::Empty);
    }
    if may_resend(settings.after_send, method, headers)
        && declared.is_some_and(|n| n <= settings.max_buffered_body)
    {
        return match body.collect().await {
            Ok(collected) => Ok(Source::Buffered(collected.to_bytes())),
            Err(e) => Err(closing(error_response(&ProxyError::ClientBody(e)))),
        };
    }
    let body = crate::body::RequestBody::Stream {
        inner: body,
        read: 0,
        limit: settings.max_body,
    };
    Ok(Source::Stream(Some(body)))
}

/// Turns the backend's response into the client's.
fn respond(
    worker: &Worker,
    route: &Route,
    target: &Target,
    response: Response<Incoming>,
    lease: crate::body::Lease,
    now_ms: u64,
    unix_now: u64,
) -> Response<ResponseBody> {
    let shared = &worker.shared;
    let local = &target.local;
    let core = &local.core;
    let (mut parts, body) = response.into_parts();
    // A 503 with Retry-After is a live backend saying "not now" on purpose (a stateless
    // waiter whose store is down answers so): it counts as an error but not towards
    // ejection, which would only move the load to peers that share the cause, and
    // keep every backend ejected after the cause is gone.
    let deliberate = parts.status == http::StatusCode::SERVICE_UNAVAILABLE
        && parts.headers.contains_key(http::header::RETRY_AFTER);
    if deliberate {
        local.stats.errors.fetch_add(1, Relaxed);
    } else if parts.status.is_server_error() {
        local.stats.errors.fetch_add(1, Relaxed);
        if core.health.record_failure(now_ms, shared.settings.ejection) {
            tracing::warn!(backend = %core.id, status = %parts.status, "backend ejected after consecutive 5xx answers");
        }
    } else {
        core.health.record_success();
    }
    if let Some(mode) = parts
        .headers
        .get(&BISTRO_MODE)
        .and_then(|v| Mode::from_wire(v.as_bytes()))
    {
        core.learn_mode(mode);
    }
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.reserve(2);
    add_via(&mut parts.headers);
    if route.is_sticky() {
        let sticky = &target.sticky;
        if route.pins(core.mode()) {
            let issue = match sticky.issued_at {
                Some(issued_at) => shared.affinity.needs_refresh(issued_at, unix_now),
                None => true,
            };
            if issue {
                parts
                    .headers
                    .append(SET_COOKIE, shared.affinity.set_cookie(&core.id, unix_now));
                if sticky.issued_at.is_none() {
                    core.pin();
                    worker.counters().affinity(AffinityOutcome::Issued);
                }
            }
        } else if sticky.replace {
            parts
                .headers
                .append(SET_COOKIE, shared.affinity.clear_cookie());
        }
        if let Some(from) = &sticky.rerouted_from
            && let Ok(value) = HeaderValue::from_str(&format!("{from}->{}", core.id))
        {
            parts.headers.insert(REROUTED.clone(), value);
        }
    }
    Response::from_parts(
        parts,
        ResponseBody::Upstream(UpstreamBody::new(body, lease)),
    )
}
