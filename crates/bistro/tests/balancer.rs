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
use support::{Proc, TempDb, spawn_bistro, spawn_waiter};

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
    let mut waiter_ports = Vec::new();
    for line in stdout.lines().map_while(Result::ok) {
        if let Some(rest) = line.trim().strip_prefix("balancer") {
            let url = rest.split_whitespace().next().unwrap();
            balancer = Some(url.trim_start_matches("http://").parse().unwrap());
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
    rt.block_on(async {
        let diner = Client::new(balancer);
        let r = diner.post_json("/v1/orders", &order()).await.unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
    });
    let pid = up.id() as libc::pid_t;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
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
