//! The waiter's clock: unix milliseconds that tests can move.
//!
//! The domain and the stores never read a clock; they are handed `now`. The waiter takes
//! `now` from here: the wall time when the waiter was built plus the time elapsed on
//! tokio's clock since then. In production that is just the wall time (without its jumps:
//! it is monotonic). Under `tokio::time::pause()` it stands still until a test calls
//! `tokio::time::advance`, so session expiry and kitchen progress can be tested in
//! milliseconds of real time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// A monotonic unix-milliseconds clock driven by tokio's time.
#[derive(Debug, Clone)]
pub struct Clock {
    wall_at_start_ms: u64,
    start: Instant,
}

impl Clock {
    /// A clock reading the current wall time.
    pub fn new() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Clock::starting_at(u64::try_from(wall.as_millis()).unwrap_or(u64::MAX))
    }

    /// A clock that reads `unix_ms` now and moves with tokio's time from here.
    pub fn starting_at(unix_ms: u64) -> Clock {
        Clock {
            wall_at_start_ms: unix_ms,
            start: Instant::now(),
        }
    }

    /// Unix milliseconds now.
    pub fn now(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall_at_start_ms.saturating_add(elapsed)
    }

    /// Time since the clock was built (the waiter's uptime).
    pub fn uptime(&self) -> Duration {
        self.start.elapsed()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn moves_only_with_tokio_time() {
        let clock = Clock::starting_at(1_000);
        assert_eq!(clock.now(), 1_000);
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now(), 2_500);
        assert_eq!(clock.uptime(), Duration::from_millis(1_500));
    }

    #[test]
    fn new_reads_the_wall_time() {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let now = Clock::new().now();
        assert!(now.abs_diff(wall) < 5_000, "{now} vs {wall}");
    }
}
