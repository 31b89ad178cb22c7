//! `bistro admin` as an operator runs it: the real binary against a real balancer (with
//! an admin token) in front of real waiters, every port chosen by the kernel.

mod support;

use bistro_client::Client;
use serde_json::{Value, json};
use std::process::{Command, Output};
use std::time::Duration;
use support::{Proc, free_port, spawn_balancer, spawn_waiter};

/// The waiters' group secret, which the balancer needs for handoff.
const SECRET: &str = "admin-cli-test-group-secret";
const TOKEN: &str = "admin-cli-test-token";

/// Waiters `w1..wN` behind a balancer whose admin API wants [`TOKEN`].
struct Cluster {
    waiters: Vec<Proc>,
    balancer: Proc,
}

impl Cluster {
    fn start(n: usize) -> Cluster {
        let waiters: Vec<Proc> = (1..=n)
            .map(|i| spawn_waiter(&format!("w{i}"), &["--peer-secret", SECRET]))
            .collect();
        let balancer = spawn_balancer(
            &waiters.iter().collect::<Vec<_>>(),
            "",
            &["--admin-token", TOKEN, "--peer-secret", SECRET],
        );
        Cluster { waiters, balancer }
    }

    fn url(&self) -> String {
        format!("http://{}", self.balancer.admin.unwrap())
    }

    /// `bistro admin --admin URL --token TOKEN ARGS`.
    fn admin(&self, args: &[&str]) -> Output {
        admin(&["--admin", &self.url(), "--token", TOKEN], args)
    }

    /// Like [`Cluster::admin`], which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(out.status.success(), "{args:?} failed: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ARGS --json`, parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.ok(&args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }

    /// The backend `id` as `backends --json` shows it.
    fn backend(&self, id: &str) -> Option<Value> {
        self.json(&["backends"])
            .as_array()
            .expect("a list")
            .iter()
            .find(|b| b["id"] == id)
            .cloned()
    }
}

/// `bistro admin GLOBAL ARGS`, with none of the admin variables inherited.
fn admin(global: &[&str], args: &[&str]) -> Output {
    admin_command(global, args)
        .output()
        .expect("the bistro binary runs")
}

fn admin_command(global: &[&str], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bistro"));
    command
        .arg("admin")
        .args(global)
        .args(args)
        .env_remove("BISTRO_CONFIG")
        .env_remove("BISTRO_ADMIN_URL")
        .env_remove("BISTRO_ADMIN_TOKEN");
    command
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn backends_lists_the_waiters_as_a_table_and_as_json() {
    let cluster = Cluster::start(2);
    // The URL and token from the environment, as an operator's shell would set them.
    let out = admin_command(&[], &["backends"])
        .env("BISTRO_ADMIN_URL", cluster.url())
        .env("BISTRO_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "a header and one line per waiter:\n{table}");
    for header in [
        "ID", "ADDRESS", "HEALTH", "MODE", "WEIGHT", "DRAIN", "PINNED",
    ] {
        assert!(lines[0].contains(header), "{table}");
    }
    for w in &cluster.waiters {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{} ", w.name)))
            .unwrap_or_else(|| panic!("no line for {}:\n{table}", w.name));
        assert!(line.contains(&w.addr.to_string()), "{table}");
    }

    let listed = cluster.json(&["backends"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (view, w) in listed.iter().zip(&cluster.waiters) {
        assert_eq!(view["id"], w.name.as_str());
        assert_eq!(view["address"], w.addr.to_string());
        assert_eq!(view["draining"], false);
    }
}

#[test]
fn add_weight_and_remove_change_what_backends_shows() {
    let cluster = Cluster::start(2);
    let w3 = spawn_waiter("w3", &[]);
    let addr = w3.addr.to_string();

    let out = cluster.ok(&["add", "w3", &addr, "--weight", "2", "--mode", "stateful"]);
    assert!(out.contains("added w3"), "{out}");
    let view = cluster.backend("w3").expect("w3 was added");
    assert_eq!(view["address"], addr);
    assert_eq!(view["weight"], 2);
    assert_eq!(view["mode"], "stateful");

    let again = cluster.admin(&["add", "w3", &addr]);
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    assert!(
        stderr(&again).starts_with("error: Backend exists: "),
        "a problem is `error: title: detail`: {}",
        describe(&again)
    );

    let out = cluster.ok(&["weight", "w3", "5"]);
    assert!(out.contains("w3 now has weight 5"), "{out}");
    assert_eq!(cluster.backend("w3").unwrap()["weight"], 5);

    let out = cluster.ok(&["remove", "w3"]);
    assert!(out.contains("removed w3"), "{out}");
    assert!(cluster.backend("w3").is_none(), "w3 is gone");
    assert_eq!(cluster.json(&["backends"]).as_array().unwrap().len(), 2);

    let unknown = cluster.admin(&["remove", "w3"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", describe(&unknown));
    assert!(
        stderr(&unknown).starts_with("error: Unknown backend: "),
        "{}",
        describe(&unknown)
    );
}

#[test]
fn usage_errors_exit_2_as_clap_does() {
    for args in [
        &["weight", "w1", "heavy"][..],
        &["add", "w9"],
        &["add", "w9", "127.0.0.1:1", "--mode", "sideways"],
        &["plan"],
        &["plan", "--add", "w4"],
        &["plan", "--weight", "w1"],
        &["drain"],
        &["teleport"],
    ] {
        let out = admin(&[], args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
    let out = admin(&["--admin", "https://127.0.0.1:8081"], &["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("plain HTTP"), "{}", describe(&out));
}

#[test]
fn a_wrong_or_missing_token_exits_nonzero_with_the_hint() {
    let cluster = Cluster::start(1);
    let url = cluster.url();
    for global in [
        &["--admin", url.as_str(), "--token", "not-the-token"][..],
        &["--admin", url.as_str()],
    ] {
        let out = admin(global, &["backends"]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("error: Admin token required: "),
            "{}",
            describe(&out)
        );
        assert!(
            err.contains("--token") && err.contains("BISTRO_ADMIN_TOKEN"),
            "{}",
            describe(&out)
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn an_unreachable_admin_url_is_named_with_a_hint() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = admin(&["--admin", &url, "--token", TOKEN], &["backends"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains(&url), "the URL is named: {err}");
    assert!(err.contains("--admin"), "--admin is suggested: {err}");
}

#[test]
fn drain_then_backends_shows_draining_and_undrain_clears_it() {
    let cluster = Cluster::start(2);
    let out = cluster.ok(&["drain", "w1"]);
    assert!(out.contains("w1 is draining"), "{out}");
    assert_eq!(cluster.backend("w1").unwrap()["draining"], true);
    assert_eq!(cluster.backend("w2").unwrap()["draining"], false);
    let table = cluster.ok(&["backends"]);
    let w1 = table.lines().find(|l| l.starts_with("w1 ")).unwrap();
    // w1 holds no session: its drain is done as soon as it is counted.
    assert!(w1.contains("draining") || w1.contains("done"), "{table}");

    let out = cluster.ok(&["undrain", "w1"]);
    assert!(out.contains("w1 takes new sessions again"), "{out}");
    assert_eq!(cluster.backend("w1").unwrap()["draining"], false);
}

#[test]
fn status_reports_the_backends() {
    let cluster = Cluster::start(2);
    let status = cluster.json(&["status"]);
    assert_eq!(status["backends"], 2, "{status}");
    let out = cluster.ok(&["status"]);
    assert!(out.starts_with("backends "), "{out}");
    assert!(out.contains("panic mode"), "{out}");
    assert!(out.contains("client connections"), "{out}");
}

// ---- The tests below need what the server side lands with (issue 11): `GET
// /backends/{id}`, drain progress in the backend view, drain options and `GET /plan`.

/// Diners with a session each through the balancer until at least `per_waiter` are
/// pinned to every waiter; their clients and order ids.
fn diners(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    per_waiter: usize,
) -> Vec<(Client, String)> {
    rt.block_on(async {
        let mut diners = Vec::new();
        let mut pinned = std::collections::BTreeMap::<String, usize>::new();
        for _ in 0..90 {
            if cluster
                .waiters
                .iter()
                .all(|w| pinned.get(&w.name).copied().unwrap_or(0) >= per_waiter)
            {
                break;
            }
            let diner = Client::new(cluster.balancer.addr);
            let r = diner
                .post_json(
                    "/v1/orders",
                    &json!({"items":[{"dish":"fries","quantity":1}]}),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 201, "{}", r.text());
            *pinned
                .entry(r.header("bistro-waiter").unwrap().to_string())
                .or_default() += 1;
            let id = r.value()["id"].as_str().unwrap().to_string();
            diners.push((diner, id));
        }
        diners
    })
}

/// Keeps every diner coming back (a handoff may move a session on its next request)
/// until the runtime is dropped.
fn keep_dining(rt: &tokio::runtime::Runtime, diners: Vec<(Client, String)>) {
    for (diner, id) in diners {
        rt.spawn(async move {
            loop {
                let _ = diner.get(&format!("/v1/orders/{id}")).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn backend_shows_one_backend_in_full() {
    let cluster = Cluster::start(2);
    let view = cluster.json(&["backend", "w2"]);
    assert_eq!(view["id"], "w2");
    assert_eq!(view["address"], cluster.waiters[1].addr.to_string());
    assert!(view["drain"].is_null(), "not draining: {view}");
    let out = cluster.ok(&["backend", "w2"]);
    assert!(out.starts_with("id "), "{out}");
    assert!(out.contains(&cluster.waiters[1].addr.to_string()), "{out}");
    let unknown = cluster.admin(&["backend", "w9"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", describe(&unknown));
    assert!(stderr(&unknown).starts_with("error: Unknown backend: "));
}

#[test]
fn drain_with_handoff_reports_its_progress() {
    let rt = runtime();
    let cluster = Cluster::start(2);
    let _diners = diners(&rt, &cluster, 2);
    let view = cluster.json(&["drain", "w1", "--handoff", "--deadline", "30"]);
    assert_eq!(view["id"], "w1");
    assert_eq!(view["draining"], true, "{view}");
    let drain = &view["drain"];
    assert_eq!(drain["handoff"], true, "{view}");
    assert!(
        matches!(drain["state"].as_str(), Some("draining" | "done")),
        "{view}"
    );
    let deadline = drain["deadline_at"].as_u64().unwrap();
    let started = drain["started_at"].as_u64().unwrap();
    assert!((29..=31).contains(&(deadline - started)), "{view}");
    let table = cluster.ok(&["backends"]);
    let w1 = table.lines().find(|l| l.starts_with("w1 ")).unwrap();
    assert!(w1.contains("handoff"), "{table}");
    let out = cluster.ok(&["undrain", "w1"]);
    assert!(out.contains("takes new sessions again"), "{out}");
    assert!(cluster.backend("w1").unwrap()["drain"].is_null());
}

#[test]
fn drain_wait_follows_a_handoff_until_done_and_remove_when_done_removes_it() {
    let rt = runtime();
    let cluster = Cluster::start(2);
    let diners = diners(&rt, &cluster, 3);
    keep_dining(&rt, diners);
    let out = cluster.admin(&[
        "drain",
        "w1",
        "--handoff",
        "--deadline",
        "60",
        "--remove-when-done",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("w1 drained"), "{}", describe(&out));
    assert!(
        stdout.contains("0 lost"),
        "a handoff loses nobody: {stdout}"
    );
    assert!(
        cluster.backend("w1").is_none(),
        "removed when done: {:?}",
        cluster.json(&["backends"])
    );
}

#[test]
fn drain_wait_exits_1_when_the_deadline_passes() {
    let rt = runtime();
    let cluster = Cluster::start(2);
    let _diners = diners(&rt, &cluster, 2);
    // No handoff: the pinned diners stay until they leave, which they do not.
    let out = cluster.admin(&["drain", "w1", "--deadline", "1", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("expired"), "{}", describe(&out));
    assert!(err.contains("w1"), "{}", describe(&out));
    assert_eq!(cluster.backend("w1").unwrap()["drain"]["state"], "expired");
}

#[test]
fn plan_prints_what_a_change_would_move() {
    let rt = runtime();
    let cluster = Cluster::start(3);
    let _diners = diners(&rt, &cluster, 2);
    let out = cluster.ok(&["plan", "--remove", "w2"]);
    assert!(out.starts_with("plan: remove w2"), "{out}");
    assert!(out.contains("pinned session"), "{out}");
    assert!(out.contains("of new keys would move"), "{out}");

    let plan = cluster.json(&["plan", "--remove", "w2"]);
    assert!(plan["strategy"].is_string(), "{plan}");
    let backends = plan["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 3, "{plan}");
    let w2 = backends.iter().find(|b| b["id"] == "w2").unwrap();
    assert!(w2["after"].is_null(), "{plan}");
    assert!(plan["sessions"]["moving"].as_u64().unwrap() >= 2, "{plan}");
    let moved = plan["new_keys"]["moved_share"].as_f64().unwrap();
    assert!(moved > 0.0 && moved <= 1.0, "{plan}");
    // Nothing changed.
    assert_eq!(cluster.json(&["backends"]).as_array().unwrap().len(), 3);

    let plan = cluster.json(&["plan", "--add", "w4=127.0.0.1:1", "--weight", "w1:3"]);
    let backends = plan["backends"].as_array().unwrap();
    let w4 = backends
        .iter()
        .find(|b| b["id"] == "w4")
        .expect("w4 in the plan");
    assert!(w4["before"].is_null(), "{plan}");
    let w1 = backends.iter().find(|b| b["id"] == "w1").unwrap();
    assert_eq!(w1["after"]["weight"], 3, "{plan}");
    assert!(cluster.backend("w4").is_none(), "a plan adds nothing");
}
