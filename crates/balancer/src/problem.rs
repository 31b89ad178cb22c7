//! Answers the balancer writes itself, as `application/problem+json` (RFC 9457).
//!
//! Each kind has a stable `type` URI under `https://bistro.dev/problems/` that clients
//! and the lab match on; the `detail` says what happened and what to do next.

use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::headers::add_via;
use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

/// The `type` prefix of every bistro problem.
pub const PROBLEM_BASE: &str = "https://bistro.dev/problems/";

/// One problem answer.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) title: &'static str,
    pub(crate) detail: String,
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
    /// The diner's pinned waiter is gone and its notes with it.
    pub(crate) fn session_lost(backend: &str) -> Problem {
        Problem {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "session-lost",
            title: "Your session's waiter is unavailable",
            detail: format!(
                "the waiter that holds your session ({backend}) is unavailable; in stateful mode no other \
                 waiter has your notes, so this session cannot continue. Your affinity cookie was cleared: \
                 start a new order and another waiter will serve you"
            ),
        }
    }

    /// No backend can take the request.
    pub(crate) fn no_backend() -> Problem {
        Problem {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "no-waiter-available",
            title: "No waiter is available",
            detail:
                "every waiter is down, ejected after failures, or draining; retry in a few seconds"
                    .into(),
        }
    }

    /// The backend failed before it answered.
    pub(crate) fn bad_gateway(cause: &str) -> Problem {
        Problem {
            status: StatusCode::BAD_GATEWAY,
            kind: "upstream-failed",
            title: "The waiter failed to answer",
            detail: format!(
                "{cause}; the request may not have been processed, retry it if it is safe to repeat"
            ),
        }
    }

    /// The backend took too long to answer.
    pub(crate) fn gateway_timeout(cause: &str) -> Problem {
        Problem {
            status: StatusCode::GATEWAY_TIMEOUT,
            kind: "upstream-timeout",
            title: "The waiter took too long to answer",
            detail: format!("{cause}; the request may still complete, check before repeating it"),
        }
    }

    /// The request body is over the limit.
    pub(crate) fn too_large(limit: u64) -> Problem {
        Problem {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "request-too-large",
            title: "Request body too large",
            detail: format!(
                "the request body exceeds the balancer's limit of {limit} bytes; send a smaller body"
            ),
        }
    }

    /// A malformed request.
    pub(crate) fn bad_request(detail: impl Into<String>) -> Problem {
        Problem {
            status: StatusCode::BAD_REQUEST,
            kind: "bad-request",
            title: "Bad request",
            detail: detail.into(),
        }
    }

    /// The response, with `Cache-Control: no-store` (these answers describe a moment).
    pub(crate) fn into_response(self) -> Response<ResponseBody> {
        let wire = Wire {
            kind: format!("{PROBLEM_BASE}{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        let body = serde_json::to_vec(&wire).unwrap_or_default();
        let mut response = Response::new(ResponseBody::full(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Asks hyper to close the connection after this response.
pub(crate) fn closing(mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The problem answer for a failed request.
pub(crate) fn error_response(error: &ProxyError) -> Response<ResponseBody> {
    let mut response = match error {
        ProxyError::ResponseTimeout { .. } => {
            Problem::gateway_timeout(&error.to_string()).into_response()
        }
        ProxyError::BodyTooLarge { limit } => closing(Problem::too_large(*limit).into_response()),
        ProxyError::ClientBody(_) | ProxyError::Framing(_) => {
            closing(Problem::bad_request(error.to_string()).into_response())
        }
        ProxyError::NoBackend => Problem::no_backend().into_response(),
        _ => Problem::bad_gateway(&error.to_string()).into_response(),
    };
    add_via(response.headers_mut());
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
}
