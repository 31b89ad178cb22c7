//! One timer for a deadline that moves.
//!
//! A connection's deadlines change with what it does (accepted, head started, idle
//! again, a write stalls), and a request body's deadline moves with each chunk.
//! Allocating a `Sleep` for each would cost an allocation per change on the hot path;
//! so one `Sleep` is allocated the first time a wait is needed (most connections and
//! bodies never wait on it) and reset only when the deadline actually changes.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use tokio::time::{Instant, Sleep};

/// A re-armable timer: see the module docs.
#[derive(Debug, Default)]
pub struct Alarm {
    sleep: Option<Pin<Box<Sleep>>>,
    /// The deadline `sleep` is set for.
    at: Option<Instant>,
}

impl Alarm {
    /// Whether `due` has passed; otherwise the timer is set for `due` and wakes the task
    /// of `cx` then.
    ///
    /// The clock is read first: tokio's timer fires on its next tick, so a deadline that
    /// has just passed would otherwise be reported a poll later.
    pub fn expired(&mut self, due: Instant, cx: &mut Context<'_>) -> bool {
        if Instant::now() >= due {
            return true;
        }
        if self.at != Some(due) {
            self.at = Some(due);
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(due),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(due))),
            }
        }
        self.sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Poll;
    use std::time::Duration;

    /// Polls `alarm` for `due` once, from a task.
    async fn expired(alarm: &mut Alarm, due: Instant) -> bool {
        poll_fn(|cx| Poll::Ready(alarm.expired(due, cx))).await
    }

    #[tokio::test(start_paused = true)]
    async fn it_fires_at_its_deadline_and_follows_a_moved_one() {
        let mut alarm = Alarm::default();
        let t0 = Instant::now();
        let due = t0 + Duration::from_secs(5);
        assert!(!expired(&mut alarm, due).await, "not yet");
        assert!(alarm.sleep.is_some(), "armed on the first wait");
        tokio::time::advance(Duration::from_secs(4)).await;
        let later = t0 + Duration::from_secs(8);
        assert!(!expired(&mut alarm, later).await, "moved later");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            !expired(&mut alarm, later).await,
            "the old deadline no longer counts"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(expired(&mut alarm, later).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_deadline_needs_no_timer() {
        let mut alarm = Alarm::default();
        assert!(expired(&mut alarm, Instant::now()).await);
        assert!(alarm.sleep.is_none());
    }
}
