//! [`Reply`]: a successful answer as the handlers produce it (a JSON body, a status, a
//! few headers), and what an idempotency key records of it.

use axum::response::{IntoResponse, Response};
use bistro_store::StoredResponse;
use http::header::{CONTENT_TYPE, ETAG, LOCATION};
use http::{HeaderName, HeaderValue, StatusCode};

/// A successful answer: a JSON body with a status and a few headers. It is what
/// handlers produce and what a key records.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The JSON text.
    pub body: Vec<u8>,
}

/// Bytes a JSON answer's buffer starts with: an order renders to about 500, and
/// `serde_json::to_string` starts at 128 and grows by copying (three times for an
/// order, measured as ~1k instructions of a 41k read).
const JSON_CAPACITY: usize = 1024;

impl Reply {
    /// A JSON answer.
    pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Reply {
        let mut body = Vec::with_capacity(JSON_CAPACITY);
        serde_json::to_writer(&mut body, value).expect("response types serialize");
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

    /// What an idempotency key records: the status, the body, and the headers worth
    /// replaying (`Location`, `ETag`, `Content-Type`).
    pub fn to_stored(&self) -> StoredResponse {
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
            // serde_json writes UTF-8; lossy only so a bug here cannot panic.
            body: String::from_utf8_lossy(&self.body).into_owned(),
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        // Built directly: `(status, String)` would first add a text/plain content type
        // that the JSON one then replaces, a header map insert for nothing per answer.
        let mut resp = Response::new(axum::body::Body::from(self.body));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        headers.reserve(self.headers.len());
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
