//! The waiter API as the lab's diners read it: which answer is which error, and the menu.
//!
//! Error answers are RFC 9457 problems whose `type` ends in a stable kind
//! (`.../session-lost`, `.../unknown-session`, ...); the lab matches on that kind and
//! falls back to the HTTP status class when a body is not a problem (a proxy's bare 502).

use crate::sample::ErrorKind;
use bistro_client::{ClientError, Response};
use serde::Deserialize;

/// The balancer's affinity cookie (its default name), naming the waiter a diner is
/// pinned to.
pub use bistro_proto::cookies::AFFINITY as AFFINITY_COOKIE;
/// The waiter's session cookie.
pub use bistro_proto::cookies::SESSION as SESSION_COOKIE;

/// The last path segment of a problem's `type`, if the body is a problem.
pub fn problem_kind(resp: &Response) -> Option<String> {
    bistro_proto::problem::kind_in_body(&resp.body)
}

/// `None` for a 2xx answer, else the kind of failure.
pub fn classify_response(resp: &Response) -> Option<ErrorKind> {
    let status = resp.status.as_u16();
    if (200..300).contains(&status) {
        return None;
    }
    let kind = problem_kind(resp);
    Some(match kind.as_deref() {
        Some("session-lost") => ErrorKind::SessionLost,
        Some("unknown-session") => ErrorKind::UnknownSession,
        Some("order-not-found") => ErrorKind::OrderNotFound,
        Some("idempotency-in-progress") => ErrorKind::InProgress,
        Some("store-unavailable") => ErrorKind::StoreUnavailable,
        _ if (400..500).contains(&status) => ErrorKind::Other4xx,
        _ => ErrorKind::Other5xx,
    })
}

/// A short description of a failed answer for the report: the status and the problem
/// kind, e.g. `503 store-unavailable`, or `502 (no problem body)`.
pub fn describe_failure(resp: &Response) -> String {
    match problem_kind(resp) {
        Some(kind) => format!("{} {kind}", resp.status.as_u16()),
        None => format!("{} (no problem body)", resp.status.as_u16()),
    }
}

/// The kind of a request that got no answer.
pub fn classify_error(err: &ClientError) -> ErrorKind {
    match err {
        ClientError::Connect { .. } => ErrorKind::Connect,
        ClientError::Timeout(_) => ErrorKind::Timeout,
        _ => ErrorKind::Broken,
    }
}

/// One dish of `GET /v1/menu`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MenuDish {
    /// Dish id.
    pub id: String,
    /// Allergens it contains (wire names).
    #[serde(default)]
    pub allergens: Vec<String>,
}

#[derive(Deserialize)]
struct MenuBody {
    dishes: Vec<MenuDish>,
}

/// Reads the dishes of a `GET /v1/menu` answer.
pub fn parse_menu(resp: &Response) -> Option<Vec<MenuDish>> {
    let body: MenuBody = serde_json::from_slice(&resp.body).ok()?;
    (!body.dishes.is_empty()).then_some(body.dishes)
}

/// The ids of a `GET /v1/orders` answer (`{"orders":[{"id":...}]}`).
pub fn parse_order_ids(resp: &Response) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(&resp.body).ok()?;
    let list = v.get("orders").unwrap_or(&v).as_array()?;
    list.iter()
        .map(|o| {
            o.as_str()
                .or_else(|| o.get("id")?.as_str())
                .map(str::to_string)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    fn resp(status: u16, body: &str) -> Response {
        Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn problems_are_classified_by_their_type_then_by_status() {
        let p = |kind: &str, status| {
            resp(
                status,
                &format!(r#"{{"type":"https://bistro.dev/problems/{kind}","status":{status}}}"#),
            )
        };
        assert_eq!(classify_response(&resp(200, "{}")), None);
        assert_eq!(classify_response(&resp(201, "{}")), None);
        assert_eq!(
            classify_response(&p("session-lost", 503)),
            Some(ErrorKind::SessionLost)
        );
        assert_eq!(
            classify_response(&p("unknown-session", 404)),
            Some(ErrorKind::UnknownSession)
        );
        assert_eq!(
            classify_response(&p("order-not-found", 404)),
            Some(ErrorKind::OrderNotFound)
        );
        assert_eq!(
            classify_response(&p("idempotency-in-progress", 409)),
            Some(ErrorKind::InProgress)
        );
        assert_eq!(
            classify_response(&p("store-unavailable", 503)),
            Some(ErrorKind::StoreUnavailable)
        );
        assert_eq!(
            classify_response(&p("dish-contains-allergen", 422)),
            Some(ErrorKind::Other4xx)
        );
        assert_eq!(
            classify_response(&resp(502, "bad gateway")),
            Some(ErrorKind::Other5xx)
        );
        assert_eq!(classify_response(&resp(404, "")), Some(ErrorKind::Other4xx));
        assert_eq!(
            describe_failure(&p("store-unavailable", 503)),
            "503 store-unavailable"
        );
        assert_eq!(
            describe_failure(&resp(502, "bad gateway")),
            "502 (no problem body)"
        );
    }

    #[test]
    fn menu_and_order_lists_are_read() {
        let m = resp(
            200,
            r#"{"dishes":[{"id":"fries","name":"French fries","price_cents":450,"allergens":[]},{"id":"pad-thai","name":"x","price_cents":1,"allergens":["peanuts"]}]}"#,
        );
        let dishes = parse_menu(&m).unwrap();
        assert_eq!(
            dishes[1],
            MenuDish {
                id: "pad-thai".into(),
                allergens: vec!["peanuts".into()]
            }
        );
        assert!(parse_menu(&resp(200, r#"{"dishes":[]}"#)).is_none());
        let l = resp(200, r#"{"orders":[{"id":"a","status":"open"},{"id":"b"}]}"#);
        assert_eq!(
            parse_order_ids(&l).unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );
        assert!(parse_order_ids(&resp(200, r#"{"orders":[{"x":1}]}"#)).is_none());
    }
}
