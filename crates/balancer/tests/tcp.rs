//! The layer-4 proxy: fake line-protocol backends on 127.0.0.1:0 behind a balancer
//! started with a TCP listener, checked through real sockets and the admin API.

mod support;

use bistro_balancer::{BackendSpec, BalancerConfig, BalancerError, Listeners, TcpStrategy};
use bistro_client::Client;
use std::net::SocketAddr;
use std::time::Duration;
use support::{Waiter, eventually};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A line server that greets `OK <id>`, answers every line `<id> <line>`, and closes
/// after `QUIT`.
async fn line_backend(id: &str) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let id = id.to_string();
    let task = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let id = id.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                if write
                    .write_all(format!("OK {id}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                while let Ok(Some(line)) = lines.next_line().await {
                    if line == "QUIT" {
                        let _closing = write.write_all(b"OK bye\r\n").await;
                        return;
                    }
                    if write
                        .write_all(format!("{id} {line}\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

struct Proxy {
    tcp: SocketAddr,
    admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), BalancerError>>,
}

impl Proxy {
    async fn start(config: BalancerConfig) -> Proxy {
        let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (http, admin, tcp) = (bind(), bind(), bind());
        let (admin_addr, tcp_addr) = (admin.local_addr().unwrap(), tcp.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            proxy: vec![http],
            admin: Some(admin),
            tcp: Some(tcp),
            tls: None,
        };
        let task = tokio::spawn(bistro_balancer::serve(listeners, config, async move {
            stopped.await.unwrap_or(())
        }));
        Proxy {
            tcp: tcp_addr,
            admin: admin_addr,
            stop: Some(stop),
            task,
        }
    }

    async fn tcp_backends(&self) -> serde_json::Value {
        Client::new(self.admin)
            .get("/tcp/backends")
            .await
            .unwrap()
            .value()
    }

    async fn shutdown(self) {
        self.shutdown_within(Duration::from_secs(10)).await;
    }

    /// Signals shutdown and fails unless the balancer stops within `within`.
    async fn shutdown_within(mut self, within: Duration) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(within, self.task)
            .await
            .expect("the balancer stops")
            .unwrap()
            .unwrap();
    }
}

fn config(tcp: &[(&str, SocketAddr)], strategy: TcpStrategy) -> BalancerConfig {
    let mut c = support::config(&[]);
    c.tcp.strategy = strategy;
    c.tcp.connect_timeout_ms = 500;
    c.tcp.backends = tcp
        .iter()
        .map(|(id, a)| BackendSpec::new(*id, *a))
        .collect();
    c
}

/// A client on the TCP proxy: the greeting names the backend it reached.
struct Line(BufReader<TcpStream>);

impl Line {
    async fn connect(addr: SocketAddr) -> (Line, String) {
        let mut line = Line(BufReader::new(TcpStream::connect(addr).await.unwrap()));
        let greeting = line.read().await.expect("a greeting");
        (line, greeting)
    }

    async fn read(&mut self) -> Option<String> {
        let mut s = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), self.0.read_line(&mut s))
            .await
            .expect("an answer within 5 s")
            .unwrap_or(0);
        (n > 0).then(|| s.trim_end().to_string())
    }

    async fn send(&mut self, text: &str) -> Option<String> {
        self.0
            .get_mut()
            .write_all(format!("{text}\r\n").as_bytes())
            .await
            .unwrap();
        self.read().await
    }
}

#[tokio::test]
async fn round_robin_spreads_connections_and_each_stays_on_its_backend() {
    let (a, _ta) = line_backend("t1").await;
    let (b, _tb) = line_backend("t2").await;
    let proxy = Proxy::start(config(&[("t1", a), ("t2", b)], TcpStrategy::RoundRobin)).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (mut client, greeting) = Line::connect(proxy.tcp).await;
        let id = greeting.trim_start_matches("OK ").to_string();
        for n in 0..3 {
            assert_eq!(
                client.send(&format!("ping {n}")).await.unwrap(),
                format!("{id} ping {n}")
            );
        }
        assert_eq!(client.send("QUIT").await.unwrap(), "OK bye");
        assert_eq!(
            client.read().await,
            None,
            "the backend's close reaches the client"
        );
        seen.push(id);
    }
    seen.sort();
    assert_eq!(seen, ["t1", "t1", "t2", "t2"]);
    let list = proxy.tcp_backends().await;
    assert_eq!(list[0]["connections_total"], 2);
    assert_eq!(list[0]["health_from"], "tcp-connect");
    proxy.shutdown().await;
}

#[tokio::test]
async fn consistent_hash_keeps_a_client_ip_on_one_backend() {
    let mut backends = Vec::new();
    for id in ["t1", "t2", "t3"] {
        backends.push((id, line_backend(id).await));
    }
    let specs: Vec<(&str, SocketAddr)> = backends.iter().map(|(id, (a, _))| (*id, *a)).collect();
    let proxy = Proxy::start(config(&specs, TcpStrategy::ConsistentHash)).await;
    let (_, first) = Line::connect(proxy.tcp).await;
    for _ in 0..5 {
        let (_, again) = Line::connect(proxy.tcp).await;
        assert_eq!(again, first);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_dead_backend_is_skipped_counted_and_marked_down() {
    let (alive, _t) = line_backend("live").await;
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(config(
        &[("dead", dead), ("live", alive)],
        TcpStrategy::RoundRobin,
    ))
    .await;
    for _ in 0..4 {
        let (_, greeting) = Line::connect(proxy.tcp).await;
        assert_eq!(greeting, "OK live", "a failed connect is retried elsewhere");
    }
    let down = eventually(Duration::from_secs(3), || async {
        proxy.tcp_backends().await[0]["health"] == "down"
    })
    .await;
    assert!(down, "{}", proxy.tcp_backends().await);
    let metrics = Client::new(proxy.admin)
        .get("/metrics")
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("bistro_balancer_tcp_backend_up{backend=\"dead\"} 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("bistro_balancer_tcp_connect_errors_total{backend=\"dead\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bistro_balancer_tcp_connections_total{backend=\"live\"} 4"),
        "{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_tcp_backend_follows_the_health_of_its_http_twin() {
    let http = Waiter::start("t1", "stateful").await;
    let (t1, _t1) = line_backend("t1").await;
    let (t2, _t2) = line_backend("t2").await;
    let mut c = config(&[("t1", t1), ("t2", t2)], TcpStrategy::RoundRobin);
    c.backends = vec![http.spec()];
    let proxy = Proxy::start(c).await;
    let list = proxy.tcp_backends().await;
    assert_eq!(list[0]["health_from"], "http");
    // Draining the HTTP backend stops new TCP connections to the same waiter.
    let admin = Client::new(proxy.admin);
    admin
        .post_json("/backends/t1/drain", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(proxy.tcp_backends().await[0]["health"], "draining");
    for _ in 0..4 {
        let (_, greeting) = Line::connect(proxy.tcp).await;
        assert_eq!(greeting, "OK t2");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_waits_for_the_backend_to_close_and_cuts_lingering_clients() {
    let (a, _t) = line_backend("t1").await;
    let mut c = config(&[("t1", a)], TcpStrategy::LeastConnections);
    // Far beyond the bound below: stopping within it means the grace period was not
    // waited out.
    c.shutdown_grace_ms = 600_000;
    let proxy = Proxy::start(c).await;
    let (mut client, _) = Line::connect(proxy.tcp).await;
    assert_eq!(client.send("QUIT").await.unwrap(), "OK bye");
    // The client never closes its side: the tunnel is cut after the FIN timeout (2 s),
    // so shutdown does not have to wait for the grace period. The bound is 15 times
    // the FIN timeout.
    proxy.shutdown_within(Duration::from_secs(30)).await;
    assert_eq!(client.read().await, None);
}

#[tokio::test]
async fn a_tcp_listener_needs_tcp_backends() {
    let mut c = support::config(&[]);
    c.tcp.backends.clear();
    let listeners = Listeners {
        proxy: vec![std::net::TcpListener::bind("127.0.0.1:0").unwrap()],
        admin: None,
        tcp: Some(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
        tls: None,
    };
    let err = bistro_balancer::serve(listeners, c, async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tcp.backends"), "{err}");
}

#[tokio::test]
async fn a_tunnel_idle_for_too_long_is_closed() {
    let (a, _ta) = line_backend("t1").await;
    let mut c = config(&[("t1", a)], TcpStrategy::RoundRobin);
    c.tcp.idle_timeout_ms = 300;
    let proxy = Proxy::start(c).await;
    let (mut client, greeting) = Line::connect(proxy.tcp).await;
    assert_eq!(greeting, "OK t1");
    assert_eq!(client.send("ping").await.unwrap(), "t1 ping");
    // Nobody says anything: the tunnel is cut, the client sees the close.
    assert_eq!(client.read().await, None, "closed after the idle timeout");
    let metrics = Client::new(proxy.admin)
        .get("/metrics")
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("bistro_balancer_tcp_idle_timeouts_total 1\n"),
        "{metrics}"
    );
    // Talking keeps a tunnel open: ten exchanges over more than the idle timeout.
    let (mut busy, _) = Line::connect(proxy.tcp).await;
    for n in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            busy.send(&format!("n{n}")).await.unwrap(),
            format!("t1 n{n}")
        );
    }
    proxy.shutdown().await;
}
