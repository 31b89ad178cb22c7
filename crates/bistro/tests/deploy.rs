//! The configurations in `deploy/` for teams that keep HAProxy or nginx in front of
//! bistro waiters, proven against real processes: the files are rendered with this
//! run's ports (nothing else changes) and the proxies started from Debian's packages
//! (`.ci/run` installs them when missing; a missing one fails the test, naming it).

mod support;

use bistro_client::Client;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Proc, TempDb, free_port, spawn_waiter};

/// A proxy process, killed on drop.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn binary(name: &str, package: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed; this test needs it (Debian: apt-get install {package})"
            )
        })
}

fn scratch(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "bistro-deploy-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The shipped file with this run's addresses in place of the placeholders.
fn render(file: &str, waiters: &[&Proc], listen: SocketAddr, dir: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (i, w) in waiters.iter().enumerate() {
        let placeholder = format!("127.0.0.1:{}", 7001 + i);
        assert!(text.contains(&placeholder), "{file} names {placeholder}");
        text = text.replace(&placeholder, &w.addr.to_string());
    }
    assert!(
        text.contains("127.0.0.1:8080"),
        "{file} listens on 127.0.0.1:8080"
    );
    text = text
        .replace("127.0.0.1:8080", &listen.to_string())
        .replace("/tmp/bistro-nginx", &dir.to_string_lossy());
    text
}

fn wait_until_listening(addr: SocketAddr, child: &mut Child, name: &str, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            panic!("{name} exited ({status}) before it listened:\n{log}");
        }
        assert!(Instant::now() < deadline, "{name} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_haproxy(waiters: &[&Proc]) -> Proxy {
    let bin = binary("haproxy", "haproxy");
    let dir = scratch("haproxy");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, render("haproxy.cfg", waiters, addr, &dir)).unwrap();
    let check = Command::new(&bin)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy -c refuses deploy/haproxy.cfg: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
    let mut child = Command::new(&bin)
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("haproxy starts");
    wait_until_listening(addr, &mut child, "haproxy", &dir);
    Proxy { child, addr, dir }
}

fn start_nginx(waiters: &[&Proc]) -> Proxy {
    let bin = binary("nginx", "nginx-light");
    let dir = scratch("nginx");
    // Workers of an nginx started as root run as `nobody`: let them use the directory.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, render("nginx.conf", waiters, addr, &dir)).unwrap();
    let check = Command::new(&bin)
        .arg("-t")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t refuses deploy/nginx.conf: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let log = std::fs::File::create(dir.join("nginx.log")).unwrap();
    let mut child = Command::new(&bin)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("nginx starts");
    wait_until_listening(addr, &mut child, "nginx", &dir);
    Proxy { child, addr, dir }
}

/// Diners through `proxy`: each orders, then reads its order ten times; every answer is
/// 200 and comes from the waiter that took the order. Returns each diner's client, order
/// path and waiter.
async fn diners_stick(proxy: SocketAddr) -> Vec<(Client, String, String)> {
    let mut diners = Vec::new();
    for _ in 0..24 {
        let client = Client::new(proxy).with_timeout(Duration::from_secs(10));
        let created = client
            .post_json(
                "/v1/orders",
                &json!({"items": [{"dish": "fries", "quantity": 1}]}),
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.text());
        let home = created.header("bistro-waiter").unwrap().to_string();
        let order = format!("/v1/orders/{}", created.value()["id"].as_str().unwrap());
        for _ in 0..10 {
            let read = client.get(&order).await.unwrap();
            assert_eq!(read.status, 200, "{}", read.text());
            assert_eq!(read.header("bistro-waiter"), Some(home.as_str()), "sticky");
        }
        diners.push((client, order, home));
    }
    let mut per_waiter: HashMap<&str, usize> = HashMap::new();
    for (_, _, home) in &diners {
        *per_waiter.entry(home.as_str()).or_default() += 1;
    }
    assert!(
        per_waiter.len() >= 2,
        "new diners are spread: {per_waiter:?}"
    );
    diners
}

fn waiters() -> Vec<Proc> {
    ["w1", "w2", "w3"]
        .iter()
        .map(|id| spawn_waiter(id, &["--session-rate", "0"]))
        .collect()
}

/// Three stateless waiters on one SQLite file.
fn stateless_waiters(db: &TempDb) -> Vec<Proc> {
    let url = db.url();
    ["w1", "w2", "w3"]
        .iter()
        .map(|id| {
            spawn_waiter(
                id,
                &[
                    "--mode",
                    "stateless",
                    "--store",
                    &url,
                    "--session-rate",
                    "0",
                ],
            )
        })
        .collect()
}

/// After one waiter is killed, every stateless diner still reads its whole order.
async fn stateless_diners_lose_nothing(proxy: SocketAddr, ws: &mut [Proc]) {
    let diners = diners_stick(proxy).await;
    let gone = diners[0].2.clone();
    ws.iter_mut().find(|w| w.name == gone).unwrap().kill();
    for (client, order, _) in &diners {
        let read = client.get(order).await.unwrap();
        assert_eq!(read.status, 200, "{}", read.text());
        assert_ne!(read.header("bistro-waiter"), Some(gone.as_str()));
        assert_eq!(read.value()["items"][0]["dish"], "fries");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_keeps_diners_with_their_waiter_and_says_when_it_is_gone() {
    let mut ws = waiters();
    let proxy = start_haproxy(&ws.iter().collect::<Vec<_>>());
    let diners = diners_stick(proxy.addr).await;
    let gone = diners[0].2.clone();
    ws.iter_mut().find(|w| w.name == gone).unwrap().kill();
    // Until HAProxy's checks mark the waiter down, and after: its diners are told their
    // notes are gone (another waiter's 404 unknown-session, or HAProxy's 503), never an
    // empty order; everyone else carries on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (client, order, home) in &diners {
        let read = client.get(order).await.unwrap();
        if *home == gone {
            assert!(
                read.status == 404 || read.status == 503,
                "{} {}",
                read.status,
                read.text()
            );
            if read.status == 404 {
                assert!(read.text().contains("unknown-session"), "{}", read.text());
            }
        } else {
            assert_eq!(read.status, 200, "{}", read.text());
            assert_eq!(read.header("bistro-waiter"), Some(home.as_str()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_keeps_diners_with_their_waiter_and_says_when_it_is_gone() {
    let mut ws = waiters();
    let proxy = start_nginx(&ws.iter().collect::<Vec<_>>());
    let diners = diners_stick(proxy.addr).await;
    let gone = diners[0].2.clone();
    ws.iter_mut().find(|w| w.name == gone).unwrap().kill();
    for (client, order, home) in &diners {
        let read = client.get(order).await.unwrap();
        if *home == gone {
            // The pinned pool's backup answers: the notes are gone, explicitly.
            assert_eq!(read.status, 404, "{}", read.text());
            assert!(read.text().contains("unknown-session"), "{}", read.text());
        } else {
            assert_eq!(read.status, 200, "{}", read.text());
            assert_eq!(read.header("bistro-waiter"), Some(home.as_str()));
        }
    }
    // A cookie naming no waiter of the map goes to the pool, never elsewhere.
    let stranger = Client::new(proxy.addr);
    stranger.set_cookie("bistro_waiter", "127.0.0.1:1");
    let r = stranger.get("/healthz").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_of_stateless_waiters_loses_nothing_when_one_dies() {
    let db = TempDb::new("deploy-haproxy");
    let mut ws = stateless_waiters(&db);
    let proxy = start_haproxy(&ws.iter().collect::<Vec<_>>());
    stateless_diners_lose_nothing(proxy.addr, &mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_in_front_of_stateless_waiters_loses_nothing_when_one_dies() {
    let db = TempDb::new("deploy-nginx");
    let mut ws = stateless_waiters(&db);
    let proxy = start_nginx(&ws.iter().collect::<Vec<_>>());
    stateless_diners_lose_nothing(proxy.addr, &mut ws).await;
}
