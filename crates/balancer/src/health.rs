//! Whether a backend may receive requests: the state behind active checks and passive
//! ejection, kept in atomics so every worker reads it without a lock.
//!
//! Two independent signals decide availability:
//!
//! - **Active checks** ([`checker`](crate::checker)) probe `GET /readyz` on an interval.
//!   `fall` consecutive failures take the backend *down*, `rise` consecutive successes
//!   bring it back *up*. Backends start up, so traffic flows before the first probe.
//! - **Passive ejection** watches real traffic: `eject_after` consecutive connect failures
//!   or 5xx answers *eject* the backend for a backoff that doubles with each ejection in
//!   a row (base to max). When the backoff ends the backend is half-open: the next
//!   request probes it, one more failure ejects it again for twice as long, a success
//!   closes the circuit and resets the backoff.
//!
//! A backend is available when it is up and not ejected. Draining is separate (see
//! [`Core`](crate::backend::Core)): a draining backend is available to its pinned diners.
//!
//! Time is passed in as milliseconds on the balancer [`Clock`](crate::clock::Clock), so
//! the state machine is tested without sleeping.

use crate::config::HealthConfig;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// What the admin API reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealthState {
    /// Receiving traffic.
    Up,
    /// Failed its active checks.
    Down,
    /// Ejected by passive checks until the backoff ends.
    Ejected,
}

impl HealthState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HealthState::Up => "up",
            HealthState::Down => "down",
            HealthState::Ejected => "ejected",
        }
    }
}

/// Passive ejection settings, copied out of [`HealthConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ejection {
    pub(crate) after: u32,
    pub(crate) base_ms: u64,
    pub(crate) max_ms: u64,
}

impl From<&HealthConfig> for Ejection {
    fn from(c: &HealthConfig) -> Self {
        Ejection {
            after: c.eject_after,
            base_ms: c.ejection_base_ms,
            max_ms: c.ejection_max_ms,
        }
    }
}

/// One backend's health. Writers are rare (failures, probes), and the hot path only
/// reads, so the success path checks before it writes to keep the cache line shared.
#[derive(Debug)]
pub(crate) struct Health {
    up: AtomicBool,
    checks_ok: AtomicU32,
    checks_failed: AtomicU32,
    failures: AtomicU32,
    ejected_until: AtomicU64,
    ejections_in_row: AtomicU32,
    ejections_total: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            up: AtomicBool::new(true),
            checks_ok: AtomicU32::new(0),
            checks_failed: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections_in_row: AtomicU32::new(0),
            ejections_total: AtomicU64::new(0),
        }
    }
}

impl Health {
    /// Whether requests may go to the backend at `now_ms`.
    pub(crate) fn is_available(&self, now_ms: u64) -> bool {
        self.up.load(Relaxed) && now_ms >= self.ejected_until.load(Relaxed)
    }

    /// The state shown to operators.
    pub(crate) fn state(&self, now_ms: u64) -> HealthState {
        if !self.up.load(Relaxed) {
            HealthState::Down
        } else if now_ms < self.ejected_until.load(Relaxed) {
            HealthState::Ejected
        } else {
            HealthState::Up
        }
    }

    /// Ejections since start.
    pub(crate) fn ejections(&self) -> u64 {
        self.ejections_total.load(Relaxed)
    }

    /// A request got a non-5xx answer: the failure streak and the backoff reset.
    pub(crate) fn record_success(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        if self.ejections_in_row.load(Relaxed) != 0 {
            self.ejections_in_row.store(0, Relaxed);
        }
    }

    /// A request failed to connect or got a 5xx. Returns whether this failure ejected
    /// the backend (exactly one concurrent caller sees `true`).
    pub(crate) fn record_failure(&self, now_ms: u64, policy: Ejection) -> bool {
        if policy.after == 0 {
            return false;
        }
        let streak = self.failures.fetch_add(1, Relaxed).saturating_add(1);
        if streak < policy.after {
            return false;
        }
        let until = self.ejected_until.load(Relaxed);
        if now_ms < until {
            return false; // already ejected
        }
        let in_row = self.ejections_in_row.load(Relaxed).min(20);
        let backoff = policy
            .base_ms
            .saturating_mul(1 << in_row)
            .min(policy.max_ms);
        if self
            .ejected_until
            .compare_exchange(until, now_ms + backoff, Relaxed, Relaxed)
            .is_err()
        {
            return false; // another worker ejected it first
        }
        self.ejections_in_row.fetch_add(1, Relaxed);
        self.ejections_total.fetch_add(1, Relaxed);
        // Half-open once the backoff ends: the first failure then ejects again.
        self.failures.store(policy.after - 1, Relaxed);
        true
    }

    /// An active check finished. Returns `Some(up)` when the verdict changed.
    pub(crate) fn record_check(&self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        let up = self.up.load(Relaxed);
        if ok {
            self.checks_failed.store(0, Relaxed);
            let n = self.checks_ok.fetch_add(1, Relaxed).saturating_add(1);
            if !up && n >= rise {
                self.up.store(true, Relaxed);
                // A backend coming back starts with a clean slate.
                self.failures.store(0, Relaxed);
                self.ejected_until.store(0, Relaxed);
                self.ejections_in_row.store(0, Relaxed);
                return Some(true);
            }
        } else {
            self.checks_ok.store(0, Relaxed);
            let n = self.checks_failed.fetch_add(1, Relaxed).saturating_add(1);
            if up && n >= fall {
                self.up.store(false, Relaxed);
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Ejection = Ejection {
        after: 3,
        base_ms: 1_000,
        max_ms: 4_000,
    };

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let h = Health::default();
        assert!(!h.record_failure(10, POLICY));
        assert!(!h.record_failure(10, POLICY));
        h.record_success();
        assert!(!h.record_failure(10, POLICY));
        assert!(!h.record_failure(10, POLICY));
        assert!(h.is_available(10));
        assert!(h.record_failure(10, POLICY));
        assert!(!h.is_available(10));
        assert_eq!(h.state(10), HealthState::Ejected);
        assert!(h.is_available(1_010), "the ejection lasts the base backoff");
        assert_eq!(h.ejections(), 1);
    }

    #[test]
    fn backoff_doubles_while_the_probe_fails_and_resets_on_success() {
        let h = Health::default();
        for _ in 0..3 {
            h.record_failure(0, POLICY);
        }
        // Half-open at 1000: one failure ejects for 2 s, then 4 s, capped at 4 s.
        assert!(h.record_failure(1_000, POLICY));
        assert!(!h.is_available(2_999));
        assert!(h.is_available(3_000));
        assert!(h.record_failure(3_000, POLICY));
        assert!(h.is_available(7_000));
        assert!(h.record_failure(7_000, POLICY));
        assert!(!h.is_available(10_999));
        assert!(h.is_available(11_000), "capped at max_ms");
        h.record_success();
        for _ in 0..2 {
            assert!(
                !h.record_failure(11_000, POLICY),
                "a success closes the circuit"
            );
        }
        assert!(h.record_failure(11_000, POLICY));
        assert!(h.is_available(12_000), "and resets the backoff to base");
    }

    #[test]
    fn failures_while_ejected_do_not_extend_the_ejection() {
        let h = Health::default();
        for _ in 0..3 {
            h.record_failure(0, POLICY);
        }
        assert!(!h.record_failure(500, POLICY));
        assert!(h.is_available(1_000));
    }

    #[test]
    fn zero_threshold_disables_ejection() {
        let h = Health::default();
        let off = Ejection { after: 0, ..POLICY };
        for _ in 0..100 {
            assert!(!h.record_failure(0, off));
        }
        assert!(h.is_available(0));
    }

    #[test]
    fn active_checks_use_rise_and_fall() {
        let h = Health::default();
        assert_eq!(h.record_check(false, 2, 2), None);
        assert_eq!(h.record_check(false, 2, 2), Some(false));
        assert_eq!(h.state(0), HealthState::Down);
        assert_eq!(h.record_check(true, 2, 2), None);
        assert_eq!(h.record_check(false, 2, 2), None);
        assert_eq!(h.record_check(true, 2, 2), None);
        assert_eq!(h.record_check(true, 2, 2), Some(true));
        assert!(h.is_available(0));
    }
}
