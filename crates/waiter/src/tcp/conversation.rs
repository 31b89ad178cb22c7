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
//! Writes to a stored order use the same read-modify-compare-and-set as the HTTP
//! handlers' `modify` (without `If-Match`, which the line protocol does not have): a
//! lost compare-and-set re-applies the change to the fresh order, up to
//! `max_cas_retries` times, and never overwrites a version it did not read.

use crate::Waiter;
use crate::config::Mode;
use crate::tcp::reply::Refusal;
use bistro_orders::{Change, NewOrder, Order, Status};
use bistro_store::{OrderStore, SessionId, StoreError, new_order_id};

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

    /// Starts a new order: a draft in stateful mode, a stored order in stateless mode.
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
            Mode::Stateless => {
                waiter
                    .store()
                    .insert_order(session, &order, now)
                    .await
                    .map_err(|e| Refusal::store(waiter, &e))?;
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
                .store()
                .get_order(session, id, waiter.clock().now())
                .await
                .map_err(|e| Refusal::store(waiter, &e)),
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
                let id = id.clone();
                write_through(waiter, session, &id, changes).await
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
        let now = waiter.clock().now();
        match waiter.store().insert_order(session, order, now).await {
            Ok(()) => {
                self.current = Current::Stored(order.id.clone());
                Ok(())
            }
            Err(StoreError::UnknownSession) => {
                // The session expired while the order was a draft: keep the draft, and
                // let the next PLACE start a fresh session for it.
                self.session = None;
                Err(Refusal::new(
                    "unknown-session",
                    "your session expired while this order was a draft; the draft is still on this connection: PLACE again to place it under a new session",
                ))
            }
            Err(e) => Err(Refusal::store(waiter, &e)),
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
            .store()
            .list_orders(session, waiter.clock().now())
            .await
            .map_err(|e| Refusal::store(waiter, &e))?;
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
    let session = SessionId::generate();
    waiter
        .store()
        .create_session(session, waiter.clock().now())
        .await
        .map_err(|e| Refusal::store(waiter, &e))?;
    Ok(session)
}

/// Read, apply, compare-and-set; on a lost compare-and-set, again on the fresh order.
async fn write_through(
    waiter: &Waiter,
    session: SessionId,
    order_id: &str,
    changes: &[Change],
) -> Result<Order, Refusal> {
    let store = waiter.store();
    let menu = &waiter.config().menu;
    let retries = waiter.config().max_cas_retries;
    let mut attempt = 0;
    loop {
        let now = waiter.clock().now();
        let mut order = store
            .get_order(session, order_id, now)
            .await
            .map_err(|e| Refusal::store(waiter, &e))?;
        order
            .apply(changes, menu, now)
            .map_err(|e| Refusal::order(&e))?;
        match store.update_order(session, &order, now).await {
            Ok(()) => return Ok(order),
            Err(StoreError::Conflict { .. }) => {
                waiter.metrics().cas_conflict();
                if attempt >= retries {
                    return Err(Refusal::new(
                        "conflict",
                        format!(
                            "the order changed under this command {} times in a row; nothing was changed. SHOW it and retry",
                            attempt + 1
                        ),
                    ));
                }
                attempt += 1;
            }
            Err(e) => return Err(Refusal::store(waiter, &e)),
        }
    }
}
