//! The live dashboard: one page at `GET /` on the admin listener, fed by `GET /events`.
//!
//! The page (`dashboard.html`, compiled into the binary: no file to ship, nothing
//! fetched from elsewhere) is served **without** the admin token. It holds no data: the
//! same bytes for every caller, the ones in this repository. Everything it shows or
//! changes comes from admin requests that carry the token as `Authorization: Bearer`,
//! which the operator gives the page in the URL fragment (`/#token=...`, which a browser
//! never sends to a server) or types into it; the page keeps it in the tab's
//! `sessionStorage`. Serving the page needs no secret, so a bookmark works, and
//! reaching it tells an attacker nothing the source does not. The `Host`/`Origin`
//! checks of the admin API still apply to it (see [`admin`](crate::admin)).
//!
//! Its headers lock it down: a `Content-Security-Policy` that allows only its own inline
//! script (by hash), its inline style and requests to its own origin; `X-Frame-Options:
//! DENY` (no other site can frame it and trick a click); `Cache-Control: no-store`.
//!
//! `GET /events` is a server-sent event stream (`text/event-stream`): one `snapshot`
//! event at once, then one a second, each a JSON [`Snapshot`]: `GET /status`'s fields and,
//! per backend, `GET /backends`' view plus what happened in the last interval:
//! requests and errors per second (differences of the backend's counters) and the p99
//! latency (from the difference of its latency histogram's buckets, interpolated inside
//! the bucket as Prometheus does; `null` when no request finished in the interval). The
//! differences are kept per stream, so two open pages do not disturb each other. The
//! first event has no previous sample: its rates are `null`.
//!
//! `sessions_held` is what the waiter itself says it holds (`GET /v1/waiter`: its live
//! sessions; a replicated waiter's, those it leads), asked at most once a second for
//! all streams together and `null` when the waiter did not answer lately or is stateless
//! (whose sessions live in the shared store, not in it); while a drain counts them, its
//! count. `sessions_pinned` is the
//! balancer's own count of affinity cookies naming it.
//!
//! A browser cannot send headers with `EventSource`, so the page reads the stream with
//! `fetch()`. At most [`MAX_STREAMS`] streams are open at once (each costs a task and a
//! snapshot a second); beyond that `503 too-many-streams`. Streams end when the
//! balancer shuts down, when the client goes away, and when a client stops reading for
//! [`SEND_TIMEOUT`].

use crate::admin::{BackendView, status, view_of};
use crate::body::ResponseBody;
use crate::problem::Problem;
use crate::spec::Mode;
use crate::state::Shared;
use base64::Engine as _;
use bistro_metrics::quantile;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_FRAME_OPTIONS};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The page, with its style and script inline.
const PAGE: &str = include_str!("dashboard.html");

/// Most event streams open at once.
pub(crate) const MAX_STREAMS: usize = 32;
/// How often a stream sends a snapshot.
const INTERVAL: Duration = Duration::from_secs(1);
/// How long a stream waits for a client that does not read before ending it.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the waiters are given to say how many sessions they hold.
const HELD_TIMEOUT: Duration = Duration::from_millis(800);
/// A waiter's count older than this is not shown (it stopped answering).
const HELD_MAX_AGE: Duration = Duration::from_secs(3);

/// `GET /` (and `/index.html`): the page, with the headers that lock it down.
pub(crate) fn page() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(PAGE));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(csp) = HeaderValue::from_str(csp()) {
        headers.insert(CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    // The page's own URL may carry the token in its fragment; browsers never send a
    // fragment, but nothing else about the page needs to leave either.
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The page's Content-Security-Policy: its own origin only; the inline script is
/// allowed by its hash (so no other inline script could run, were one ever injected),
/// the inline style by `'unsafe-inline'` (style cannot run code).
fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' {}; \
             img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            script_hash(PAGE)
        )
    })
}

/// `'sha256-…'` of the page's (one) inline script, as CSP hashes it: the exact text
/// between `<script>` and `</script>`.
fn script_hash(page: &str) -> String {
    let script = page
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map_or("", |(script, _)| script);
    let digest = Sha256::digest(script.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// What the dashboard keeps between requests: the open streams and the sessions each
/// waiter last said it holds.
#[derive(Debug)]
pub(crate) struct Dashboard {
    streams: Arc<AtomicUsize>,
    max_streams: usize,
    held: Arc<Held>,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard::new(MAX_STREAMS)
    }
}

impl Dashboard {
    pub(crate) fn new(max_streams: usize) -> Dashboard {
        Dashboard {
            streams: Arc::new(AtomicUsize::new(0)),
            max_streams,
            held: Arc::new(Held::default()),
        }
    }

    /// A place for one more stream, if fewer than the most are open; it is given back
    /// when the [`StreamSlot`] is dropped.
    pub(crate) fn try_open(&self) -> Option<StreamSlot> {
        let taken = self.streams.fetch_update(Relaxed, Relaxed, |n| {
            (n < self.max_streams).then_some(n + 1)
        });
        taken.ok().map(|_| StreamSlot {
            streams: Arc::clone(&self.streams),
        })
    }

    /// Event streams open now.
    #[cfg(test)]
    pub(crate) fn open_streams(&self) -> usize {
        self.streams.load(Relaxed)
    }
}

/// One open event stream's place (see [`Dashboard::try_open`]).
#[derive(Debug)]
pub(crate) struct StreamSlot {
    streams: Arc<AtomicUsize>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.streams.fetch_sub(1, Relaxed);
    }
}

/// The sessions each waiter said it holds, refreshed at most once per [`INTERVAL`]
/// whatever the number of streams.
#[derive(Debug, Default)]
struct Held {
    counts: Mutex<HashMap<Arc<str>, (u64, Instant)>>,
    last_refresh: Mutex<Option<Instant>>,
    refreshing: AtomicBool,
}

impl Held {
    /// Asks every stateful (or not yet known) waiter, in the background, unless that
    /// was done less than an interval ago or is under way.
    fn refresh(self: &Arc<Self>, shared: &Arc<Shared>) {
        {
            let mut last = lock(&self.last_refresh);
            let now = Instant::now();
            // A little under the interval, so a stream's tick always finds it due.
            if last.is_some_and(|at| now.duration_since(at) < INTERVAL.mul_f32(0.8)) {
                return;
            }
            if self.refreshing.swap(true, Relaxed) {
                return;
            }
            *last = Some(now);
        }
        let table = shared.registry.snapshot();
        let targets: Vec<(Arc<str>, SocketAddr)> = table
            .backends()
            .iter()
            .filter(|b| b.core.mode() != Some(Mode::Stateless))
            .map(|b| (Arc::clone(&b.core.id), b.core.addr))
            .collect();
        let held = Arc::clone(self);
        tokio::spawn(async move {
            let mut asks = tokio::task::JoinSet::new();
            for (id, addr) in targets {
                asks.spawn(async move {
                    let asked = tokio::time::timeout(
                        HELD_TIMEOUT,
                        crate::drain::exchange(addr, "GET", "/v1/waiter", "", None),
                    )
                    .await;
                    match asked {
                        Ok(Ok((StatusCode::OK, body))) => held_in(&body).map(|n| (id, n)),
                        _ => None,
                    }
                });
            }
            while let Some(answer) = asks.join_next().await {
                if let Ok(Some((id, count))) = answer {
                    lock(&held.counts).insert(id, (count, Instant::now()));
                }
            }
            held.refreshing.store(false, Relaxed);
        });
    }

    /// What `id` last said it holds, unless that is too old to show.
    fn get(&self, id: &str, now: Instant) -> Option<u64> {
        lock(&self.counts)
            .get(id)
            .filter(|(_, at)| now.saturating_duration_since(*at) <= HELD_MAX_AGE)
            .map(|(count, _)| *count)
    }
}

/// The sessions a waiter holds, from its `GET /v1/waiter` answer: a replicated waiter's
/// are those it leads (the copies it keeps for peers are theirs).
fn held_in(body: &[u8]) -> Option<u64> {
    let info: serde_json::Value = serde_json::from_slice(body).ok()?;
    info["replication"]["sessions_led"]
        .as_u64()
        .or_else(|| info["sessions"].as_u64())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A backend's counters at one moment.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    requests: u64,
    errors: u64,
    /// The latency histogram's buckets (not cumulative).
    buckets: Vec<u64>,
}

/// What one backend did during the last interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
struct Rate {
    requests_per_sec: Option<f64>,
    errors_per_sec: Option<f64>,
    /// `null` when no request finished in the interval.
    p99_ms: Option<f64>,
}

/// The rates between two samples `secs` apart. Without a previous sample (the first
/// snapshot, a backend just added) or when the counters went back (a backend removed
/// and added again under the same id starts from zero) nothing is known.
fn rate(previous: Option<&Sample>, now: &Sample, secs: f64, bounds: &[f64]) -> Rate {
    let Some(previous) = previous else {
        return Rate::default();
    };
    if secs <= 0.0
        || now.requests < previous.requests
        || now.errors < previous.errors
        || now.buckets.len() != previous.buckets.len()
    {
        return Rate::default();
    }
    let per_sec = |a: u64, b: u64| round((a - b) as f64 / secs, 100.0);
    let buckets: Vec<u64> = now
        .buckets
        .iter()
        .zip(&previous.buckets)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    Rate {
        requests_per_sec: Some(per_sec(now.requests, previous.requests)),
        errors_per_sec: Some(per_sec(now.errors, previous.errors)),
        p99_ms: quantile(bounds, &buckets, 0.99).map(|s| round(s * 1000.0, 1000.0)),
    }
}

/// `v` rounded to `1 / per` (finer is noise on a dashboard).
fn round(v: f64, per: f64) -> f64 {
    (v * per).round() / per
}

/// One stream's memory of the last snapshot, for the differences.
#[derive(Debug, Default)]
struct Rates {
    previous: HashMap<Arc<str>, Sample>,
    at: Option<Instant>,
}

/// One backend in a snapshot.
#[derive(Debug, Serialize)]
struct Row {
    #[serde(flatten)]
    view: BackendView,
    /// What the waiter says it holds (see the module docs).
    sessions_held: Option<u64>,
    #[serde(flatten)]
    rate: Rate,
}

/// One event of the stream.
#[derive(Debug, Serialize)]
pub(crate) struct Snapshot {
    /// When it was taken, in unix milliseconds.
    at_ms: u64,
    /// The time the rates are over, in milliseconds (`null` on the first event).
    interval_ms: Option<u64>,
    /// `GET /status`.
    status: serde_json::Value,
    backends: Vec<Row>,
}

/// Takes a snapshot and remembers the counters for the next one.
fn snapshot(shared: &Shared, rates: &mut Rates, now: Instant) -> Snapshot {
    let table = shared.registry.snapshot();
    let now_ms = shared.clock.now_ms();
    let secs = rates.at.map(|at| now.duration_since(at).as_secs_f64());
    let mut next = HashMap::with_capacity(table.backends().len());
    let backends = table
        .backends()
        .iter()
        .map(|b| {
            let sample = Sample {
                requests: b.requests(),
                errors: b.errors(),
                buckets: b.core.latency.bucket_counts(),
            };
            let rate = rate(
                rates.previous.get(&b.core.id),
                &sample,
                secs.unwrap_or(0.0),
                b.core.latency.bounds(),
            );
            next.insert(Arc::clone(&b.core.id), sample);
            let view = view_of(shared, b, now_ms);
            // A drain counts the waiter's sessions four times a second, exactly: the
            // same figure as its progress, and fresher than the shared count.
            let sessions_held = if b.core.mode() == Some(Mode::Stateless) {
                None
            } else {
                view.drain
                    .as_ref()
                    .and_then(|d| d.sessions_left)
                    .or_else(|| shared.dashboard.held.get(b.id(), now))
            };
            Row {
                view,
                sessions_held,
                rate,
            }
        })
        .collect();
    rates.previous = next;
    rates.at = Some(now);
    Snapshot {
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        interval_ms: secs.map(|s| (s * 1000.0).round() as u64),
        status: status(shared),
        backends,
    }
}

/// `GET /events`: the stream (see the module docs), or `503` when [`MAX_STREAMS`] are
/// open.
pub(crate) fn events(shared: &Arc<Shared>, stop: &CancellationToken) -> Response<ResponseBody> {
    let Some(slot) = shared.dashboard.try_open() else {
        return Problem::other(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-streams",
            "Too many dashboards are open",
            format!(
                "the admin API serves at most {MAX_STREAMS} event streams at once; close a dashboard, or retry later"
            ),
        )
        .retry_after(5)
        .into_response();
    };
    // Room for one snapshot in flight while the next is taken: a client that does not
    // read holds the stream's task, not its memory.
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(stream(Arc::clone(shared), slot, tx, stop.clone()));
    let mut response = Response::new(ResponseBody::Channel(rx));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Sends a snapshot at once and then every [`INTERVAL`] until `stop` is cancelled (the
/// admin API stops) or the client leaves.
async fn stream(
    shared: Arc<Shared>,
    slot: StreamSlot,
    tx: mpsc::Sender<Bytes>,
    stop: CancellationToken,
) {
    let _slot = slot;
    let mut rates = Rates::default();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
            () = tx.closed() => return,
        }
        shared.dashboard.held.refresh(&shared);
        let snapshot = snapshot(&shared, &mut rates, Instant::now());
        let Ok(json) = serde_json::to_vec(&snapshot) else {
            return;
        };
        // Compact JSON has no line break, so it is one `data:` line.
        let mut frame = Vec::with_capacity(json.len() + 24);
        frame.extend_from_slice(b"event: snapshot\ndata: ");
        frame.extend_from_slice(&json);
        frame.extend_from_slice(b"\n\n");
        tokio::select! {
            sent = tokio::time::timeout(SEND_TIMEOUT, tx.send(Bytes::from(frame))) => {
                if !matches!(sent, Ok(Ok(()))) {
                    return;
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// The faults `POST /control/{id}/{action}` can ask for.
const ACTIONS: [&str; 4] = ["kill", "pause", "resume", "restart"];

/// `POST /control/{id}/{action}`: passed on to `bistro up`'s control endpoint with the
/// admin token (which that endpoint checks too), its answer relayed as it is.
pub(crate) async fn control(shared: &Shared, id: &str, action: &str) -> Response<ResponseBody> {
    let addr = match shared.config.admin.control_addr() {
        Ok(Some(addr)) => addr,
        _ => {
            return Problem::other(
                StatusCode::NOT_FOUND,
                "no-control",
                "No process control",
                "this balancer was not started by `bistro up`, which alone can kill, pause, resume and restart its waiters (admin.control_url, --control-url)".into(),
            )
            .into_response();
        }
    };
    if !ACTIONS.contains(&action) {
        return Problem::other(
            StatusCode::NOT_FOUND,
            "unknown-action",
            "Unknown control action",
            format!("{action:?} is not one of {ACTIONS:?}"),
        )
        .into_response();
    }
    if let Err(e) = crate::spec::validate_id(id) {
        return crate::admin::invalid(e.to_string());
    }
    let token = shared.config.admin.token.as_deref().unwrap_or("");
    let path = format!("/waiters/{id}/{action}");
    match crate::drain::exchange(addr, "POST", &path, token, None).await {
        Ok((status, body)) => {
            tracing::info!(backend = id, action, %status, "process control");
            let kind = if status.is_success() {
                "application/json"
            } else {
                "application/problem+json"
            };
            let mut response = Response::new(ResponseBody::full(body));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
            response
        }
        Err(e) => {
            tracing::warn!(backend = id, action, error = %e, "process control unreachable");
            Problem::other(
                StatusCode::BAD_GATEWAY,
                "control-unreachable",
                "The process control did not answer",
                format!("bistro up's control endpoint did not answer {action} {id}: is `bistro up` still running?"),
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BalancerConfig;
    use http::{HeaderMap, Method, Request};
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const BOUNDS: &[f64] = &[0.001, 0.01, 0.1];

    fn sample(requests: u64, errors: u64, buckets: [u64; 4]) -> Sample {
        Sample {
            requests,
            errors,
            buckets: buckets.to_vec(),
        }
    }

    #[test]
    fn rates_are_the_counters_differences_over_the_interval() {
        let before = sample(100, 1, [50, 40, 10, 0]);
        let after = sample(300, 5, [50, 240, 10, 0]);
        let r = rate(Some(&before), &after, 2.0, BOUNDS);
        assert_eq!(r.requests_per_sec, Some(100.0));
        assert_eq!(r.errors_per_sec, Some(2.0));
        // The interval's 200 requests all took 1 to 10 ms; the cumulative histogram,
        // with its slow ones from before, would say otherwise.
        let p99 = r.p99_ms.unwrap();
        assert!((1.0..=10.0).contains(&p99), "{p99}");
        let idle = rate(Some(&after), &after, 1.0, BOUNDS);
        assert_eq!(idle.requests_per_sec, Some(0.0));
        assert_eq!(idle.p99_ms, None, "no request finished: no p99");
    }

    #[test]
    fn without_a_previous_sample_or_after_a_reset_nothing_is_known() {
        let now = sample(10, 0, [10, 0, 0, 0]);
        assert_eq!(rate(None, &now, 1.0, BOUNDS), Rate::default());
        // Removed and added again under the same id: its counters start over.
        let earlier = sample(500, 3, [500, 0, 0, 0]);
        assert_eq!(rate(Some(&earlier), &now, 1.0, BOUNDS), Rate::default());
    }

    #[test]
    fn the_stream_cap_holds_and_frees_its_places() {
        let d = Dashboard::new(2);
        let a = d.try_open().expect("first");
        let b = d.try_open().expect("second");
        assert!(d.try_open().is_none(), "a third is over the cap");
        drop(a);
        assert_eq!(d.open_streams(), 1);
        let c = d.try_open().expect("a freed place is taken again");
        drop((b, c));
        assert_eq!(d.open_streams(), 0);
    }

    #[test]
    fn the_page_is_self_contained_and_its_script_is_allowed_by_hash() {
        assert_eq!(PAGE.matches("<script").count(), 1, "one inline script");
        for external in ["src=\"http", "href=\"http", "@import", "url(http"] {
            assert!(!PAGE.contains(external), "the page loads {external}…");
        }
        assert!(PAGE.contains("name=\"viewport\""), "readable on a phone");
        let policy = csp();
        assert!(policy.starts_with(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'sha256-"
        ));
        assert!(!policy.contains("script-src 'self' 'unsafe-inline'"));
        assert_eq!(
            script_hash("<p><script>x</script>"),
            script_hash("<script>x</script>")
        );
        assert_ne!(
            script_hash("<script>x</script>"),
            script_hash("<script>y</script>")
        );
    }

    #[test]
    fn held_sessions_come_from_the_waiters_own_count() {
        assert_eq!(held_in(br#"{"id":"w1","sessions":7}"#), Some(7));
        assert_eq!(
            held_in(br#"{"sessions":9,"replication":{"sessions_led":4}}"#),
            Some(4),
            "a replicated waiter holds the sessions it leads"
        );
        assert_eq!(held_in(b"not json"), None);
    }

    fn shared(extra: &str) -> Shared {
        let config = BalancerConfig::from_toml(&format!(
            r#"
            [[backends]]
            id = "w1"
            address = "127.0.0.1:1"
            mode = "stateful"
            [[backends]]
            id = "w2"
            address = "127.0.0.1:2"
            weight = 2
            [admin]
            token = "t0ken"
            {extra}
            "#
        ))
        .unwrap();
        Shared::new(config, b"unit-test-key-0123456789", 1)
    }

    #[test]
    fn a_snapshot_has_the_status_and_each_backends_view_and_rates() {
        let shared = shared("");
        let mut rates = Rates::default();
        let t0 = Instant::now();
        let first = serde_json::to_value(snapshot(&shared, &mut rates, t0)).unwrap();
        assert_eq!(first["interval_ms"], serde_json::Value::Null);
        assert_eq!(first["status"]["backends"], 2);
        assert_eq!(first["status"]["control"], false);
        let w1 = &first["backends"][0];
        assert_eq!(w1["id"], "w1");
        assert_eq!(w1["mode"], "stateful");
        assert_eq!(w1["requests_per_sec"], serde_json::Value::Null);
        for field in [
            "address",
            "health",
            "reason",
            "weight",
            "draining",
            "drain",
            "sessions_pinned",
            "sessions_held",
            "errors_per_sec",
            "p99_ms",
            "requests",
        ] {
            assert!(w1.get(field).is_some(), "{field} in {w1}");
        }
        // Half a second of traffic on w1: 40 requests (2 failed), 5 ms each.
        let table = shared.registry.snapshot();
        let b = table.find("w1").unwrap();
        b.local(0).stats.requests.fetch_add(40, Relaxed);
        b.local(0).stats.errors.fetch_add(2, Relaxed);
        for _ in 0..40 {
            b.core.latency.observe_secs(0.005);
        }
        let next = snapshot(&shared, &mut rates, t0 + Duration::from_millis(500));
        let next = serde_json::to_value(next).unwrap();
        assert_eq!(next["interval_ms"], 500);
        let (w1, w2) = (&next["backends"][0], &next["backends"][1]);
        assert_eq!(w1["requests_per_sec"], 80.0);
        assert_eq!(w1["errors_per_sec"], 4.0);
        let p99 = w1["p99_ms"].as_f64().unwrap();
        assert!((2.5..=5.0).contains(&p99), "{p99}");
        assert_eq!(w2["requests_per_sec"], 0.0);
        assert_eq!(w2["p99_ms"], serde_json::Value::Null);
        assert_eq!(w2["weight"], 2);
    }

    /// The admin API on a loopback port, as `serve` runs it.
    async fn admin(shared: Shared) -> (SocketAddr, CancellationToken) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(crate::admin::serve(
            listener,
            Arc::new(shared),
            None,
            stop.clone(),
        ));
        (addr, stop)
    }

    async fn send(
        addr: SocketAddr,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, HeaderMap, Incoming) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        (parts.status, parts.headers, body)
    }

    async fn text(body: Incoming) -> String {
        String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned()
    }

    #[tokio::test]
    async fn the_page_needs_no_token_but_its_event_stream_does() {
        let mut shared = shared("");
        shared.dashboard = Dashboard::new(1);
        let (addr, stop) = admin(shared).await;

        let (status, headers, body) = send(addr, Method::GET, "/", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["content-security-policy"], csp());
        assert!(text(body).await.contains("bistro balancer"));
        let (status, ..) = send(addr, Method::GET, "/index.html", None).await;
        assert_eq!(status, StatusCode::OK);

        for path in ["/events", "/backends", "/status"] {
            let (status, headers, _) = send(addr, Method::GET, path, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(headers["www-authenticate"], "Bearer");
        }
        let (status, ..) = send(addr, Method::GET, "/events", Some("wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let (status, headers, mut stream) = send(addr, Method::GET, "/events", Some("t0ken")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "text/event-stream");
        let first = stream.frame().await.unwrap().unwrap().into_data().unwrap();
        let first = std::str::from_utf8(&first).unwrap();
        let data = first
            .strip_prefix("event: snapshot\ndata: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("one event per frame: {first:?}"));
        let snapshot: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(snapshot["backends"].as_array().unwrap().len(), 2);

        // The cap (1 here): a second stream is refused while the first is open.
        let (status, headers, body) = send(addr, Method::GET, "/events", Some("t0ken")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(headers.contains_key("retry-after"));
        assert!(text(body).await.contains("too-many-streams"));

        // The balancer's shutdown ends the stream (or a graceful shutdown would wait
        // for it forever).
        stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = stream.frame().await {}
        })
        .await;
        assert!(ended.is_ok(), "the stream ends on shutdown");
    }

    /// A stand-in for `bistro up`'s control endpoint: answers one request with 200 and
    /// hands over the request head it got.
    async fn fake_control() -> (SocketAddr, tokio::sync::oneshot::Receiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"waiter":"w1","action":"kill","pid":42}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn control_is_passed_on_with_the_token_and_refused_without_it() {
        let (control, head) = fake_control().await;
        let (addr, _stop) = admin(shared(&format!("control_url = \"http://{control}\""))).await;

        let (status, ..) = send(addr, Method::POST, "/control/w1/kill", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "no token, no fault");
        let (status, ..) = send(addr, Method::POST, "/control/w1/explode", Some("t0ken")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, ..) = send(addr, Method::GET, "/control/w1/kill", Some("t0ken")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (_, _, body) = send(addr, Method::GET, "/status", Some("t0ken")).await;
        assert!(text(body).await.contains(r#""control":true"#));

        let (status, _, body) = send(addr, Method::POST, "/control/w1/kill", Some("t0ken")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(text(body).await.contains(r#""pid":42"#));
        let head = head.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("post /waiters/w1/kill http/1.1"), "{head}");
        assert!(
            head.contains("authorization: bearer t0ken"),
            "the token goes along: {head}"
        );
    }

    #[tokio::test]
    async fn without_a_control_url_there_is_no_control() {
        let (addr, _stop) = admin(shared("")).await;
        let (status, _, body) = send(addr, Method::POST, "/control/w1/kill", Some("t0ken")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(text(body).await.contains("no-control"));
    }
}
