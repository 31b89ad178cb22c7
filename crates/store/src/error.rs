//! The store's typed error. Callers decide on the variant: a conflict is retried or
//! turned into 412, an unknown session into 404, an outage into 503, and a failed write
//! into "nothing was changed" or "it may have been applied" by
//! [`StoreError::may_have_applied`].

use std::sync::Arc;
use std::time::Duration;

/// The underlying error of an outage, kept for logs (`Error::source`).
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Compare-and-set lost: the stored order is at another version.
    #[error(
        "the order was changed concurrently (expected version {expected}, stored version {actual})"
    )]
    Conflict {
        /// The version the caller read and asked to replace.
        expected: u64,
        /// The version the store holds now: the caller should read the order again
        /// before it decides whether its change still applies.
        actual: u64,
    },
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
    SessionLimit {
        /// The limit: [`StoreConfig`](crate::StoreConfig)'s `max_sessions`.
        limit: usize,
    },
    /// The session holds as many orders as it may.
    #[error("the session holds its limit of {limit} orders")]
    OrderLimit {
        /// The limit: [`StoreConfig`](crate::StoreConfig)'s `max_orders_per_session`.
        limit: usize,
    },
    /// The session holds as many live idempotency records as it may.
    #[error("the session holds its limit of {limit} idempotency keys")]
    IdempotencyLimit {
        /// The limit: [`StoreConfig`](crate::StoreConfig)'s `max_idempotency_per_session`.
        limit: usize,
    },
    /// The backend could not be reached or failed the operation.
    #[error("the store is unavailable: {reason}")]
    Unavailable {
        /// What failed, for people.
        reason: String,
        /// Whether the operation may have reached the store and taken effect (a write
        /// whose answer was lost); `false` when it certainly did not (refused
        /// connection, rolled-back statement).
        maybe_applied: bool,
        /// The backend's own error.
        #[source]
        source: Option<Source>,
    },
    /// No answer in time.
    #[error("the store did not answer within {after:?}")]
    Timeout {
        /// The limit that ran out.
        after: Duration,
        /// Whether the operation may have taken effect anyway: `true` when the caller
        /// stopped waiting for an operation already sent, `false` when the database
        /// itself gave up and rolled it back.
        maybe_applied: bool,
    },
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store URL or settings are invalid.
    #[error("invalid store configuration: {0}")]
    Config(String),
}

impl PartialEq for StoreError {
    /// Equal when the variants and their values are; an outage's source is left out
    /// (errors of the backends' own types do not compare).
    fn eq(&self, other: &StoreError) -> bool {
        use StoreError::*;
        match (self, other) {
            (
                Conflict {
                    expected: a,
                    actual: b,
                },
                Conflict {
                    expected: c,
                    actual: d,
                },
            ) => a == c && b == d,
            (UnknownSession, UnknownSession)
            | (OrderNotFound, OrderNotFound)
            | (DuplicateOrder, DuplicateOrder) => true,
            (SessionLimit { limit: a }, SessionLimit { limit: b })
            | (OrderLimit { limit: a }, OrderLimit { limit: b })
            | (IdempotencyLimit { limit: a }, IdempotencyLimit { limit: b }) => a == b,
            (
                Unavailable {
                    reason: a,
                    maybe_applied: x,
                    ..
                },
                Unavailable {
                    reason: b,
                    maybe_applied: y,
                    ..
                },
            ) => a == b && x == y,
            (
                Timeout {
                    after: a,
                    maybe_applied: x,
                },
                Timeout {
                    after: b,
                    maybe_applied: y,
                },
            ) => a == b && x == y,
            (Corrupt(a), Corrupt(b)) | (Config(a), Config(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for StoreError {}

impl StoreError {
    /// The store could not be used, and the operation certainly had no effect (it was
    /// never sent, or the database rolled it back).
    pub fn unavailable(reason: impl Into<String>) -> StoreError {
        StoreError::Unavailable {
            reason: reason.into(),
            maybe_applied: false,
            source: None,
        }
    }

    /// The store failed with `source` after the operation may have reached it.
    pub fn lost(reason: impl Into<String>, source: Option<Source>) -> StoreError {
        StoreError::Unavailable {
            reason: reason.into(),
            maybe_applied: true,
            source,
        }
    }

    /// Keeps `source` as this outage's cause.
    pub fn with_source(self, source: Source) -> StoreError {
        match self {
            StoreError::Unavailable {
                reason,
                maybe_applied,
                ..
            } => StoreError::Unavailable {
                reason,
                maybe_applied,
                source: Some(source),
            },
            other => other,
        }
    }

    /// Whether the store itself is at fault and the same request may succeed later
    /// (answered as 503 with Retry-After).
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Timeout { .. }
        )
    }

    /// Whether a *write* that failed with this error may have been applied anyway. Only
    /// an outage can leave that open; every other error is an answer from the store
    /// that it did not apply the write.
    pub fn may_have_applied(&self) -> bool {
        match self {
            StoreError::Unavailable { maybe_applied, .. }
            | StoreError::Timeout { maybe_applied, .. } => *maybe_applied,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_outage_after_sending_leaves_a_write_open() {
        assert!(!StoreError::unavailable("refused").may_have_applied());
        assert!(StoreError::lost("reset", None).may_have_applied());
        let caller_gave_up = StoreError::Timeout {
            after: Duration::from_secs(2),
            maybe_applied: true,
        };
        assert!(caller_gave_up.may_have_applied() && caller_gave_up.is_outage());
        assert!(
            !StoreError::Conflict {
                expected: 1,
                actual: 2
            }
            .may_have_applied()
        );
        assert!(!StoreError::OrderLimit { limit: 3 }.is_outage());
    }

    #[test]
    fn outages_keep_their_source() {
        let io: Source = Arc::new(std::io::Error::other("connection reset"));
        let e = StoreError::lost("the connection failed", Some(io));
        let source = std::error::Error::source(&e).expect("kept");
        assert_eq!(source.to_string(), "connection reset");
        assert_eq!(
            e,
            StoreError::lost("the connection failed", None),
            "sources are left out of equality"
        );
    }
}
