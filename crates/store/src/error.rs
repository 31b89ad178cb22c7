//! The store's typed error. Callers decide on the variant: a conflict is retried or
//! turned into 412, an unknown session into 404, an outage into 503.

use std::time::Duration;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Compare-and-set lost: the stored order is at another version.
    #[error(
        "the order was changed concurrently (expected version {expected}, stored version {actual})"
    )]
    Conflict { expected: u64, actual: u64 },
    /// The session does not exist here, or has expired.
    #[error("unknown or expired session")]
    UnknownSession,
    /// The session holds no order with that id.
    #[error("no such order in this session")]
    OrderNotFound,
    /// An order with this id exists already.
    #[error("an order with this id exists already")]
    DuplicateOrder,
    /// The store holds as many sessions as it may.
    #[error("the store holds its limit of {limit} sessions")]
    SessionLimit { limit: usize },
    /// The backend could not be reached or refused the operation.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The backend did not answer in time.
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store URL or settings are invalid.
    #[error("invalid store configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// Whether the store itself is at fault and the same request may succeed later
    /// (answered as 503 with Retry-After).
    pub fn is_outage(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }
}
