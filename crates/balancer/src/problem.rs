//! Answers the balancer writes itself, as `application/problem+json` (RFC 9457).
//!
//! Each kind has a stable `type` URI under `https://bistro.dev/problems/` that clients
//! and the lab match on; the `detail` says what happened and what to do next. Answers
//! that say "not now" carry `Retry-After`.
//!
//! A detail names the waiter that failed but never its address or the operating
//! system's error: those are for the operator, and go to the log with the request id
//! the answer carries in `Bistro-Request-Id` (the client's own `X-Request-Id` when it
//! sent one).
//!
//! | kind | status | when |
//! |---|---|---|
//! | `session-lost` | 503 | the diner's stateful waiter is gone (refused, removed, or down too long) |
//! | `backend-unavailable` | 503 + `Retry-After` | the diner's waiter is alive but not answering now |
//! | `no-waiter-available` | 503 + `Retry-After` | no waiter can take a new request |
//! | `backend-queue-full` | 503 + `Retry-After` | every connection slot of the waiter is busy and its queue full, or the wait timed out |
//! | `balancer-busy` | 503 + `Retry-After` | the balancer holds its most connections, or is out of file descriptors |
//! | `too-many-connections` | 429 + `Retry-After` | the client IP holds its most connections |
//! | `too-many-new-sessions` | 429 + `Retry-After` | the client IP creates sessions too fast |
//! | `upstream-failed` | 502 | the waiter failed before it answered |
//! | `upstream-timeout` | 504 | the waiter did not answer in time |
//! | `request-timeout` | 408 | the client's head or body did not arrive in time |
//! | `request-too-large` | 413 | the body is over the limit |
//! | `request-header-too-large` | 431 | the request head is over the limit |
//! | `bad-request` | 400 | ambiguous framing, unreadable body |

use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::headers::add_via;
use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

/// The `type` prefix of every bistro problem.
pub use bistro_proto::problem::TYPE_PREFIX as PROBLEM_BASE;

/// The header carrying the request id on the balancer's own answers.
pub(crate) use bistro_proto::headers::REQUEST_ID;

/// One problem answer.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) title: &'static str,
    pub(crate) detail: String,
    /// Seconds for `Retry-After`, when trying again later can help.
    pub(crate) retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: String) -> Self {
        Problem {
            status,
            kind,
            title,
            detail,
            retry_after: None,
        }
    }

    /// Adds `Retry-After: secs` (at least 1).
    pub(crate) fn retry_after(mut self, secs: u64) -> Problem {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The diner's pinned waiter is gone and its notes with it.
    pub(crate) fn session_lost(backend: &str) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "session-lost",
            "Your session's waiter is unavailable",
            format!(
                "the waiter that holds your session ({backend}) is unavailable; in stateful mode no other \
                 waiter has your notes, so this session cannot continue. Your affinity cookie was cleared: \
                 start a new order and another waiter will serve you"
            ),
        )
    }

    /// The diner's pinned waiter is alive but not answering now.
    pub(crate) fn backend_unavailable(backend: &str, why: &str) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend-unavailable",
            "Your session's waiter is busy or not answering",
            format!(
                "the waiter that holds your session ({backend}) {why}; it still holds your notes, \
                 so keep your cookies and retry after a moment (POSTs with the same Idempotency-Key)"
            ),
        )
        .retry_after(1)
    }

    /// No backend can take the request.
    pub(crate) fn no_backend() -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-waiter-available",
            "No waiter is available",
            "every waiter is down, ejected after failures, or draining; retry in a few seconds"
                .into(),
        )
        .retry_after(1)
    }

    /// The backend's connection slots are all busy and the request could not wait.
    pub(crate) fn queue_full(backend: &str, timed_out: bool) -> Problem {
        let why = if timed_out {
            "no connection to it came free within the balancer's queue timeout"
        } else {
            "every connection to it is busy and the queue of waiting requests is full"
        };
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend-queue-full",
            "The waiter is saturated",
            format!("waiter {backend} is saturated: {why}; the request was not sent, retry it after a moment"),
        )
        .retry_after(1)
    }

    /// The balancer holds its most connections (or ran out of file descriptors).
    pub(crate) fn balancer_busy(why: &str) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "balancer-busy",
            "The balancer is at capacity",
            format!("the balancer {why}; this connection was closed without reading a request, retry in a moment"),
        )
        .retry_after(1)
    }

    /// One client IP holds its most connections.
    pub(crate) fn too_many_connections(limit: usize) -> Problem {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-connections",
            "Too many connections from your address",
            format!(
                "your address already holds {limit} connections to this balancer, its limit per \
                 client; reuse them (keep-alive) or close some before opening more"
            ),
        )
        .retry_after(1)
    }

    /// One client IP creates sessions too fast.
    pub(crate) fn too_many_new_sessions(rate: u32, wait_secs: u64) -> Problem {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-new-sessions",
            "Too many new sessions from your address",
            format!(
                "your address starts new sessions faster than the {rate} per second allowed; \
                 keep the session cookie you were given, or retry in {wait_secs} s"
            ),
        )
        .retry_after(wait_secs)
    }

    /// The balancer itself ran out of resources reaching a backend.
    pub(crate) fn overloaded(backend: &str) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "balancer-busy",
            "The balancer is at capacity",
            format!(
                "the balancer has no resources left to reach waiter {backend} (not the waiter's fault); \
                 the request was not sent, retry in a moment"
            ),
        )
        .retry_after(1)
    }

    /// The backend failed before it answered.
    pub(crate) fn bad_gateway(backend: &str, what: &str) -> Problem {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "upstream-failed",
            "The waiter failed to answer",
            format!(
                "waiter {backend} {what}; the request may not have been processed, retry it if it is \
                 safe to repeat (POSTs with the same Idempotency-Key)"
            ),
        )
    }

    /// The backend took too long to answer.
    pub(crate) fn gateway_timeout(backend: &str, timeout: std::time::Duration) -> Problem {
        Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream-timeout",
            "The waiter took too long to answer",
            format!(
                "waiter {backend} sent no answer within {} ms; the request may still complete, \
                 check before repeating it",
                timeout.as_millis()
            ),
        )
    }

    /// The client's head or body did not arrive in time.
    pub(crate) fn request_timeout(detail: &str) -> Problem {
        Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            "Request timeout",
            detail.into(),
        )
    }

    /// The request body is over the limit.
    pub(crate) fn too_large(limit: u64) -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request-too-large",
            "Request body too large",
            format!(
                "the request body exceeds the balancer's limit of {limit} bytes; send a smaller body"
            ),
        )
    }

    /// A request head over the limit.
    pub(crate) fn head_too_large(limit: usize) -> Problem {
        Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request-header-too-large",
            "Request header fields too large",
            format!(
                "the request line and header fields exceed the balancer's limit of {limit} bytes; send fewer or smaller headers (cookies, most often)"
            ),
        )
    }

    /// A malformed request.
    pub(crate) fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail.into(),
        )
    }

    /// An admin API (or other) problem of any kind.
    pub(crate) fn other(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: String,
    ) -> Problem {
        Problem::new(status, kind, title, detail)
    }

    fn body(&self) -> Vec<u8> {
        let wire = Wire {
            kind: format!("{PROBLEM_BASE}{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// The response, with `Cache-Control: no-store` (these answers describe a moment).
    pub(crate) fn into_response(self) -> Response<ResponseBody> {
        let body = self.body();
        let mut response = Response::new(ResponseBody::full(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }

    /// The whole answer as raw HTTP/1.1 bytes with `Connection: close`, for a socket
    /// the balancer refuses before (or instead of) reading a request from it.
    pub(crate) fn raw(&self, request_id: Option<&str>) -> Vec<u8> {
        let body = self.body();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncache-control: no-store\r\n\
             connection: close\r\ncontent-length: {}\r\nvia: 1.1 bistro\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            body.len()
        );
        if let Some(secs) = self.retry_after {
            out.push_str(&format!("retry-after: {secs}\r\n"));
        }
        if let Some(id) = request_id {
            out.push_str(&format!("bistro-request-id: {id}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }
}

/// Asks hyper to close the connection after this response.
pub(crate) fn closing(mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// What a client is told about a failed exchange: by kind, naming the waiter, never
/// its address or the operating system's error.
fn problem_for(error: &ProxyError) -> Problem {
    match error {
        ProxyError::Connect { backend, .. } if error.is_refused() => {
            Problem::bad_gateway(backend, "refused the connection")
        }
        ProxyError::Connect { backend, .. } => {
            Problem::bad_gateway(backend, "could not be reached")
        }
        ProxyError::ConnectTimeout { backend, .. } => {
            Problem::bad_gateway(backend, "did not accept a connection in time")
        }
        ProxyError::NotSent { backend, .. } => {
            Problem::bad_gateway(backend, "closed the connection before the request was sent")
        }
        ProxyError::Exchange { backend, .. } => {
            Problem::bad_gateway(backend, "failed after the request was sent")
        }
        ProxyError::ResponseTimeout { backend, timeout } => {
            Problem::gateway_timeout(backend, *timeout)
        }
        ProxyError::BackendDown { backend, sent } => Problem::backend_unavailable(
            backend,
            if *sent {
                "stopped answering while it held your request (it may or may not have been processed)"
            } else {
                "went down while your request waited for it (it was not sent)"
            },
        ),
        ProxyError::LocalResources { backend, .. } => Problem::overloaded(backend),
        ProxyError::QueueFull { backend, waited } => Problem::queue_full(backend, waited.is_some()),
        ProxyError::BodyTimeout => Problem::request_timeout(
            "the request body did not arrive within the balancer's body timeout, or came slower \
             than its minimum rate; send it again at once",
        ),
        ProxyError::BodyTooLarge { limit } => Problem::too_large(*limit),
        ProxyError::HeadTooLarge { limit, .. } => Problem::head_too_large(*limit),
        ProxyError::ClientBody(_) | ProxyError::Framing(_) => {
            Problem::bad_request(error.to_string())
        }
        ProxyError::NoBackend => Problem::no_backend(),
    }
}

/// The problem answer for a failed request. Failures the client caused close the
/// connection; what the balancer knew of the failure goes to the log under
/// `request_id`, which the answer carries.
pub(crate) fn error_response(
    error: &ProxyError,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let closes = matches!(
        error,
        ProxyError::BodyTooLarge { .. }
            | ProxyError::BodyTimeout
            | ProxyError::ClientBody(_)
            | ProxyError::Framing(_)
            | ProxyError::HeadTooLarge { .. }
    );
    let mut response = problem_for(error).into_response();
    if closes {
        response = closing(response);
    }
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID.clone(), request_id.clone());
    add_via(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn session_lost_names_the_waiter() {
        let response = Problem::session_lost("w1").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["type"], "https://bistro.dev/problems/session-lost");
        assert_eq!(json["status"], 503);
        assert!(
            json["detail"]
                .as_str()
                .unwrap()
                .starts_with("the waiter that holds your session (w1) is unavailable;")
        );
    }

    #[tokio::test]
    async fn a_failed_connect_names_the_waiter_but_not_its_address_or_the_os_error() {
        let error = ProxyError::Connect {
            backend: "w2".into(),
            addr: "10.1.2.3:7002".parse().unwrap(),
            source: std::io::Error::other("secret kernel detail"),
        };
        let id = HeaderValue::from_static("req-7");
        let response = error_response(&error, &id);
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(response.headers()["bistro-request-id"], "req-7");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("waiter w2"), "{text}");
        assert!(
            !text.contains("10.1.2.3") && !text.contains("secret"),
            "{text}"
        );
    }

    #[test]
    fn raw_answers_are_complete_http_messages() {
        let raw = Problem::too_many_connections(5).raw(Some("abc"));
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{head}"
        );
        assert!(head.contains("retry-after: 1\r\n") && head.contains("connection: close\r\n"));
        assert!(head.contains("bistro-request-id: abc"));
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            json["type"],
            "https://bistro.dev/problems/too-many-connections"
        );
    }
}
