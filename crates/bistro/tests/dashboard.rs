//! The balancer's dashboard in a real browser: headless Chromium, driven over the
//! DevTools protocol, against real waiter and balancer processes.
//!
//! The page must list the waiters, show requests per second rising under load without
//! a reload, preview what a drain with handoff would move, carry the drain out on
//! Confirm and show it done, and turn into cards on a phone-sized screen. With
//! `BISTRO_UPDATE_SCREENSHOT=1` it also saves `docs/img/dashboard.png`.
//!
//! Chromium is required: without it the test fails (CI installs it, see `.ci/run`).

mod support;

use bistro_client::Client;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{Proc, spawn_balancer, spawn_waiter};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "the-waiters-group-secret";
const TOKEN: &str = "an-admin-token-for-the-dashboard";
/// The whole browser part must be over within this.
const BUDGET: Duration = Duration::from_secs(28);

/// A headless Chromium with its own profile directory; killed (and the directory
/// removed) on drop.
struct Chromium {
    child: Child,
    profile: PathBuf,
    /// The browser's DevTools WebSocket, `ws://127.0.0.1:PORT/devtools/browser/ID`.
    devtools: String,
}

impl Chromium {
    fn launch() -> Chromium {
        if let Err(e) = Command::new("chromium")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            panic!(
                "the dashboard test needs Chromium, which could not be run ({e}): apt-get install chromium"
            );
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let profile = std::env::temp_dir().join(format!(
            "bistro-dashboard-chromium-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                // Tests run as root in CI, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts (apt-get install chromium)");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Chromium says where DevTools listens on stderr; keep draining it after.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("DevTools listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(
                        line[at + "DevTools listening on ".len()..]
                            .trim()
                            .to_string(),
                    );
                }
                if std::env::var_os("BISTRO_TEST_VERBOSE").is_some() {
                    eprintln!("[chromium] {line}");
                }
            }
        });
        let devtools = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not say where DevTools listens within 20 s");
            }
        };
        Chromium {
            child,
            profile,
            devtools,
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A minimal DevTools protocol client: one command at a time over the browser's
/// socket, to one page (flat sessions); events are read past and ignored.
struct Cdp {
    socket: Socket,
    next_id: u64,
    session: Option<String>,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("the DevTools WebSocket accepts");
        Cdp {
            socket,
            next_id: 0,
            session: None,
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("DevTools takes the command");
        let wait = async {
            while let Some(frame) = self.socket.next().await {
                let Ok(Message::Text(text)) = frame else {
                    continue;
                };
                let answer: Value = serde_json::from_str(text.as_str()).unwrap();
                if answer["id"] == id {
                    return answer;
                }
            }
            panic!("the DevTools socket closed during {method}");
        };
        let answer = tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("DevTools did not answer {method} within 20 s"));
        if let Some(error) = answer.get("error") {
            panic!("{method} failed: {error}");
        }
        answer["result"].clone()
    }

    /// A new tab, 1280×800, showing `url`.
    async fn open(browser: &Chromium, url: &str) -> Cdp {
        let mut cdp = Cdp::connect(&browser.devtools).await;
        let target = cdp
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let session = cdp
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        cdp.session = Some(session["sessionId"].as_str().unwrap().to_string());
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        cdp.call("Page.navigate", json!({ "url": url })).await;
        cdp
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy (and returns it), or fails at `deadline`
    /// saying what it waited for and what the page showed.
    async fn wait_for(&mut self, what: &str, expression: &str, deadline: Instant) -> Value {
        loop {
            let value = self.eval(expression).await;
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() >= deadline {
                let page = self.eval("document.body.innerText").await;
                panic!("timed out waiting for {what}; the page shows:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&mut self, selector: &str) {
        let clicked = self
            .eval(&format!(
                "(() => {{ const el = document.querySelector({}); if (!el || el.hidden || el.disabled) return false; el.click(); return true; }})()",
                json!(selector)
            ))
            .await;
        assert_eq!(clicked, json!(true), "{selector} is there to click");
    }

    async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }
}

fn balancer(waiters: &[Proc]) -> Proc {
    spawn_balancer(
        &waiters.iter().collect::<Vec<_>>(),
        ",mode=stateful",
        &[
            "--admin-token",
            TOKEN,
            "--peer-secret",
            SECRET,
            "--session-rate-per-ip",
            "0",
        ],
    )
}

/// `n` diners, each with an order on its waiter: who holds how many.
async fn seat_diners(lb: &Proc, n: usize) -> (Vec<(Client, String)>, HashMap<String, usize>) {
    let mut diners = Vec::new();
    let mut homes: HashMap<String, usize> = HashMap::new();
    for _ in 0..n {
        let client = Client::new(lb.addr).with_timeout(Duration::from_secs(10));
        let created = client
            .post_json("/v1/orders", &json!({"items": [{"dish": "fries"}]}))
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.text());
        let home = created.header("bistro-waiter").unwrap().to_string();
        *homes.entry(home).or_default() += 1;
        let order = format!("/v1/orders/{}", created.value()["id"].as_str().unwrap());
        diners.push((client, order));
    }
    (diners, homes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_rates_and_carries_out_a_drain_with_handoff() {
    // First, so a machine without Chromium fails at once with what to install.
    let browser = Chromium::launch();
    let waiters: Vec<Proc> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| {
            spawn_waiter(
                id,
                &[
                    "--mode",
                    "stateful",
                    "--peer-secret",
                    SECRET,
                    "--session-rate",
                    "0",
                ],
            )
        })
        .collect();
    let lb = balancer(&waiters);
    let admin = lb.admin.expect("the balancer's admin address");
    let started = Instant::now();
    let deadline = started + BUDGET;

    let mut cdp = Cdp::open(&browser, &format!("http://{admin}/#token={TOKEN}")).await;

    // The page lists the three waiters, and takes the token out of the address bar.
    cdp.wait_for(
        "three waiters listed",
        "document.querySelectorAll('#rows tr[data-id]').length === 3",
        deadline,
    )
    .await;
    let href = cdp.eval("location.href").await;
    assert!(
        !href.as_str().unwrap().contains(TOKEN),
        "the token stays out of the URL: {href}"
    );
    // Without bistro up there is no process control: no fault button shows.
    let faults = cdp
        .eval("[...document.querySelectorAll('button.fault')].filter(b => !b.hidden).length")
        .await;
    assert_eq!(faults, json!(0), "fault buttons only with control");

    // A bounded load: diners read and change their orders until told to stop (at most
    // the test's budget).
    let (diners, homes) = seat_diners(&lb, 24).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for (client, order) in diners {
        let stop = Arc::clone(&stop);
        load.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut spice = 0;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < BUDGET {
                spice = (spice + 1) % 6;
                for r in [
                    client.get(&order).await,
                    client
                        .patch_json(&order, &json!({"notes": {"spice": spice}}))
                        .await,
                ] {
                    match r {
                        Ok(r) if r.status == 200 => {}
                        Ok(r) => errors.push(format!("{}: {}", r.status, r.text())),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            errors
        }));
    }

    // Requests per second rise on the page, live.
    let rps = cdp
        .wait_for(
            "requests/s above 0 for some waiter",
            "[...document.querySelectorAll('#rows [data-k=rps]')].map(td => parseFloat(td.textContent)).find(v => v > 0)",
            deadline,
        )
        .await;
    eprintln!("the page shows {rps} requests/s");

    // Drain with handoff the waiter that holds the most sessions: preview first.
    let (busiest, held) = homes
        .iter()
        .max_by_key(|(id, n)| (**n, std::cmp::Reverse(id.to_string())))
        .map(|(id, n)| (id.clone(), *n))
        .unwrap();
    cdp.click(&format!(
        "tr[data-id='{busiest}'] button[data-action='handoff']"
    ))
    .await;
    let preview = cdp
        .wait_for(
            "the preview of what moves",
            &format!(
                "(() => {{ const t = document.getElementById('preview-text').textContent; \
                  return !document.getElementById('modal').hidden && t.includes('{busiest} →') \
                  && !document.getElementById('confirm').disabled ? t : ''; }})()"
            ),
            deadline,
        )
        .await;
    let preview = preview.as_str().unwrap().to_string();
    let s = if held == 1 { "" } else { "s" };
    assert!(
        preview.starts_with(&format!(
            "{held} pinned session{s} would move: {busiest} → "
        )),
        "{preview}"
    );
    assert!(preview.contains("of new keys would move"), "{preview}");
    let changed = cdp
        .eval(&format!(
            "document.querySelector(\"tr[data-id='{busiest}']\").dataset.drainState"
        ))
        .await;
    assert_eq!(changed, json!(""), "nothing happens before Confirm");

    cdp.click("#confirm").await;
    cdp.wait_for(
        "the drain to start",
        &format!("document.querySelector(\"tr[data-id='{busiest}']\").dataset.drainState !== ''"),
        deadline,
    )
    .await;
    let drained = cdp
        .wait_for(
            "the drain to finish with no session left",
            &format!(
                "(() => {{ const r = document.querySelector(\"tr[data-id='{busiest}']\"); \
                  return r.dataset.drainState === 'done' && r.dataset.sessionsLeft === '0' \
                  ? r.querySelector('[data-k=drain]').textContent : ''; }})()"
            ),
            deadline,
        )
        .await;
    eprintln!("{busiest}: {drained}");
    assert!(drained.as_str().unwrap().contains("moved"), "{drained}");
    assert_eq!(
        cdp.eval("document.getElementById('modal').hidden").await,
        json!(true)
    );

    if std::env::var_os("BISTRO_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        // A second more, so the shot shows rates over a whole interval after the drain.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let png = cdp.screenshot().await;
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/img/dashboard.png");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, png).unwrap();
        eprintln!("saved {}", path.display());
    }

    stop.store(true, Ordering::Relaxed);
    for task in load {
        let errors = task.await.unwrap();
        assert!(errors.is_empty(), "a diner saw errors: {errors:?}");
    }

    // On a phone-sized screen each waiter is a card.
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
    )
    .await;
    cdp.wait_for(
        "rows shown as cards",
        "getComputedStyle(document.querySelector('#rows tr')).display === 'block' \
         && document.documentElement.scrollWidth <= 390",
        deadline,
    )
    .await;
    eprintln!("the browser part took {:?}", started.elapsed());
}

/// `bistro up` on ephemeral ports; stopped with SIGTERM on drop (so it stops its
/// children: a SIGKILL would leave them running).
struct Up {
    child: Child,
    /// The dashboard link it printed.
    dashboard: String,
}

impl Up {
    fn start() -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bistro"))
            .args([
                "up",
                "--waiters",
                "3",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--admin-token",
                TOKEN,
            ])
            .env("RUST_LOG", "info")
            .env_remove("BISTRO_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("BISTRO_TEST_VERBOSE").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("bistro up starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.trim_start().strip_prefix("dashboard")
                    && let Some(url) = rest.split_whitespace().next()
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let mut up = Up {
            child,
            dashboard: String::new(),
        };
        up.dashboard = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("bistro up prints its dashboard link within 30 s");
        up
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = bistro_supervise::send_signal(
            "bistro up",
            self.child.id(),
            bistro_supervise::Signal::Term,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_bistro_up_the_dashboard_kills_pauses_and_restarts_a_waiter() {
    let browser = Chromium::launch();
    let up = Up::start();
    assert!(
        up.dashboard.starts_with("http://127.0.0.1:")
            && up.dashboard.ends_with(&format!("/#token={TOKEN}")),
        "{}",
        up.dashboard
    );
    let started = Instant::now();
    let deadline = started + BUDGET;
    let mut cdp = Cdp::open(&browser, &up.dashboard).await;
    cdp.wait_for(
        "three waiters listed",
        "document.querySelectorAll('#rows tr[data-id]').length === 3",
        deadline,
    )
    .await;
    cdp.wait_for(
        "fault buttons, since bistro up controls the processes",
        "!document.querySelector(\"tr[data-id='w3'] button[data-action='kill']\").hidden",
        deadline,
    )
    .await;
    let health = "document.querySelector(\"tr[data-id='w3']\").dataset.health";

    // Kill: a confirmation first, then the waiter is gone and the balancer sees it.
    cdp.click("tr[data-id='w3'] button[data-action='kill']")
        .await;
    let intro = cdp
        .eval("document.getElementById('modal-intro').textContent")
        .await;
    assert!(intro.as_str().unwrap().contains("SIGKILL"), "{intro}");
    cdp.click("#confirm").await;
    cdp.wait_for(
        "w3 down after the kill",
        &format!("{health} === 'down'"),
        deadline,
    )
    .await;
    let reason = cdp
        .eval("document.querySelector(\"tr[data-id='w3'] [data-k=health]\").textContent")
        .await;
    assert!(reason.as_str().unwrap().contains("refused"), "{reason}");

    // Restart: up again on the same address.
    cdp.click("tr[data-id='w3'] button[data-action='restart']")
        .await;
    cdp.click("#confirm").await;
    cdp.wait_for(
        "w3 up after the restart",
        &format!("{health} === 'up'"),
        deadline,
    )
    .await;

    // Pause: the process hangs, the checks time out; resume brings it back.
    cdp.click("tr[data-id='w2'] button[data-action='pause']")
        .await;
    cdp.click("#confirm").await;
    let w2 = "document.querySelector(\"tr[data-id='w2']\")";
    cdp.wait_for(
        "w2 down while paused",
        &format!("{w2}.dataset.health === 'down' && {w2}.textContent.includes('timeout')"),
        deadline,
    )
    .await;
    cdp.click("tr[data-id='w2'] button[data-action='resume']")
        .await;
    cdp.wait_for(
        "w2 up after resume",
        &format!("{w2}.dataset.health === 'up'"),
        deadline,
    )
    .await;
    let errors = cdp.eval("document.getElementById('error').hidden").await;
    assert_eq!(errors, json!(true), "no error shown");
    eprintln!("faults from the page took {:?}", started.elapsed());
}
