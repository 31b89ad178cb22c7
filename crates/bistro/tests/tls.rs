//! `bistro balancer --tls-cert --tls-key` as a user runs it: a real waiter behind it, a
//! real TLS client in front, the certificate renewed on disk and picked up on `SIGHUP`,
//! and a start with a broken key refused with the reason.

mod support;

use bistro_balancer::{LoopbackCerts, write_loopback_certs};
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{spawn_balancer, spawn_waiter};

fn dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("bistro-cli-tls-{tag}-"))
        .tempdir()
        .unwrap()
}

/// One HTTP/1.1 exchange over TLS with a client trusting only `certs`' CA; the raw
/// answer.
fn exchange(addr: SocketAddr, certs: &LoopbackCerts, request: &str) -> std::io::Result<String> {
    let config = certs
        .client_config(&[b"http/1.1"])
        .map_err(std::io::Error::other)?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(request.as_bytes())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        // A peer that closes without close_notify after a complete answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

fn tls_args(certs: &LoopbackCerts) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        certs.cert.display().to_string(),
        "--tls-key".into(),
        certs.key.display().to_string(),
        "--hsts-max-age".into(),
        "3600".into(),
    ]
}

#[test]
fn the_balancer_serves_https_and_reloads_its_certificate_on_sighup() {
    let d = dir("hup");
    let first = write_loopback_certs(&d.path().join("live")).unwrap();
    let waiter = spawn_waiter("w1", &["--mode", "stateful"]);
    let args = tls_args(&first);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut balancer = spawn_balancer(&[&waiter], ",mode=stateful", &args);

    let menu = exchange(balancer.addr, &first, &get("/v1/menu")).unwrap();
    assert!(menu.starts_with("HTTP/1.1 200"), "{menu}");
    assert!(
        menu.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=3600"),
        "{menu}"
    );

    // A new diner's order over TLS: the real waiter marks its session cookie Secure (it
    // reads X-Forwarded-Proto: https), and the balancer its affinity cookie.
    let body = r#"{"items":[{"dish":"fries"}]}"#;
    let order = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let created = exchange(balancer.addr, &first, &order).unwrap();
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let cookies: Vec<&str> = created
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .collect();
    assert_eq!(cookies.len(), 2, "{created}");
    assert!(
        cookies
            .iter()
            .all(|c| c.contains("bistro_") && c.trim_end().ends_with("; Secure")),
        "{cookies:?}"
    );

    // Renewal: new files over the old ones, then SIGHUP.
    let second = write_loopback_certs(&d.path().join("next")).unwrap();
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    balancer.signal(bistro_supervise::Signal::Hup);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match exchange(balancer.addr, &second, &get("/v1/menu")) {
            Ok(answer) if answer.starts_with("HTTP/1.1 200") => break,
            Ok(answer) => panic!("unexpected answer after the reload: {answer}"),
            Err(e) if Instant::now() < deadline => {
                eprintln!("not reloaded yet: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("the renewed certificate was not served after SIGHUP: {e}"),
        }
    }
    assert!(
        exchange(balancer.addr, &first, &get("/v1/menu")).is_err(),
        "the old certificate is no longer served"
    );
}

#[test]
fn a_key_that_does_not_fit_the_certificate_stops_the_start_with_the_reason() {
    let d = dir("badkey");
    let a = write_loopback_certs(&d.path().join("a")).unwrap();
    let b = write_loopback_certs(&d.path().join("b")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bistro"))
        .args(["balancer", "--listen", "127.0.0.1:0", "--no-admin"])
        .args(["--backend", "w1=127.0.0.1:9"])
        .arg("--tls-cert")
        .arg(&a.cert)
        .arg("--tls-key")
        .arg(&b.key)
        .env_remove("BISTRO_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot serve TLS") && stderr.contains(&a.cert.display().to_string()),
        "{stderr}"
    );
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_bistro"))
        .args(["balancer", "--listen", "127.0.0.1:0", "--no-admin"])
        .args(["--backend", "w1=127.0.0.1:9", "--tls-cert"])
        .arg(&a.cert)
        .env_remove("BISTRO_CONFIG")
        .output()
        .unwrap();
    assert!(!missing.status.success(), "a certificate without its key");
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("--tls-key"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}
