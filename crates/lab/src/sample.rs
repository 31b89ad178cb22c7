//! One measured request, as plain data.
//!
//! Diners record a [`Sample`] for every request they send, failed ones included; the
//! statistics and the report are pure functions over these. Times are microseconds since
//! the load started. A request's clock starts when it left, except for the first request
//! of an open-loop arrival, whose clock starts at its *scheduled* arrival: if the
//! generator fell behind its schedule, or a stalled server kept it from keeping up, that
//! delay is part of the measured latency (no coordinated omission). How late each request
//! left compared with when it was meant to is kept apart as the generator's lag.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which step of a diner's visit a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// `GET /v1/menu`.
    Menu,
    /// `POST /v1/orders`.
    Create,
    /// `PATCH` replacing the items.
    ChangeItems,
    /// `PATCH` changing the spice level.
    ChangeSpice,
    /// `PATCH` declaring one more allergy.
    AddAllergy,
    /// `POST .../place`.
    Place,
    /// `GET /v1/orders/{id}` while the kitchen works.
    Poll,
    /// `POST .../serve`.
    Serve,
    /// `POST .../pay`.
    Pay,
}

impl Step {
    /// Every step, in visit order.
    pub const ALL: [Step; 9] = [
        Step::Menu,
        Step::Create,
        Step::ChangeItems,
        Step::ChangeSpice,
        Step::AddAllergy,
        Step::Place,
        Step::Poll,
        Step::Serve,
        Step::Pay,
    ];

    /// A short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Menu => "menu",
            Step::Create => "create",
            Step::ChangeItems => "change-items",
            Step::ChangeSpice => "change-spice",
            Step::AddAllergy => "add-allergy",
            Step::Place => "place",
            Step::Poll => "poll",
            Step::Serve => "serve",
            Step::Pay => "pay",
        }
    }
}

/// Why a request failed, as a diner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// 503 `session-lost` from the balancer: the waiter holding the notes is gone.
    SessionLost,
    /// 404 `unknown-session` from a waiter that holds no notes for this diner.
    UnknownSession,
    /// 404 `order-not-found`.
    OrderNotFound,
    /// 409 `idempotency-in-progress`: a request with the same key is still being
    /// handled, or its outcome is unknown (the waiter handling it died).
    InProgress,
    /// Any other 4xx.
    Other4xx,
    /// 503 `store-unavailable`: a stateless waiter could not reach its store.
    StoreUnavailable,
    /// Any other 5xx (including the balancer's 502/504).
    Other5xx,
    /// No answer within the diner's request timeout.
    Timeout,
    /// The TCP connection could not be opened.
    Connect,
    /// The connection broke while the request was in flight.
    Broken,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::SessionLost,
        ErrorKind::UnknownSession,
        ErrorKind::OrderNotFound,
        ErrorKind::InProgress,
        ErrorKind::Other4xx,
        ErrorKind::StoreUnavailable,
        ErrorKind::Other5xx,
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Broken,
    ];

    /// The report name (`session-lost`, `timeout`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::SessionLost => "session-lost",
            ErrorKind::UnknownSession => "unknown-session",
            ErrorKind::OrderNotFound => "order-not-found",
            ErrorKind::InProgress => "idempotency-in-progress",
            ErrorKind::Other4xx => "other-4xx",
            ErrorKind::StoreUnavailable => "store-unavailable",
            ErrorKind::Other5xx => "other-5xx",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Broken => "broken-connection",
        }
    }

    /// Whether the diner's session (and so every order in it) is gone.
    pub fn session_gone(self) -> bool {
        matches!(self, ErrorKind::SessionLost | ErrorKind::UnknownSession)
    }

    /// Whether the request may have taken effect although it failed: the diner cannot
    /// know, so a write it sent may or may not be in the stored order.
    pub fn ambiguous(self) -> bool {
        matches!(
            self,
            ErrorKind::InProgress
                | ErrorKind::StoreUnavailable
                | ErrorKind::Other5xx
                | ErrorKind::Timeout
                | ErrorKind::Broken
        )
    }

    /// Whether trying again later may succeed (a transient server-side failure).
    pub fn transient(self) -> bool {
        matches!(
            self,
            ErrorKind::StoreUnavailable
                | ErrorKind::Other5xx
                | ErrorKind::Timeout
                | ErrorKind::Connect
                | ErrorKind::Broken
        )
    }

    /// Whether no HTTP response arrived at all.
    pub fn is_transport(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout | ErrorKind::Connect | ErrorKind::Broken
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request, measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When the request's clock started (see the module docs), µs since the load started.
    pub at_us: u64,
    /// From `at_us` to the end of the response (or to the failure), µs.
    pub latency_us: u64,
    /// How late the request actually left compared with when it was meant to, µs: the
    /// load generator's own lag, reported so one can tell whether it kept up.
    pub lag_us: u64,
    /// The step of the visit.
    pub step: Step,
    /// `None` for a 2xx answer, else why it failed.
    pub error: Option<ErrorKind>,
}

impl Sample {
    /// When the request ended, µs since the load started.
    pub fn end_us(&self) -> u64 {
        self.at_us + self.latency_us
    }

    /// Whether the request got a 2xx answer.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }
}
