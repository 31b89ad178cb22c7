//! Request bodies: read whole under a size limit, then parsed as JSON with errors that
//! say what was wrong.
//!
//! Handlers take the raw bytes ([`RawBody`]) rather than axum's `Json` extractor for two
//! reasons. Idempotency fingerprints hash the body exactly as sent; and every rejection
//! must be a problem document with a stable type: `malformed-json` (400) for bytes that
//! are not JSON or not labelled as JSON, `invalid-body` (422) for JSON of the wrong shape,
//! `body-too-large` (413) beyond [`WaiterConfig::max_body_bytes`](crate::WaiterConfig).
//!
//! A body over the limit is still read (and dropped) up to a bounded amount before the
//! 413 is sent. Answering while the client is still sending makes the server close the
//! socket with unread data, which many TCP stacks turn into a reset that destroys the
//! 413 before the client reads it; a short "lingering read" lets the client see why.

use crate::Waiter;
use crate::problem::Problem;
use axum::extract::{FromRequest, Request};
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Most bytes read and discarded after the limit was crossed.
const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Longest time spent discarding an oversized body.
const DRAIN_MAX_TIME: Duration = Duration::from_secs(2);

/// A request body read whole, with whether it was labelled as JSON.
#[derive(Debug, Clone)]
pub struct RawBody {
    /// The bytes as sent.
    pub bytes: Bytes,
    /// Whether `Content-Type` is `application/json` or `application/*+json`.
    pub is_json: bool,
}

impl FromRequest<Waiter> for RawBody {
    type Rejection = Problem;

    async fn from_request(req: Request, waiter: &Waiter) -> Result<Self, Problem> {
        let limit = waiter.config().max_body_bytes;
        let is_json = is_json(req.headers());
        let declared = declared_length(req.headers());
        let bytes = read_limited(req.into_body(), limit, declared).await?;
        Ok(RawBody { bytes, is_json })
    }
}

impl RawBody {
    /// Parses the body as `T`; an empty body is `empty` when given.
    ///
    /// # Errors
    /// 400 `malformed-json` or 422 `invalid-body`.
    pub fn json<T: DeserializeOwned>(&self, empty: Option<T>) -> Result<T, Problem> {
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            return empty.ok_or_else(|| {
                Problem::malformed_json("the request body is empty; send a JSON object")
            });
        }
        if !self.is_json {
            return Err(Problem::malformed_json(
                "the request body is not labelled as JSON; send it with Content-Type: application/json",
            ));
        }
        serde_json::from_slice(&self.bytes).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => Problem::invalid_body(format!(
                    "the JSON does not have the expected shape: {e}; see /openapi.json for the request schema"
                )),
                Category::Syntax | Category::Eof | Category::Io => {
                    Problem::malformed_json(format!("the request body is not valid JSON: {e}"))
                }
            }
        })
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn read_limited(
    mut body: axum::body::Body,
    limit: usize,
    declared: Option<u64>,
) -> Result<Bytes, Problem> {
    if declared.is_some_and(|n| n > DRAIN_MAX_BYTES as u64) {
        // Too large even to drain politely: answer at once (the connection will close).
        return Err(Problem::body_too_large(limit));
    }
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body).await;
        return Err(Problem::body_too_large(limit));
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| read_failed(&e))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                drain(body).await;
                return Err(Problem::body_too_large(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Reads and discards the rest of `body`, bounded in bytes and time.
async fn drain(mut body: axum::body::Body) {
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen > DRAIN_MAX_BYTES {
                    return;
                }
            }
        }
    };
    if tokio::time::timeout(DRAIN_MAX_TIME, discard).await.is_err() {
        tracing::debug!("gave up draining an oversized request body");
    }
}

fn read_failed(e: &axum::Error) -> Problem {
    tracing::debug!(error = %e, "could not read a request body");
    Problem::new(
        StatusCode::BAD_REQUEST,
        "body-read-failed",
        "The request body could not be read",
        format!("reading the request body failed ({e}); send the request again"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Shape {
        #[serde(default)]
        n: u32,
    }

    fn raw(body: &str, is_json: bool) -> RawBody {
        RawBody {
            bytes: Bytes::copy_from_slice(body.as_bytes()),
            is_json,
        }
    }

    #[test]
    fn json_errors_are_told_apart() {
        assert_eq!(
            raw("{\"n\":2}", true).json::<Shape>(None).unwrap(),
            Shape { n: 2 }
        );
        assert_eq!(
            raw("{\"n\":", true).json::<Shape>(None).unwrap_err().kind(),
            "malformed-json"
        );
        assert_eq!(
            raw("{\"n\":\"x\"}", true)
                .json::<Shape>(None)
                .unwrap_err()
                .kind(),
            "invalid-body"
        );
        assert_eq!(
            raw("{\"m\":1}", true)
                .json::<Shape>(None)
                .unwrap_err()
                .status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            raw("{\"n\":2}", false)
                .json::<Shape>(None)
                .unwrap_err()
                .kind(),
            "malformed-json"
        );
        assert_eq!(
            raw(" ", false)
                .json::<Shape>(Some(Shape::default()))
                .unwrap(),
            Shape::default()
        );
        assert_eq!(
            raw("", true).json::<Shape>(None).unwrap_err().kind(),
            "malformed-json"
        );
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        for (ct, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
        ] {
            h.insert(CONTENT_TYPE, ct.parse().unwrap());
            assert_eq!(is_json(&h), ok, "{ct}");
        }
    }

    #[tokio::test]
    async fn the_limit_is_enforced_with_and_without_a_declared_length() {
        let small = axum::body::Body::from("12345");
        assert_eq!(
            read_limited(small, 5, Some(5)).await.unwrap(),
            Bytes::from("12345")
        );
        let big = axum::body::Body::from("123456");
        assert_eq!(
            read_limited(big, 5, None).await.unwrap_err().kind(),
            "body-too-large"
        );
        let declared = axum::body::Body::from("123456");
        assert_eq!(
            read_limited(declared, 5, Some(6))
                .await
                .unwrap_err()
                .status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
