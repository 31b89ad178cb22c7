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

use crate::affinity::{Verdict, VerdictCache, find_cookie};
use crate::backend::{Core, Local};
use crate::body::{BodyClock, ResponseBody, UpstreamBody};
use crate::client_ip;
use crate::error::{Origin, ProxyError};
use crate::forward::{self, Outgoing, Source};
use crate::framing;
use crate::headers::{RequestNames, add_forwarded_to, join_cookies, rewrite_response};
use crate::metrics::{AffinityOutcome, Refusal};
use crate::per_ip::Counted;
use crate::problem::{Problem, error_response};
use crate::retry::{Failed, NextAttempt, may_resend, next_attempt};
use crate::route::Route;
use crate::state::{Settings, Worker};
use crate::target::{Sticky, Target, choose, failover_to, pick, unavailable};
use bistro_http_io::{Exchanges, head_size};
use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bistro_proto::cookies::SESSION as SESSION_COOKIE;
// A replicated waiter names the peer keeping its copy of the diner's session
// (`Bistro-Backup`, read by `rewrite_response`); one that no longer leads the session
// names the one that does, with `421 session-moved` (`BISTRO_LEADER`). The session header and cookie: a request
// without either starts a session.
use bistro_proto::headers::{LEADER as BISTRO_LEADER, REROUTED, SESSION as SESSION_HEADER};
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Most `421 session-moved` answers one request follows.
const MAX_FOLLOWS: u32 = 3;

/// The waiter session a request names (header first, as the waiter reads it).
fn session_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(&SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| find_cookie(headers, SESSION_COOKIE))
}

/// One client connection's context.
#[derive(Debug)]
pub(crate) struct Downstream {
    pub(crate) worker: Arc<Worker>,
    pub(crate) client: SocketAddr,
    /// The peer's IP rendered once, for `X-Forwarded-For`.
    pub(crate) client_ip: HeaderValue,
    /// Whether the peer is a trusted proxy (see [`client_ip`]).
    pub(crate) trusted: bool,
    /// Whether the connection is TLS (`X-Forwarded-Proto: https`).
    pub(crate) tls: bool,
    /// The verdict on this connection's last affinity cookie.
    affinity: VerdictCache,
    /// Requests whose handling started, and whose response body ended: what the
    /// connection's socket reads to pick its timeout (see
    /// [`client_io`](crate::client_io)).
    pub(crate) exchanges: Exchanges,
    /// The connection's place in the per-IP count, given back on close.
    _per_ip: Option<Counted>,
}

impl Downstream {
    /// A connection from `client`, already counted in the balancer's connections (and,
    /// with `per_ip`, in its IP's).
    pub(crate) fn new(
        worker: Arc<Worker>,
        client: SocketAddr,
        trusted: bool,
        tls: bool,
        per_ip: Option<Counted>,
    ) -> Downstream {
        let client_ip = HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Downstream {
            worker,
            client,
            client_ip,
            trusted,
            tls,
            affinity: VerdictCache::default(),
            exchanges: Exchanges::default(),
            _per_ip: per_ip,
        }
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        self.worker.shared.connections.fetch_sub(1, Relaxed);
    }
}

/// Whether a request would start a session at the waiter: it changes something and
/// carries no session credential.
fn creates_session(method: &Method, headers: &HeaderMap) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        && !headers.contains_key(&SESSION_HEADER)
        && find_cookie(headers, SESSION_COOKIE).is_none()
}

/// The client's own `X-Request-Id` when it is a plain token worth repeating.
fn client_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get(&X_REQUEST_ID)
        .filter(|v| v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic()))
        .cloned()
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
    // Taken apart in a block so the rest of `parts` is dropped here, not kept in the
    // request's future until it ends (every byte of that future is held per connection).
    let (method, uri, mut headers, version) = {
        let parts = parts;
        (parts.method, parts.uri, parts.headers, parts.version)
    };
    if version == http::Version::HTTP_2 {
        // HTTP/2 carries each cookie in a field of its own; HTTP/1.1 (the waiters)
        // wants them in one (RFC 9113 §8.2.3).
        join_cookies(&mut headers);
    }
    let mut names = RequestNames::scan(&headers);
    let client_rid = if names.request_id {
        client_request_id(&headers)
    } else {
        None
    };
    let request_id = || client_rid.clone().unwrap_or_else(|| worker.request_id());
    let declared = match framing::check(&headers) {
        Ok(declared) => declared,
        Err(e) => return error_response(&ProxyError::Framing(e), &request_id()),
    };
    let limit = shared.config.client.max_header_bytes;
    let size = head_size(&method, &uri, &headers);
    if size > limit {
        return error_response(&ProxyError::HeadTooLarge { size, limit }, &request_id());
    }
    // Before anything reads the headers for a decision: a header the client named in
    // `Connection` is not part of the request (it may not make it resendable).
    names.strip_hop_by_hop(&mut headers);
    let client: IpAddr = client_ip::resolve(
        cx.client.ip(),
        cx.trusted,
        &headers,
        &shared.config.client.trusted_proxies,
    );
    if let Some(rate) = &shared.session_rate
        && creates_session(&method, &headers)
        && let Err(wait_ms) = rate.take(client, now_ms)
    {
        worker.counters().refused(Refusal::SessionRate);
        let problem = Problem::too_many_new_sessions(
            shared.config.client.session_rate_per_ip,
            wait_ms.div_ceil(1000),
        );
        return problem.into_response();
    }
    let route = shared.routes.find(uri.path());
    let unix_now = if route.is_sticky() {
        shared.clock.unix_secs()
    } else {
        0
    };
    let table = shared.registry.load();
    let key = if table.uses_key() {
        shared.key_source.key(&headers, client)
    } else {
        0
    };
    let verdict = if route.is_sticky() {
        cx.affinity
            .read(&worker.verdicts, &shared.affinity, &headers, unix_now)
    } else {
        Verdict::Absent
    };
    // A session handed off by a draining waiter: where it lives now.
    let moved = if route.is_sticky() && !shared.moves.is_empty() {
        session_of(&headers).and_then(|s| shared.moves.lookup(s, now_ms))
    } else {
        None
    };
    let chosen = choose(
        worker,
        &table,
        route,
        verdict,
        key,
        now_ms,
        moved,
        &request_id,
    );
    drop(table);
    let mut target = match chosen {
        Ok(target) => target,
        Err(response) => return *response,
    };

    // Most requests have no body; the others read it in a boxed future, which keeps
    // the request's future (held per client connection) small.
    let prepared = if http_body::Body::is_end_stream(&body) {
        Ok(Source::Empty)
    } else {
        // A draining waiter may hand the session on while the request is under way
        // and answer 421 with nothing applied: keep the body to send it on.
        let keep = target.local.core.is_draining();
        Box::pin(prepare_body(
            &method, &headers, declared, body, settings, started, keep,
        ))
        .await
    };
    let source = match prepared {
        Ok(source) => source,
        Err(error) => {
            if matches!(error, ProxyError::BodyTimeout) {
                worker.counters().timeout(crate::metrics::Timeout::Body);
            }
            return error_response(&error, &request_id());
        }
    };
    let resend = may_resend(settings.after_send, &method, &headers);
    let uri = forward::origin_form(uri, &mut headers, target.local.core.addr);
    add_forwarded_to(
        &mut headers,
        names.forwarding,
        &cx.client_ip,
        cx.trusted,
        cx.tls,
    );
    let mut out = Outgoing::new(method, uri, headers, source, resend);

    let mut retries = 0;
    let mut follows = 0;
    let mut tried: Vec<Arc<Core>> = Vec::new();
    loop {
        let error = match forward::attempt(worker, &target.local, &mut out, started).await {
            Ok((response, lease)) => {
                // A replicated waiter that was taken over, or a stateful one that handed
                // the session on, kept nothing of the request and names the waiter that
                // leads the session now: send it there. Not a retry of a failure (the
                // budget is not spent), but bounded, and never back to a waiter tried.
                if response.status() == http::StatusCode::MISDIRECTED_REQUEST
                    && out.available()
                    && follows < MAX_FOLLOWS
                    && let Some(leader) = response
                        .headers()
                        .get(&BISTRO_LEADER)
                        .and_then(|v| v.to_str().ok())
                    && let Some(local) = follow(worker, leader, &tried, now_ms)
                {
                    follows += 1;
                    // The session lives on the leader now, which the re-issued cookie
                    // names (and counts); the waiter that sent us on holds it no more.
                    target.local.core.unpin();
                    let from = target.local.core.id.clone();
                    tried.push(target.local.core.clone());
                    drop(lease);
                    tracing::debug!(backend = %from, leader, "following a moved session");
                    target = Target {
                        local,
                        sticky: Sticky::rerouted(from),
                    };
                    continue;
                }
                return respond(worker, route, &target, response, lease, now_ms, unix_now);
            }
            Err(error) => error,
        };
        if matches!(error, ProxyError::BodyTimeout) {
            worker.counters().timeout(crate::metrics::Timeout::Body);
        }
        let core = target.local.core.clone();
        blame(worker, &target.local, &error, now_ms);
        tried.push(core.clone());
        let exclude = |b: &Core| tried.iter().any(|t| std::ptr::eq(&**t, b));
        let fail = |error: &ProxyError| {
            let id = request_id();
            report(worker, error, &id, now_ms);
            error_response(error, &id)
        };
        let next = next_attempt(Failed {
            safety: error.retry_safety(),
            available: out.available(),
            resendable: out.may_resend(),
            pinned: target.pinned(),
            holds_sessions: core.holds_sessions(),
            backend_down: matches!(error, ProxyError::BackendDown { .. }),
        });
        match next {
            NextAttempt::PinnedElsewhere => {
                // A replicated diner's waiter cannot be reached: its backup holds the
                // session's copy and takes it over.
                if let Some(local) = failover_to(worker, &target.sticky, now_ms)
                    .filter(|l| !tried.iter().any(|t| Arc::ptr_eq(t, &l.core)))
                {
                    target = Target {
                        local,
                        sticky: Sticky::rerouted(core.id.clone()),
                    };
                    continue;
                }
                // The diner's waiter cannot be reached: gone means the session is lost
                // (or redispatched), alive means "retry" (see `target`).
                if let Err(response) = unavailable(worker, route, &core, now_ms, error.is_refused())
                {
                    return *response;
                }
                let Some(local) = pick(worker, key, now_ms, &exclude) else {
                    return fail(&error);
                };
                target = Target {
                    local,
                    sticky: Sticky::rerouted(core.id.clone()),
                };
            }
            NextAttempt::Elsewhere => {
                if !may_retry(worker, &mut retries, now_ms) {
                    return fail(&error);
                }
                let Some(local) = pick(worker, key, now_ms, &exclude) else {
                    return fail(&error);
                };
                target.local = local;
            }
            NextAttempt::Resend { stay } => {
                if !may_retry(worker, &mut retries, now_ms) {
                    return fail(&error);
                }
                if !stay && let Some(local) = pick(worker, key, now_ms, &exclude) {
                    if target.pinned() {
                        // The diner moves to another backend, as on a connect failure:
                        // say so and re-issue the cookie (regression: a pooled
                        // connection closed by a dying stateless waiter used to reroute
                        // silently, without `Bistro-Rerouted`).
                        target.sticky = Sticky::rerouted(core.id.clone());
                    }
                    target.local = local;
                }
            }
            NextAttempt::Fail => return fail(&error),
        }
        tracing::debug!(backend = %core.id, error = %error, "retrying on {}", target.local.core.id);
    }
}

/// Logs a failure the client is told about, with everything the answer leaves out (the
/// backend's address, the operating system's error) under the request id. The
/// balancer's own limits are counted in `/metrics` and logged once a second at most.
fn report(worker: &Worker, error: &ProxyError, request_id: &HeaderValue, now_ms: u64) {
    let id = request_id.to_str().unwrap_or("?");
    match error.origin() {
        Origin::Upstream => tracing::warn!(request_id = id, error = %error, "request failed"),
        Origin::Internal => {
            if let Some(held) = worker.throttles.internal.allow(now_ms, 1_000) {
                tracing::warn!(request_id = id, error = %error, similar_before = held, "request refused by the balancer's own limits");
            }
        }
        Origin::Downstream => tracing::debug!(request_id = id, error = %error, "bad request"),
    }
}

/// Counts a failed attempt against the backend (and maybe ejects it).
fn blame(worker: &Worker, local: &Local, error: &ProxyError, now_ms: u64) {
    if !error.blames_backend() {
        return;
    }
    local.stats.errors.fetch_add(1, Relaxed);
    fail_backend(
        worker,
        &local.core,
        error.down_reason(),
        now_ms,
        &error.to_string(),
    );
}

/// Records a failure of `core` and ejects it when the streak says so, unless the share
/// of ejected backends is used up; an ejected backend's waiting requests are woken.
fn fail_backend(
    worker: &Worker,
    core: &Core,
    reason: crate::health::DownReason,
    now_ms: u64,
    what: &str,
) {
    let shared = &worker.shared;
    let ejected = core.health.record_failure(now_ms, shared.settings.ejection, reason, || {
        let allowed = shared.may_eject(&shared.registry.load(), now_ms);
        if !allowed {
            tracing::warn!(backend = %core.id, "not ejecting: the share of backends passive ejection may hold out is used up (health.max_ejection_percent)");
        }
        allowed
    });
    if ejected {
        tracing::warn!(backend = %core.id, error = what, "backend ejected after consecutive failures");
        if let Some(backend) = shared.registry.load().find(&core.id) {
            backend.wake_waiters();
        }
    } else {
        tracing::debug!(backend = %core.id, error = what, "request to backend failed");
    }
}

/// The backend named `leader` when it can take a request that another just refused,
/// and was not tried already.
fn follow(worker: &Worker, leader: &str, tried: &[Arc<Core>], now_ms: u64) -> Option<Arc<Local>> {
    let table = worker.shared.registry.load();
    let b = table.find(leader)?;
    let fresh = !tried.iter().any(|t| Arc::ptr_eq(t, &b.core));
    (fresh && b.core.health.is_available(now_ms)).then(|| b.local(worker.index).clone())
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

/// Reads a retryable request's small body into memory; streams the rest. Either way
/// the body's size limit and its clock (total time, minimum rate) apply from
/// `started`, when the head was read.
async fn prepare_body(
    method: &Method,
    headers: &HeaderMap,
    declared: Option<u64>,
    body: Incoming,
    settings: &Settings,
    started: Instant,
    keep: bool,
) -> Result<Source, ProxyError> {
    use http_body::Body as _;
    if declared.is_some_and(|n| n > settings.max_body) {
        return Err(ProxyError::BodyTooLarge {
            limit: settings.max_body,
        });
    }
    if body.is_end_stream() {
        return Ok(Source::Empty);
    }
    let body = crate::body::RequestBody {
        inner: body,
        clock: Box::new(BodyClock::new(started.into(), settings.body)),
        limit: settings.max_body,
    };
    if (keep || may_resend(settings.after_send, method, headers))
        && declared.is_some_and(|n| n <= settings.max_buffered_body)
    {
        return match body.collect().await {
            Ok(collected) => Ok(Source::Buffered(collected.to_bytes())),
            Err(crate::body::BodyError::Timeout) => Err(ProxyError::BodyTimeout),
            Err(crate::body::BodyError::TooLarge { limit }) => {
                Err(ProxyError::BodyTooLarge { limit })
            }
            Err(crate::body::BodyError::Client(e)) => Err(ProxyError::ClientBody(e)),
        };
    }
    Ok(Source::Stream(Some(body)))
}

/// Turns the backend's response into the client's.
fn respond(
    worker: &Worker,
    route: &Route,
    target: &Target,
    response: Response<crate::h1::BodyFraming>,
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
        let what = format!("answered {}", parts.status);
        fail_backend(
            worker,
            core,
            crate::health::DownReason::Failing,
            now_ms,
            &what,
        );
    } else {
        core.health.record_success();
    }
    parts.headers.reserve(2);
    let from_backend = rewrite_response(&mut parts.headers);
    if let Some(mode) = from_backend.mode {
        core.learn_mode(mode);
    }
    if route.is_sticky() {
        let sticky = &target.sticky;
        if route.pins(core.mode()) {
            // A replicated waiter names its session's backup; the token carries it, and
            // is issued again when the backup changed.
            let backup = from_backend
                .backup
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .filter(|b| crate::spec::validate_id(b).is_ok());
            let issue = match sticky.issued_at {
                Some(issued_at) => {
                    shared.affinity.needs_refresh(issued_at, unix_now)
                        || (backup.is_some() && backup != sticky.backup.as_deref())
                }
                None => true,
            };
            if issue {
                parts.headers.append(
                    SET_COOKIE,
                    shared.affinity.set_cookie_pair(&core.id, backup, unix_now),
                );
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
        ResponseBody::Upstream(UpstreamBody::new(
            body,
            lease,
            shared.settings.upstream_body_idle,
        )),
    )
}
