//! # bistro-client: one diner's HTTP client
//!
//! The demo's scripted diner, the lab's simulated diners and the integration tests all
//! talk to waiters and balancers the way a browser would: one keep-alive connection, a
//! cookie jar, JSON bodies. This crate is exactly that and no more, on hyper's HTTP/1.1
//! connection API, so a thousand diners cost a thousand small structs rather than a
//! thousand general-purpose clients.
//!
//! The cookie jar is per client and per origin (a client talks to one base address):
//! it keeps `name=value` from `Set-Cookie`, drops cookies set with `Max-Age=0` or an
//! empty value, and ignores `Path`/`Domain` (bistro sets every cookie on `/`).

#![warn(missing_docs)]

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, HOST, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be opened.
    #[error("could not connect to {addr}: {source}")]
    Connect {
        /// The address the client talks to.
        addr: SocketAddr,
        /// Why the connect failed (refused, unreachable, ...).
        source: std::io::Error,
    },
    /// The connection failed while the request was in flight.
    #[error("the HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    /// No complete response within the timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The request could not be built (bad header value or path).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ClientError {
    /// Whether the request certainly never reached the server.
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }
}

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: StatusCode,
    /// The response headers, `Set-Cookie` included (the jar has already taken its
    /// cookies).
    pub headers: HeaderMap,
    /// The whole body, read to its end.
    pub body: Bytes,
}

impl Response {
    /// A header's value as text, if present and valid.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    /// When the body is not JSON of that shape.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as JSON value (`Null` when it is not JSON); handy in tests.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One diner: a connection to `addr` and a cookie jar.
pub struct Client {
    addr: SocketAddr,
    host: HeaderValue,
    timeout: Duration,
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
    jar: std::sync::Mutex<BTreeMap<String, String>>,
}

impl Client {
    /// A client for the server at `addr`, with a 10 s request timeout.
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            host: HeaderValue::from_str(&addr.to_string())
                .expect("a socket address is a valid header"),
            timeout: Duration::from_secs(10),
            conn: Mutex::new(None),
            jar: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Changes the per-request timeout (connect, send and whole body).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Sends `host` as the `Host` header instead of the socket address: for servers
    /// that check it (the balancer's admin API) reached by a name.
    ///
    /// # Errors
    /// [`ClientError::Invalid`] when `host` is not a valid header value.
    pub fn with_host(mut self, host: &str) -> Result<Client, ClientError> {
        self.host = HeaderValue::from_str(host)
            .map_err(|_| ClientError::Invalid(format!("{host:?} is not a valid Host")))?;
        Ok(self)
    }

    /// The server address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A cookie's current value.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Sets a cookie by hand (e.g. to share a session between clients).
    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.into(), value.into());
    }

    /// Forgets every cookie.
    pub fn clear_cookies(&self) {
        self.jar.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Drops the keep-alive connection; the next request opens a new one.
    pub async fn disconnect(&self) {
        *self.conn.lock().await = None;
    }

    /// `GET path`.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub async fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.request(Method::GET, path, &[], None).await
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Response, ClientError> {
        self.request(Method::POST, path, &[], Some(body)).await
    }

    /// `PATCH path` with a JSON body.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub async fn patch_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Response, ClientError> {
        self.request(Method::PATCH, path, &[], Some(body)).await
    }

    /// Sends a request with the jar's cookies and extra `headers`, and reads the whole
    /// response, updating the jar from its `Set-Cookie` headers.
    ///
    /// # Errors
    /// [`ClientError`] when no response arrived.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        json: Option<&serde_json::Value>,
    ) -> Result<Response, ClientError> {
        let body = match json {
            Some(v) => Bytes::from(serde_json::to_vec(v).expect("a JSON value serializes")),
            None => Bytes::new(),
        };
        let ct = json.map(|_| "application/json");
        self.request_raw(method, path, headers, ct, body).await
    }

    /// Like [`Client::request`] with a raw body and content type.
    ///
    /// # Errors
    /// [`ClientError`] when no response arrived.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        let cookies = {
            let jar = self.jar.lock().unwrap_or_else(|p| p.into_inner());
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        if !cookies.is_empty() {
            req = req.header(COOKIE, cookies);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let timeout = self.timeout;
        let resp = tokio::time::timeout(timeout, self.exchange(req))
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        self.absorb_cookies(&resp.headers);
        Ok(resp)
    }

    async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<Response, ClientError> {
        let mut guard = self.conn.lock().await;
        let reusable = matches!(guard.as_ref(), Some(s) if !s.is_closed());
        if !reusable {
            *guard = Some(self.connect().await?);
        }
        let sender = guard.as_mut().expect("connected above");
        // A pooled connection the server closed in the meantime fails at `ready`; that
        // request never left, so one reconnect is safe for any method.
        if sender.ready().await.is_err() {
            *guard = Some(self.connect().await?);
        }
        let sender = guard.as_mut().expect("connected above");
        let result = async {
            let resp = sender.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        }
        .await;
        if result.is_err() {
            *guard = None;
        }
        Ok(result?)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let stream =
            TcpStream::connect(self.addr)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: self.addr,
                    source,
                })?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // The connection task ends when the server closes or the sender is dropped;
            // either way the next request reconnects, so its error needs no handling.
            let _closed = conn.await;
        });
        Ok(sender)
    }

    fn absorb_cookies(&self, headers: &HeaderMap) {
        let mut jar = self.jar.lock().unwrap_or_else(|p| p.into_inner());
        for value in headers.get_all(SET_COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            if let Some(set) = bistro_proto::cookies::parse_set_cookie(value) {
                if set.forget {
                    jar.remove(set.name);
                } else {
                    jar.insert(set.name.to_string(), set.value.to_string());
                }
            }
        }
    }
}
