//! The kitchen: moves placed orders to cooking, and cooking orders to ready, when due.
//!
//! Every `kitchen_poll` the kitchen asks the store for orders whose next step is due
//! (`kitchen_due`), and moves each one step on through the service layer
//! ([`Orders::kitchen_step`](crate::service::Orders::kitchen_step)): the same
//! compare-and-set every diner's write uses.
//!
//! Why that is enough with many waiters on one central store: every waiter's kitchen
//! polls the same due orders, and all of them may try the same step at once, but a step
//! is a write from version *n* to *n + 1*, so exactly one of them wins and the others get
//! [`StoreError::Conflict`] and skip the order. A diner's change racing the kitchen is
//! settled the same way. No leader election, no locks, no queue to lose: the due time
//! lives on the order itself, and an order whose step was lost to a crash is simply still
//! due on the next poll. In stateful mode the store is this waiter's memory and the
//! kitchen is its own.
//!
//! [`Order::kitchen_step`]: bistro_orders::Order::kitchen_step

use crate::Waiter;
use crate::service::ServiceError;
use bistro_store::OrderStore;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Orders fetched per store round trip.
pub const BATCH: usize = 256;
/// Most batches per poll, so a store that keeps returning the same conflicting orders
/// cannot keep the kitchen in one poll forever.
const MAX_BATCHES_PER_POLL: usize = 8;

/// Runs the kitchen until `stop` is cancelled; a poll in progress is finished first.
pub async fn run(waiter: Waiter, stop: CancellationToken) {
    let mut tick = tokio::time::interval(waiter.config().kitchen_poll);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                cook(&waiter).await;
            }
            () = stop.cancelled() => break,
        }
    }
    tracing::debug!("kitchen stopped");
}

/// One poll: stores every due kitchen step it can; returns how many it stored.
pub async fn cook(waiter: &Waiter) -> usize {
    let store = waiter.store();
    let mut stored = 0;
    for _ in 0..MAX_BATCHES_PER_POLL {
        let now = waiter.clock().now();
        let due = match store.kitchen_due(now, BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "kitchen: could not fetch due orders; retrying at the next poll");
                return stored;
            }
        };
        let full = due.len() == BATCH;
        for (session, order) in due {
            let id = order.id.clone();
            match waiter.orders().kitchen_step(session, order).await {
                Ok(Some(order)) => {
                    // Replicated mode: the step goes to the backup too, so a takeover
                    // continues from it rather than doing it again.
                    if let Err(e) = waiter.orders().settle(session).await {
                        tracing::info!(error = %e, "kitchen: the session moved after its step");
                        continue;
                    }
                    waiter.metrics().kitchen_transition();
                    stored += 1;
                    tracing::debug!(order = %order.id, status = %order.status, "kitchen step");
                }
                // Not due after all, or another waiter's kitchen (or the diner) changed
                // it first: if a step is still due, the next poll sees it.
                Ok(None) => {}
                Err(ServiceError::UnknownSession | ServiceError::OrderNotFound) => {
                    tracing::debug!(order = %id, "kitchen: the order's session expired before its step");
                }
                Err(ServiceError::Order(e)) => {
                    tracing::warn!(order = %id, error = %e, "kitchen: a due step was refused by the order's rules");
                }
                Err(e) => {
                    tracing::warn!(order = %id, error = %e, "kitchen: could not store a step; it stays due");
                }
            }
        }
        if !full {
            break;
        }
    }
    stored
}
