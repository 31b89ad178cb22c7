//! Two clocks: the balancer's monotonic milliseconds (for state kept in atomics) and
//! unix seconds (for affinity tokens, which other balancer replicas must understand).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Monotonic milliseconds since the balancer started. Ejection deadlines are stored as
/// such numbers in atomics, so every worker reads them without a lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// Milliseconds from the epoch to `at` (0 for instants before it). Starts at 1 so
    /// that 0 can mean "never" in the atomics.
    pub(crate) fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    /// Milliseconds from the epoch to now.
    pub(crate) fn now_ms(&self) -> u64 {
        self.millis(Instant::now())
    }
}

/// Seconds since the unix epoch, as carried in affinity tokens.
pub(crate) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
