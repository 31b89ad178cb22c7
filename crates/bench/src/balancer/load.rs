//! The built-in load generator: closed-loop keep-alive HTTP/1.1 clients on hyper.
//!
//! It has to cost less than the proxies it measures, or it measures itself. So it is
//! lean the way wrk is: one OS thread per `--threads`, each a current-thread tokio
//! runtime driving its share of the connections (no work stealing, no cross-thread
//! wake-ups); each connection is a bare `hyper::client::conn::http1` `SendRequest`
//! (no pool, no `Client` machinery); a request is a method, a path, `Host` and maybe a
//! `Cookie`, with an empty body; response bodies are drained frame by frame, never
//! concatenated. Pipelining is not used: each connection sends its next request when the
//! previous response has ended (a closed loop), as a browser or a diner's app would.
//!
//! Connections are opened before the clock starts, and in a sticky setup each makes one
//! unmeasured request without a cookie and keeps the cookie the proxy sets, so every
//! measured request carries a valid affinity cookie (as a returning diner's would).
//! Latency is recorded per request in an HDR histogram (microseconds, 3 significant
//! digits), one per connection, merged at the end.

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{COOKIE, HOST, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The histogram's range: 1 µs to 60 s.
const MAX_MICROS: u64 = 60_000_000;

type Conn = SendRequest<Empty<Bytes>>;

/// What to load: an address, a path, and whether to hold an affinity cookie.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) addr: SocketAddr,
    pub(super) path: String,
    pub(super) sticky: bool,
    /// A `Cookie` header every request carries (a session made before the clock
    /// starts); `sticky` connections use the one their first answer set instead.
    pub(super) cookie: Option<String>,
}

/// One measurement.
#[derive(Debug)]
pub(super) struct Sample {
    /// Successful (2xx) requests.
    pub(super) requests: u64,
    /// Failed requests: transport errors, timeouts and non-2xx answers.
    pub(super) errors: u64,
    /// Of `errors`, the answers that were not 2xx.
    pub(super) non_2xx: u64,
    /// From the start of the clock until the last connection finished.
    pub(super) elapsed: Duration,
    /// Latency of the successful requests, in microseconds.
    pub(super) latency: Histogram<u64>,
    /// CPU time the load threads spent during the measurement (user + system), to show
    /// the generator is not the bottleneck.
    pub(super) cpu: Duration,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("1 µs to 60 s at 3 digits is a valid range")
}

/// What every request of one measurement shares.
#[derive(Debug)]
struct Plan {
    addr: SocketAddr,
    uri: Uri,
    host: HeaderValue,
    sticky: bool,
    cookie: Option<HeaderValue>,
}

impl Plan {
    fn new(target: &Target) -> anyhow::Result<Plan> {
        Ok(Plan {
            addr: target.addr,
            uri: target
                .path
                .parse()
                .context("the path is not a valid URI path")?,
            host: HeaderValue::from_str(&target.addr.to_string())?,
            sticky: target.sticky,
            cookie: target
                .cookie
                .as_deref()
                .map(HeaderValue::from_str)
                .transpose()
                .context("the cookie is not a valid header value")?,
        })
    }

    fn request(&self, cookie: Option<&HeaderValue>) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        if let Some(cookie) = cookie {
            headers.insert(COOKIE, cookie.clone());
        }
        request
    }
}

/// One exchange: send, wait for the head, drain the body.
async fn exchange(
    conn: &mut Conn,
    request: Request<Empty<Bytes>>,
) -> Result<(StatusCode, HeaderMap), hyper::Error> {
    conn.ready().await?;
    let response = conn.send_request(request).await?;
    let (parts, mut body) = response.into_parts();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok((parts.status, parts.headers))
}

/// The `Cookie` header a client sends back after a response with these headers: every
/// `name=value` the response set (cookies being cleared are left out).
pub(super) fn cookie_header(headers: &HeaderMap) -> Option<String> {
    let pairs: Vec<String> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(bistro_proto::cookies::parse_set_cookie)
        .filter(|set| !set.forget)
        .map(|set| format!("{}={}", set.name, set.value))
        .collect();
    (!pairs.is_empty()).then(|| pairs.join("; "))
}

/// A new connection (and, when sticky, the cookie its first answer set).
async fn open(plan: &Plan) -> anyhow::Result<(Conn, Option<HeaderValue>)> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(plan.addr))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {} timed out", plan.addr))?
        .with_context(|| format!("connecting to {}", plan.addr))?;
    stream.set_nodelay(true)?;
    let (mut conn, driver) = http1::handshake(TokioIo::new(stream)).await?;
    let addr = plan.addr;
    tokio::spawn(async move {
        if let Err(e) = driver.await {
            tracing::debug!(%addr, error = %e, "load connection ended with an error");
        }
    });
    if !plan.sticky {
        return Ok((conn, plan.cookie.clone()));
    }
    let (status, headers) =
        tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut conn, plan.request(None)))
            .await
            .map_err(|_| anyhow::anyhow!("the first request to {addr} timed out"))??;
    if !status.is_success() {
        bail!("the first request to {addr} answered {status}");
    }
    let cookie = cookie_header(&headers).with_context(|| {
        format!("{addr} set no cookie on the first answer, so this setup is not sticky")
    })?;
    Ok((conn, Some(HeaderValue::from_str(&cookie)?)))
}

/// One connection's results.
struct Part {
    latency: Histogram<u64>,
    requests: u64,
    errors: u64,
    non_2xx: u64,
}

/// Runs one connection's closed loop until `deadline`. A broken connection is replaced
/// (once per failure) so one backend hiccup does not silence a connection for the rest
/// of the round; a connection that cannot be replaced stops.
async fn drive(
    plan: Arc<Plan>,
    mut conn: Conn,
    mut cookie: Option<HeaderValue>,
    deadline: Instant,
) -> Part {
    let mut part = Part {
        latency: histogram(),
        requests: 0,
        errors: 0,
        non_2xx: 0,
    };
    while Instant::now() < deadline {
        let request = plan.request(cookie.as_ref());
        let started = Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut conn, request)).await {
            Ok(Ok((status, _))) if status.is_success() => {
                let micros = started.elapsed().as_micros().min(u128::from(MAX_MICROS)) as u64;
                part.latency.saturating_record(micros.max(1));
                part.requests += 1;
            }
            Ok(Ok(_)) => {
                part.errors += 1;
                part.non_2xx += 1;
            }
            Ok(Err(_)) | Err(_) => {
                part.errors += 1;
                match open(&plan).await {
                    Ok((fresh, fresh_cookie)) => {
                        conn = fresh;
                        cookie = fresh_cookie.or(cookie);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "a load connection could not be replaced");
                        break;
                    }
                }
            }
        }
    }
    part
}

/// One load thread: opens its connections, says so on `ready`, waits for `go` (a
/// dropped `go` means another thread failed: stop), runs the loop for `duration`, and
/// returns its merged results with its elapsed time and CPU time (`None` when called
/// off).
fn load_thread(
    plan: Arc<Plan>,
    connections: usize,
    duration: Duration,
    ready: mpsc::Sender<bool>,
    go: mpsc::Receiver<()>,
) -> anyhow::Result<Option<(Part, Duration, Duration)>> {
    let opened = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a load runtime")
        .and_then(|rt| {
            let conns = rt.block_on(async {
                let mut conns = Vec::with_capacity(connections);
                for _ in 0..connections {
                    conns.push(open(&plan).await?);
                }
                anyhow::Ok(conns)
            })?;
            Ok((rt, conns))
        });
    // Every thread reports, failed or not, and then lets go of its sender, so the
    // caller's count of reports ends even if a thread died without one.
    let _caller_gone = ready.send(opened.is_ok());
    drop(ready);
    let (runtime, conns) = opened?;
    if go.recv().is_err() {
        return Ok(None);
    }
    let cpu_before = thread_cpu();
    let started = Instant::now();
    let deadline = started + duration;
    let total = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (conn, cookie) in conns {
            tasks.spawn(drive(plan.clone(), conn, cookie, deadline));
        }
        let mut total = Part {
            latency: histogram(),
            requests: 0,
            errors: 0,
            non_2xx: 0,
        };
        while let Some(part) = tasks.join_next().await {
            let part = part.context("a load connection panicked")?;
            total
                .latency
                .add(&part.latency)
                .context("merging histograms")?;
            total.requests += part.requests;
            total.errors += part.errors;
            total.non_2xx += part.non_2xx;
        }
        anyhow::Ok(total)
    })?;
    let elapsed = started.elapsed();
    Ok(Some((
        total,
        elapsed,
        thread_cpu().saturating_sub(cpu_before),
    )))
}

/// CPU time (user + system) of the calling thread so far.
fn thread_cpu() -> Duration {
    // SAFETY: rusage is plain integers, for which all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage(2) writes one rusage through a valid pointer; RUSAGE_THREAD
    // (Linux) asks for the calling thread's figures.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Loads `target` with `connections` connections over `threads` threads for `duration`.
///
/// # Errors
/// When a connection cannot be opened (or, sticky, gets no cookie) before the clock
/// starts, or a thread cannot be started. Failures during the measurement are counted
/// in [`Sample::errors`] instead.
pub(super) fn run(
    target: &Target,
    connections: usize,
    threads: usize,
    duration: Duration,
) -> anyhow::Result<Sample> {
    let plan = Arc::new(Plan::new(target)?);
    let threads = threads.clamp(1, connections.max(1));
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut started = Vec::with_capacity(threads);
    for t in 0..threads {
        let share = connections / threads + usize::from(t < connections % threads);
        let (go_tx, go_rx) = mpsc::channel();
        let (plan, ready) = (plan.clone(), ready_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("bench-load-{t}"))
            .spawn(move || load_thread(plan, share, duration, ready, go_rx))
            .context("cannot start a load thread")?;
        started.push((handle, go_tx));
    }
    drop(ready_tx);
    // Each started thread reports once; a `false` (or a vanished thread) calls it off,
    // and dropping the `go` senders then releases the others.
    let all_ready = (0..threads).all(|_| ready_rx.recv().unwrap_or(false));
    let mut handles = Vec::with_capacity(threads);
    for (handle, go) in started {
        if all_ready {
            let _finished_already = go.send(());
        }
        handles.push(handle);
    }
    let mut sample = Sample {
        requests: 0,
        errors: 0,
        non_2xx: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
        cpu: Duration::ZERO,
    };
    let mut failure = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(Some((part, elapsed, cpu)))) => {
                sample.cpu += cpu;
                sample
                    .latency
                    .add(&part.latency)
                    .context("merging histograms")?;
                sample.requests += part.requests;
                sample.errors += part.errors;
                sample.non_2xx += part.non_2xx;
                sample.elapsed = sample.elapsed.max(elapsed);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert(anyhow::anyhow!("a load thread panicked"));
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None if !all_ready => bail!("a load thread died before the measurement started"),
        None => Ok(sample),
    }
}

/// What one request on a fresh connection saw.
#[derive(Debug)]
pub(super) struct Probe {
    pub(super) status: StatusCode,
    /// The `Cookie` header to send back, if the answer set cookies.
    pub(super) cookie: Option<String>,
    /// The waiter that answered (its `Bistro-Waiter` header).
    pub(super) waiter: Option<String>,
}

/// One request on a fresh connection (no cookie), for checks before the measurement.
pub(super) fn probe(addr: SocketAddr, path: &str) -> anyhow::Result<Probe> {
    let plan = Plan::new(&Target {
        addr,
        path: path.to_string(),
        sticky: false,
        cookie: None,
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (mut conn, _) = open(&plan).await?;
        let (status, headers) =
            tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut conn, plan.request(None)))
                .await
                .map_err(|_| anyhow::anyhow!("a request to {addr} timed out"))??;
        Ok(Probe {
            status,
            cookie: cookie_header(&headers),
            waiter: headers
                .get(&bistro_proto::headers::WAITER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_header_repeats_what_was_set_and_skips_cleared_cookies() {
        let mut h = HeaderMap::new();
        assert_eq!(cookie_header(&h), None);
        h.append(
            SET_COOKIE,
            "bistro_affinity=abc; Path=/; HttpOnly".parse().unwrap(),
        );
        h.append(SET_COOKIE, "old=; Max-Age=0".parse().unwrap());
        h.append(SET_COOKIE, "SERVERID=w2; path=/".parse().unwrap());
        assert_eq!(
            cookie_header(&h).as_deref(),
            Some("bistro_affinity=abc; SERVERID=w2")
        );
    }

    #[test]
    fn a_closed_loop_against_a_tiny_server_counts_every_answer() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // A keep-alive server that answers every request head with a fixed response.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    let mut pending = Vec::new();
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nset-cookie: s=1\r\n\r\nok";
                            if stream.write_all(reply).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let target = Target {
            addr,
            path: "/healthz".into(),
            sticky: true,
            cookie: None,
        };
        let sample = run(&target, 4, 2, Duration::from_millis(200)).unwrap();
        assert!(sample.requests > 0);
        assert_eq!(sample.errors, 0);
        assert_eq!(sample.latency.len(), sample.requests);
        assert!(sample.elapsed >= Duration::from_millis(200));
        let probe = probe(addr, "/").unwrap();
        assert_eq!(probe.status, StatusCode::OK);
        assert_eq!(probe.cookie.as_deref(), Some("s=1"));
    }
}
