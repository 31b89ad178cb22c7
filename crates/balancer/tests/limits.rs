//! The balancer against slow, greedy and lying clients, over real sockets with short
//! configured timeouts: slow bodies, slow heads, idle connections, clients that do not
//! read, saturated backends, per-IP limits, spoofed forwarding headers. Each is cut or
//! refused with a clear answer, and the balancer keeps serving everyone else.

mod support;

use http::Method;
use std::time::{Duration, Instant};
use support::{Balancer, Waiter, config, eventually, raw_exchange, read_until_close};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Generous bound for "promptly": ten times any timeout configured here.
const WITHIN: Duration = Duration::from_secs(10);

fn one_waiter_config(waiter: &Waiter) -> bistro_balancer::BalancerConfig {
    let mut c = config(&[waiter]);
    c.health.active = false;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_with_408_while_others_are_served() {
    let waiter = Waiter::start("w1", "stateless").await;
    let mut c = one_waiter_config(&waiter);
    c.client.body_timeout_ms = 5_000;
    c.client.body_min_bytes_per_sec = 1_000;
    c.client.body_rate_grace_ms = 300;
    let balancer = Balancer::start(c).await;

    // A PUT is buffered (it may be resent); a POST without Idempotency-Key is streamed.
    for method in ["PUT", "POST"] {
        let mut slow = TcpStream::connect(balancer.addr).await.unwrap();
        let head = format!(
            "{method} /v1/orders/1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n\r\n{{"
        );
        slow.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        // Meanwhile, everyone else is served.
        let r = balancer.diner().get("/v1/menu").await.unwrap();
        assert_eq!(r.status, 200);
        let (reply, closed) = read_until_close(&mut slow, WITHIN).await;
        assert!(reply.starts_with("HTTP/1.1 408"), "{method}: {reply}");
        assert!(reply.contains("/problems/request-timeout"), "{reply}");
        assert!(closed, "{method}: the connection is closed after a 408");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{method}: cut by the minimum rate, before the 5 s total ({:?})",
            started.elapsed()
        );
    }
    assert_eq!(
        balancer
            .metric("bistro_balancer_timeouts_total{kind=\"body\"}")
            .await,
        2.0
    );
    assert_eq!(
        balancer.backend("w1").await["health"],
        "up",
        "a slow client is not the waiter's fault"
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_silent_connections_are_closed_by_their_own_timeouts() {
    let waiter = Waiter::start("w1", "stateless").await;
    let mut c = one_waiter_config(&waiter);
    c.client.header_read_timeout_ms = 400;
    c.client.keep_alive_idle_ms = 200;
    let balancer = Balancer::start(c).await;

    // Between requests: the keep-alive idle timeout.
    let mut kept = TcpStream::connect(balancer.addr).await.unwrap();
    kept.write_all(b"GET /v1/menu HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (reply, closed) = read_until_close(&mut kept, WITHIN).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(closed, "closed after the idle timeout");
    assert!(!reply.contains("408"), "an idle close is silent: {reply}");

    // A connection that never says anything: the header timeout, silently.
    let mut silent = TcpStream::connect(balancer.addr).await.unwrap();
    let (reply, closed) = read_until_close(&mut silent, WITHIN).await;
    assert!(closed && reply.is_empty(), "{reply}");
    assert_eq!(
        balancer
            .metric("bistro_balancer_timeouts_total{kind=\"keep_alive\"}")
            .await,
        1.0
    );
    assert_eq!(
        balancer
            .metric("bistro_balancer_timeouts_total{kind=\"header\"}")
            .await,
        1.0
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_cut_by_the_send_timeout() {
    let waiter = Waiter::start("w1", "stateless").await;
    waiter.set_big_body(64 * 1024 * 1024);
    let mut c = one_waiter_config(&waiter);
    c.client.send_timeout_ms = 300;
    let balancer = Balancer::start(c).await;

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(balancer.addr).await.unwrap();
    reader
        .write_all(b"GET /v1/big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // It never reads. The balancer's writes stall, and the send timeout cuts them.
    assert!(
        eventually(WITHIN, || async {
            balancer
                .metric("bistro_balancer_timeouts_total{kind=\"send\"}")
                .await
                == 1.0
        })
        .await,
        "the stalled connection is cut"
    );
    let r = balancer.diner().get("/v1/menu").await.unwrap();
    assert_eq!(r.status, 200, "everyone else is still served");
    drop(reader);
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_waiter_stops_sending_is_cut() {
    let waiter = Waiter::start("w1", "stateless").await;
    waiter.set_stall_body(true);
    let mut c = one_waiter_config(&waiter);
    c.upstream.body_idle_timeout_ms = 300;
    let balancer = Balancer::start(c).await;
    let (reply, closed) = raw_exchange(
        balancer.addr,
        b"GET /v1/orders HTTP/1.1\r\nHost: a\r\n\r\n",
        WITHIN,
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("partial"), "{reply}");
    assert!(closed, "the half-sent answer ends with the connection");
    assert_eq!(
        balancer
            .metric("bistro_balancer_timeouts_total{kind=\"upstream_body\"}")
            .await,
        1.0
    );
    balancer.shutdown().await.unwrap();
}

/// Sends `GET path` on a fresh connection and returns the raw answer (or "").
async fn get_raw(addr: std::net::SocketAddr, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    raw_exchange(addr, request.as_bytes(), WITHIN).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_waiter_queues_then_refuses_and_is_never_ejected() {
    let waiter = Waiter::start("w1", "stateless").await;
    waiter.set_delay(Duration::from_millis(800));
    let mut c = one_waiter_config(&waiter);
    c.workers = 1;
    c.upstream.max_connections = 1;
    c.upstream.max_queue = 1;
    c.upstream.queue_timeout_ms = 10_000;
    c.health.eject_after = 1;
    let balancer = Balancer::start(c).await;
    let addr = balancer.addr;

    let first = tokio::spawn(async move { get_raw(addr, "/v1/a").await });
    assert!(
        eventually(WITHIN, || async {
            balancer.backend("w1").await["active_connections"] == 1
        })
        .await,
        "the first request holds the only slot"
    );
    let second = tokio::spawn(async move { get_raw(addr, "/v1/b").await });
    assert!(
        eventually(WITHIN, || async {
            balancer.backend("w1").await["queued"] == 1
        })
        .await,
        "the second request waits in the queue"
    );
    let third = get_raw(addr, "/v1/c").await;
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    assert!(third.contains("/problems/backend-queue-full"), "{third}");
    assert!(third.contains("retry-after: 1"), "{third}");
    assert!(third.contains("bistro-request-id: "), "{third}");
    assert!(first.await.unwrap().starts_with("HTTP/1.1 200"));
    assert!(second.await.unwrap().starts_with("HTTP/1.1 200"));
    assert_eq!(waiter.requests(), 2, "the refused request never reached it");
    assert_eq!(
        balancer
            .metric("bistro_balancer_refused_total{reason=\"queue_full\"}")
            .await,
        1.0
    );
    let w1 = balancer.backend("w1").await;
    assert_eq!(w1["health"], "up", "{w1}");
    assert_eq!(
        balancer
            .metric("bistro_balancer_backend_ejections_total{backend=\"w1\"}")
            .await,
        0.0
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_waits_too_long_for_a_slot_gets_503() {
    let waiter = Waiter::start("w1", "stateless").await;
    waiter.set_delay(Duration::from_millis(1_500));
    let mut c = one_waiter_config(&waiter);
    c.workers = 1;
    c.upstream.max_connections = 1;
    c.upstream.queue_timeout_ms = 200;
    let balancer = Balancer::start(c).await;
    let addr = balancer.addr;
    let first = tokio::spawn(async move { get_raw(addr, "/v1/a").await });
    assert!(
        eventually(WITHIN, || async {
            balancer.backend("w1").await["active_connections"] == 1
        })
        .await,
        "the first request holds the only slot"
    );
    let late = get_raw(addr, "/v1/b").await;
    assert!(late.starts_with("HTTP/1.1 503"), "{late}");
    assert!(late.contains("queue timeout"), "{late}");
    assert!(first.await.unwrap().starts_with("HTTP/1.1 200"));
    assert_eq!(
        balancer
            .metric("bistro_balancer_timeouts_total{kind=\"queue\"}")
            .await,
        1.0
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_connections_from_one_address_get_429() {
    let waiter = Waiter::start("w1", "stateless").await;
    let mut c = one_waiter_config(&waiter);
    c.client.max_connections_per_ip = 2;
    let balancer = Balancer::start(c).await;
    let request = b"GET /v1/menu HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(balancer.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let (reply, _) = read_until_close(&mut s, Duration::from_millis(500)).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        held.push(s);
    }
    let third = get_raw(balancer.addr, "/v1/menu").await;
    assert!(third.starts_with("HTTP/1.1 429"), "{third}");
    assert!(third.contains("/problems/too-many-connections"), "{third}");
    assert!(third.contains("retry-after: 1"), "{third}");
    assert_eq!(
        balancer
            .metric("bistro_balancer_refused_total{reason=\"per_ip_connections\"}")
            .await,
        1.0
    );
    drop(held.pop());
    assert!(
        eventually(WITHIN, || async {
            get_raw(balancer.addr, "/v1/menu")
                .await
                .starts_with("HTTP/1.1 200")
        })
        .await,
        "a place frees up when a connection closes"
    );
    balancer.shutdown().await.unwrap();
}

/// A cookie-less `POST /v1/orders` (it starts a session) with `X-Forwarded-For: xff`.
async fn new_session(balancer: &Balancer, xff: &str) -> bistro_client::Response {
    balancer
        .diner()
        .request(
            Method::POST,
            "/v1/orders",
            &[("x-forwarded-for", xff)],
            Some(&serde_json::json!({"items": []})),
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_creation_is_rate_limited_per_client_and_spoofing_does_not_help() {
    let waiter = Waiter::start("w1", "stateless").await;
    let mut c = one_waiter_config(&waiter);
    c.client.session_rate_per_ip = 1;
    c.client.session_burst_per_ip = 2;
    let balancer = Balancer::start(c).await;

    // A diner claiming a new address each time is still 127.0.0.1.
    assert_eq!(new_session(&balancer, "203.0.113.1").await.status, 201);
    assert_eq!(new_session(&balancer, "203.0.113.2").await.status, 201);
    let refused = new_session(&balancer, "203.0.113.3").await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(
        refused.value()["type"],
        "https://bistro.dev/problems/too-many-new-sessions"
    );
    assert!(refused.header("retry-after").is_some());
    let seen = waiter.last_request().unwrap();
    let xff: Vec<_> = seen.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff, ["127.0.0.1"], "the client's claim was overwritten");

    // Requests that do not start a session are not counted.
    let diner = balancer.diner();
    diner.set_cookie("bistro_session", "an-existing-session");
    let r = diner
        .post_json("/v1/orders", &serde_json::json!({"items": []}))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(
        balancer.diner().get("/v1/orders").await.unwrap().status,
        200
    );
    assert_eq!(
        balancer
            .metric("bistro_balancer_refused_total{reason=\"session_rate\"}")
            .await,
        1.0
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_client_is_the_client() {
    let waiter = Waiter::start("w1", "stateless").await;
    let mut c = one_waiter_config(&waiter);
    c.client.session_rate_per_ip = 1;
    c.client.session_burst_per_ip = 1;
    c.client.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let balancer = Balancer::start(c).await;
    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        assert_eq!(new_session(&balancer, client).await.status, 201, "{client}");
    }
    let seen = waiter.last_request().unwrap();
    assert_eq!(seen["x-forwarded-for"], "203.0.113.3, 127.0.0.1");
    assert_eq!(new_session(&balancer, "203.0.113.3").await.status, 429);
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_names_the_host() {
    let waiter = Waiter::start("w1", "stateless").await;
    let balancer = Balancer::start(one_waiter_config(&waiter)).await;
    let (reply, _) = raw_exchange(
        balancer.addr,
        b"GET http://bistro.test/v1/menu HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
        WITHIN,
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = waiter.last_request().unwrap();
    assert_eq!(seen["host"], "bistro.test");
    assert_eq!(seen["x-forwarded-host"], "bistro.test");
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_named_in_connection_does_not_make_a_post_resendable() {
    // Regression: whether a request may be resent was decided before hop-by-hop headers
    // were stripped, so a key the client marked as hop-by-hop (and the waiter never
    // saw) let the balancer send a POST twice.
    let waiter = Waiter::start("w1", "stateless").await;
    let other = Waiter::start("w2", "stateless").await;
    let mut c = config(&[&waiter, &other]);
    c.health.active = false;
    c.routes = vec![bistro_balancer::RouteConfig {
        prefix: "/".into(),
        sticky: bistro_balancer::Stickiness::Off,
        on_session_lost: Default::default(),
    }];
    c.balancing.strategy = bistro_balancer::StrategyKind::RoundRobin;
    let balancer = Balancer::start(c).await;
    waiter.drop_next_post();
    other.drop_next_post();
    let (reply, _) = raw_exchange(
        balancer.addr,
        b"POST /v1/orders HTTP/1.1\r\nHost: a\r\nConnection: idempotency-key\r\nIdempotency-Key: k1\r\n\
          Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        WITHIN,
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    assert!(reply.contains("bistro-request-id: "), "{reply}");
    assert_eq!(waiter.effects() + other.effects(), 1, "sent once");
    assert_eq!(balancer.metric("bistro_balancer_retries_total").await, 0.0);
    balancer.shutdown().await.unwrap();
}

/// Reads one response with a `Content-Length` body off `stream`, leaving it open.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or_else(|| panic!("no content-length in {head}"));
            if body.len() >= length {
                return text;
            }
        }
        let n = tokio::time::timeout(WITHIN, stream.read(&mut buf))
            .await
            .expect("the response arrives")
            .unwrap();
        assert!(n > 0, "closed before the whole response: {text}");
        out.extend_from_slice(&buf[..n]);
    }
}

/// One step of a client's conversation.
enum Step {
    Send(&'static [u8]),
    /// Waits a moment, mid-request.
    Pause,
    /// Reads one whole response.
    Answer,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_closes_after_its_idle_timeout_following_a_response() {
    // hyper, with its own header timer off, does not poll the socket again when a
    // response ends: a read that waited while the request was served must be woken by
    // the response's end, or the idle timer never starts and the connection stays open.
    let waiter = Waiter::start("w1", "stateless").await;
    let mut c = one_waiter_config(&waiter);
    // The header timeout is far beyond the bound below, so a close within it can only
    // be the idle timeout's.
    c.client.header_read_timeout_ms = 60_000;
    c.client.keep_alive_idle_ms = 300;
    let balancer = Balancer::start(c).await;

    const GET: &[u8] = b"GET /v1/menu HTTP/1.1\r\nHost: a\r\n\r\n";
    let cases: [(&str, &[Step]); 3] = [
        ("a small GET", &[Step::Send(GET), Step::Answer]),
        (
            "two requests",
            &[Step::Send(GET), Step::Answer, Step::Send(GET), Step::Answer],
        ),
        (
            // The body comes after a pause, so a read waits while the request is served.
            "a POST with a late body",
            &[
                Step::Send(
                    b"POST /v1/orders HTTP/1.1\r\nHost: a\r\nCookie: bistro_session=s\r\n\
                      Content-Type: application/json\r\nContent-Length: 2\r\n\r\n",
                ),
                Step::Pause,
                Step::Send(b"{}"),
                Step::Answer,
            ],
        ),
    ];
    for (case, steps) in cases {
        let mut client = TcpStream::connect(balancer.addr).await.unwrap();
        for step in steps {
            match step {
                Step::Send(bytes) => client.write_all(bytes).await.unwrap(),
                Step::Pause => tokio::time::sleep(Duration::from_millis(150)).await,
                Step::Answer => {
                    let reply = read_response(&mut client).await;
                    assert!(reply.starts_with("HTTP/1.1 2"), "{case}: {reply}");
                }
            }
        }
        let answered = Instant::now();
        let (rest, closed) = read_until_close(&mut client, WITHIN).await;
        let idle = answered.elapsed();
        assert!(closed, "{case}: the idle connection is closed ({idle:?})");
        assert!(rest.is_empty(), "{case}: an idle close is silent: {rest}");
        assert!(
            idle >= Duration::from_millis(250) && idle < WITHIN,
            "{case}: closed by the idle timeout, not the header one ({idle:?})"
        );
    }
    assert_eq!(
        balancer
            .metric("bistro_balancer_timeouts_total{kind=\"keep_alive\"}")
            .await,
        3.0
    );
    balancer.shutdown().await.unwrap();
}
