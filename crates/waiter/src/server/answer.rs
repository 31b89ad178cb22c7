//! Answers written straight to a socket, outside hyper: the `503 too-many-connections`
//! for a connection over the cap and the `408 request-timeout` for a head that did not
//! arrive in time. Neither has a request hyper could answer, so each is a complete
//! HTTP/1.1 message with `Connection: close`, rendered once when the server starts.
//!
//! The body and headers come from the same [`Problem`] every handler answers with, so a
//! client parses these like any other problem document; only the framing is done here.

use crate::Waiter;
use crate::middleware::{MODE_HEADER, WAITER_HEADER};
use crate::problem::Problem;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::StatusCode;
use http::header::{CONNECTION, CONTENT_LENGTH};
use http_body_util::BodyExt;
use std::time::Duration;

/// The raw answers of one server, rendered once.
#[derive(Debug, Clone)]
pub(crate) struct Answers {
    /// `503 too-many-connections`, for a connection over the cap.
    pub(crate) busy: Bytes,
    /// `408 request-timeout`, for a head that did not arrive in time.
    pub(crate) head_timeout: Bytes,
}

impl Answers {
    /// Renders the answers for `waiter`'s limits.
    pub(crate) async fn render(waiter: &Waiter) -> Answers {
        let config = waiter.config();
        let limits = config.http;
        let busy = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-connections",
            "Too many connections",
            format!(
                "this waiter serves at most {} HTTP connections at once and closed this one without reading a request; retry in a moment, reuse an open connection (keep-alive), or ask another waiter",
                limits.max_connections
            ),
        )
        .with("limit", limits.max_connections)
        .retry_after(1);
        let head_timeout = Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            "Request timeout",
            format!(
                "the request head did not arrive within {} ms; send the whole head at once",
                limits.header_read_timeout.as_millis()
            ),
        )
        .with("limit_ms", duration_ms(limits.header_read_timeout));
        Answers {
            busy: raw(busy, waiter).await,
            head_timeout: raw(head_timeout, waiter).await,
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `problem` as a complete HTTP/1.1 response that closes the connection, naming the
/// waiter as every other answer does.
async fn raw(problem: Problem, waiter: &Waiter) -> Bytes {
    let (parts, body) = problem.into_response().into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            // A problem's body is one in-memory string; this cannot happen, and the
            // status line still says what went wrong.
            tracing::error!(error = %e, "could not render a problem body");
            Bytes::new()
        }
    };
    let status = parts.status;
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    let config = waiter.config();
    let mut header = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    for (name, value) in &parts.headers {
        if name != CONTENT_LENGTH && name != CONNECTION {
            header(name.as_str().as_bytes(), value.as_bytes());
        }
    }
    header(WAITER_HEADER.as_str().as_bytes(), config.id.as_bytes());
    header(
        MODE_HEADER.as_str().as_bytes(),
        config.mode.as_str().as_bytes(),
    );
    header(b"connection", b"close");
    header(b"content-length", body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WaiterConfig;
    use crate::config::HttpLimits;
    use bistro_store::{MemoryStore, StoreConfig};
    use std::sync::Arc;

    /// The head's lines and the body's JSON, checking the framing.
    fn split(raw: &Bytes) -> (Vec<String>, serde_json::Value) {
        let text = std::str::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let lines: Vec<String> = head.split("\r\n").map(str::to_string).collect();
        let length = format!("content-length: {}", body.len());
        assert!(lines.contains(&length), "{length} in {head}");
        (lines, serde_json::from_str(body).unwrap())
    }

    #[tokio::test]
    async fn raw_answers_are_complete_problem_documents_that_close() {
        let config = WaiterConfig {
            id: "w7".into(),
            http: HttpLimits {
                max_connections: 3,
                ..HttpLimits::default()
            },
            ..WaiterConfig::default()
        };
        let waiter = Waiter::new(config, Arc::new(MemoryStore::new(StoreConfig::default())));
        let answers = Answers::render(&waiter).await;

        let (head, body) = split(&answers.busy);
        assert_eq!(head[0], "HTTP/1.1 503 Service Unavailable");
        for line in [
            "content-type: application/problem+json",
            "retry-after: 1",
            "connection: close",
            "bistro-waiter: w7",
            "bistro-mode: stateful",
        ] {
            assert!(head.iter().any(|l| l == line), "{line} in {head:?}");
        }
        assert_eq!(
            body["type"],
            "https://bistro.dev/problems/too-many-connections"
        );
        assert_eq!(body["status"], 503);
        assert_eq!(body["limit"], 3);
        assert!(body["detail"].as_str().unwrap().contains("at most 3"));

        let (head, body) = split(&answers.head_timeout);
        assert_eq!(head[0], "HTTP/1.1 408 Request Timeout");
        assert!(head.iter().any(|l| l == "connection: close"), "{head:?}");
        assert_eq!(body["type"], "https://bistro.dev/problems/request-timeout");
        assert_eq!(body["limit_ms"], 10_000);
    }
}
