//! The balancer in front of real waiter processes: stickiness, what happens when the
//! sticky waiter dies (strict and redispatch), stateless waiters losing nothing, drain,
//! and `bistro up` as a user runs it.

mod support;

use bistro_client::Client;
use http::Method;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Proc, TempDb, spawn_bistro, spawn_bistro_with_fd_limit, spawn_waiter};

fn balancer(waiters: &[&Proc], extra: &[&str]) -> Proc {
    let mut args: Vec<String> = vec![
        "balancer".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--no-admin".into(),
    ];
    for w in waiters {
        args.extend(["--backend".into(), format!("{}={}", w.name, w.addr)]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_bistro("balancer", &args)
}

fn order() -> serde_json::Value {
    json!({"items":[{"dish":"fries","quantity":1}],"notes":{"requests":"window seat"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_sessions_stick_and_are_lost_strictly_when_their_waiter_dies() {
    let w1 = spawn_waiter("w1", &[]);
    let w2 = spawn_waiter("w2", &[]);
    let w3 = spawn_waiter("w3", &[]);
    let lb = balancer(&[&w1, &w2, &w3], &[]);
    let diner = Client::new(lb.addr);
    let created = diner.post_json("/v1/orders", &order()).await.unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    let home = created.header("bistro-waiter").unwrap().to_string();
    assert!(
        diner.cookie("bistro_affinity").is_some(),
        "a sticky route sets the affinity cookie"
    );
    let id = created.value()["id"].as_str().unwrap().to_string();
    for _ in 0..100 {
        let r = diner.get(&format!("/v1/orders/{id}")).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("bistro-waiter"),
            Some(home.as_str()),
            "every request goes back to {home}"
        );
    }

    let mut waiters = [w1, w2, w3];
    waiters.iter_mut().find(|w| w.name == home).unwrap().kill();
    let lost = diner.get(&format!("/v1/orders/{id}")).await.unwrap();
    assert_eq!(lost.status, 503, "{}", lost.text());
    assert_eq!(lost.header("bistro-session-lost"), Some("1"));
    assert!(
        lost.value()["type"]
            .as_str()
            .unwrap()
            .ends_with("/session-lost")
    );
    assert!(
        diner.cookie("bistro_affinity").is_none(),
        "the affinity cookie is cleared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redispatch_reroutes_and_the_new_waiter_says_it_holds_no_notes() {
    let w1 = spawn_waiter("w1", &[]);
    let w2 = spawn_waiter("w2", &[]);
    let lb = balancer(&[&w1, &w2], &["--on-session-lost", "redispatch"]);
    let diner = Client::new(lb.addr);
    let created = diner.post_json("/v1/orders", &order()).await.unwrap();
    let home = created.header("bistro-waiter").unwrap().to_string();
    let id = created.value()["id"].as_str().unwrap().to_string();
    let mut waiters = [w1, w2];
    waiters.iter_mut().find(|w| w.name == home).unwrap().kill();
    let r = diner.get(&format!("/v1/orders/{id}")).await.unwrap();
    let other = if home == "w1" { "w2" } else { "w1" };
    assert_eq!(
        r.header("bistro-rerouted"),
        Some(format!("{home}->{other}").as_str())
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.value()["type"]
            .as_str()
            .unwrap()
            .ends_with("/unknown-session"),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_waiters_behind_the_balancer_lose_nothing_when_one_dies() {
    let db = TempDb::new("lb");
    let url = db.url();
    let args = ["--mode", "stateless", "--store", url.as_str()];
    let w1 = spawn_waiter("w1", &args);
    let w2 = spawn_waiter("w2", &args);
    let w3 = spawn_waiter("w3", &args);
    let lb = balancer(&[&w1, &w2, &w3], &[]);
    let diner = Client::new(lb.addr);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let r = diner.post_json("/v1/orders", &order()).await.unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
        ids.push(r.value()["id"].as_str().unwrap().to_string());
    }
    let mut waiters = [w1, w2, w3];
    waiters[0].kill();
    waiters[1].kill();
    // Passive ejection or a retry on connect failure hides the dead waiters; every
    // order is still there, served by whoever is left.
    for id in &ids {
        let r = diner.get(&format!("/v1/orders/{id}")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("bistro-waiter"), Some("w3"));
        assert_eq!(r.value()["notes"]["requests"], "window seat");
    }
    let placed = diner
        .request(
            Method::POST,
            &format!("/v1/orders/{}/place", ids[0]),
            &[],
            None,
        )
        .await
        .unwrap();
    assert_eq!(placed.status, 200, "{}", placed.text());
}

/// One request on a fresh connection: the status line and the problem type, if any.
async fn one_request(addr: SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(b"GET /v1/menu HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut reply))
        .await
        .map_err(|_| "no answer within 20 s".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&reply);
    let status = text.lines().next().unwrap_or("").to_string();
    let kind = text
        .find("/problems/")
        .map(|i| text[i..].split('"').next().unwrap_or("").to_string())
        .unwrap_or_default();
    Ok(format!("{status} {kind}").trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_out_of_file_descriptors_refuses_clearly_and_blames_no_waiter() {
    // Regression: out of descriptors, the balancer failed to connect upstream, counted
    // that against its only waiter, ejected it, and answered 503 to everyone.
    let w1 = spawn_waiter("w1", &[]);
    let backend = format!("w1={}", w1.addr);
    let lb = spawn_bistro_with_fd_limit(
        "balancer",
        64,
        &[
            "balancer",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--backend",
            &backend,
            "--max-connections-per-ip",
            "0",
            "--workers",
            "2",
        ],
    );
    let admin = Client::new(lb.admin.expect("the balancer names its admin address"));
    let clients: Vec<_> = (0..200)
        .map(|_| tokio::spawn(one_request(lb.addr)))
        .collect();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for c in clients {
        let outcome = c.await.unwrap().unwrap_or_else(|e| format!("error: {e}"));
        *outcomes.entry(outcome).or_default() += 1;
    }
    let served = outcomes.get("HTTP/1.1 200 OK").copied().unwrap_or(0);
    let refused = outcomes
        .get("HTTP/1.1 503 Service Unavailable /problems/balancer-busy")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        served + refused,
        200,
        "every client is served or clearly refused: {outcomes:?}"
    );
    assert!(served > 0 && refused > 0, "{outcomes:?}");
    let w1_view = admin.get("/backends").await.unwrap().value()[0].clone();
    assert_eq!(w1_view["health"], "up", "{w1_view}");
    let metrics = admin.get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains("bistro_balancer_backend_ejections_total{backend=\"w1\"} 0\n"),
        "the balancer's own trouble never ejects the waiter"
    );
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("bistro_balancer_accept_errors_total ")
            + value("bistro_balancer_local_errors_total ")
            > 0.0,
        "the test really ran the balancer out of descriptors: {outcomes:?}"
    );
    // With the load gone, everyone is served again.
    for _ in 0..20 {
        assert_eq!(one_request(lb.addr).await.unwrap(), "HTTP/1.1 200 OK");
    }
}

#[test]
fn bistro_up_starts_a_cluster_and_stops_every_process_on_sigterm() {
    let mut up = Command::new(env!("CARGO_BIN_EXE_bistro"))
        .args([
            "up",
            "--waiters",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(up.stdout.take().unwrap());
    let mut balancer: Option<SocketAddr> = None;
    let mut admin: Option<SocketAddr> = None;
    let mut token: Option<String> = None;
    let mut waiter_ports = Vec::new();
    for line in stdout.lines().map_while(Result::ok) {
        if let Some(rest) = line.trim().strip_prefix("balancer") {
            let url = rest.split_whitespace().next().unwrap();
            balancer = Some(url.trim_start_matches("http://").parse().unwrap());
            let admin_url = rest.split("(admin http://").nth(1).unwrap();
            admin = Some(admin_url.trim_end_matches(')').parse().unwrap());
        } else if let Some(rest) = line.trim().strip_prefix("admin token") {
            token = rest.split_whitespace().next().map(str::to_string);
        } else if line.trim().starts_with("waiter") {
            let url = line.split_whitespace().last().unwrap();
            waiter_ports.push(
                url.trim_start_matches("http://")
                    .parse::<SocketAddr>()
                    .unwrap(),
            );
        }
        if line.contains("Ctrl-C") {
            break;
        }
    }
    let balancer = balancer.expect("up prints the balancer's URL");
    assert_eq!(waiter_ports.len(), 2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = admin.expect("up prints the admin address it really got");
    let token = token.expect("up prints the admin token it generated");
    rt.block_on(async {
        let diner = Client::new(balancer);
        let r = diner.post_json("/v1/orders", &order()).await.unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
        let operator = Client::new(admin);
        let refused = operator.get("/backends").await.unwrap();
        assert_eq!(refused.status, 401, "the admin API wants the token");
        let bearer = format!("Bearer {token}");
        let listed = operator
            .request(
                Method::GET,
                "/backends",
                &[("authorization", &bearer)],
                None,
            )
            .await
            .unwrap();
        assert_eq!(listed.status, 200, "{}", listed.text());
        assert_eq!(listed.value().as_array().unwrap().len(), 2);
    });
    bistro_supervise::send_signal("bistro up", up.id(), bistro_supervise::Signal::Term)
        .expect("SIGTERM to bistro up");
    let deadline = Instant::now() + Duration::from_secs(20);
    while up.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "bistro up did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for addr in waiter_ports.iter().chain([&balancer]) {
        assert!(
            std::net::TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_err(),
            "{addr} still accepts connections after up stopped"
        );
    }
}

/// The processes whose parent is `pid` (from /proc: Linux).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The fields after the command name (which may hold spaces) start at ") ".
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let parent = fields.next().and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) && state != Some("Z") {
            out.push(child);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, r)| r.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

#[test]
fn nothing_bistro_up_started_outlives_it_when_it_is_killed() {
    let mut up = Command::new(env!("CARGO_BIN_EXE_bistro"))
        .args([
            "up",
            "--waiters",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(up.stdout.take().unwrap());
    for line in stdout.lines().map_while(Result::ok) {
        if line.contains("Ctrl-C") {
            break;
        }
    }
    let children = children_of(up.id());
    assert_eq!(
        children.len(),
        3,
        "two waiters and a balancer: {children:?}"
    );
    // SIGKILL: no destructor, no signal handler runs in `bistro up`.
    up.kill().unwrap();
    up.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while children.iter().any(|c| alive(*c)) {
        assert!(
            Instant::now() < deadline,
            "children of a killed bistro up are still running: {:?}",
            children.iter().filter(|c| alive(**c)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
