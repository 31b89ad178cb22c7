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
//! effect is unknown (the store said the write may have been applied) keeps the key
//! claimed: retries are told 409 `idempotency-in-progress` until the store's pending
//! window lapses, rather than risking the write twice.
//!
//! ## Before the session exists
//!
//! A request that *starts* a session (a `POST /v1/orders` without a cookie) carries its
//! key before there is a session to scope it to, and its retry — exactly the request a
//! balancer resends when the answer was lost — has no cookie either. So such a request
//! starts the session [`session_for_key`] derives from its key: the retry derives the
//! same session, finds the key's record there and replays the first answer (with the
//! cookie), instead of creating a second session and a duplicate order. Until the
//! cookie arrives the key is the session's only credential, so it must be long and
//! random ([`check_session_key`]).

use crate::Waiter;
use crate::problem::Problem;
pub use crate::reply::Reply;
use crate::service::ServiceError;
use axum::response::{IntoResponse, Response};
use bistro_store::{IdempotencyBegin, OrderStore, SessionId, StoredResponse};
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
/// module docs for what is recorded). A failure of `work` whose effect the store could
/// not rule out keeps the key claimed.
pub async fn once<W>(
    waiter: &Waiter,
    session: SessionId,
    key: Option<&IdempotencyKey>,
    fingerprint: &str,
    work: W,
) -> Response
where
    W: Future<Output = Result<Reply, ServiceError>>,
{
    let Some(key) = key else {
        return match work.await {
            Ok(reply) => reply.into_response(),
            Err(e) => waiter.problem(&e).into_response(),
        };
    };
    let store = waiter.store();
    let begun = store
        .idempotency_begin(session, key.as_str(), fingerprint, waiter.clock().now())
        .await;
    match begun {
        Err(e) => return waiter.problem(&ServiceError::write(e)).into_response(),
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
        Err(e) if e.may_have_applied() => {
            tracing::warn!(
                kind = e.kind(),
                "the outcome of an idempotent request is unknown; keeping its key claimed so a retry cannot apply it twice"
            );
            waiter.problem(&e).into_response()
        }
        Err(e) => {
            if let Err(abort) = store.idempotency_abort(session, key.as_str()).await {
                tracing::warn!(error = %abort, "could not release an idempotency key after a refused request");
            }
            waiter.problem(&e).into_response()
        }
    }
}

/// The session a cookie-less request with idempotency key `key` starts: derived from
/// the key, so that a retry of a session-creating request whose answer was lost (and
/// with it the cookie) finds the same session, and in it the key's record of the first
/// answer. The key is then the only credential of that session until the answer
/// carries its cookie, which is why such keys must be long (see
/// [`MIN_SESSION_KEY_LEN`]); a domain separator keeps the ids apart from anything else
/// hashed with SHA-256.
pub fn session_for_key(key: &IdempotencyKey) -> SessionId {
    let digest = Sha256::new()
        .chain_update(b"bistro: the session started by Idempotency-Key\n")
        .chain_update(key.as_str().as_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    SessionId::from_bytes(id)
}

/// Shortest key accepted on a request that starts a session: it stands for the session
/// until the cookie arrives, so it must not be guessable (a UUID is 36).
pub const MIN_SESSION_KEY_LEN: usize = 16;

/// Checks that `key` may start a session (see [`session_for_key`]).
///
/// # Errors
/// 400 `invalid-idempotency-key` for a key shorter than [`MIN_SESSION_KEY_LEN`].
pub fn check_session_key(key: &IdempotencyKey) -> Result<(), Problem> {
    if key.as_str().len() < MIN_SESSION_KEY_LEN {
        return Err(invalid_key(
            "an Idempotency-Key on a request without a session stands for the new session until its cookie arrives, so it must be at least 16 characters and unguessable; a random UUID is a good key",
        ));
    }
    Ok(())
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
    fn a_session_key_names_one_session_and_must_be_long() {
        let long = IdempotencyKey("0f8e3a7c-1b2d-4e5f-9a8b-7c6d5e4f3a2b".into());
        assert_eq!(session_for_key(&long), session_for_key(&long.clone()));
        let other = IdempotencyKey("0f8e3a7c-1b2d-4e5f-9a8b-7c6d5e4f3a2c".into());
        assert_ne!(session_for_key(&long), session_for_key(&other));
        assert!(check_session_key(&long).is_ok());
        let short = IdempotencyKey("order-1".into());
        assert_eq!(
            check_session_key(&short).unwrap_err().kind(),
            "invalid-idempotency-key"
        );
    }
}
