//! A TCP proxy on a port of its own that a test can cut and restore: the store under
//! test connects through it, so an outage of its server can be staged without touching
//! the real server that other tests share.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    addr: SocketAddr,
    target: String,
    running: Mutex<Option<Running>>,
    /// While set, the server's replies are read and dropped: requests still arrive and
    /// take effect, but the client never hears back (a reply lost on the way).
    swallow: Arc<AtomicBool>,
}

struct Running {
    accept: JoinHandle<()>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let proxy = Proxy {
            addr,
            target: target.to_string(),
            running: Mutex::new(None),
            swallow: Arc::new(AtomicBool::new(false)),
        };
        proxy.serve(listener);
        proxy
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The outage: closes the port and every forwarded connection.
    pub async fn cut(&self) {
        let running = self
            .running
            .lock()
            .unwrap()
            .take()
            .expect("the proxy is running");
        // Awaiting an aborted task yields its cancellation, which is the point: once it
        // returns, the task and its sockets are gone.
        running.accept.abort();
        let _ = running.accept.await;
        let links: Vec<_> = running.links.lock().unwrap().drain(..).collect();
        for link in links {
            link.abort();
            let _ = link.await;
        }
    }

    /// From now on, replies are dropped (see the `swallow` field); `false` lets them
    /// through again.
    pub fn swallow_replies(&self, on: bool) {
        self.swallow.store(on, Ordering::SeqCst);
    }

    /// The recovery: listens on the same port again.
    pub async fn restore(&self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("re-bind the proxy's port");
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let links = Arc::new(Mutex::new(Vec::new()));
        let target = self.target.clone();
        let swallow = Arc::clone(&self.swallow);
        let accept = tokio::spawn({
            let links = Arc::clone(&links);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let target = target.clone();
                    let swallow = Arc::clone(&swallow);
                    let link = tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(&target).await {
                            // Ends when either side closes; errors just end the link.
                            let (mut from_client, mut to_client) = client.into_split();
                            let (mut from_server, mut to_server) = server.into_split();
                            let requests = tokio::io::copy(&mut from_client, &mut to_server);
                            let replies = async {
                                let mut buf = vec![0u8; 16 * 1024];
                                loop {
                                    let n = match from_server.read(&mut buf).await {
                                        Ok(0) | Err(_) => return,
                                        Ok(n) => n,
                                    };
                                    if !swallow.load(Ordering::SeqCst)
                                        && to_client.write_all(&buf[..n]).await.is_err()
                                    {
                                        return;
                                    }
                                }
                            };
                            tokio::select! {
                                _ = requests => {}
                                () = replies => {}
                            }
                        }
                    });
                    links.lock().unwrap().push(link);
                }
            }
        });
        *self.running.lock().unwrap() = Some(Running { accept, links });
    }
}

/// `url` with its `host:port` replaced by `addr`.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let userinfo = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"))
        .unwrap_or_default();
    format!("{scheme}://{userinfo}{addr}{tail}")
}

/// The `host:port` a URL points at, with `default_port` when it names none.
pub fn target(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").expect("a URL with a scheme").1;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:{default_port}")
    }
}
