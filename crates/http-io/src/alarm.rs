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
    ///
    /// A deadline that moved later (a connection's idle deadline moves with every
    /// response) leaves the timer where it is while that is still ahead: moving a
    /// timer costs more, on every request, than the one early wake-up it saves, after
    /// which the timer is set for `due`.
    pub fn expired(&mut self, due: Instant, cx: &mut Context<'_>) -> bool {
        self.expired_at(Instant::now(), due, cx)
    }

    /// [`expired`](Self::expired) with the clock read by the caller just now (a socket
    /// that reads it for its own bookkeeping saves a second read per wait).
    pub fn expired_at(&mut self, now: Instant, due: Instant, cx: &mut Context<'_>) -> bool {
        if now >= due {
            return true;
        }
        let Some(sleep) = &mut self.sleep else {
            self.at = Some(due);
            let sleep = self.sleep.insert(Box::pin(tokio::time::sleep_until(due)));
            return sleep.as_mut().poll(cx).is_ready();
        };
        let early_but_ahead = self.at.is_some_and(|at| at <= due && at > now);
        if !early_but_ahead && self.at != Some(due) {
            self.at = Some(due);
            sleep.as_mut().reset(due);
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        if self.at == Some(due) {
            return true;
        }
        // The earlier setting came: now the timer is set for `due`, still ahead.
        self.at = Some(due);
        sleep.as_mut().reset(due);
        sleep.as_mut().poll(cx).is_ready()
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
    async fn a_later_deadline_keeps_the_timer_until_its_setting_comes() {
        let mut alarm = Alarm::default();
        let t0 = Instant::now();
        assert!(!expired(&mut alarm, t0 + Duration::from_secs(5)).await);
        let later = t0 + Duration::from_secs(8);
        assert!(!expired(&mut alarm, later).await);
        assert_eq!(
            alarm.at,
            Some(t0 + Duration::from_secs(5)),
            "left where it was"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(
            !expired(&mut alarm, later).await,
            "woken early, not expired"
        );
        assert_eq!(alarm.at, Some(later), "set for the deadline now");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(expired(&mut alarm, later).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_deadline_needs_no_timer() {
        let mut alarm = Alarm::default();
        assert!(expired(&mut alarm, Instant::now()).await);
        assert!(alarm.sleep.is_none());
    }
}
