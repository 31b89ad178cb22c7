//! The line protocol on real sockets: a waiter served by `run` (HTTP) and `run_tcp_with`
//! (TCP) side by side on 127.0.0.1:0, as `bistro waiter --tcp-listen` runs it, and a
//! line-oriented test client.

use bistro_client::Client;
use bistro_orders::KitchenTimings;
use bistro_store::{MemoryStore, OrderStore, StoreConfig};
use bistro_waiter::{Mode, TcpConfig, Waiter, WaiterConfig, run, run_tcp_with};
use http::Method;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One waiter on two ports, stopped by one signal.
struct Server {
    http: SocketAddr,
    tcp: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    async fn start(config: WaiterConfig, store: Arc<dyn OrderStore>, tcp: TcpConfig) -> Server {
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http, tcp_addr) = (
            http_listener.local_addr().unwrap(),
            tcp_listener.local_addr().unwrap(),
        );
        let waiter = Waiter::new(config, store);
        let (stop, stopped) = watch::channel(false);
        let signal = |mut rx: watch::Receiver<bool>| async move {
            // A dropped sender stops the servers too.
            let _stopped_or_gone = rx.wait_for(|&s| s).await;
        };
        let tasks = vec![
            tokio::spawn(run(http_listener, waiter.clone(), signal(stopped.clone()))),
            tokio::spawn(run_tcp_with(tcp_listener, waiter, tcp, signal(stopped))),
        ];
        Server {
            http,
            tcp: tcp_addr,
            stop,
            tasks,
        }
    }

    async fn memory(mode: Mode) -> Server {
        let store = Arc::new(MemoryStore::new(StoreConfig::default()));
        Server::start(config("w1", mode), store, TcpConfig::default()).await
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
    }
}

fn config(id: &str, mode: Mode) -> WaiterConfig {
    WaiterConfig {
        id: id.into(),
        mode,
        kitchen: KitchenTimings {
            queue_ms: 30,
            cook_ms: 40,
        },
        kitchen_poll: Duration::from_millis(10),
        ..WaiterConfig::default()
    }
}

/// A diner typing lines, reading replies up to their `OK`/`ERR` line.
struct Diner {
    reader: BufReader<TcpStream>,
    greeting: String,
}

impl Diner {
    async fn connect(addr: SocketAddr) -> Diner {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut reader = BufReader::new(stream);
        let greeting = read_line(&mut reader).await.expect("a greeting");
        Diner { reader, greeting }
    }

    /// Sends `line`; returns the data lines and the status line.
    async fn send(&mut self, line: &str) -> (Vec<String>, String) {
        let stream = self.reader.get_mut();
        stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        let mut data = Vec::new();
        loop {
            let l = read_line(&mut self.reader).await.expect("a reply line");
            if l.starts_with("OK") || l.starts_with("ERR") {
                return (data, l);
            }
            data.push(l);
        }
    }

    /// Sends `line` and returns the status line, which must start with `expect`.
    async fn expect(&mut self, line: &str, expect: &str) -> (Vec<String>, String) {
        let (data, status) = self.send(line).await;
        assert!(status.starts_with(expect), "{line} -> {status} ({data:?})");
        (data, status)
    }

    /// The next line, or `None` at EOF.
    async fn next(&mut self) -> Option<String> {
        read_line(&mut self.reader).await
    }
}

async fn read_line(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    let n = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
        .await
        .expect("the server answers within 10 s")
        .unwrap();
    (n > 0).then(|| line.trim_end_matches(['\r', '\n']).to_string())
}

/// The session id from `session <id> ...` data lines or the HELLO/NEW reply.
fn session_of(lines: &[String]) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("session "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a session line")
        .to_string()
}

#[tokio::test]
async fn a_whole_stateful_order_and_its_http_view() {
    let server = Server::memory(Mode::Stateful).await;
    let mut diner = Diner::connect(server.tcp).await;
    assert!(
        diner
            .greeting
            .starts_with("OK bistro waiter=w1 mode=stateful"),
        "{}",
        diner.greeting
    );
    let (menu, _) = diner.expect("MENU", "OK").await;
    assert!(
        menu.iter().any(|l| l.starts_with("dish fries ")),
        "{menu:?}"
    );
    let (data, _) = diner.expect("NEW", "OK order").await;
    let session = session_of(&data);
    diner.expect("ADD fries 2", "OK added 2 x fries").await;
    diner.expect("ALLERGY peanuts", "OK").await;
    diner
        .expect("ADD satay-skewers", "ERR dish-contains-allergen ")
        .await;
    diner.expect("SPICE 3", "OK spice 3").await;
    diner
        .expect("REQUEST extra napkins", "OK request noted")
        .await;
    diner.expect("PLACE", "OK placed").await;

    // The placed order is an ordinary order in the waiter's store, under the session.
    let http = Client::new(server.http);
    http.set_cookie("bistro_session", &session);
    let orders = http.get("/v1/orders").await.unwrap().value();
    let order = &orders["orders"][0];
    assert_eq!(order["items"][0]["dish"], "fries");
    assert_eq!(order["notes"]["requests"], "extra napkins");
    let by_header = Client::new(server.http)
        .request(
            Method::GET,
            "/v1/orders",
            &[("bistro-session", &session)],
            None,
        )
        .await
        .unwrap()
        .value();
    assert_eq!(by_header["orders"][0]["id"], order["id"]);

    // The kitchen cooks it; then serve and pay over TCP.
    let mut ready = false;
    for _ in 0..100 {
        let (_, status) = diner.expect("STATUS", "OK status").await;
        if status.starts_with("OK status ready") {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "the kitchen never finished the order");
    diner.expect("SERVE", "OK served").await;
    diner.expect("PAY", "OK paid").await;
    diner.expect("CANCEL", "ERR invalid-transition ").await;
    let (show, _) = diner.expect("SHOW", "OK order").await;
    assert!(show.iter().any(|l| l == "total 9.00"), "{show:?}");
    diner.expect("QUIT", "OK bye").await;
    assert_eq!(diner.next().await, None, "QUIT closes the connection");

    let metrics = http.get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains("bistro_tcp_commands_total{command=\"PLACE\",result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "bistro_tcp_commands_total{command=\"ADD\",result=\"dish-contains-allergen\"} 1"
    ));
    server.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_loses_a_stateful_draft() {
    let server = Server::memory(Mode::Stateful).await;
    let mut diner = Diner::connect(server.tcp).await;
    let (data, _) = diner.expect("NEW", "OK").await;
    let session = session_of(&data);
    diner.expect("ADD fries", "OK").await;
    drop(diner);

    let mut again = Diner::connect(server.tcp).await;
    let (orders, status) = again
        .expect(&format!("HELLO {session}"), "OK session")
        .await;
    assert!(orders.is_empty(), "{orders:?}");
    assert!(status.contains("no order yet"), "{status}");
    again.expect("SHOW", "ERR no-order ").await;
    let http = Client::new(server.http);
    http.set_cookie("bistro_session", &session);
    let listed = http.get("/v1/orders").await.unwrap().value();
    assert_eq!(listed["orders"].as_array().unwrap().len(), 0);
    server.stop().await;
}

#[tokio::test]
async fn stateless_orders_survive_the_connection_and_move_between_waiters() {
    // One store shared by two waiters: the central store, in-process.
    let store: Arc<dyn OrderStore> = Arc::new(MemoryStore::new(StoreConfig::default()));
    let tcp = TcpConfig::default();
    let a = Server::start(config("wa", Mode::Stateless), store.clone(), tcp).await;
    let b = Server::start(config("wb", Mode::Stateless), store, tcp).await;
    let mut on_a = Diner::connect(a.tcp).await;
    let (data, _) = on_a.expect("NEW", "OK order").await;
    let session = session_of(&data);
    on_a.expect("ADD fries 2", "OK").await;
    drop(on_a);

    let mut on_b = Diner::connect(b.tcp).await;
    assert!(on_b.greeting.contains("waiter=wb mode=stateless"));
    let (orders, status) = on_b.expect(&format!("HELLO {session}"), "OK session").await;
    assert!(status.contains("current order"), "{status}");
    assert!(orders[0].contains(" open "), "{orders:?}");
    on_b.expect("ADD tomato-soup", "OK").await;
    on_b.expect("PLACE", "OK placed").await;
    let http = Client::new(a.http);
    http.set_cookie("bistro_session", &session);
    let order = http.get("/v1/orders").await.unwrap().value()["orders"][0].clone();
    assert_eq!(order["status"], "placed");
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_line_too_long_is_refused_and_the_connection_closed() {
    let server = Server::memory(Mode::Stateful).await;
    let mut diner = Diner::connect(server.tcp).await;
    let long = format!("REQUEST {}", "x".repeat(2000));
    let (_, status) = diner.send(&long).await;
    assert!(status.starts_with("ERR line-too-long "), "{status}");
    assert_eq!(diner.next().await, None);
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_with_bye() {
    let store = Arc::new(MemoryStore::new(StoreConfig::default()));
    let tcp = TcpConfig {
        idle_timeout: Duration::from_millis(300),
        ..TcpConfig::default()
    };
    let server = Server::start(config("w1", Mode::Stateful), store, tcp).await;
    let mut diner = Diner::connect(server.tcp).await;
    diner.expect("NEW", "OK").await;
    let bye = diner.next().await.unwrap();
    assert!(bye.starts_with("BYE idle-timeout "), "{bye}");
    assert!(
        bye.contains("draft"),
        "the diner is told the draft is gone: {bye}"
    );
    assert_eq!(diner.next().await, None);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_says_bye_and_closes_cleanly() {
    let server = Server::memory(Mode::Stateful).await;
    let mut diner = Diner::connect(server.tcp).await;
    diner.expect("HELP", "OK").await;
    let tcp = server.tcp;
    server.stop().await;
    let bye = diner.next().await.unwrap();
    assert!(bye.starts_with("BYE shutting-down "), "{bye}");
    assert_eq!(diner.next().await, None);
    assert!(
        TcpStream::connect(tcp).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let store = Arc::new(MemoryStore::new(StoreConfig::default()));
    let tcp = TcpConfig {
        max_connections: 1,
        ..TcpConfig::default()
    };
    let server = Server::start(config("w1", Mode::Stateful), store, tcp).await;
    let mut first = Diner::connect(server.tcp).await;
    let mut second = TcpStream::connect(server.tcp).await.unwrap();
    let mut text = String::new();
    second.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("ERR too-many-connections "), "{text}");
    first.expect("MENU", "OK").await;
    drop(first);
    // The slot is free again once the first connection is gone.
    let mut third = None;
    for _ in 0..50 {
        let d = Diner::connect(server.tcp).await;
        if d.greeting.starts_with("OK bistro") {
            third = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    third
        .expect("a connection after the first closed")
        .expect("HELP", "OK")
        .await;
    server.stop().await;
}

/// Waits until `/metrics` shows no open TCP connection.
async fn until_no_tcp_connection_is_open(http: SocketAddr) {
    let http = Client::new(http);
    for _ in 0..200 {
        let metrics = http.get("/metrics").await.unwrap().text();
        if metrics.contains("bistro_tcp_connections 0\n") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a tcp connection is still open");
}

#[tokio::test]
async fn a_client_that_never_reads_is_disconnected_by_the_write_timeout() {
    let store = Arc::new(MemoryStore::new(StoreConfig::default()));
    let tcp = TcpConfig {
        write_timeout: Duration::from_millis(300),
        ..TcpConfig::default()
    };
    let server = Server::start(config("w1", Mode::Stateful), store, tcp).await;
    // A small receive window, so the waiter's replies back up quickly.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.tcp).await.unwrap();
    // HELP over and over, never reading a reply: the waiter's writes block, and once
    // one has waited for the write timeout the waiter drops the connection; the next
    // write here (or the one waiting) then fails.
    let batch = "HELP\r\n".repeat(100);
    let cut = tokio::time::timeout(Duration::from_secs(30), async {
        while stream.write_all(batch.as_bytes()).await.is_ok() {}
    })
    .await;
    assert!(cut.is_ok(), "the waiter never disconnected the client");
    until_no_tcp_connection_is_open(server.http).await;
    // Others are served as usual.
    Diner::connect(server.tcp).await.expect("HELP", "OK").await;
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_per_address_limit_are_refused() {
    let store = Arc::new(MemoryStore::new(StoreConfig::default()));
    let tcp = TcpConfig {
        max_connections_per_ip: 2,
        ..TcpConfig::default()
    };
    let server = Server::start(config("w1", Mode::Stateful), store, tcp).await;
    let mut first = Diner::connect(server.tcp).await;
    let second = Diner::connect(server.tcp).await;
    assert!(
        second.greeting.starts_with("OK bistro"),
        "{}",
        second.greeting
    );
    let third = Diner::connect(server.tcp).await;
    assert!(
        third.greeting.starts_with("ERR too-many-connections ")
            && third.greeting.contains("your address"),
        "{}",
        third.greeting
    );
    let mut third = third;
    assert_eq!(third.next().await, None, "then closed");
    first.expect("MENU", "OK").await;
    drop(second);
    // The address gets its place back once a connection is gone.
    let mut again = None;
    for _ in 0..50 {
        let d = Diner::connect(server.tcp).await;
        if d.greeting.starts_with("OK bistro") {
            again = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    again
        .expect("a connection after the second closed")
        .expect("HELP", "OK")
        .await;
    server.stop().await;
}

/// The outcome's kind as both front ends name it: `ok`, or the problem type's last
/// segment / the `ERR` kind.
fn http_kind(resp: &bistro_client::Response) -> String {
    if resp.status.is_success() {
        return "ok".into();
    }
    let value = resp.value();
    let kind = value["type"].as_str().expect("a problem type");
    kind.rsplit('/').next().unwrap().to_string()
}

fn tcp_kind(status: &str) -> String {
    if status.starts_with("OK") {
        return "ok".into();
    }
    status
        .strip_prefix("ERR ")
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an OK or ERR line")
        .to_string()
}

#[tokio::test]
async fn http_and_tcp_agree_on_every_result_and_error_kind() {
    // The same story told once over HTTP and once over TCP, each in a session of its
    // own, on one stateless waiter whose sessions hold at most two orders.
    let store: Arc<dyn OrderStore> = Arc::new(MemoryStore::new(StoreConfig {
        max_orders_per_session: 2,
        ..StoreConfig::default()
    }));
    let waiter = WaiterConfig {
        max_orders_per_session: 2,
        // The kitchen does not start within the test: a placed order still takes
        // changes, deterministically.
        kitchen: KitchenTimings {
            queue_ms: 600_000,
            cook_ms: 600_000,
        },
        ..config("w1", Mode::Stateless)
    };
    let server = Server::start(waiter, store, TcpConfig::default()).await;

    let http = Client::new(server.http);
    let mut over_http = Vec::new();
    let created = http
        .post_json("/v1/orders", &serde_json::json!({}))
        .await
        .unwrap();
    over_http.push(http_kind(&created));
    let order = format!("/v1/orders/{}", created.value()["id"].as_str().unwrap());
    let fries = serde_json::json!({"dish": "fries", "quantity": 2});
    let patches = [
        serde_json::json!({"items": [fries]}),
        serde_json::json!({"notes": {"allergies": ["peanuts"]}}),
        serde_json::json!({"items": [fries, {"dish": "satay-skewers"}]}),
        serde_json::json!({"items": [fries, {"dish": "unicorn-steak"}]}),
        serde_json::json!({"notes": {"spice": 9}}),
    ];
    for patch in &patches {
        let resp = http.patch_json(&order, patch).await.unwrap();
        over_http.push(http_kind(&resp));
    }
    let place = http
        .request(Method::POST, &format!("{order}/place"), &[], None)
        .await
        .unwrap();
    over_http.push(http_kind(&place));
    let late = http
        .patch_json(&order, &serde_json::json!({"items": [fries]}))
        .await
        .unwrap();
    over_http.push(http_kind(&late));
    let pay = http
        .request(Method::POST, &format!("{order}/pay"), &[], None)
        .await
        .unwrap();
    over_http.push(http_kind(&pay));
    for _ in 0..2 {
        let resp = http
            .post_json("/v1/orders", &serde_json::json!({}))
            .await
            .unwrap();
        over_http.push(http_kind(&resp));
    }

    let mut diner = Diner::connect(server.tcp).await;
    let mut over_tcp = Vec::new();
    for line in [
        "NEW",
        "ADD fries 2",
        "ALLERGY peanuts",
        "ADD satay-skewers",
        "ADD unicorn-steak",
        "SPICE 9",
        "PLACE",
        "ADD fries",
        "PAY",
        "NEW",
        "NEW",
    ] {
        let (_, status) = diner.send(line).await;
        over_tcp.push(tcp_kind(&status));
    }

    assert_eq!(
        over_http,
        [
            "ok",
            "ok",
            "ok",
            "dish-contains-allergen",
            "unknown-dish",
            "bad-spice",
            "ok",
            "ok",
            "invalid-transition",
            "ok",
            "too-many-orders",
        ]
    );
    assert_eq!(over_tcp, over_http, "TCP and HTTP disagree");
    server.stop().await;
}

#[tokio::test]
async fn new_sessions_over_the_rate_or_the_cap_are_refused_and_hold_nothing() {
    // At most one new session per second on this waiter.
    let store = Arc::new(MemoryStore::new(StoreConfig::default()));
    let waiter = WaiterConfig {
        session_rate_per_sec: 1,
        session_burst: 1,
        ..config("w1", Mode::Stateless)
    };
    let server = Server::start(waiter, store.clone(), TcpConfig::default()).await;
    let body = serde_json::json!({"items": [{"dish": "fries"}]});
    let first = Client::new(server.http)
        .post_json("/v1/orders", &body)
        .await
        .unwrap();
    assert_eq!(first.status, 201);
    let refused = Client::new(server.http)
        .post_json("/v1/orders", &body)
        .await
        .unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(http_kind(&refused), "too-many-new-sessions");
    assert!(refused.header("retry-after").is_some());
    assert!(refused.header("set-cookie").is_none());
    let mut diner = Diner::connect(server.tcp).await;
    diner.expect("NEW", "ERR too-many-new-sessions").await;
    assert_eq!(
        store.counts().await.unwrap().sessions,
        1,
        "nothing was held"
    );
    server.stop().await;

    // At most one session in the store (a stateful waiter's own memory).
    let store = Arc::new(MemoryStore::new(StoreConfig {
        max_sessions: 1,
        ..StoreConfig::default()
    }));
    let server = Server::start(
        config("w2", Mode::Stateful),
        store.clone(),
        TcpConfig::default(),
    )
    .await;
    let first = Client::new(server.http)
        .post_json("/v1/orders", &body)
        .await
        .unwrap();
    assert_eq!(first.status, 201);
    let refused = Client::new(server.http)
        .post_json("/v1/orders", &body)
        .await
        .unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(http_kind(&refused), "too-many-sessions");
    assert!(refused.header("retry-after").is_some());
    let mut diner = Diner::connect(server.tcp).await;
    diner.expect("NEW", "ERR too-many-sessions").await;
    assert_eq!(
        store.counts().await.unwrap().sessions,
        1,
        "nothing was held"
    );
    server.stop().await;
}
