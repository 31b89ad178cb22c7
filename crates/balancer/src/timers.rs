//! The response timeout's timers, kept per worker for reuse.
//!
//! Every attempt waits for its response head under `upstream.response_timeout_ms`. A
//! fresh `tokio::time::timeout` per attempt allocates a timer, inserts it into the
//! runtime's timer wheel when first polled and takes it out again when dropped: two
//! trips into the timer driver (under its lock) per request, for a timer that nearly
//! never fires.
//!
//! A timer that is already in the wheel can be moved *later* without touching the
//! wheel: tokio only records the new deadline (one atomic), and when the wheel reaches
//! the old one it finds the new one and files the entry again. Every attempt's deadline
//! is "now + the same timeout", later than any set before it, so a worker keeps the
//! timers of finished attempts and the next attempt takes one back and moves it on.
//! What a reused timer costs is that move, and, once per timeout period, the wheel
//! filing it again.
//!
//! Cheaper still, a spare timer whose deadline is still ahead is not moved at all: it
//! wakes its next attempt early, once, and only then is set for that attempt's own
//! deadline.
//!
//! A spare timer stays in the wheel until its old deadline passes, and then wakes the
//! task that last waited on it; that task finds nothing to do. Only as many timers are
//! kept as the worker had attempts waiting at once, up to [`MAX_SPARE`]; beyond that
//! they are dropped (and leave the wheel) as before.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// Most spare timers a worker keeps; more are dropped when their attempt ends.
const MAX_SPARE: usize = 256;

/// One worker's spare response timers (see the module docs).
///
/// A worker's requests all run on its own thread, so the lock is never contended; it
/// is there because the worker's state is shared (`Arc`) with its tasks.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    spare: Mutex<Vec<Pin<Box<Sleep>>>>,
}

impl Timers {
    fn spare(&self) -> MutexGuard<'_, Vec<Pin<Box<Sleep>>>> {
        // A list of timers: a panic elsewhere cannot leave it inconsistent.
        self.spare
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A timer that completes at `deadline`, which must be on the current runtime, the
    /// worker's own (the timers kept are bound to the runtime that made them).
    pub(crate) fn until(&self, deadline: Instant) -> Timer<'_> {
        let reused = self.spare().pop();
        let sleep = match reused {
            // Set for an earlier moment still ahead (the deadline of a recent attempt):
            // left there, it wakes the task early once and is then set for `deadline`
            // (see `Timer::poll`), which costs less than moving it on every attempt.
            Some(sleep) if sleep.deadline() <= deadline && !sleep.is_elapsed() => sleep,
            Some(mut sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        Timer {
            sleep: Some(sleep),
            deadline,
            timers: self,
        }
    }
}

/// A response timer in use; back among the worker's spares when dropped.
#[derive(Debug)]
pub(crate) struct Timer<'a> {
    /// Always `Some` until the drop takes it; may be set earlier than `deadline`.
    sleep: Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    timers: &'a Timers,
}

impl Future for Timer<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let Some(sleep) = &mut self.sleep else {
            return Poll::Pending;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if sleep.deadline() >= deadline {
            return Poll::Ready(());
        }
        // An earlier setting came: the timer is set for the deadline, still ahead.
        sleep.as_mut().reset(deadline);
        sleep.as_mut().poll(cx)
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let Some(sleep) = self.sleep.take() else {
            return;
        };
        let mut spare = self.timers.spare();
        if spare.len() < MAX_SPARE {
            spare.push(sleep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_reused_timer_fires_at_its_new_deadline_not_its_old_one() {
        let timers = Timers::default();
        let t0 = Instant::now();
        {
            let first = timers.until(t0 + Duration::from_secs(1));
            tokio::time::timeout(Duration::from_millis(10), first)
                .await
                .expect_err("not due yet");
        }
        assert_eq!(timers.spare().len(), 1, "kept for the next attempt");
        tokio::time::advance(Duration::from_millis(500)).await;
        let second = timers.until(Instant::now() + Duration::from_secs(1));
        assert!(timers.spare().is_empty(), "the spare was taken");
        let mut second = pin!(second);
        // Past the first deadline the reused timer still waits for its own.
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(futures_poll(second.as_mut()).is_pending());
        tokio::time::advance(Duration::from_millis(400)).await;
        second.await;
        assert!(Instant::now() >= t0 + Duration::from_millis(1_500));
    }

    use std::pin::pin;

    fn futures_poll<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        let waker = std::task::Waker::noop();
        f.poll(&mut Context::from_waker(waker))
    }
}
