//! The balancer's time: monotonic milliseconds (for state kept in atomics) and unix
//! seconds (for affinity tokens, which other balancer replicas must understand).
//!
//! Every decision the balancer takes by time reads one [`Clock`]: ejection deadlines
//! and backoff, how long a stateful backend has been down, affinity token issue and
//! expiry, drain deadlines, the retry budget. Pure I/O timeouts (a socket that stays
//! silent, a body that trickles) stay on tokio's timers: they bound waiting on a peer,
//! and moving a clock cannot make a peer answer.
//!
//! The clock is the system's unless [`BalancerConfig::clock`](crate::BalancerConfig::clock)
//! says otherwise. A [`ManualClock`] lets a test or a simulation move the balancer's
//! time forward ([`ManualClock::advance`]) instead of sleeping through a backoff or a
//! token's lifetime: it runs with real time plus whatever was added.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The time source a balancer decides by: the system clock (the default), or one a
/// [`ManualClock`] moves forward.
///
/// Two clocks are equal when they are the same source: every system clock equals every
/// other; a manual one equals only the clocks made from the same [`ManualClock`].
#[derive(Debug, Clone)]
pub struct Clock {
    /// Where the monotonic milliseconds count from.
    epoch: Instant,
    /// Milliseconds added by [`ManualClock::advance`]; `None` for the system clock, so
    /// production reads no shared atomic per request.
    skew: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock {
            epoch: Instant::now(),
            skew: None,
        }
    }

    /// How far a manual clock was moved forward (zero for the system clock).
    fn skew_ms(&self) -> u64 {
        self.skew.as_ref().map_or(0, |s| s.load(Relaxed))
    }

    /// Milliseconds from the epoch to `at` (0 for instants before it), plus what a
    /// manual clock was advanced by. Starts at 1 so that 0 can mean "never" in the
    /// atomics.
    pub(crate) fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64 + 1 + self.skew_ms()
    }

    /// Milliseconds from the epoch to now.
    pub(crate) fn now_ms(&self) -> u64 {
        self.millis(Instant::now())
    }

    /// Seconds since the unix epoch, as carried in affinity tokens.
    pub(crate) fn unix_secs(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        (now + self.skew_ms()) / 1000
    }
}

impl Default for Clock {
    /// The system clock.
    fn default() -> Clock {
        Clock::system()
    }
}

impl PartialEq for Clock {
    fn eq(&self, other: &Clock) -> bool {
        match (&self.skew, &other.skew) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// A clock for tests and simulations: real time plus whatever [`advance`](Self::advance)
/// added. Give a balancer [`clock`](Self::clock) in [`BalancerConfig::clock`](crate::BalancerConfig::clock)
/// and keep this handle to move its time forward (never back: the balancer's
/// deadlines assume time only grows).
///
/// ```
/// use std::time::Duration;
/// let manual = bistro_balancer::ManualClock::new();
/// let mut config = bistro_balancer::BalancerConfig::default();
/// config.clock = manual.clock();
/// // … start the balancer, eject a backend …
/// manual.advance(Duration::from_secs(5)); // its backoff has passed
/// assert_eq!(manual.advanced(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    skew: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock that runs with real time until advanced.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// The [`Clock`] to configure; every clock made from this handle moves with it.
    pub fn clock(&self) -> Clock {
        Clock {
            epoch: Instant::now(),
            skew: Some(Arc::clone(&self.skew)),
        }
    }

    /// Moves time forward by `by` (whole milliseconds) for every clock made from this
    /// handle.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.skew
            .fetch_update(Relaxed, Relaxed, |s| Some(s.saturating_add(ms)))
            .ok();
    }

    /// How far the clock was moved forward in all.
    pub fn advanced(&self) -> Duration {
        Duration::from_millis(self.skew.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_both_times_forward() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let (ms, secs) = (clock.now_ms(), clock.unix_secs());
        manual.advance(Duration::from_secs(90));
        assert!(clock.now_ms() >= ms + 90_000);
        assert!(clock.unix_secs() >= secs + 90);
        assert!(
            clock.unix_secs() <= Clock::system().unix_secs() + 91,
            "real time plus the advance, not more"
        );
        assert_eq!(manual.advanced(), Duration::from_secs(90));
    }

    #[test]
    fn the_system_clock_is_not_moved_by_a_manual_one() {
        let manual = ManualClock::new();
        let system = Clock::system();
        let before = system.now_ms();
        manual.advance(Duration::from_secs(3600));
        assert!(system.now_ms() < before + 3_600_000);
        assert_eq!(system.skew_ms(), 0);
    }

    #[test]
    fn clocks_are_equal_when_they_share_a_source() {
        let manual = ManualClock::new();
        assert_eq!(Clock::system(), Clock::default());
        assert_eq!(manual.clock(), manual.clock());
        assert_ne!(manual.clock(), Clock::system());
        assert_ne!(manual.clock(), ManualClock::new().clock());
    }

    #[test]
    fn millis_start_at_one() {
        let clock = Clock::system();
        assert_eq!(clock.millis(clock.epoch), 1);
        if let Some(before) = clock.epoch.checked_sub(Duration::from_millis(5)) {
            assert_eq!(
                clock.millis(before),
                1,
                "instants before the epoch count as it"
            );
        }
    }
}
