//! The line protocol as a user meets it: real `bistro waiter --tcp-listen` and `bistro
//! balancer --tcp-listen` processes on 127.0.0.1:0, talked to over plain sockets.

mod support;

use bistro_client::Client;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use std::time::Duration;
use support::{Proc, TempDb};

/// Starts `bistro <args>`; its HTTP and line-protocol addresses come from its
/// readiness line.
fn spawn(name: &str, args: &[&str]) -> (Proc, SocketAddr) {
    let proc = support::spawn_bistro(name, args);
    let tcp = proc
        .tcp
        .unwrap_or_else(|| panic!("{name} reported no tcp address"));
    (proc, tcp)
}

fn waiter(id: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args = vec![
        "waiter",
        "--id",
        id,
        "--listen",
        "127.0.0.1:0",
        "--tcp-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    spawn(id, &args)
}

/// A line-protocol client on a blocking socket.
struct Diner {
    reader: BufReader<TcpStream>,
    greeting: String,
}

impl Diner {
    fn connect(addr: SocketAddr) -> Diner {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        let greeting = read_line(&mut reader).expect("a greeting");
        Diner { reader, greeting }
    }

    /// Sends `line`, returns (data lines, status line); the status must start with `expect`.
    fn send(&mut self, line: &str, expect: &str) -> (Vec<String>, String) {
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        let mut data = Vec::new();
        loop {
            let l = read_line(&mut self.reader).expect("a reply");
            if l.starts_with("OK") || l.starts_with("ERR") {
                assert!(l.starts_with(expect), "{line} -> {l} ({data:?})");
                return (data, l);
            }
            data.push(l);
        }
    }

    fn next(&mut self) -> Option<String> {
        read_line(&mut self.reader)
    }
}

fn read_line(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => None,
        Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_string()),
        Err(e) => panic!("reading a line: {e}"),
    }
}

fn session_of(lines: &[String]) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("session "))
        .and_then(|r| r.split_whitespace().next())
        .expect("a session line")
        .to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `GET /v1/orders` on `addr` naming `session` in the `Bistro-Session` header.
fn orders_over_http(addr: SocketAddr, session: &str) -> serde_json::Value {
    runtime().block_on(async {
        Client::new(addr)
            .request(
                http::Method::GET,
                "/v1/orders",
                &[("bistro-session", session)],
                None,
            )
            .await
            .unwrap()
            .value()
    })
}

#[test]
fn a_whole_order_through_the_balancer_then_read_over_http() {
    let (w1, w1_tcp) = waiter(
        "w1",
        &["--kitchen-seconds", "0.2", "--kitchen-queue-seconds", "0.1"],
    );
    let (w2, w2_tcp) = waiter(
        "w2",
        &["--kitchen-seconds", "0.2", "--kitchen-queue-seconds", "0.1"],
    );
    let backends = [format!("w1={}", w1.addr), format!("w2={}", w2.addr)];
    let tcp_backends = [format!("w1={w1_tcp}"), format!("w2={w2_tcp}")];
    let (balancer, tcp) = spawn(
        "balancer",
        &[
            "balancer",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--tcp-listen",
            "127.0.0.1:0",
            "--tcp-strategy",
            "consistent-hash",
            "--backend",
            &backends[0],
            "--backend",
            &backends[1],
            "--tcp-backend",
            &tcp_backends[0],
            "--tcp-backend",
            &tcp_backends[1],
        ],
    );
    let mut diner = Diner::connect(tcp);
    assert!(
        diner.greeting.starts_with("OK bistro waiter=w"),
        "{}",
        diner.greeting
    );
    let (data, _) = diner.send("NEW", "OK order");
    let session = session_of(&data);
    diner.send("ADD fries 2", "OK added");
    diner.send("ADD steak-frites", "OK added");
    diner.send("ALLERGY sesame", "OK");
    diner.send("ADD tofu-bowl", "ERR dish-contains-allergen ");
    diner.send("PLACE", "OK placed");
    let mut status = String::new();
    for _ in 0..100 {
        status = diner.send("STATUS", "OK status").1;
        if status.starts_with("OK status ready") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(status.starts_with("OK status ready"), "{status}");
    diner.send("SERVE", "OK served");
    diner.send("PAY", "OK paid");

    // Over HTTP, on the waiter that took it, with the same session id.
    let served_by = if diner.greeting.contains("waiter=w1") {
        &w1
    } else {
        &w2
    };
    let orders = orders_over_http(served_by.addr, &session);
    assert_eq!(orders["orders"][0]["status"], "paid", "{orders}");
    assert_eq!(orders["orders"][0]["total_cents"], 2 * 450 + 2400);
    diner.send("QUIT", "OK bye");
    assert_eq!(diner.next(), None);
    drop(balancer);
}

#[test]
fn stateful_drafts_die_with_the_connection_stateless_ones_move_between_waiters() {
    let (stateful, stateful_tcp) = waiter("w1", &[]);
    let mut diner = Diner::connect(stateful_tcp);
    let (data, _) = diner.send("NEW", "OK order");
    let session = session_of(&data);
    diner.send("ADD fries", "OK");
    drop(diner);
    let mut again = Diner::connect(stateful_tcp);
    let (orders, status) = again.send(&format!("HELLO {session}"), "OK session");
    assert!(
        orders.is_empty() && status.contains("no order yet"),
        "{status}"
    );
    assert_eq!(
        orders_over_http(stateful.addr, &session)["orders"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let db = TempDb::new("tcp-stateless");
    let store = db.url();
    let (a, a_tcp) = waiter("wa", &["--mode", "stateless", "--store", &store]);
    let (b, b_tcp) = waiter("wb", &["--mode", "stateless", "--store", &store]);
    let mut on_a = Diner::connect(a_tcp);
    let (data, _) = on_a.send("NEW", "OK order");
    let session = session_of(&data);
    on_a.send("ADD pad-thai", "OK");
    drop(on_a); // no PLACE: in stateless mode the open order is already stored
    let mut on_b = Diner::connect(b_tcp);
    assert!(on_b.greeting.contains("waiter=wb mode=stateless"));
    let (orders, status) = on_b.send(&format!("HELLO {session}"), "OK session");
    assert!(
        status.contains("current order") && status.ends_with(" open"),
        "{status} {orders:?}"
    );
    on_b.send("SPICE 4", "OK");
    on_b.send("PLACE", "OK placed");
    let over_http = orders_over_http(a.addr, &session);
    assert_eq!(over_http["orders"][0]["status"], "placed");
    assert_eq!(over_http["orders"][0]["notes"]["spice"], 4);
    drop(b);
}

#[test]
fn limits_line_length_idle_time_and_says_bye_on_sigterm() {
    let (mut w, tcp) = waiter("w1", &["--tcp-idle-timeout-secs", "1"]);
    let mut long = TcpStream::connect(tcp).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    long.write_all(format!("REQUEST {}\n", "x".repeat(3000)).as_bytes())
        .unwrap();
    let mut text = String::new();
    long.read_to_string(&mut text).unwrap();
    assert!(text.contains("\r\nERR line-too-long "), "{text}");

    let mut idle = Diner::connect(tcp);
    let bye = idle.next().unwrap();
    assert!(bye.starts_with("BYE idle-timeout "), "{bye}");
    assert_eq!(idle.next(), None);

    let mut open = Diner::connect(tcp);
    open.send("MENU", "OK");
    let status = w
        .terminate(Duration::from_secs(15))
        .expect("the waiter stops");
    assert!(status.success(), "{status:?}");
    let bye = open.next().unwrap();
    assert!(bye.starts_with("BYE shutting-down "), "{bye}");
    assert_eq!(open.next(), None);
}

#[test]
fn tcp_listen_can_come_from_the_config_file() {
    let dir = std::env::temp_dir().join(format!("bistro-tcp-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bistro.toml");
    std::fs::write(
        &file,
        "[waiter]\ntcp_listen = \"127.0.0.1:0\"\ntcp_max_connections = 8\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (_w, tcp) = spawn(
        "w1",
        &["--config", path, "waiter", "--listen", "127.0.0.1:0"],
    );
    assert!(Diner::connect(tcp).greeting.starts_with("OK bistro"));
    let _removed = std::fs::remove_dir_all(&dir);
}
