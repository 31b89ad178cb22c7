//! TLS and HTTP/2 towards diners, end to end: real rustls handshakes against the
//! balancer on port 0, HTTP/2 and HTTP/1.1 by ALPN in front of HTTP/1.1 waiters, the
//! `Secure` cookie and HSTS, reloading the certificate without dropping a connection,
//! and clients that never finish a handshake.

mod support;

use bistro_balancer::{BalancerConfig, LoopbackCerts, write_loopback_certs};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::{Balancer, Waiter, config, eventually};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A directory of its own per test, removed at the end.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new(tag: &str) -> Dir {
        Dir(tempfile::Builder::new()
            .prefix(&format!("bistro-tls-test-{tag}-"))
            .tempdir()
            .unwrap())
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

fn tls_config(waiters: &[&Waiter], certs: &LoopbackCerts) -> BalancerConfig {
    let mut c = config(waiters);
    c.tls.cert = Some(certs.cert.clone());
    c.tls.key = Some(certs.key.clone());
    c.tls.hsts_max_age_secs = 600;
    c
}

/// A client trusting only `certs`' CA, offering `alpn`.
fn connector(certs: &LoopbackCerts, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(Arc::new(certs.client_config(alpn).unwrap()))
}

async fn handshake(
    addr: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tls.connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The SHA-256 fingerprint of the certificate the server showed, as `CertInfo` renders it.
fn served_fingerprint(stream: &TlsStream<TcpStream>) -> String {
    use sha2::Digest;
    let leaf = &stream.get_ref().1.peer_certificates().unwrap()[0];
    sha2::Sha256::digest(leaf.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

type H2 = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;
type H1 = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// Sends on an HTTP/1.1 connection once it is ready for the next request (hyper refuses
/// a request while the previous response is still being wound up).
async fn send1(diner: &mut H1, request: Request<Empty<Bytes>>) -> (http::response::Parts, String) {
    diner.ready().await.unwrap();
    text(diner.send_request(request).await.unwrap()).await
}

async fn h2(stream: TlsStream<TcpStream>) -> H2 {
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

async fn h1(stream: TlsStream<TcpStream>) -> H1 {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

fn get(uri: &str, cookies: &[&str]) -> Request<Empty<Bytes>> {
    let mut builder = Request::get(uri);
    for c in cookies {
        builder = builder.header(http::header::COOKIE, *c);
    }
    builder.body(Empty::new()).unwrap()
}

async fn text(response: Response<Incoming>) -> (http::response::Parts, String) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, String::from_utf8_lossy(&bytes).into_owned())
}

fn waiter_of(parts: &http::response::Parts) -> String {
    parts.headers["bistro-waiter"].to_str().unwrap().to_string()
}

/// The `name=value` part of a `Set-Cookie`.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_diners_reach_http1_waiters_stick_and_get_secure_cookies() {
    let dir = Dir::new("h2");
    let certs = write_loopback_certs(dir.path()).unwrap();
    let waiters = Waiter::three("stateful").await;
    let balancer = Balancer::start(tls_config(&waiters.iter().collect::<Vec<_>>(), &certs)).await;
    let tls = connector(&certs, &[b"h2", b"http/1.1"]);

    let stream = handshake(balancer.addr, &tls).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut diner = h2(stream).await;
    let uri = format!("https://localhost:{}/v1/orders", balancer.addr.port());

    let (first, _) = text(diner.send_request(get(&uri, &[])).await.unwrap()).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.version, http::Version::HTTP_2);
    assert_eq!(
        first.headers["strict-transport-security"], "max-age=600",
        "HSTS on every answer"
    );
    let set_cookie = first.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.starts_with("bistro_affinity=") && set_cookie.contains("; Secure"),
        "over TLS the affinity cookie is Secure without being told: {set_cookie}"
    );
    let home = waiter_of(&first);
    let seen = waiters
        .iter()
        .find(|w| w.id == home)
        .unwrap()
        .last_request()
        .unwrap();
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["host"], format!("localhost:{}", balancer.addr.port()));

    // Twenty requests at once on the one connection (HTTP/2 streams), each cookie in
    // a field of its own as HTTP/2 clients send them: all reach the diner's waiter,
    // which gets them joined in one `Cookie` line.
    let affinity = cookie_pair(&set_cookie).to_string();
    let mut calls = Vec::new();
    for _ in 0..20 {
        let mut diner = diner.clone();
        let request = get(&uri, &["theme=dark", &affinity, "lang=fr"]);
        calls.push(tokio::spawn(async move {
            text(diner.send_request(request).await.unwrap()).await
        }));
    }
    for call in calls {
        let (parts, _) = call.await.unwrap();
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(waiter_of(&parts), home, "the diner sticks over HTTP/2");
        assert!(parts.headers.get("set-cookie").is_none());
    }
    let seen = waiters
        .iter()
        .find(|w| w.id == home)
        .unwrap()
        .last_request()
        .unwrap();
    let cookies: Vec<_> = seen.get_all("cookie").iter().collect();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(
        cookies[0].to_str().unwrap(),
        format!("theme=dark; {affinity}; lang=fr")
    );
    assert!(
        balancer
            .metric("bistro_balancer_tls_handshakes_total{result=\"h2\"}")
            .await
            >= 1.0
    );
    drop(diner);
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_when_the_diner_or_the_balancer_does_not_offer_h2() {
    let dir = Dir::new("h1");
    let certs = write_loopback_certs(dir.path()).unwrap();
    let waiters = Waiter::three("stateless").await;
    let refs = waiters.iter().collect::<Vec<_>>();

    // The diner offers only http/1.1.
    let balancer = Balancer::start(tls_config(&refs, &certs)).await;
    let stream = handshake(balancer.addr, &connector(&certs, &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut diner = h1(stream).await;
    for _ in 0..3 {
        let (parts, body) = send1(&mut diner, get("/v1/menu", &[])).await;
        assert_eq!(parts.status, StatusCode::OK, "{body}");
        assert_eq!(parts.version, http::Version::HTTP_11);
        assert_eq!(parts.headers["strict-transport-security"], "max-age=600");
    }
    assert!(
        balancer
            .metric("bistro_balancer_tls_handshakes_total{result=\"http1\"}")
            .await
            >= 1.0
    );
    drop(diner);
    balancer.shutdown().await.unwrap();

    // The balancer has HTTP/2 turned off: a diner offering h2 gets HTTP/1.1.
    let mut c = tls_config(&refs, &certs);
    c.tls.http2 = false;
    c.tls.hsts_max_age_secs = 0;
    let balancer = Balancer::start(c).await;
    let stream = handshake(balancer.addr, &connector(&certs, &[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut diner = h1(stream).await;
    let (parts, _) = send1(&mut diner, get("/v1/menu", &[])).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(parts.headers.get("strict-transport-security").is_none());
    drop(diner);
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_new_handshakes_the_new_certificate_and_keeps_open_connections() {
    let dir = Dir::new("reload");
    let first = write_loopback_certs(&dir.path().join("first")).unwrap();
    let waiters = Waiter::three("stateless").await;
    let balancer = Balancer::start(tls_config(&waiters.iter().collect::<Vec<_>>(), &first)).await;

    let old = handshake(balancer.addr, &connector(&first, &[b"h2"]))
        .await
        .unwrap();
    let old_fingerprint = served_fingerprint(&old);
    let info = balancer.admin().get("/tls").await.unwrap().value();
    assert_eq!(info["sha256_fingerprint"], old_fingerprint);
    let mut open = h2(old).await;
    let uri = format!("https://localhost:{}/v1/menu", balancer.addr.port());
    let (parts, _) = text(open.send_request(get(&uri, &[])).await.unwrap()).await;
    assert_eq!(parts.status, StatusCode::OK);

    // Renewal: new files in place, then the reload (SIGHUP in `bistro balancer`).
    let second = write_loopback_certs(&dir.path().join("second")).unwrap();
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    let reloaded = balancer
        .admin()
        .post_json("/tls/reload", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    let new_fingerprint = reloaded.value()["sha256_fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_fingerprint, old_fingerprint);
    assert_eq!(reloaded.value()["reloads"], 1);

    let fresh = handshake(balancer.addr, &connector(&second, &[b"h2"]))
        .await
        .unwrap();
    assert_eq!(served_fingerprint(&fresh), new_fingerprint);
    assert!(
        handshake(balancer.addr, &connector(&first, &[b"h2"]))
            .await
            .is_err(),
        "a client trusting only the old CA now refuses the new certificate"
    );
    let (parts, _) = text(open.send_request(get(&uri, &[])).await.unwrap()).await;
    assert_eq!(
        parts.status,
        StatusCode::OK,
        "the connection opened before the reload still serves"
    );

    // A botched renewal (the new certificate with someone else's key) is refused with
    // the reason, and the certificate in use keeps serving.
    let third = write_loopback_certs(&dir.path().join("third")).unwrap();
    std::fs::copy(&third.key, &first.key).unwrap();
    let refused = balancer
        .admin()
        .post_json("/tls/reload", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(refused.status, 422, "{}", refused.text());
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    let again = handshake(balancer.addr, &connector(&second, &[b"h2"]))
        .await
        .unwrap();
    assert_eq!(served_fingerprint(&again), new_fingerprint);
    drop((open, fresh, again));
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_finish_a_handshake_are_cut_and_counted() {
    let dir = Dir::new("slow");
    let certs = write_loopback_certs(dir.path()).unwrap();
    let waiters = Waiter::three("stateless").await;
    let mut c = tls_config(&waiters.iter().collect::<Vec<_>>(), &certs);
    c.client.header_read_timeout_ms = 300;
    let balancer = Balancer::start(c).await;

    // Plain HTTP to the TLS port: not a ClientHello, the handshake fails at once.
    let mut plain = TcpStream::connect(balancer.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (_, closed) = support::read_until_close(&mut plain, Duration::from_secs(10)).await;
    assert!(closed, "a plain HTTP request on the TLS port is closed");

    // Half a ClientHello, then silence: cut by the header read timeout.
    let mut slow = TcpStream::connect(balancer.addr).await.unwrap();
    slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let (_, closed) = support::read_until_close(&mut slow, Duration::from_secs(10)).await;
    assert!(closed, "a handshake that stalls is cut");

    let counted = eventually(Duration::from_secs(10), || async {
        balancer
            .metric("bistro_balancer_tls_handshakes_total{result=\"failed\"}")
            .await
            >= 1.0
            && balancer
                .metric("bistro_balancer_tls_handshakes_total{result=\"timeout\"}")
                .await
                >= 1.0
    })
    .await;
    assert!(counted, "both counted by result");

    // A proper diner is still served.
    let stream = handshake(balancer.addr, &connector(&certs, &[b"h2"]))
        .await
        .unwrap();
    let mut diner = h2(stream).await;
    let uri = format!("https://localhost:{}/v1/menu", balancer.addr.port());
    let (parts, _) = text(diner.send_request(get(&uri, &[])).await.unwrap()).await;
    assert_eq!(parts.status, StatusCode::OK);
    drop(diner);
    balancer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_without_tls_says_so_on_the_admin_api() {
    let waiters = Waiter::three("stateless").await;
    let balancer = Balancer::start(config(&waiters.iter().collect::<Vec<_>>())).await;
    let r = balancer.admin().get("/tls").await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.text().contains("no-tls"), "{}", r.text());
    balancer.shutdown().await.unwrap();
}
