//! The balancer's HTTP/1.1 client side against backends that answer in every framing
//! HTTP/1.1 allows, and in some it does not: a scripted backend on a raw socket writes
//! exactly the bytes each test gives it, and records what the balancer sent.

mod support;

use bistro_balancer::{BackendSpec, BalancerConfig};
use bytes::Bytes;
use http::{Method, StatusCode};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Balancer, read_until_close};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted backend does with one request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// Keep the connection for the next request.
    KeepOpen,
    /// Close it right after the answer.
    Close,
    /// Answer as soon as the head is in, then read and drop the body.
    AnswerBeforeBody,
    /// Say `100 Continue` as soon as the head is in, then read the body and answer.
    ContinueFirst,
}

/// One request the backend received: its connection's number, head and body.
#[derive(Debug, Clone)]
struct Seen {
    conn: usize,
    head: String,
    body: Vec<u8>,
}

type Script = Arc<dyn Fn(&str) -> (Vec<u8>, After) + Send + Sync>;

/// A backend on 127.0.0.1 answering each request with the script's bytes.
struct Scripted {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    async fn start(script: impl Fn(&str) -> (Vec<u8>, After) + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let log = seen.clone();
        tokio::spawn(async move {
            for conn in 0.. {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, conn, script.clone(), log.clone()));
            }
        });
        Scripted { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Connections that carried requests.
    fn connections(&self) -> usize {
        let mut conns: Vec<usize> = self.seen().iter().map(|s| s.conn).collect();
        conns.dedup();
        conns.len()
    }
}

/// Reads a request head off `stream` (with `buf` holding what came before).
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> bool {
    while buf.len() < want {
        let mut chunk = [0u8; 65536];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// Reads the body the head announces (length or chunked).
async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, head: &str) -> Option<Vec<u8>> {
    let lower = head.to_ascii_lowercase();
    if lower.contains("transfer-encoding: chunked") {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                if !fill(stream, buf, buf.len() + 1).await {
                    return None;
                }
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?, 16).ok()?;
            buf.drain(..line_end + 2);
            if !fill(stream, buf, size + 2).await {
                return None;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                return Some(body);
            }
        }
    }
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    if !fill(stream, buf, length).await {
        return None;
    }
    Some(buf.drain(..length).collect())
}

async fn serve(mut stream: TcpStream, conn: usize, script: Script, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    while let Some(head) = read_head(&mut stream, &mut buf).await {
        let (answer, after) = script(&head);
        if after == After::AnswerBeforeBody {
            stream.write_all(&answer).await.unwrap();
            let mut sink = [0u8; 65536];
            let mut body = std::mem::take(&mut buf);
            while let Ok(n @ 1..) = stream.read(&mut sink).await {
                body.extend_from_slice(&sink[..n]);
            }
            seen.lock().unwrap().push(Seen { conn, head, body });
            return;
        }
        if after == After::ContinueFirst
            && stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let Some(body) = read_body(&mut stream, &mut buf, &head).await else {
            return;
        };
        seen.lock().unwrap().push(Seen { conn, head, body });
        if stream.write_all(&answer).await.is_err() || after == After::Close {
            return;
        }
    }
}

fn config(backend: SocketAddr) -> BalancerConfig {
    let mut c = BalancerConfig {
        workers: 1,
        backends: vec![BackendSpec::new("w1", backend)],
        shutdown_grace_ms: 3_000,
        ..BalancerConfig::default()
    };
    // Only the scripted exchanges reach the backend.
    c.health.active = false;
    c.upstream.connect_timeout_ms = 1_000;
    c.upstream.response_timeout_ms = 5_000;
    c
}

fn diner(balancer: &Balancer) -> bistro_client::Client {
    balancer.diner()
}

#[tokio::test]
async fn chunked_answers_with_interim_heads_and_trailers_arrive_whole_and_the_connection_is_reused()
{
    let backend = Scripted::start(|_| {
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
              HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n\
              5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
                .to_vec(),
            After::KeepOpen,
        )
    })
    .await;
    let balancer = Balancer::start(config(backend.addr)).await;
    for _ in 0..3 {
        let response = diner(&balancer).get("/menu").await.unwrap();
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.text(), "hello world");
        assert_eq!(response.header("content-type"), Some("text/plain"));
        assert_eq!(
            response.header("link"),
            None,
            "an interim head is not the answer"
        );
    }
    assert_eq!(
        backend.connections(),
        1,
        "one upstream connection carried all three"
    );
    balancer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_body_delimited_by_close_is_forwarded_and_its_connection_not_reused() {
    let backend = Scripted::start(|_| {
        (
            b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(),
            After::Close,
        )
    })
    .await;
    let balancer = Balancer::start(config(backend.addr)).await;
    for _ in 0..2 {
        let response = diner(&balancer).get("/").await.unwrap();
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.text(), "until the end");
    }
    assert_eq!(backend.connections(), 2);
    balancer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_not_used_even_for_a_post() {
    // The backend closes each connection a moment after answering with keep-alive, as
    // a backend whose idle timeout is shorter than the balancer's pool timeout does. A
    // POST (never resent once it may have left) must not be written to such a socket.
    let backend = Scripted::start(|_| {
        (
            b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            After::Close,
        )
    })
    .await;
    let balancer = Balancer::start(config(backend.addr)).await;
    for round in 0..3 {
        let response = diner(&balancer)
            .request_raw(
                Method::POST,
                "/v1/orders",
                &[],
                Some("application/json"),
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
        assert_eq!(
            response.status,
            StatusCode::CREATED,
            "round {round}: {}",
            response.text()
        );
        // Long enough for the close to reach the balancer's side.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(backend.connections(), 3);
    let seen = backend.seen();
    assert!(
        seen[0].head.contains("content-length: 2\r\n"),
        "{}",
        seen[0].head
    );
    assert_eq!(seen[0].body, b"{}");
    balancer.shutdown().await.unwrap();
}

/// Sends a request on a raw connection (so its framing is the test's) and reads the
/// answer to the end.
async fn raw(balancer: &Balancer, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let (text, closed) = read_until_close(&mut stream, Duration::from_secs(10)).await;
    assert!(
        closed,
        "the balancer closes after `connection: close`: {text}"
    );
    text
}

#[tokio::test]
async fn streamed_bodies_keep_a_known_length_and_go_chunked_otherwise() {
    let backend = Scripted::start(|_| {
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
            After::KeepOpen,
        )
    })
    .await;
    let balancer = Balancer::start(config(backend.addr)).await;
    // A POST without Idempotency-Key is never resent, so it streams.
    let answer = raw(
        &balancer,
        b"POST /v1/orders HTTP/1.1\r\nhost: t\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n\
          4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let big = vec![b'z'; 300_000];
    let mut request = format!(
        "POST /v1/orders HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        big.len()
    )
    .into_bytes();
    request.extend_from_slice(&big);
    let answer = raw(&balancer, &request).await;
    assert!(answer.contains("HTTP/1.1 200"), "{answer}");
    let seen = backend.seen();
    assert!(
        seen[0].head.contains("transfer-encoding: chunked\r\n"),
        "{}",
        seen[0].head
    );
    assert_eq!(seen[0].body, b"abcdefg");
    assert!(
        seen[1].head.contains("content-length: 300000\r\n"),
        "{}",
        seen[1].head
    );
    assert!(
        !seen[1].head.contains("expect"),
        "the balancer answered Expect itself"
    );
    assert_eq!(seen[1].body, big);
    balancer.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_answer_before_the_body_is_read_reaches_the_client() {
    let backend = Scripted::start(|_| {
        (
            b"HTTP/1.1 403 Forbidden\r\ncontent-length: 4\r\n\r\nnope".to_vec(),
            After::AnswerBeforeBody,
        )
    })
    .await;
    let mut c = config(backend.addr);
    c.client.max_body_bytes = 64 * 1024 * 1024;
    let balancer = Balancer::start(c).await;
    // Far more than the socket buffers hold: without reading the answer while it
    // writes, the balancer would wait on a backend that no longer reads.
    let body = vec![b'b'; 16 * 1024 * 1024];
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    let head = format!(
        "PUT /v1/big HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The client keeps sending while the answer comes back; it may be cut off.
    let (mut rd, mut wr) = stream.into_split();
    let sender = tokio::spawn(async move {
        let _ = wr.write_all(&body).await;
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.ends_with("nope"), "{answer}");
    sender.abort();
    balancer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_continue_while_the_body_is_sent_is_not_the_answer() {
    let backend = Scripted::start(|_| {
        (
            b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n".to_vec(),
            After::ContinueFirst,
        )
    })
    .await;
    let mut c = config(backend.addr);
    c.client.max_body_bytes = 64 * 1024 * 1024;
    let balancer = Balancer::start(c).await;
    let body = Bytes::from(vec![b'c'; 8 * 1024 * 1024]);
    for _ in 0..2 {
        let response = diner(&balancer)
            .request_raw(Method::PUT, "/v1/big", &[], None, body.clone())
            .await
            .unwrap();
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
    }
    let seen = backend.seen();
    assert!(seen.iter().all(|s| s.body.len() == body.len()));
    assert_eq!(backend.connections(), 1, "the connection stays reusable");
    balancer.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_and_oversized_response_heads_are_a_502_problem() {
    let backend = Scripted::start(|head| {
        let answer = if head.starts_with("GET /garbage") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx".to_vec()
        } else {
            let mut big = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
            big.extend(std::iter::repeat_n(b'a', 4096));
            big.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
            big
        };
        (answer, After::KeepOpen)
    })
    .await;
    let mut c = config(backend.addr);
    c.upstream.max_response_header_bytes = 1024;
    c.retry.max_retries = 0;
    let balancer = Balancer::start(c).await;
    for path in ["/garbage", "/big"] {
        let response = diner(&balancer).get(path).await.unwrap();
        assert_eq!(response.status, StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json"),
            "{path}"
        );
    }
    balancer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_body_cut_short_is_never_a_complete_answer_and_closes_the_connection() {
    let backend = Scripted::start(|_| {
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this".to_vec(),
            After::Close,
        )
    })
    .await;
    let balancer = Balancer::start(config(backend.addr)).await;
    let answer = raw(
        &balancer,
        b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await;
    // hyper may not flush the head before it aborts the connection: what the client
    // must never see is a complete answer.
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert!(body.len() < 100, "{answer}");
    balancer.shutdown().await.unwrap();
}
