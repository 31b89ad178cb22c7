//! Handler tests: the whole router, called with `oneshot` over a [`MemoryStore`], with
//! the harness shared by [`orders`] (sessions, bodies, preconditions, idempotency) and
//! [`ops`] (everything around the orders, the kitchen and the sweeper).

mod ops;
mod orders;

use crate::{Mode, Waiter, WaiterConfig};
use axum::Router;
use axum::body::Body;
use bistro_orders::KitchenTimings;
use bistro_store::{IdempotencyBegin, MemoryStore, OrderStore, SessionId, StoreConfig, StoreUrl};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

pub(super) struct App {
    pub(super) waiter: Waiter,
    pub(super) router: Router,
}

pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) json: Value,
}

impl Answer {
    pub(super) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    pub(super) fn kind(&self) -> &str {
        self.json["type"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches(crate::problem::TYPE_PREFIX)
    }
}

pub(super) fn app(config: WaiterConfig) -> App {
    let waiter = Waiter::new(config, Arc::new(MemoryStore::new(StoreConfig::default())));
    App {
        router: waiter.router(),
        waiter,
    }
}

pub(super) fn default_app() -> App {
    app(WaiterConfig::default())
}

impl App {
    pub(super) async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status: parts.status,
            headers: parts.headers,
            json,
        }
    }

    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        session: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.call_with(method, path, session, &[], body).await
    }

    pub(super) async fn call_with(
        &self,
        method: Method,
        path: &str,
        session: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(s) = session {
            req = req.header("cookie", format!("bistro_session={s}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    /// Creates an order in a new session; returns (session, order id).
    pub(super) async fn new_order(&self, body: Value) -> (String, String) {
        let a = self
            .call(Method::POST, "/v1/orders", None, Some(body))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.json);
        (
            a.header("bistro-session").to_string(),
            a.json["id"].as_str().unwrap().to_string(),
        )
    }
}

pub(super) fn fries() -> Value {
    json!({"items": [{"dish": "fries", "quantity": 1}]})
}
