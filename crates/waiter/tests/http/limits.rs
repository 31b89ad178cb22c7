//! Connection-level abuse on a real socket: a slowloris, idle keep-alive connections,
//! a connection flood, and connections left open at shutdown. Each test configures
//! short limits and speaks raw HTTP/1.1, since the point is what happens *between*
//! requests, where a well-behaved client never goes.

use crate::harness::{Server, fast};
use bistro_waiter::{HttpLimits, WaiterConfig};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// How long any single wait in these tests may take before the test fails: far above
/// every configured limit, so a slow machine never fails a correct server.
const PATIENCE: Duration = Duration::from_secs(10);

fn limited(http: HttpLimits) -> WaiterConfig {
    WaiterConfig { http, ..fast() }
}

fn limits(header_ms: u64, idle_ms: u64, max_connections: usize) -> HttpLimits {
    HttpLimits {
        header_read_timeout: Duration::from_millis(header_ms),
        keep_alive_idle: Duration::from_millis(idle_ms),
        max_connections,
        ..HttpLimits::default()
    }
}

const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: waiter\r\n\r\n";

/// Reads one response (head and `Content-Length` body); `None` at end of stream.
async fn response(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(PATIENCE, async {
        loop {
            let text = String::from_utf8_lossy(&bytes).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return Some((head.to_string(), body[..length].to_string()));
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    });
    read.await.expect("the waiter answers or closes in time")
}

/// Sends `GET /healthz` and reads its answer on a keep-alive connection.
async fn healthz(stream: &mut TcpStream) -> Option<String> {
    stream.write_all(GET_HEALTHZ).await.ok()?;
    response(stream).await.map(|(head, _)| head)
}

/// Everything the waiter sends until it closes the connection.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut chunk).await {
                // A reset after the answer is a close too.
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    });
    read.await
        .expect("the waiter closes the connection in time");
    String::from_utf8_lossy(&bytes).to_string()
}

#[tokio::test]
async fn an_oversized_head_gets_a_431_problem_and_the_connection_serves_on() {
    let http = HttpLimits {
        max_header_bytes: 2048,
        ..limits(10_000, 30_000, 100)
    };
    let server = Server::memory(limited(http)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: waiter\r\nCookie: {}\r\n\r\n",
        "c".repeat(3000)
    );
    stream.write_all(big.as_bytes()).await.unwrap();
    let (head, body) = response(&mut stream).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("/request-header-too-large"),
        "{problem}"
    );
    assert_eq!(problem["limit_bytes"], 2048);
    // Just under the limit, on the same connection: served.
    let fits = format!(
        "GET /healthz HTTP/1.1\r\nHost: waiter\r\nCookie: {}\r\n\r\n",
        "c".repeat(1900)
    );
    stream.write_all(fits.as_bytes()).await.unwrap();
    let (head, _) = response(&mut stream).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Far over what is buffered (64 KiB; hyper's reads may overshoot it a little):
    // hyper stops reading and closes, with its bare 431 or a reset; never served.
    let mut other = TcpStream::connect(server.addr).await.unwrap();
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: waiter\r\nCookie: {}\r\n\r\n",
        "c".repeat(512 * 1024)
    );
    let _ = other.write_all(huge.as_bytes()).await;
    let rest = until_closed(&mut other).await;
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 431"),
        "{rest}"
    );
}

#[tokio::test]
async fn a_slowloris_is_cut_by_the_header_timeout_while_others_are_served() {
    let server = Server::memory(limited(limits(300, 30_000, 100))).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // 200 bytes at one per 20 ms: 4 s for the whole head, far beyond 300 ms.
    let head = format!(
        "GET /v1/menu HTTP/1.1\r\nHost: waiter\r\nX-Slow: {}\r\n\r\n",
        "z".repeat(150)
    );
    let (started_tx, started) = oneshot::channel();
    let slowloris = tokio::spawn(async move {
        let mut started_tx = Some(started_tx);
        let mut answer = Vec::new();
        let mut sent = 0;
        for byte in head.bytes() {
            if stream.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
            if sent == 3
                && let Some(tx) = started_tx.take()
            {
                tx.send(()).unwrap();
            }
            // Stop writing as soon as the waiter says anything (or closes): writing
            // to a closed socket would only draw a reset.
            tokio::select! {
                _ = stream.read_buf(&mut answer) => break,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        let rest = until_closed(&mut stream).await;
        (
            sent,
            head.len(),
            String::from_utf8_lossy(&answer).to_string() + &rest,
        )
    });
    started.await.unwrap();

    // Meanwhile, another diner is served as usual.
    let menu = server.client().get("/v1/menu").await.unwrap();
    assert_eq!(menu.status.as_u16(), 200, "{}", menu.text());

    let (sent, whole, answer) = tokio::time::timeout(PATIENCE, slowloris)
        .await
        .expect("the slowloris is closed in time")
        .unwrap();
    assert!(sent < whole, "the slowloris could not finish its head");
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("/problems/request-timeout"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // The header timeout is far longer than the test's patience: a close proves the
    // idle timer, not the header timer, ended the connection.
    let server = Server::memory(limited(limits(60_000, 300, 100))).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = healthz(&mut stream).await.expect("answered");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(
        until_closed(&mut stream).await,
        "",
        "closed silently, without a response"
    );
    server.stop().await;
}

#[tokio::test]
async fn requests_spaced_below_the_idle_timeout_keep_the_connection_open() {
    let server = Server::memory(limited(limits(10_000, 1_000, 100))).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // 12 requests 100 ms apart: longer in all than the idle timeout, which each
    // request starts again.
    for i in 0..12 {
        let head = healthz(&mut stream)
            .await
            .unwrap_or_else(|| panic!("request {i} found the connection closed"));
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

/// hyper's own header timer also runs between requests; with it, a keep-alive
/// connection would be cut after the header timeout instead of the idle timeout.
#[tokio::test]
async fn keep_alive_idle_is_not_cut_by_the_header_timeout() {
    let server = Server::memory(limited(limits(200, 30_000, 100))).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    assert!(healthz(&mut stream).await.is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let head = healthz(&mut stream)
        .await
        .expect("still open after three header timeouts of idleness");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    server.stop().await;
}

#[tokio::test]
async fn beyond_the_connection_cap_a_client_gets_503_too_many_connections_at_once() {
    let server = Server::memory(limited(limits(30_000, 30_000, 2))).await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    assert!(healthz(&mut first).await.is_some());
    assert!(healthz(&mut second).await.is_some());

    // The third is answered without sending anything, and closed.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    let answer = until_closed(&mut third).await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    let head = head.to_ascii_lowercase();
    for line in [
        "content-type: application/problem+json",
        "retry-after: 1",
        "connection: close",
        "bistro-waiter: w1",
    ] {
        assert!(head.contains(line), "{line} in {head}");
    }
    let problem: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        problem["type"],
        "https://bistro.dev/problems/too-many-connections"
    );
    assert_eq!(problem["status"], 503);
    assert!(problem["title"].is_string() && problem["detail"].is_string());

    // The connections inside the cap are unaffected, and a closed one frees its place.
    assert!(healthz(&mut first).await.is_some());
    drop(second);
    let mut served = false;
    for _ in 0..50 {
        let mut again = TcpStream::connect(server.addr).await.unwrap();
        if let Some(head) = healthz(&mut again).await
            && head.starts_with("HTTP/1.1 200 ")
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a place came free when a connection closed");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_connections_waiting_for_a_request_at_once() {
    // Timeouts far beyond the harness's 5 s stop: only the drain can close these.
    let server = Server::memory(limited(limits(60_000, 60_000, 100))).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert!(healthz(&mut idle).await.is_some());
    // Make sure the silent one has been accepted before the stop.
    let mut probe = TcpStream::connect(server.addr).await.unwrap();
    assert!(healthz(&mut probe).await.is_some());
    server.stop().await;
    assert_eq!(until_closed(&mut silent).await, "");
    assert_eq!(until_closed(&mut idle).await, "");
}
