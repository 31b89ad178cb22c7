//! Log lines that could repeat thousands of times a second (an accept loop out of file
//! descriptors, a saturated backend's queue) are written at most once per interval,
//! saying how many were held back; the metrics count every one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One throttled log line's state.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    /// Balancer milliseconds of the last line written (0: never).
    last_ms: AtomicU64,
    /// Occurrences held back since.
    held: AtomicU64,
}

impl Throttle {
    /// Whether to log an occurrence at `now_ms` with lines `interval_ms` apart;
    /// `Some(n)` means yes, and `n` occurrences were held back before this one.
    pub(crate) fn allow(&self, now_ms: u64, interval_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < interval_ms {
            self.held.fetch_add(1, Relaxed);
            return None;
        }
        // Two threads may both pass here; one extra line is harmless.
        self.last_ms.store(now_ms.max(1), Relaxed);
        Some(self.held.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let t = Throttle::default();
        assert_eq!(t.allow(10, 1_000), Some(0));
        assert_eq!(t.allow(20, 1_000), None);
        assert_eq!(t.allow(500, 1_000), None);
        assert_eq!(t.allow(1_010, 1_000), Some(2));
        assert_eq!(t.allow(1_011, 1_000), None);
    }
}
