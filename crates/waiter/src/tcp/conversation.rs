//! What one connection remembers between commands: its session and its current order.
//!
//! This is where the two modes differ over TCP, and the difference is the lesson:
//!
//! - **stateful**: `NEW` starts a *draft* that lives in this [`Conversation`], in the
//!   connection's own memory, and every `ADD`/`SPICE`/... changes it there without a
//!   store round trip. `PLACE` writes the placed order to the waiter's store under the
//!   session, exactly like an HTTP order, so HTTP can read it with the same session id.
//!   If the connection drops before `PLACE`, the draft is gone with it.
//! - **stateless**: `NEW` creates the order in the central store at once and every
//!   command writes through with a compare-and-set, so nothing is lost with the
//!   connection and `HELLO <session-id>` picks the same open order up on any waiter.
//!
//! Every store operation goes through the service layer ([`Waiter::orders`]), the same
//! one the HTTP handlers use: a change to a stored order is its compare-and-set
//! (without `If-Match`, which the line protocol does not have), and its failures are
//! named as over HTTP. Only a stateful draft changes here, in the connection's memory,
//! by the domain's own rules.

use crate::Waiter;
use crate::config::Mode;
use crate::service::ServiceError;
use crate::tcp::reply::Refusal;
use bistro_orders::{Change, NewOrder, Order, Status};
use bistro_store::{SessionId, new_order_id};

/// The order a connection is working on.
#[derive(Debug, Clone, Default)]
pub enum Current {
    /// None yet (or the draft was cancelled).
    #[default]
    None,
    /// Stateful mode, before `PLACE`: the order exists only here.
    Draft(Order),
    /// An order in the store, by id.
    Stored(String),
}

/// One connection's session and current order.
#[derive(Debug, Default)]
pub struct Conversation {
    /// The session this connection speaks for.
    pub session: Option<SessionId>,
    /// The order commands apply to.
    pub current: Current,
}

impl Conversation {
    /// Whether an unplaced draft would be lost if the connection ended now.
    pub fn has_draft(&self) -> bool {
        matches!(self.current, Current::Draft(_))
    }

    /// The session, creating one in the store if the connection has none yet; `true`
    /// when it was created now.
    ///
    /// # Errors
    /// The store's refusal (`too-many-sessions`, `store-unavailable`).
    pub async fn ensure_session(&mut self, waiter: &Waiter) -> Result<(SessionId, bool), Refusal> {
        if let Some(session) = self.session {
            return Ok((session, false));
        }
        let session = start_session(waiter).await?;
        self.session = Some(session);
        Ok((session, true))
    }

    /// Starts a new order: a draft in stateful mode, a stored order otherwise.
    ///
    /// # Errors
    /// `draft-pending`, or the store's refusal.
    pub async fn new_order(&mut self, waiter: &Waiter) -> Result<Order, Refusal> {
        if self.has_draft() {
            return Err(Refusal::draft_pending());
        }
        let (session, _) = self.ensure_session(waiter).await?;
        let now = waiter.clock().now();
        let order = Order::create(
            new_order_id(),
            NewOrder::default(),
            &waiter.config().menu,
            now,
        )
        .map_err(|e| Refusal::order(&e))?;
        match waiter.config().mode {
            Mode::Stateful => self.current = Current::Draft(order.clone()),
            Mode::Stateless | Mode::Replicated => {
                waiter
                    .orders()
                    .create(session, &order)
                    .await
                    .map_err(|e| Refusal::service(waiter, &e))?;
                self.current = Current::Stored(order.id.clone());
            }
        }
        Ok(order)
    }

    /// The current order as it is now (a draft from here, a stored order from the store).
    ///
    /// # Errors
    /// `no-order`, or the store's refusal.
    pub async fn order(&self, waiter: &Waiter) -> Result<Order, Refusal> {
        match (&self.current, self.session) {
            (Current::Draft(order), _) => Ok(order.clone()),
            (Current::Stored(id), Some(session)) => waiter
                .orders()
                .read(session, id)
                .await
                .map_err(|e| Refusal::service(waiter, &e)),
            _ => Err(Refusal::no_order()),
        }
    }

    /// Applies `changes` to the current order, atomically, and returns the result.
    ///
    /// A draft changes in place; placing a draft stores it under the session (creating
    /// a session if needed) and from then on it is a stored order; cancelling a draft
    /// drops it. A stored order changes by compare-and-set.
    ///
    /// # Errors
    /// `no-order`, a domain refusal, or the store's refusal. A refused change leaves the
    /// order (draft or stored) as it was.
    pub async fn change(&mut self, waiter: &Waiter, changes: &[Change]) -> Result<Order, Refusal> {
        match &self.current {
            Current::None => Err(Refusal::no_order()),
            Current::Stored(id) => {
                let session = self.session.ok_or_else(Refusal::no_order)?;
                waiter
                    .orders()
                    .change(session, id, None, changes)
                    .await
                    .map_err(|e| Refusal::service(waiter, &e))
            }
            Current::Draft(draft) => {
                let now = waiter.clock().now();
                let mut next = draft.clone();
                next.apply(changes, &waiter.config().menu, now)
                    .map_err(|e| Refusal::order(&e))?;
                match next.status {
                    Status::Open => self.current = Current::Draft(next.clone()),
                    Status::Cancelled => self.current = Current::None,
                    _ => self.store_draft(waiter, &next).await?,
                }
                Ok(next)
            }
        }
    }

    /// Stores a draft that has just been placed.
    async fn store_draft(&mut self, waiter: &Waiter, order: &Order) -> Result<(), Refusal> {
        let (session, _) = self.ensure_session(waiter).await?;
        match waiter.orders().create(session, order).await {
            Ok(()) => {
                self.current = Current::Stored(order.id.clone());
                Ok(())
            }
            Err(ServiceError::UnknownSession) => {
                // The session expired while the order was a draft: keep the draft, and
                // let the next PLACE start a fresh session for it.
                self.session = None;
                Err(Refusal::new(
                    "unknown-session",
                    "your session expired while this order was a draft; the draft is still on this connection: PLACE again to place it under a new session",
                ))
            }
            Err(e) => Err(Refusal::service(waiter, &e)),
        }
    }

    /// Switches to the session `session` held by the store, making its most recent
    /// unfinished order current (else its most recent order, so `STATUS` still answers
    /// about a paid one); returns all its orders, oldest first.
    ///
    /// # Errors
    /// `draft-pending`, `unknown-session`, or the store's refusal.
    pub async fn resume(
        &mut self,
        waiter: &Waiter,
        session: SessionId,
    ) -> Result<Vec<Order>, Refusal> {
        if self.has_draft() {
            return Err(Refusal::draft_pending());
        }
        let orders = waiter
            .orders()
            .list(session)
            .await
            .map_err(|e| Refusal::service(waiter, &e))?;
        self.session = Some(session);
        self.current = orders
            .iter()
            .rev()
            .find(|o| !matches!(o.status, Status::Paid | Status::Cancelled))
            .or(orders.last())
            .map_or(Current::None, |o| Current::Stored(o.id.clone()));
        Ok(orders)
    }

    /// Starts a fresh session (the current one, if any, is left as it is).
    ///
    /// # Errors
    /// `draft-pending`, or the store's refusal.
    pub async fn restart(&mut self, waiter: &Waiter) -> Result<SessionId, Refusal> {
        if self.has_draft() {
            return Err(Refusal::draft_pending());
        }
        let session = start_session(waiter).await?;
        self.session = Some(session);
        self.current = Current::None;
        Ok(session)
    }

    /// The id of the current order, if it is stored.
    pub fn stored_id(&self) -> Option<&str> {
        match &self.current {
            Current::Stored(id) => Some(id),
            _ => None,
        }
    }
}

async fn start_session(waiter: &Waiter) -> Result<SessionId, Refusal> {
    waiter
        .orders()
        .start_session()
        .await
        .map_err(|e| Refusal::service(waiter, &e))
}
