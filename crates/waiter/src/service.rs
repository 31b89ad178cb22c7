//! The one write path: every read and change of an order, whoever asks.
//!
//! The HTTP handlers, every command of the TCP line protocol and the kitchen all go
//! through [`Orders`]; none of them talks to the store itself. That is where the rules
//! that must not drift apart live once:
//!
//! - **compare-and-set, never last-writer-wins**: [`Orders::change`] reads the order,
//!   applies the change with the domain's rules, and writes it only if the stored version
//!   is still the one it read. With an `If-Match` precondition a lost race is the
//!   caller's answer (412: it decided on a version that is gone); without one the change
//!   is re-applied to the fresh order, a bounded number of times. [`Orders::commit`] is
//!   the single compare-and-set everything uses (the kitchen's steps too);
//! - **what a failure means**: a [`ServiceError`] says what kind of failure it is (the
//!   stable name both front ends show), whether sending the same request again can help,
//!   and whether a failed *write* may have been applied anyway — which only the store
//!   can know, and says in its error;
//! - **the caps**: sessions (a rate per waiter, and a total), orders per session and
//!   idempotency keys per session.
//!
//! The front ends only translate: HTTP into `application/problem+json`
//! (`Problem::service`), TCP into `ERR <kind>`.

use crate::Waiter;
use crate::precondition::IfMatch;
use crate::replication::{Moved, Settled};
use bistro_orders::{Change, Order, OrderError};
use bistro_store::{OrderStore, SessionCreated, SessionId, StoreError, StoreUrl};
use std::sync::Mutex;
use std::time::Instant;

/// Why an operation on orders failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The domain refused the change (unknown dish, allergen, wrong status, ...).
    #[error(transparent)]
    Order(#[from] OrderError),
    /// The session does not exist here, or has expired.
    #[error("unknown or expired session")]
    UnknownSession,
    /// The session holds no such order.
    #[error("no such order in this session")]
    OrderNotFound,
    /// `If-Match` named a version the order is no longer at.
    #[error("the order is at version {actual}, not the one the request named")]
    VersionMismatch {
        /// The order's version now.
        actual: u64,
    },
    /// The order kept changing under the request; nothing was changed.
    #[error("the order changed under the request {attempts} times in a row")]
    Conflict {
        /// The order's version now.
        actual: u64,
        /// Compare-and-sets lost.
        attempts: u32,
    },
    /// The store holds its limit of sessions.
    #[error("the store holds its limit of {limit} sessions")]
    SessionLimit {
        /// The configured limit.
        limit: usize,
    },
    /// This waiter starts sessions faster than its rate allows.
    #[error("new sessions are coming faster than {rate} per second")]
    SessionRate {
        /// The configured rate.
        rate: u32,
        /// Seconds until one may start.
        retry_after: u32,
    },
    /// The session holds its limit of orders.
    #[error("the session holds its limit of {limit} orders")]
    OrderLimit {
        /// The configured limit.
        limit: usize,
    },
    /// The session holds its limit of idempotency keys.
    #[error("the session holds its limit of {limit} idempotency keys")]
    IdempotencyLimit {
        /// The configured limit.
        limit: usize,
    },
    /// Another waiter of the replicated group leads the session now (it took it over
    /// from this one); nothing this request changed was acknowledged.
    #[error("the session is led by {} now", to.as_deref().unwrap_or("another waiter"))]
    SessionMoved {
        /// The waiter that leads it, when known.
        to: Option<String>,
    },
    /// The store failed. `write` says whether the operation was a write, for which the
    /// store's error tells whether it may have been applied.
    #[error("{error}")]
    Store {
        /// The store's error.
        #[source]
        error: StoreError,
        /// Whether the failed operation was a write.
        write: bool,
    },
}

impl ServiceError {
    pub(crate) fn moved(moved: Moved) -> ServiceError {
        ServiceError::SessionMoved { to: moved.to }
    }

    /// A store failure of a read.
    pub(crate) fn read(error: StoreError) -> ServiceError {
        ServiceError::from_store(error, false)
    }

    /// A store failure of a write.
    pub(crate) fn write(error: StoreError) -> ServiceError {
        ServiceError::from_store(error, true)
    }

    /// The store's answers that are answers (not failures) become their own kinds.
    fn from_store(error: StoreError, write: bool) -> ServiceError {
        match error {
            StoreError::UnknownSession => ServiceError::UnknownSession,
            StoreError::OrderNotFound => ServiceError::OrderNotFound,
            StoreError::SessionLimit { limit } => ServiceError::SessionLimit { limit },
            StoreError::OrderLimit { limit } => ServiceError::OrderLimit { limit },
            StoreError::IdempotencyLimit { limit } => ServiceError::IdempotencyLimit { limit },
            error => ServiceError::Store { error, write },
        }
    }

    /// The stable name of the failure: the last segment of the HTTP problem `type`, and
    /// the `<kind>` of a TCP `ERR`.
    pub fn kind(&self) -> &'static str {
        match self {
            ServiceError::Order(e) => e.kind(),
            ServiceError::UnknownSession => "unknown-session",
            ServiceError::OrderNotFound => "order-not-found",
            ServiceError::VersionMismatch { .. } => "version-mismatch",
            ServiceError::Conflict { .. } => "conflict",
            ServiceError::SessionLimit { .. } => "too-many-sessions",
            ServiceError::SessionRate { .. } => "too-many-new-sessions",
            ServiceError::OrderLimit { .. } => "too-many-orders",
            ServiceError::IdempotencyLimit { .. } => "too-many-idempotency-keys",
            ServiceError::SessionMoved { .. } => "session-moved",
            ServiceError::Store { error, .. } if error.is_outage() => "store-unavailable",
            ServiceError::Store { .. } => "internal",
        }
    }

    /// Whether sending the same request again (as it is) may succeed: the failure was
    /// a moment's (an outage, a limit that frees up, a race), not the request's.
    pub fn retry_safe(&self) -> bool {
        match self {
            ServiceError::Store { error, .. } => error.is_outage(),
            ServiceError::SessionLimit { .. }
            | ServiceError::SessionRate { .. }
            | ServiceError::Conflict { .. }
            | ServiceError::SessionMoved { .. } => true,
            _ => false,
        }
    }

    /// Whether a failed write may have been applied anyway (the store could not say
    /// otherwise): the client must not be told "nothing was changed", but to retry with
    /// the same Idempotency-Key or to read the order first.
    pub fn may_have_applied(&self) -> bool {
        match self {
            ServiceError::Store { error, write } => *write && error.may_have_applied(),
            _ => false,
        }
    }

    /// Seconds to suggest in `Retry-After`, when retrying later can help.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            ServiceError::SessionRate { retry_after, .. } => Some(*retry_after),
            ServiceError::SessionLimit { .. } => Some(30),
            ServiceError::Store { error, .. } if error.is_outage() => Some(1),
            _ => None,
        }
    }
}

/// A token bucket: sessions one waiter may start.
#[derive(Debug)]
pub(crate) struct SessionRate {
    per_sec: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl SessionRate {
    /// `None` when `per_sec` is 0 (no limit).
    pub(crate) fn new(per_sec: u32, burst: u32) -> Option<SessionRate> {
        (per_sec > 0).then(|| SessionRate {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
            state: Mutex::new((f64::from(burst.max(1)), Instant::now())),
        })
    }

    /// Takes a token at `now`, or says how many seconds until one is free.
    fn take(&self, now: Instant) -> Result<(), u32> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, at) = *state;
        let tokens = (tokens + now.saturating_duration_since(at).as_secs_f64() * self.per_sec)
            .min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err((((1.0 - tokens) / self.per_sec).ceil() as u32).max(1))
        }
    }
}

/// The operations on orders, over one waiter's store (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Orders<'a> {
    waiter: &'a Waiter,
}

impl<'a> Orders<'a> {
    pub(crate) fn new(waiter: &'a Waiter) -> Orders<'a> {
        Orders { waiter }
    }

    /// Before a request for `session` is served: in replicated mode, takes the session
    /// over if this waiter holds only a copy of it (its primary is gone); a stateful
    /// waiter that handed the session to another says which (see
    /// [`handoff`](crate::handoff)). Stateless waiters have nothing to do.
    ///
    /// # Errors
    /// `session-moved` when another waiter leads the session.
    pub async fn locate(&self, session: SessionId) -> Result<(), ServiceError> {
        match self.waiter.replication() {
            Some(r) => r
                .locate(session, self.now())
                .await
                .map_err(ServiceError::moved),
            None => match self.waiter.handoff() {
                Some(h) => h.locate(session, self.now()).map_err(ServiceError::moved),
                None => Ok(()),
            },
        }
    }

    /// Before a change to `session` is acknowledged: in replicated mode, waits until a
    /// backup holds it. `Settled::Gone` in the other modes, where the store made the
    /// change durable already (or, in stateful mode, never will).
    ///
    /// # Errors
    /// `session-moved` when this waiter turned out not to lead the session any more:
    /// the change was not acknowledged anywhere.
    pub async fn settle(&self, session: SessionId) -> Result<Settled, ServiceError> {
        match self.waiter.replication() {
            Some(r) => r
                .settle(session, self.now())
                .await
                .map_err(ServiceError::moved),
            None => Ok(Settled::Gone),
        }
    }

    fn now(&self) -> u64 {
        self.waiter.clock().now()
    }

    /// Checks the session rate and the session cap before a new session.
    fn admit_session(&self) -> Result<(), ServiceError> {
        let config = self.waiter.config();
        if let Some(rate) = self.waiter.session_rate()
            && let Err(retry_after) = rate.take(Instant::now())
        {
            self.waiter.metrics().session_refused();
            return Err(ServiceError::SessionRate {
                rate: config.session_rate_per_sec,
                retry_after,
            });
        }
        // The memory store counts exactly and refuses itself; a central store's count is
        // the sweeper's, refreshed every sweep interval (see `WaiterConfig::max_sessions`).
        if config.store_url != StoreUrl::Memory
            && let Some(held) = self.waiter.metrics().sessions_held()
            && held >= config.max_sessions as u64
        {
            self.waiter.metrics().session_refused();
            return Err(ServiceError::SessionLimit {
                limit: config.max_sessions,
            });
        }
        Ok(())
    }

    /// Starts a new session (a fresh random id).
    ///
    /// # Errors
    /// `too-many-new-sessions`, `too-many-sessions`, or the store's failure.
    pub async fn start_session(&self) -> Result<SessionId, ServiceError> {
        self.admit_session()?;
        let session = SessionId::generate();
        self.waiter
            .store()
            .create_session(session, self.now())
            .await
            .map_err(ServiceError::write)?;
        Ok(session)
    }

    /// Opens the session `session`, derived from a client's request rather than random
    /// (see the idempotency module): an existing live one is reused without counting as
    /// new; otherwise it is started like any new session.
    ///
    /// # Errors
    /// As [`Orders::start_session`].
    pub async fn open_session(&self, session: SessionId) -> Result<SessionCreated, ServiceError> {
        let store = self.waiter.store();
        if store
            .touch_session(session, self.now())
            .await
            .map_err(ServiceError::write)?
        {
            return Ok(SessionCreated::Existing);
        }
        self.admit_session()?;
        store
            .create_session(session, self.now())
            .await
            .map_err(ServiceError::write)
    }

    /// Stores a new order under `session`.
    ///
    /// # Errors
    /// `unknown-session`, `too-many-orders`, or the store's failure.
    pub async fn create(&self, session: SessionId, order: &Order) -> Result<(), ServiceError> {
        self.waiter
            .store()
            .insert_order(session, order, self.now())
            .await
            .map_err(ServiceError::write)
    }

    /// One order of `session`.
    ///
    /// # Errors
    /// `unknown-session`, `order-not-found`, or the store's failure.
    pub async fn read(&self, session: SessionId, id: &str) -> Result<Order, ServiceError> {
        self.waiter
            .store()
            .get_order(session, id, self.now())
            .await
            .map_err(ServiceError::read)
    }

    /// Every order of `session`, oldest first.
    ///
    /// # Errors
    /// `unknown-session`, or the store's failure.
    pub async fn list(&self, session: SessionId) -> Result<Vec<Order>, ServiceError> {
        self.waiter
            .store()
            .list_orders(session, self.now())
            .await
            .map_err(ServiceError::read)
    }

    /// Writes `order` if the stored one is still at version `expected`: the one
    /// compare-and-set every change goes through.
    ///
    /// # Errors
    /// The store's `Conflict` (as [`StoreError`], for the caller to decide on), or any
    /// other failure as a [`ServiceError`].
    pub async fn commit(
        &self,
        session: SessionId,
        order: &Order,
        expected: u64,
    ) -> Result<(), Committed> {
        match self
            .waiter
            .store()
            .update_order(session, order, expected, self.now())
            .await
        {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict { actual, .. }) => {
                self.waiter.metrics().cas_conflict();
                Err(Committed::Lost { actual })
            }
            Err(e) => Err(Committed::Failed(ServiceError::write(e))),
        }
    }

    /// Applies `changes` to order `id` of `session` by read, apply, compare-and-set.
    ///
    /// With `if_match` naming versions, the order must be at one of them and a lost
    /// compare-and-set is `version-mismatch`: the caller decided on a version that is
    /// gone. Without one (or with `*`), a lost compare-and-set means someone else changed
    /// the order between the read and the write, so the change is re-applied to the
    /// fresh order, up to [`max_cas_retries`](crate::WaiterConfig::max_cas_retries)
    /// times, then `conflict`. Either way no write replaces a version it did not read.
    ///
    /// # Errors
    /// Any [`ServiceError`]; a domain refusal leaves the order as it was.
    pub async fn change(
        &self,
        session: SessionId,
        id: &str,
        if_match: Option<&IfMatch>,
        changes: &[Change],
    ) -> Result<Order, ServiceError> {
        let config = self.waiter.config();
        let mut attempts = 0;
        loop {
            let mut order = self.read(session, id).await?;
            if let Some(condition) = if_match
                && !condition.matches(order.version)
            {
                return Err(ServiceError::VersionMismatch {
                    actual: order.version,
                });
            }
            let read_version = order.version;
            order.apply(changes, &config.menu, self.now())?;
            match self.commit(session, &order, read_version).await {
                Ok(()) => return Ok(order),
                Err(Committed::Failed(e)) => return Err(e),
                Err(Committed::Lost { actual }) => {
                    attempts += 1;
                    if if_match.is_some_and(IfMatch::pins_version) {
                        return Err(ServiceError::VersionMismatch { actual });
                    }
                    if attempts > config.max_cas_retries {
                        return Err(ServiceError::Conflict { actual, attempts });
                    }
                }
            }
        }
    }

    /// Moves `order` (as the kitchen found it) one kitchen step on, if one is due:
    /// `Ok(None)` when none is, or when someone else changed the order first (the next
    /// poll sees it again if a step is still due).
    ///
    /// # Errors
    /// The store's failure; a step the domain refuses.
    pub async fn kitchen_step(
        &self,
        session: SessionId,
        mut order: Order,
    ) -> Result<Option<Order>, ServiceError> {
        let config = self.waiter.config();
        let now = self.now();
        let Some(step) = order.kitchen_step(now, config.kitchen) else {
            return Ok(None);
        };
        let read_version = order.version;
        order.apply(std::slice::from_ref(&step), &config.menu, now)?;
        match self.commit(session, &order, read_version).await {
            Ok(()) => Ok(Some(order)),
            Err(Committed::Lost { .. }) => Ok(None),
            Err(Committed::Failed(e)) => Err(e),
        }
    }
}

/// What a compare-and-set did when it did not store the order.
#[derive(Debug)]
pub enum Committed {
    /// Another writer got there first; the order is at `actual`.
    Lost {
        /// The stored version.
        actual: u64,
    },
    /// The write failed.
    Failed(ServiceError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_session_rate_allows_a_burst_then_the_rate() {
        let rate = SessionRate::new(10, 2).unwrap();
        let t0 = Instant::now();
        assert!(rate.take(t0).is_ok());
        assert!(rate.take(t0).is_ok());
        assert_eq!(rate.take(t0), Err(1), "the next one in a tenth of a second");
        assert!(rate.take(t0 + Duration::from_millis(100)).is_ok());
        assert!(SessionRate::new(0, 5).is_none());
    }

    #[test]
    fn what_a_failure_says() {
        let lost_reply = StoreError::lost("reply lost", None);
        let on_write = ServiceError::write(lost_reply.clone());
        assert_eq!(on_write.kind(), "store-unavailable");
        assert!(on_write.may_have_applied() && on_write.retry_safe());
        assert!(
            !ServiceError::read(lost_reply).may_have_applied(),
            "a read applies nothing"
        );
        let refused = ServiceError::write(StoreError::unavailable("refused"));
        assert!(!refused.may_have_applied() && refused.retry_safe());
        assert_eq!(
            ServiceError::write(StoreError::OrderLimit { limit: 3 }).kind(),
            "too-many-orders"
        );
        assert_eq!(
            ServiceError::read(StoreError::UnknownSession).kind(),
            "unknown-session"
        );
        let corrupt = ServiceError::read(StoreError::Corrupt("x".into()));
        assert_eq!(corrupt.kind(), "internal");
        assert!(!corrupt.retry_safe());
    }
}
