//! Starting a waiter on a real socket, and the small helpers every test uses.

use bistro_client::{Client, Response};
use bistro_orders::KitchenTimings;
use bistro_store::{MemoryStore, OrderStore, StoreConfig};
use bistro_waiter::{Waiter, WaiterConfig, run};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A waiter served by [`run`] on 127.0.0.1:0 until [`Server::stop`].
pub struct Server {
    pub addr: SocketAddr,
    pub waiter: Waiter,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(config: WaiterConfig, store: Arc<dyn OrderStore>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let waiter = Waiter::new(config, store);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, waiter.clone(), async move {
            // A dropped sender stops the server too.
            let _signal = stopped.await;
        }));
        Server {
            addr,
            waiter,
            stop: Some(stop),
            task,
        }
    }

    pub async fn memory(config: WaiterConfig) -> Server {
        Server::start(config, Arc::new(MemoryStore::new(StoreConfig::default()))).await
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr).with_timeout(Duration::from_secs(10))
    }

    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).unwrap();
        }
    }

    pub async fn stop(mut self) {
        self.signal_stop();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// Small kitchen timings so a lifecycle takes tens of milliseconds.
pub fn fast() -> WaiterConfig {
    WaiterConfig {
        kitchen: KitchenTimings {
            queue_ms: 30,
            cook_ms: 40,
        },
        kitchen_poll: Duration::from_millis(10),
        ..WaiterConfig::default()
    }
}

pub fn kind(resp: &Response) -> String {
    resp.value()["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("https://bistro.dev/problems/")
        .to_string()
}

pub fn assert_problem(resp: &Response, status: u16, expected: &str) {
    assert_eq!(resp.status.as_u16(), status, "{}", resp.text());
    assert_eq!(kind(resp), expected, "{}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json")
    );
    assert!(
        resp.header("bistro-waiter").is_some(),
        "every answer names its waiter"
    );
}

pub async fn create(client: &Client, body: Value) -> Value {
    let resp = client.post_json("/v1/orders", &body).await.unwrap();
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    resp.value()
}

pub fn fries() -> Value {
    json!({"items": [{"dish": "fries", "quantity": 1}]})
}

pub async fn post(client: &Client, path: &str, headers: &[(&str, &str)]) -> Response {
    client
        .request(Method::POST, path, headers, None)
        .await
        .unwrap()
}

pub async fn patch(client: &Client, path: &str, headers: &[(&str, &str)], body: Value) -> Response {
    client
        .request(Method::PATCH, path, headers, Some(&body))
        .await
        .unwrap()
}

pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}
