//! `Idempotency-Key`: doing a POST at most once, however often it is sent.
//!
//! A diner (or the balancer, retrying a request whose connection died) may send the same
//! POST twice. With an `Idempotency-Key` header the waiter claims the key in the store
//! before doing the work, records the response after, and answers every repeat with the
//! recorded response (marked `Idempotency-Replayed: true`) instead of doing the work
//! again. The key is scoped to the session and bound to a fingerprint of the request
//! (SHA-256 of method, path and body), so reusing a key for a different request is a
//! client bug answered 422 rather than a silent replay of something else.
//!
//! What is recorded: successful (2xx) responses only. A refusal that changed nothing
//! releases the key (`idempotency_abort`), so a corrected retry may run. A failure whose
//! effect is unknown (the store failed *during* the write) keeps the key claimed: retries
//! are told 409 `idempotency-in-progress` until the store's pending window lapses,
//! rather than risking the write twice.

use crate::Waiter;
use crate::problem::Problem;
use axum::response::{IntoResponse, Response};
use bistro_store::{IdempotencyBegin, OrderStore, SessionId, StoredResponse};
use http::header::{CONTENT_TYPE, ETAG, LOCATION};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use sha2::{Digest, Sha256};
use std::future::Future;

/// The request header carrying the key.
pub const KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header marking a replayed answer.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotency-replayed");
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A validated idempotency key: 1-255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Reads the key from `headers`: `Ok(None)` when absent.
    ///
    /// # Errors
    /// 400 `invalid-idempotency-key` when it is repeated, empty, too long or not
    /// visible ASCII.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, Problem> {
        let mut values = headers.get_all(KEY_HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(invalid_key(
                "the request carries more than one Idempotency-Key header; send exactly one",
            ));
        }
        let bytes = value.as_bytes();
        if bytes.is_empty()
            || bytes.len() > MAX_KEY_LEN
            || !bytes.iter().all(|b| b.is_ascii_graphic())
        {
            return Err(invalid_key(
                "an Idempotency-Key must be 1 to 255 visible ASCII characters (no spaces); a random UUID is a good key",
            ));
        }
        Ok(Some(IdempotencyKey(
            String::from_utf8_lossy(bytes).into_owned(),
        )))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn invalid_key(detail: &str) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-idempotency-key",
        "Invalid Idempotency-Key",
        detail,
    )
}

/// SHA-256 (hex) of the method, path and body: what a key is bound to.
pub fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in h.finalize() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// A successful answer: a JSON body with a status and a few headers. It is what
/// handlers produce and what a key records.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: String,
}

impl Reply {
    /// A JSON answer.
    pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Reply {
        let body = serde_json::to_string(value).expect("response types serialize");
        Reply {
            status,
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.headers.push((name, value));
        self
    }

    fn to_stored(&self) -> StoredResponse {
        let headers = self
            .headers
            .iter()
            .filter(|(name, _)| [LOCATION, ETAG, CONTENT_TYPE].contains(name))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
            })
            .collect();
        StoredResponse {
            status: self.status.as_u16(),
            headers,
            body: self.body.clone(),
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.body).into_response();
        for (name, value) in self.headers {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

/// Why the work of a request failed, and whether it may have taken effect anyway.
#[derive(Debug)]
pub struct Failure {
    pub problem: Problem,
    /// The store failed during the write: the change may or may not be stored.
    pub maybe_applied: bool,
}

impl From<Problem> for Failure {
    fn from(problem: Problem) -> Failure {
        Failure {
            problem,
            maybe_applied: false,
        }
    }
}

impl Failure {
    /// A failure whose effect is unknown.
    pub fn maybe_applied(problem: Problem) -> Failure {
        Failure {
            problem,
            maybe_applied: true,
        }
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, stored.body).into_response();
    for (name, value) in &stored.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                resp.headers_mut().insert(name, value);
            }
            _ => {
                tracing::warn!(header = %name, "a stored idempotent response holds an invalid header; not replaying it")
            }
        }
    }
    resp.headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    resp
}

/// Runs `work` for the request, at most once per key when `key` is given (see the
/// module docs for what is recorded).
pub async fn once<W>(
    waiter: &Waiter,
    session: SessionId,
    key: Option<&IdempotencyKey>,
    fingerprint: &str,
    work: W,
) -> Response
where
    W: Future<Output = Result<Reply, Failure>>,
{
    let Some(key) = key else {
        return match work.await {
            Ok(reply) => reply.into_response(),
            Err(failure) => failure.problem.into_response(),
        };
    };
    let store = waiter.store();
    let begun = store
        .idempotency_begin(session, key.as_str(), fingerprint, waiter.clock().now())
        .await;
    match begun {
        Err(e) => return waiter.store_problem(&e).into_response(),
        Ok(IdempotencyBegin::Replay(stored)) => {
            waiter.metrics().idempotent_replay();
            return replay(stored);
        }
        Ok(IdempotencyBegin::Mismatch) => {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused for another request",
                "this Idempotency-Key was already used in your session for a different request (method, path or body); use a fresh key for a new request",
            )
            .into_response();
        }
        Ok(IdempotencyBegin::InProgress) => {
            return Problem::new(
                StatusCode::CONFLICT,
                "idempotency-in-progress",
                "The same request is still in progress",
                "a request with this Idempotency-Key is still being handled (or its outcome is not yet known); retry in a moment with the same key",
            )
            .retry_after(1)
            .into_response();
        }
        Ok(IdempotencyBegin::Proceed) => {}
    }
    match work.await {
        Ok(reply) => {
            let stored = reply.to_stored();
            if let Err(e) = store
                .idempotency_finish(session, key.as_str(), &stored, waiter.clock().now())
                .await
            {
                // The work is stored, so the diner gets its success; a repeat will wait
                // for the pending window and then run again.
                tracing::warn!(error = %e, "could not record an idempotent response");
            }
            reply.into_response()
        }
        Err(failure) if failure.maybe_applied => {
            tracing::warn!(
                kind = failure.problem.kind(),
                "the outcome of an idempotent request is unknown; keeping its key claimed so a retry cannot apply it twice"
            );
            failure.problem.into_response()
        }
        Err(failure) => {
            if let Err(e) = store.idempotency_abort(session, key.as_str()).await {
                tracing::warn!(error = %e, "could not release an idempotency key after a refused request");
            }
            failure.problem.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(v: &str) -> Result<Option<IdempotencyKey>, Problem> {
        let mut h = HeaderMap::new();
        h.insert(KEY_HEADER, HeaderValue::from_str(v).unwrap());
        IdempotencyKey::from_headers(&h)
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert_eq!(key("abc-123_XYZ").unwrap().unwrap().as_str(), "abc-123_XYZ");
        assert!(key(&"k".repeat(255)).unwrap().is_some());
        for bad in [
            String::new(),
            "k".repeat(256),
            "has space".into(),
            "tab\there".into(),
        ] {
            assert_eq!(
                key(&bad).unwrap_err().kind(),
                "invalid-idempotency-key",
                "{bad:?}"
            );
        }
        assert_eq!(
            IdempotencyKey::from_headers(&HeaderMap::new()).unwrap(),
            None
        );
        let mut twice = HeaderMap::new();
        twice.append(KEY_HEADER, HeaderValue::from_static("a"));
        twice.append(KEY_HEADER, HeaderValue::from_static("b"));
        assert_eq!(
            IdempotencyKey::from_headers(&twice).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn fingerprints_bind_method_path_and_body() {
        let a = fingerprint(&Method::POST, "/v1/orders", b"{}");
        // sha256("POST\n/v1/orders\n{}"), as computed by any other SHA-256 tool.
        assert_eq!(
            a,
            "d9c6f8048a06e4510b07b5f7b9358b83a5bb393fda5bbec052fd569b15116d0b"
        );
        assert_eq!(a, fingerprint(&Method::POST, "/v1/orders", b"{}"));
        assert_ne!(a, fingerprint(&Method::POST, "/v1/orders", b"{ }"));
        assert_ne!(a, fingerprint(&Method::POST, "/v1/orders/x/place", b"{}"));
        assert_ne!(a, fingerprint(&Method::PUT, "/v1/orders", b"{}"));
        // The separator keeps path and body from sliding into each other.
        assert_ne!(
            fingerprint(&Method::POST, "/a", b"b"),
            fingerprint(&Method::POST, "/a\nb", b"")
        );
    }

    #[test]
    fn only_replayable_headers_are_stored() {
        let reply = Reply::json(StatusCode::CREATED, &serde_json::json!({"id": "x"}))
            .header(LOCATION, HeaderValue::from_static("/v1/orders/x"))
            .header(
                HeaderName::from_static("set-cookie"),
                HeaderValue::from_static("bistro_session=s"),
            );
        let stored = reply.to_stored();
        assert_eq!(stored.status, 201);
        assert_eq!(stored.body, "{\"id\":\"x\"}");
        let names: Vec<&str> = stored.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "location"]);
    }
}
