//! Test fixtures: tiny in-process waiters and a balancer running on port 0.
//!
//! A [`Waiter`] behaves like bistro's waiter as far as the balancer can tell: every
//! answer carries `Bistro-Waiter` and `Bistro-Mode`, `/readyz` answers 200, `/v1/waiter`
//! answers `{"id","mode"}`, and `POST`s with `Idempotency-Key` take effect once and are
//! replayed after. Faults are switches: answer 500s, drop the next `POST` after taking
//! effect (connection closed, no answer), answer slowly, or stop dead (listener and all
//! connections gone) and start again on the same port.

#![allow(dead_code)] // each test binary uses a different part of the fixtures

use bistro_balancer::{BackendSpec, BalancerConfig, BalancerError};
use bistro_client::Client;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An error a test waiter's service returns to make hyper drop the connection unanswered.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

#[derive(Default)]
struct State {
    id: String,
    mode: &'static str,
    requests: AtomicU64,
    failing: AtomicBool,
    unavailable: AtomicBool,
    not_ready: AtomicBool,
    drop_next_post: AtomicBool,
    store_down: AtomicBool,
    stall_body: AtomicBool,
    big_body: AtomicU64,
    delay_ms: AtomicU64,
    effects: AtomicU64,
    idempotent: Mutex<HashMap<String, String>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    last_request: Mutex<Option<http::HeaderMap>>,
}

/// A fake waiter on 127.0.0.1.
pub struct Waiter {
    pub id: String,
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Waiter {
    /// A waiter `id` in `mode` ("stateful" or "stateless") on a fresh port.
    pub async fn start(id: &str, mode: &'static str) -> Waiter {
        let state = Arc::new(State {
            id: id.to_string(),
            mode,
            ..State::default()
        });
        let addr = listen(state.clone(), "127.0.0.1:0".parse().unwrap()).await;
        Waiter {
            id: id.to_string(),
            addr,
            state,
        }
    }

    /// Three stateful waiters w1, w2, w3.
    pub async fn three(mode: &'static str) -> [Waiter; 3] {
        [
            Waiter::start("w1", mode).await,
            Waiter::start("w2", mode).await,
            Waiter::start("w3", mode).await,
        ]
    }

    /// Stops dead: the listener and every open connection go away.
    pub fn stop(&self) {
        for task in self.state.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Starts again on the same address.
    pub async fn restart(&self) {
        listen(self.state.clone(), self.addr).await;
    }

    /// Requests answered (any path but the health ones).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(SeqCst)
    }

    /// Effects taken by `POST`s (replays do not count).
    pub fn effects(&self) -> u64 {
        self.state.effects.load(SeqCst)
    }

    /// Answer 500 to everything (health endpoints included) while `on`.
    pub fn set_failing(&self, on: bool) {
        self.state.failing.store(on, SeqCst);
    }

    /// Answer 503 with `Retry-After: 1` to requests (not health checks) while `on`, as a
    /// stateless waiter does while its store is down.
    pub fn set_unavailable(&self, on: bool) {
        self.state.unavailable.store(on, SeqCst);
    }

    /// `/readyz` answers 503 while `on`.
    pub fn set_not_ready(&self, on: bool) {
        self.state.not_ready.store(on, SeqCst);
    }

    /// While `on`, behaves as a stateless waiter whose store is down: `/readyz` answers
    /// 503 with the problem type `store-unavailable`, requests 503 with `Retry-After`.
    pub fn set_store_down(&self, on: bool) {
        self.state.store_down.store(on, SeqCst);
    }

    /// While `on`, `GET` answers send their head and a first chunk, then nothing more.
    pub fn set_stall_body(&self, on: bool) {
        self.state.stall_body.store(on, SeqCst);
    }

    /// `GET` answers carry a body of `bytes` bytes (0: the usual small one).
    pub fn set_big_body(&self, bytes: u64) {
        self.state.big_body.store(bytes, SeqCst);
    }

    /// The next `POST` takes effect, then its connection is closed without an answer.
    pub fn drop_next_post(&self) {
        self.state.drop_next_post.store(true, SeqCst);
    }

    /// Every answer waits this long.
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, SeqCst);
    }

    /// The headers of the last proxied request.
    pub fn last_request(&self) -> Option<http::HeaderMap> {
        self.state.last_request.lock().unwrap().clone()
    }

    pub fn spec(&self) -> BackendSpec {
        BackendSpec::new(self.id.clone(), self.addr)
    }
}

async fn listen(state: Arc<State>, addr: SocketAddr) -> SocketAddr {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let listener = socket.listen(128).unwrap();
    let local = listener.local_addr().unwrap();
    let accept_state = state.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let conn_state = accept_state.clone();
            let conn = tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = conn_state.clone();
                    async move { answer(&state, req).await }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "test waiter connection ended");
                }
            });
            accept_state.tasks.lock().unwrap().push(conn);
        }
    });
    state.tasks.lock().unwrap().push(accept);
    local
}

type Body = BoxBody<Bytes, std::convert::Infallible>;

fn reply(state: &State, status: StatusCode, body: String) -> Response<Body> {
    reply_with(state, status, Full::new(Bytes::from(body)).boxed())
}

fn reply_with(state: &State, status: StatusCode, body: Body) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("bistro-waiter", state.id.as_str())
        .header("bistro-mode", state.mode)
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

/// A body that sends `first` and then never ends.
fn stalled(first: Bytes) -> Body {
    struct Stalled(Option<Bytes>);
    impl http_body::Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            match self.0.take() {
                Some(first) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(first)))),
                None => std::task::Poll::Pending,
            }
        }
    }
    Stalled(Some(first)).boxed()
}

async fn answer(state: &State, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let delay = state.delay_ms.load(SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let failing = state.failing.load(SeqCst);
    let store_down = state.store_down.load(SeqCst);
    match req.uri().path() {
        "/readyz" if store_down => {
            return Ok(reply(
                state,
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"type":"https://bistro.dev/problems/store-unavailable","status":503}"#.into(),
            ));
        }
        "/readyz" => {
            let ok = !failing && !state.not_ready.load(SeqCst);
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return Ok(reply(state, status, "{}".into()));
        }
        "/v1/waiter" => {
            return Ok(reply(
                state,
                StatusCode::OK,
                format!(r#"{{"id":"{}","mode":"{}"}}"#, state.id, state.mode),
            ));
        }
        _ => {}
    }
    state.requests.fetch_add(1, SeqCst);
    *state.last_request.lock().unwrap() = Some(req.headers().clone());
    if state.unavailable.load(SeqCst) || store_down {
        let mut r = reply(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"type":"store-unavailable"}"#.into(),
        );
        r.headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("1"));
        return Ok(r);
    }
    if failing {
        return Ok(reply(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"failing on purpose"}"#.into(),
        ));
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|_| Dropped)?
        .to_bytes();
    if method == Method::POST {
        if let Some(key) = &key
            && let Some(stored) = state.idempotent.lock().unwrap().get(key).cloned()
        {
            let mut response = reply(state, StatusCode::CREATED, stored);
            response
                .headers_mut()
                .insert("idempotency-replayed", "true".parse().unwrap());
            return Ok(response);
        }
        let n = state.effects.fetch_add(1, SeqCst) + 1;
        let stored = format!(
            r#"{{"waiter":"{}","effect":{n},"bytes":{}}}"#,
            state.id,
            body.len()
        );
        if let Some(key) = key {
            state.idempotent.lock().unwrap().insert(key, stored.clone());
        }
        if state.drop_next_post.swap(false, SeqCst) {
            return Err(Dropped);
        }
        return Ok(reply(state, StatusCode::CREATED, stored));
    }
    if method == Method::GET && state.stall_body.load(SeqCst) {
        return Ok(reply_with(
            state,
            StatusCode::OK,
            stalled(Bytes::from_static(b"{\"partial\":")),
        ));
    }
    let big = state.big_body.load(SeqCst);
    if method == Method::GET && big > 0 {
        let body = Bytes::from(vec![b' '; big as usize]);
        return Ok(reply_with(state, StatusCode::OK, Full::new(body).boxed()));
    }
    Ok(reply(
        state,
        StatusCode::OK,
        format!(
            r#"{{"waiter":"{}","method":"{method}","path":"{path}","bytes":{}}}"#,
            state.id,
            body.len()
        ),
    ))
}

/// A balancer configuration over `waiters` with test-friendly timings.
pub fn config(waiters: &[&Waiter]) -> BalancerConfig {
    let mut c = BalancerConfig {
        workers: 2,
        backends: waiters.iter().map(|w| w.spec()).collect(),
        shutdown_grace_ms: 3_000,
        ..BalancerConfig::default()
    };
    c.affinity.key = Some("test-affinity-key-0123456789".into());
    c.health.interval_ms = 100;
    c.health.timeout_ms = 300;
    c.health.rise = 1;
    c.health.fall = 2;
    c.health.ejection_base_ms = 300;
    c.health.ejection_max_ms = 1_000;
    c.upstream.connect_timeout_ms = 500;
    c.upstream.response_timeout_ms = 5_000;
    c
}

/// A balancer running in the test's runtime.
pub struct Balancer {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), BalancerError>>>,
}

impl Balancer {
    pub async fn start(config: BalancerConfig) -> Balancer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move { stopped.await.unwrap_or(()) };
        let task = tokio::spawn(bistro_balancer::run(
            listener,
            Some(admin),
            config,
            shutdown,
        ));
        Balancer {
            addr,
            admin: admin_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A fresh diner (own connection, empty cookie jar).
    pub fn diner(&self) -> Client {
        Client::new(self.addr).with_timeout(Duration::from_secs(10))
    }

    /// An admin client.
    pub fn admin(&self) -> Client {
        Client::new(self.admin).with_timeout(Duration::from_secs(10))
    }

    /// One backend's entry in `GET /backends`.
    pub async fn backend(&self, id: &str) -> serde_json::Value {
        let list = self.admin().get("/backends").await.unwrap().value();
        list.as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    /// The `/metrics` value of one series (`name{labels}` as rendered), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.admin().get("/metrics").await.unwrap().text();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) -> Result<(), BalancerError> {
        self.stop.take().unwrap().send(()).unwrap();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("run returns after shutdown")
            .unwrap()
    }
}

/// Which waiter answered.
pub fn waiter_of(response: &bistro_client::Response) -> String {
    response
        .header("bistro-waiter")
        .unwrap_or("none")
        .to_string()
}

/// Polls `check` every 50 ms until it holds, for at most `within`.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `bytes` on a raw connection and reads until the peer closes or `within` passes.
/// Returns what was read and whether the peer closed.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], within: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_until_close(&mut stream, within).await
}

/// Reads until close or timeout: (text read, closed).
pub async fn read_until_close(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}
