//! Connection slots: how many requests one worker may have in flight to one backend,
//! and the queue of those waiting for a slot (HAProxy's `maxconn` and `maxqueue` on a
//! server, with `timeout queue`).
//!
//! Without a cap, ten thousand clients mean ten thousand upstream connections: the
//! balancer runs out of file descriptors, a waiter drowns in connections, and the
//! failures look like the waiter's. With it, at most `upstream.max_connections`
//! requests are in flight to a backend (split over the workers) and the rest wait
//! their turn, first come first served, for at most `upstream.queue_timeout_ms`; a
//! request that finds the queue full, or waits too long, gets `503
//! backend-queue-full` with `Retry-After`. A full queue is the balancer's own limit,
//! so it never counts against the backend's health.
//!
//! A slot is held for an exchange's whole life (request sent, response body read): it
//! is taken here and given back by the [`Lease`](crate::body::Lease) when the exchange
//! ends. The idle pool adds at most `pool_max_idle` idle connections per worker, so the
//! connections open to a backend stay bounded too.
//!
//! The semaphore is tokio's: waiters are served in order, and a permit handed back
//! goes to the longest waiter, so a burst cannot jump the queue.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Slots and queue places per worker, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capacity {
    pub(crate) slots: usize,
    pub(crate) queue: usize,
}

impl Capacity {
    /// For backends whose `Local`s never take slots (the TCP proxy's).
    pub(crate) const UNUSED: Capacity = Capacity { slots: 1, queue: 0 };
}

/// Why no slot was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// Every slot was busy and the queue full: refused at once.
    QueueFull,
    /// Waited the whole queue timeout.
    Timeout(Duration),
    /// The waiting was given up (the caller's own reason, e.g. the backend went down).
    Abandoned,
}

/// One worker's slots to one backend.
#[derive(Debug)]
pub(crate) struct Slots {
    permits: Semaphore,
    capacity: usize,
    queue: usize,
    queued: AtomicUsize,
}

impl Slots {
    pub(crate) fn new(capacity: usize, queue: usize) -> Slots {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Slots {
            permits: Semaphore::new(capacity),
            capacity,
            queue,
            queued: AtomicUsize::new(0),
        }
    }

    /// Takes a slot if one is free and nobody waits for one.
    pub(crate) fn try_take(&self) -> bool {
        match self.permits.try_acquire() {
            Ok(permit) => {
                // Given back explicitly by `give_back` when the exchange ends.
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Waits in line for a slot, for at most `timeout`, or until `abandon` resolves.
    pub(crate) async fn take(
        &self,
        timeout: Duration,
        abandon: impl std::future::Future<Output = ()>,
    ) -> Result<(), NoSlot> {
        if self.try_take() {
            return Ok(());
        }
        if self.queued.fetch_add(1, Relaxed) >= self.queue {
            self.queued.fetch_sub(1, Relaxed);
            return Err(NoSlot::QueueFull);
        }
        let waited = tokio::select! {
            biased;
            permit = tokio::time::timeout(timeout, self.permits.acquire()) => match permit {
                Ok(Ok(permit)) => {
                    permit.forget();
                    Ok(())
                }
                // The semaphore is never closed; treat it like a timeout if it were.
                Ok(Err(_)) | Err(_) => Err(NoSlot::Timeout(timeout)),
            },
            () = abandon => Err(NoSlot::Abandoned),
        };
        self.queued.fetch_sub(1, Relaxed);
        waited
    }

    /// Gives back a slot taken with [`Slots::try_take`] or [`Slots::take`].
    pub(crate) fn give_back(&self) {
        self.permits.add_permits(1);
    }

    /// Requests waiting for a slot now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }

    /// Slots in use now.
    pub(crate) fn busy(&self) -> usize {
        self.capacity - self.permits.available_permits().min(self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_at_once_and_waiters_are_served_in_order() {
        let slots = std::sync::Arc::new(Slots::new(1, 2));
        assert!(slots.try_take());
        assert_eq!(slots.busy(), 1);
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for i in 0..2 {
            let (slots, order) = (slots.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                slots.take(LONG, std::future::pending()).await.unwrap();
                order.lock().unwrap().push(i);
                slots.give_back();
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(slots.queued(), 2);
        assert_eq!(
            slots.take(LONG, std::future::pending()).await,
            Err(NoSlot::QueueFull)
        );
        assert!(!slots.try_take(), "no barging past the queue");
        slots.give_back();
        for w in waiting {
            w.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec![0, 1],
            "first come, first served"
        );
        assert_eq!(slots.queued(), 0);
        assert_eq!(slots.busy(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_times_out_or_is_abandoned() {
        let slots = Slots::new(1, 10);
        assert!(slots.try_take());
        let timeout = Duration::from_millis(300);
        assert_eq!(
            slots.take(timeout, std::future::pending()).await,
            Err(NoSlot::Timeout(timeout))
        );
        assert_eq!(
            slots.take(LONG, std::future::ready(())).await,
            Err(NoSlot::Abandoned)
        );
        assert_eq!(slots.queued(), 0, "the places are given back");
    }
}
