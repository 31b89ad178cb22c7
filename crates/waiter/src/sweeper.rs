//! The sweeper: deletes expired sessions (with their orders and idempotency records)
//! and refreshes the session and order counts shown in `/metrics`.
//!
//! Expiry itself does not wait for the sweeper: every store checks a session's TTL on
//! each access, so an expired session is `unknown-session` at once. Sweeping only frees
//! the space, in batches so one round trip never holds a central store for long.

use crate::Waiter;
use bistro_store::OrderStore;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Runs the sweeper until `stop` is cancelled; the first sweep is at once, so the counts
/// are known from the start.
pub async fn run(waiter: Waiter, stop: CancellationToken) {
    let mut tick = tokio::time::interval(waiter.config().sweep_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                sweep(&waiter).await;
            }
            () = stop.cancelled() => break,
        }
    }
    tracing::debug!("sweeper stopped");
}

/// One sweep: deletes expired sessions batch by batch, then refreshes the counts;
/// returns how many sessions went.
pub async fn sweep(waiter: &Waiter) -> usize {
    let store = waiter.store();
    let batch = waiter.config().sweep_batch.max(1);
    let mut removed = 0;
    if let Some(handoff) = waiter.handoff() {
        handoff.sweep(waiter.clock().now()).await;
    }
    loop {
        match store.sweep(waiter.clock().now(), batch).await {
            Ok(n) => {
                removed += n;
                if n < batch {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "sweeper: could not delete expired sessions; retrying at the next sweep");
                break;
            }
        }
    }
    if removed > 0 {
        tracing::debug!(removed, "swept expired sessions");
    }
    match store.counts().await {
        Ok(counts) => waiter.metrics().set_counts(counts),
        Err(e) => tracing::warn!(error = %e, "sweeper: could not read the store's counts"),
    }
    removed
}
