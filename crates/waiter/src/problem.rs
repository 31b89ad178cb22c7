//! Errors as HTTP answers: RFC 9457 `application/problem+json`.
//!
//! Every error a diner can meet is a [`Problem`] with a stable `type`
//! (`https://bistro.dev/problems/<kind>`) that clients, the balancer and the lab match
//! on, a short `title`, and a `detail` that says what happened and what to do next.
//! Extension members carry what a program needs to react (`dish` and `allergen` for an
//! allergy refusal, `current_version` for a lost precondition).
//!
//! The mapping is fixed here, in one place: domain errors keep their
//! [`OrderError::kind`] and map by class (invalid → 422, state → 409); store errors map
//! by what the caller can do about them (an outage is 503 with `Retry-After`, a missing
//! session is 404 with advice that depends on the waiter's [`Mode`]).

use crate::config::Mode;
use crate::service::ServiceError;
use axum::response::{IntoResponse, Response};
use bistro_orders::{ErrorClass, OrderError};
use http::header::{CONTENT_TYPE, RETRY_AFTER, SET_COOKIE};
use http::{HeaderValue, StatusCode};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// The media type of problem responses.
pub use bistro_proto::problem::MEDIA_TYPE as PROBLEM_JSON;
/// The prefix of every problem `type`.
pub use bistro_proto::problem::TYPE_PREFIX;

/// An error response.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    extensions: Map<String, Value>,
    retry_after: Option<u32>,
    clear_session: bool,
}

impl Problem {
    /// A problem of `kind` (the last segment of its `type`).
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            kind,
            title,
            detail: detail.into(),
            extensions: Map::new(),
            retry_after: None,
            clear_session: false,
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Problem {
        self.extensions.insert(key.to_string(), value.into());
        self
    }

    /// Adds `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u32) -> Problem {
        self.retry_after = Some(secs);
        self
    }

    /// The HTTP status.
    #[cfg(test)]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable kind (last segment of `type`).
    #[cfg(test)]
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// A domain refusal: 422 when the request is invalid, 409 when the order's state
    /// forbids it.
    pub fn order(err: &OrderError) -> Problem {
        let (status, title) = match err.class() {
            ErrorClass::Invalid => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "The order cannot be changed like that",
            ),
            ErrorClass::State => (
                StatusCode::CONFLICT,
                "The order's status does not allow this",
            ),
        };
        let mut p = Problem::new(status, err.kind(), title, err.to_string());
        match err {
            OrderError::UnknownDish { dish } | OrderError::NotOnOrder { dish } => {
                p = p.with("dish", dish.as_str())
            }
            OrderError::BadQuantity { dish, quantity } => {
                p = p.with("dish", dish.as_str()).with("quantity", *quantity)
            }
            OrderError::DishContainsAllergen { dish, allergen }
            | OrderError::AllergyConflictsWithItem { allergen, dish } => {
                p = p
                    .with("dish", dish.as_str())
                    .with("allergen", allergen.as_str())
            }
            OrderError::BadSpice(spice) => p = p.with("spice", *spice),
            OrderError::RequestsTooLong { chars } => p = p.with("chars", *chars),
            OrderError::KitchenStarted { status } => p = p.with("order_status", status.as_str()),
            OrderError::InvalidTransition { status, action } => {
                p = p
                    .with("order_status", status.as_str())
                    .with("action", *action)
            }
            _ => {}
        }
        p
    }

    /// A failure of the service layer. `mode` and `waiter` shape the advice for a
    /// missing session.
    pub fn service(err: &ServiceError, mode: Mode, waiter: &str) -> Problem {
        let problem = match err {
            ServiceError::Order(e) => Problem::order(e),
            ServiceError::UnknownSession => Problem::unknown_session(mode, waiter),
            ServiceError::OrderNotFound => Problem::order_not_found(),
            ServiceError::VersionMismatch { actual } => Problem::version_mismatch(*actual),
            ServiceError::Conflict { actual, attempts } => Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                "The order kept changing",
                format!(
                    "the order changed under this request {attempts} times in a row; nothing was changed. Read the order again and retry"
                ),
            )
            .with("current_version", *actual),
            ServiceError::SessionLimit { limit } => {
                tracing::warn!(limit, "session limit reached; refusing a new session");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too-many-sessions",
                    "Too many sessions",
                    format!(
                        "this waiter's store already holds its limit of {limit} sessions; retry later, when idle sessions have expired, or ask another waiter"
                    ),
                )
            }
            ServiceError::SessionRate { rate, .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-new-sessions",
                "Too many new sessions",
                format!(
                    "this waiter starts at most {rate} new sessions per second and is at that rate now; nothing was created. Retry in a moment, and keep the session cookie you are given"
                ),
            ),
            ServiceError::OrderLimit { limit } => Problem::new(
                StatusCode::CONFLICT,
                "too-many-orders",
                "Too many orders in this session",
                format!(
                    "your session holds {limit} orders, the most one session may hold; nothing was created. Start a new session (send no session cookie) for more"
                ),
            )
            .with("limit", *limit),
            ServiceError::IdempotencyLimit { limit } => Problem::new(
                StatusCode::CONFLICT,
                "too-many-idempotency-keys",
                "Too many idempotency keys in this session",
                format!(
                    "your session holds {limit} live Idempotency-Keys, the most one session may hold; nothing was done. Use a new key only for a new request, reuse it for its retries"
                ),
            )
            .with("limit", *limit),
            ServiceError::SessionMoved { to } => {
                let leader = to.as_deref().unwrap_or("another waiter");
                let mut p = Problem::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "session-moved",
                    "The session is led by another waiter",
                    format!(
                        "your session is served by another waiter now ({leader}): it took the session over while this one was unreachable, or this one handed it on; nothing this request changed was kept here. Send the request again: a balancer does so itself"
                    ),
                );
                if let Some(to) = to {
                    p = p.with("leader", to.as_str());
                }
                p
            }
            ServiceError::Store { error, .. } if error.is_outage() => {
                tracing::warn!(error = %error, may_have_applied = err.may_have_applied(), "store outage; answering 503 store-unavailable");
                Problem::store_unavailable(&error.to_string(), err.may_have_applied())
            }
            ServiceError::Store { error, .. } => {
                tracing::error!(error = %error, "store failed unexpectedly; answering 500");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "the waiter could not complete the request because of an internal error; it has been logged. Retry later",
                )
            }
        };
        match err.retry_after() {
            Some(secs) => problem.retry_after(secs),
            None => problem,
        }
    }

    /// 404 `unknown-session`, clearing the session cookie.
    pub fn unknown_session(mode: Mode, waiter: &str) -> Problem {
        let detail = match mode {
            Mode::Stateful => format!(
                "this waiter ({waiter}) holds no notes for your session. In stateful mode only the waiter that took the order holds its notes; that waiter may have restarted, or the balancer sent you elsewhere. Start a new order"
            ),
            Mode::Stateless => {
                "your session expired or never existed; start a new order".to_string()
            }
            Mode::Replicated => format!(
                "this waiter ({waiter}) holds neither your session nor a copy of it: it expired, or both the waiter that led it and the colleague keeping its copy are gone. Start a new order"
            ),
        };
        let mut p = Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-session",
            "Unknown session",
            detail,
        )
        .with("waiter", waiter)
        .with("mode", mode.as_str());
        p.clear_session = true;
        p
    }

    /// 404 `order-not-found`: no such order in this session (also for other sessions'
    /// orders, which must not be told apart from missing ones).
    pub fn order_not_found() -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "order-not-found",
            "Order not found",
            "your session has no order with this id; GET /v1/orders lists your orders",
        )
    }

    /// 503 `store-unavailable`; `maybe_applied` when a write failed in a way that may
    /// still have stored it (the store said so), which the client must be told.
    pub fn store_unavailable(cause: &str, maybe_applied: bool) -> Problem {
        let outcome = if maybe_applied {
            "the change may or may not have been saved: retry with the same Idempotency-Key, or read the order before repeating it"
        } else {
            "nothing was changed. Retry in a moment"
        };
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "The order store is unavailable",
            format!("the waiter could not reach its order store ({cause}); {outcome}"),
        )
        .with("may_have_applied", maybe_applied)
        .retry_after(1)
    }

    /// 412 `version-mismatch`.
    pub fn version_mismatch(current: u64) -> Problem {
        Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "version-mismatch",
            "The order has changed",
            format!(
                "If-Match names a version the order is no longer at (it is at version {current}); read the order again, re-apply your change and send it with If-Match: \"{current}\""
            ),
        )
        .with("current_version", current)
    }

    /// 400 `malformed-json`.
    pub fn malformed_json(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON body",
            detail,
        )
    }

    /// 422 `invalid-body`: well-formed JSON of the wrong shape.
    pub fn invalid_body(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
            detail,
        )
    }

    /// 413 `body-too-large`.
    pub fn body_too_large(limit: usize) -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!(
                "the request body exceeds this waiter's limit of {limit} bytes; send a smaller body"
            ),
        )
        .with("limit_bytes", limit)
    }

    /// 431 `request-header-too-large`.
    pub fn head_too_large(limit: usize) -> Problem {
        Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request-header-too-large",
            "Request header fields too large",
            format!(
                "the request line and header fields exceed this waiter's limit of {limit} bytes; send fewer or smaller headers"
            ),
        )
        .with("limit_bytes", limit)
    }

    /// 503 `timeout`.
    pub fn timeout(limit: Duration) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "Request timed out",
            format!(
                "the waiter could not answer within {} ms; the request may or may not have taken effect, so read the order before retrying (or retry with the same Idempotency-Key)",
                limit.as_millis()
            ),
        )
        .retry_after(1)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("type".into(), json!(format!("{TYPE_PREFIX}{}", self.kind)));
        body.insert("title".into(), json!(self.title));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("detail".into(), json!(self.detail));
        for (k, v) in self.extensions {
            body.entry(k).or_insert(v);
        }
        let mut resp = (self.status, Value::Object(body).to_string()).into_response();
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.clear_session {
            headers.append(SET_COOKIE, crate::session::clear_cookie());
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bistro_orders::{Allergen, Status};
    use bistro_store::StoreError;
    use http_body_util::BodyExt;

    async fn body(p: Problem) -> (StatusCode, http::HeaderMap, Value) {
        let resp = p.into_response();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn allergy_refusal_is_422_naming_dish_and_allergen() {
        let err = OrderError::DishContainsAllergen {
            dish: "pad-thai".into(),
            allergen: Allergen::Peanuts,
        };
        let (status, headers, v) = body(Problem::order(&err)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(headers[CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(
            v["type"],
            "https://bistro.dev/problems/dish-contains-allergen"
        );
        assert_eq!(v["status"], 422);
        assert_eq!(v["dish"], "pad-thai");
        assert_eq!(v["allergen"], "peanuts");
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("choose another dish")
        );
    }

    #[test]
    fn state_errors_are_409() {
        let err = OrderError::InvalidTransition {
            status: Status::Paid,
            action: "cancel",
        };
        let p = Problem::order(&err);
        assert_eq!(
            (p.status(), p.kind()),
            (StatusCode::CONFLICT, "invalid-transition")
        );
        let p = Problem::order(&OrderError::KitchenStarted {
            status: Status::Cooking,
        });
        assert_eq!(p.status(), StatusCode::CONFLICT);
    }

    fn service(err: ServiceError, mode: Mode) -> Problem {
        Problem::service(&err, mode, "w1")
    }

    fn on_write(e: StoreError) -> ServiceError {
        ServiceError::Store {
            error: e,
            write: true,
        }
    }

    #[tokio::test]
    async fn failures_map_by_what_the_caller_can_do() {
        let (status, headers, v) = body(service(
            on_write(StoreError::unavailable("refused")),
            Mode::Stateless,
        ))
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[RETRY_AFTER], "1");
        assert_eq!(v["type"], "https://bistro.dev/problems/store-unavailable");
        assert_eq!(v["may_have_applied"], false);
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("nothing was changed")
        );
        let (_, _, v) = body(service(
            on_write(StoreError::Timeout {
                after: Duration::from_secs(2),
                maybe_applied: true,
            }),
            Mode::Stateless,
        ))
        .await;
        assert_eq!(v["may_have_applied"], true);
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.contains("may or may not have been saved") && detail.contains("Idempotency-Key"),
            "{detail}"
        );
        let limit = service(ServiceError::SessionLimit { limit: 5 }, Mode::Stateful);
        assert_eq!(
            (limit.status(), limit.kind()),
            (StatusCode::SERVICE_UNAVAILABLE, "too-many-sessions")
        );
        assert!(limit.retry_after.is_some());
        let rate = service(
            ServiceError::SessionRate {
                rate: 10,
                retry_after: 2,
            },
            Mode::Stateful,
        );
        assert_eq!(rate.retry_after, Some(2));
        let orders = service(ServiceError::OrderLimit { limit: 3 }, Mode::Stateful);
        assert_eq!(
            (orders.status(), orders.kind()),
            (StatusCode::CONFLICT, "too-many-orders")
        );
        let corrupt = service(
            ServiceError::Store {
                error: StoreError::Corrupt("bad json".into()),
                write: false,
            },
            Mode::Stateless,
        );
        assert_eq!(corrupt.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let missing = service(ServiceError::OrderNotFound, Mode::Stateless);
        assert_eq!(
            (missing.status(), missing.kind()),
            (StatusCode::NOT_FOUND, "order-not-found")
        );
    }

    #[tokio::test]
    async fn unknown_session_advice_depends_on_the_mode_and_clears_the_cookie() {
        let (status, headers, v) = body(Problem::service(
            &ServiceError::UnknownSession,
            Mode::Stateful,
            "w2",
        ))
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[SET_COOKIE], "bistro_session=; Max-Age=0; Path=/");
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.contains("(w2)") && detail.contains("only the waiter that took the order"),
            "{detail}"
        );
        let (_, _, v) = body(Problem::unknown_session(Mode::Stateless, "w2")).await;
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("expired or never existed")
        );
    }

    #[tokio::test]
    async fn extensions_never_override_the_standard_members() {
        let (_, _, v) = body(
            Problem::invalid_body("x")
                .with("status", 999)
                .with("extra", true),
        )
        .await;
        assert_eq!(v["status"], 422);
        assert_eq!(v["extra"], true);
    }
}
