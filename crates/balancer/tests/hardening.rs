//! Hostile and malformed input over raw sockets: ambiguous framing, oversized heads,
//! slow heads, oversized bodies, garbage. The balancer must answer or close, never
//! hang and never panic.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};
use support::{Balancer, Waiter, config, raw_exchange, read_until_close};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

static PROXY_PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics on the balancer's worker threads (test threads may panic on purpose).
fn watch_for_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("bistro-proxy"))
            {
                PROXY_PANICS.fetch_add(1, SeqCst);
            }
            default(info);
        }));
    });
}

async fn start() -> (Waiter, Balancer) {
    watch_for_panics();
    let waiter = Waiter::start("w1", "stateful").await;
    let mut c = config(&[&waiter]);
    c.client.header_read_timeout_ms = 500;
    c.client.max_header_bytes = 8 * 1024;
    c.client.max_body_bytes = 1024;
    let balancer = Balancer::start(c).await;
    (waiter, balancer)
}

const WITHIN: Duration = Duration::from_secs(5);
/// How long a test waits for the 500 ms header timeout to close a connection: twenty
/// times it, so a loaded machine does not turn a pass into a failure.
const HEADER_TIMEOUT_BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    let (waiter, balancer) = start().await;
    // The chunked body is empty, so a front end trusting Content-Length would read the
    // next bytes as the body, and one trusting Transfer-Encoding as a second request.
    let attack = b"POST /v1/orders HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n\
                   0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let (reply, closed) = raw_exchange(balancer.addr, attack, WITHIN).await;
    assert!(
        closed,
        "the connection is closed after an ambiguous request: {reply}"
    );
    assert_eq!(
        reply.matches("HTTP/1.1").count(),
        1,
        "exactly one answer: {reply}"
    );
    assert!(!reply.contains("/smuggled"), "{reply}");
    assert!(
        waiter.requests() <= 1,
        "the smuggled request never reaches a waiter"
    );
    assert_eq!(PROXY_PANICS.load(SeqCst), 0);
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_lengths_get_400_and_close() {
    let (waiter, balancer) = start().await;
    for head in [
        "POST /v1/orders HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "POST /v1/orders HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
        "POST /v1/orders HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    ] {
        let (reply, closed) = raw_exchange(balancer.addr, head.as_bytes(), WITHIN).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{head:?}: {reply}");
        assert!(closed, "{head:?}");
    }
    assert_eq!(waiter.requests(), 0);
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_and_close() {
    let (waiter, balancer) = start().await;
    // Just over the 8 KiB limit, sent whole: the balancer reads all of it, so its 431
    // always arrives.
    let over = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "x".repeat(9 * 1024)
    );
    let (reply, closed) = raw_exchange(balancer.addr, over.as_bytes(), WITHIN).await;
    assert!(closed);
    // Within the read buffer, the proxy's own check answers, with a problem document.
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert!(
        reply.contains("content-type: application/problem+json"),
        "{reply}"
    );
    assert!(
        reply.contains("/problems/request-header-too-large"),
        "{reply}"
    );
    // Far over it, past the read buffer: hyper itself stops reading, answers a bare 431 and
    // closes with the rest unread, which TCP turns into a reset that may reach the
    // client before it reads the answer. Closed, and never forwarded, either way.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "x".repeat(64 * 1024)
    );
    let (reply, closed) = raw_exchange(balancer.addr, huge.as_bytes(), WITHIN).await;
    assert!(closed);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "{reply}"
    );
    assert_eq!(waiter.requests(), 0);
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_slowly_is_cut_off() {
    let (waiter, balancer) = start().await;
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /v1/menu HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let mut closed_at = None;
    // One header line every 100 ms, for up to 10 s: the bound is the loop, 20 times
    // the 500 ms header timeout.
    for i in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream
            .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            closed_at = Some(started.elapsed());
            break;
        }
        let (_, closed) = read_until_close(&mut stream, Duration::from_millis(1)).await;
        if closed {
            closed_at = Some(started.elapsed());
            break;
        }
    }
    let closed_at = closed_at.expect("the balancer closes a slowloris connection");
    // The header timeout is 500 ms; twenty times that is the bound.
    assert!(closed_at < HEADER_TIMEOUT_BOUND, "{closed_at:?}");
    assert_eq!(waiter.requests(), 0);
    // An idle keep-alive connection is closed by the same timer.
    let mut idle = TcpStream::connect(balancer.addr).await.unwrap();
    let (_, closed) = read_until_close(&mut idle, HEADER_TIMEOUT_BOUND).await;
    assert!(
        closed,
        "idle connections are closed after the header timeout"
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_stops_halfway_is_answered_408() {
    let (waiter, balancer) = start().await;
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    stream
        .write_all(b"GET /v1/menu HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let (reply, closed) = read_until_close(&mut stream, HEADER_TIMEOUT_BOUND).await;
    assert!(closed);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("/problems/request-timeout"), "{reply}");
    assert_eq!(waiter.requests(), 0);
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413() {
    let (waiter, balancer) = start().await;
    let declared = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: a\r\nContent-Length: 4096\r\n\r\n{}",
        "x".repeat(4096)
    );
    let (reply, _) = raw_exchange(balancer.addr, declared.as_bytes(), WITHIN).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("request-too-large"));
    assert_eq!(waiter.requests(), 0, "refused before reaching a waiter");

    // A chunked body has no declared length: the limit is enforced while streaming.
    let chunk = "x".repeat(800);
    let chunked = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let (reply, _) = raw_exchange(balancer.addr, chunked.as_bytes(), WITHIN).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("request-too-large"), "{reply}");
    assert_eq!(waiter.effects(), 0, "the waiter never saw a complete body");
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_panics_and_normal_traffic_continues() {
    let (waiter, balancer) = start().await;
    let inputs: [&[u8]; 10] = [
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET http://evil.test/v1/menu HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /v1/menu HTTP/1.1\r\nHost: a\r\nConnection: x-secret, close\r\nX-Secret: 1\r\nProxy-Authorization: x\r\n\r\n",
        b"POST /v1/orders HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot hex\r\n",
        b"GET /v1/menu HTTP/1.0\r\n\r\n",
        b"GET /v1/menu HTTP/1.1\r\nHost: a\r\nCookie: bistro_affinity=%%%; bistro_affinity=\r\n\r\n",
        b"GET /v1/menu HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ];
    for input in inputs {
        let (reply, _) = raw_exchange(balancer.addr, input, WITHIN).await;
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1."),
            "{:?}: {reply}",
            String::from_utf8_lossy(input)
        );
    }
    // Hop-by-hop headers never reach the waiter, forwarding headers do.
    let seen = waiter
        .last_request()
        .expect("some garbage was a valid request");
    let diner = balancer.diner();
    let r = diner.get("/v1/menu").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("via"), Some("1.1 bistro"));
    let forwarded = waiter.last_request().unwrap();
    assert_eq!(forwarded["x-forwarded-for"], "127.0.0.1");
    assert_eq!(forwarded["x-forwarded-proto"], "http");
    assert_eq!(forwarded["via"], "1.1 bistro");
    assert!(forwarded.get("x-forwarded-host").is_some());
    drop(seen);
    assert_eq!(PROXY_PANICS.load(SeqCst), 0);
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_named_headers_are_stripped() {
    let (waiter, balancer) = start().await;
    let request = b"GET /v1/menu HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\nX-Secret: 1\r\n\
                    Proxy-Authorization: x\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\nConnection: close\r\n\r\n";
    let (reply, _) = raw_exchange(balancer.addr, request, WITHIN).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = waiter.last_request().unwrap();
    assert!(seen.get("x-secret").is_none());
    assert!(seen.get("proxy-authorization").is_none());
    assert!(seen.get("keep-alive").is_none());
    assert_eq!(seen["x-kept"], "yes");
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_cap_a_client_is_refused_with_503_at_once() {
    // Regression: at the cap the balancer used to stop accepting, leaving new clients
    // unanswered in the kernel's backlog until their connect timed out.
    watch_for_panics();
    let waiter = Waiter::start("w1", "stateful").await;
    let mut c = config(&[&waiter]);
    c.client.max_connections = 1;
    let balancer = Balancer::start(c).await;
    let request = b"GET /v1/menu HTTP/1.1\r\nHost: a\r\n\r\n";

    let mut first = TcpStream::connect(balancer.addr).await.unwrap();
    first.write_all(request).await.unwrap();
    let (reply, closed) = read_until_close(&mut first, Duration::from_millis(500)).await;
    assert!(reply.starts_with("HTTP/1.1 200") && !closed, "{reply}");

    let mut second = TcpStream::connect(balancer.addr).await.unwrap();
    second
        .write_all(b"GET /v1/menu HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (reply, closed) = read_until_close(&mut second, WITHIN).await;
    assert!(closed, "the refused connection is closed");
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("retry-after: 1"), "{reply}");
    assert!(
        reply.contains("https://bistro.dev/problems/balancer-busy"),
        "{reply}"
    );
    assert_eq!(
        balancer
            .metric("bistro_balancer_refused_total{reason=\"max_connections\"}")
            .await,
        1.0
    );

    drop(first);
    // The first connection's place comes back once the balancer sees it closed.
    let served = support::eventually(Duration::from_secs(5), || async {
        let (reply, _) = raw_exchange(
            balancer.addr,
            b"GET /v1/menu HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            WITHIN,
        )
        .await;
        reply.starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(served, "served once the place is free");
    assert_eq!(waiter.requests(), 2);
    balancer.shutdown().await.unwrap();
}
