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
//! Besides availability the state remembers *why* a backend is out ([`DownReason`]) and
//! *since when*, because the two decide what a diner pinned to it is told: a backend
//! whose connections are refused is gone (its process died, its notes with it), while
//! one that is slow, hung or failing its checks is alive and may come back, so its
//! diners are asked to retry until it has been out for too long (see
//! [`target`](crate::target)). A waiter that is not ready because its store is down
//! says so in its `/readyz` answer, and when every backend is out for that reason the
//! balancer reports a store outage rather than N backend faults.
//!
//! Time is passed in as milliseconds on the balancer [`Clock`](crate::clock::Clock), so
//! the state machine is tested without sleeping.

use crate::config::HealthConfig;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

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

/// Why a backend last failed a check or a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DownReason {
    /// Nothing failed since the last success.
    None = 0,
    /// Connections are refused: nothing listens, the process is gone.
    Refused,
    /// No answer within the timeout: hung, paused or overloaded.
    Timeout,
    /// It answered, but not ready or with a server error.
    Failing,
    /// Its `/readyz` says its (shared) store is unavailable.
    StoreUnavailable,
    /// Its `/readyz` says it is shutting down.
    ShuttingDown,
}

impl DownReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DownReason::None => "none",
            DownReason::Refused => "refused",
            DownReason::Timeout => "timeout",
            DownReason::Failing => "failing",
            DownReason::StoreUnavailable => "store-unavailable",
            DownReason::ShuttingDown => "shutting-down",
        }
    }

    fn from_code(code: u8) -> DownReason {
        match code {
            1 => DownReason::Refused,
            2 => DownReason::Timeout,
            3 => DownReason::Failing,
            4 => DownReason::StoreUnavailable,
            5 => DownReason::ShuttingDown,
            _ => DownReason::None,
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
    /// A [`DownReason`] code: why the last failure happened.
    reason: AtomicU8,
    /// Balancer milliseconds when the backend last went from available to not; 0
    /// while it is available.
    down_since: AtomicU64,
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
            reason: AtomicU8::new(0),
            down_since: AtomicU64::new(0),
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

    /// Whether it is ejected at `now_ms`.
    pub(crate) fn is_ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until.load(Relaxed)
    }

    /// Ejections since start.
    pub(crate) fn ejections(&self) -> u64 {
        self.ejections_total.load(Relaxed)
    }

    /// Why it last failed ([`DownReason::None`] after a success).
    pub(crate) fn reason(&self) -> DownReason {
        DownReason::from_code(self.reason.load(Relaxed))
    }

    /// Whether its connections were refused the last time anything tried: the process
    /// is gone, not merely slow.
    pub(crate) fn is_gone(&self) -> bool {
        self.reason() == DownReason::Refused
    }

    /// How long it has been unavailable at `now_ms` (zero while available).
    pub(crate) fn down_for(&self, now_ms: u64) -> u64 {
        if self.is_available(now_ms) {
            return 0;
        }
        match self.down_since.load(Relaxed) {
            0 => 0,
            since => now_ms.saturating_sub(since),
        }
    }

    fn note_reason(&self, reason: DownReason) {
        if self.reason.load(Relaxed) != reason as u8 {
            self.reason.store(reason as u8, Relaxed);
        }
    }

    fn note_down(&self, now_ms: u64) {
        if self.down_since.load(Relaxed) == 0 {
            // Several writers may race; any of their times is a fine answer.
            self.down_since.store(now_ms.max(1), Relaxed);
        }
    }

    /// A request got a non-5xx answer: the failure streak and the backoff reset.
    pub(crate) fn record_success(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        if self.ejections_in_row.load(Relaxed) != 0 {
            self.ejections_in_row.store(0, Relaxed);
        }
        if self.reason.load(Relaxed) != 0 {
            self.reason.store(0, Relaxed);
        }
        if self.down_since.load(Relaxed) != 0 && self.up.load(Relaxed) {
            self.down_since.store(0, Relaxed);
        }
    }

    /// A request failed to connect or got a 5xx, for `reason`. Returns whether this
    /// failure ejected the backend (exactly one concurrent caller sees `true`).
    /// `may_eject` is asked just before an ejection: the share of backends already
    /// ejected may forbid it (see [`HealthConfig::max_ejection_percent`]).
    pub(crate) fn record_failure(
        &self,
        now_ms: u64,
        policy: Ejection,
        reason: DownReason,
        may_eject: impl FnOnce() -> bool,
    ) -> bool {
        self.note_reason(reason);
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
        if !may_eject() {
            return false;
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
        self.note_down(now_ms);
        // Half-open once the backoff ends: the first failure then ejects again.
        self.failures.store(policy.after - 1, Relaxed);
        true
    }

    /// An active check finished: `Ok` passed, `Err(reason)` failed. Returns
    /// `Some(up)` when the verdict changed.
    pub(crate) fn record_check(
        &self,
        outcome: Result<(), DownReason>,
        rise: u32,
        fall: u32,
        now_ms: u64,
    ) -> Option<bool> {
        let up = self.up.load(Relaxed);
        let ok = outcome.is_ok();
        if let Err(reason) = outcome {
            self.note_reason(reason);
        }
        if ok {
            self.checks_failed.store(0, Relaxed);
            let n = self.checks_ok.fetch_add(1, Relaxed).saturating_add(1);
            if !up && n >= rise {
                self.up.store(true, Relaxed);
                // A backend coming back starts with a clean slate.
                self.failures.store(0, Relaxed);
                self.ejected_until.store(0, Relaxed);
                self.ejections_in_row.store(0, Relaxed);
                self.reason.store(0, Relaxed);
                self.down_since.store(0, Relaxed);
                return Some(true);
            }
        } else {
            self.checks_ok.store(0, Relaxed);
            let n = self.checks_failed.fetch_add(1, Relaxed).saturating_add(1);
            // A refused connection is certain: the process is gone, no need to wait
            // for `fall` probes to agree.
            if up && (n >= fall || self.is_gone()) {
                self.up.store(false, Relaxed);
                self.note_down(now_ms);
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

    fn fail(h: &Health, now_ms: u64) -> bool {
        h.record_failure(now_ms, POLICY, DownReason::Failing, || true)
    }

    fn check(h: &Health, ok: bool) -> Option<bool> {
        let outcome = if ok { Ok(()) } else { Err(DownReason::Failing) };
        h.record_check(outcome, 2, 2, 5)
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let h = Health::default();
        assert!(!fail(&h, 10));
        assert!(!fail(&h, 10));
        h.record_success();
        assert!(!fail(&h, 10));
        assert!(!fail(&h, 10));
        assert!(h.is_available(10));
        assert!(fail(&h, 10));
        assert!(!h.is_available(10));
        assert_eq!(h.state(10), HealthState::Ejected);
        assert!(h.is_available(1_010), "the ejection lasts the base backoff");
        assert_eq!(h.ejections(), 1);
    }

    #[test]
    fn backoff_doubles_while_the_probe_fails_and_resets_on_success() {
        let h = Health::default();
        for _ in 0..3 {
            fail(&h, 0);
        }
        // Half-open at 1000: one failure ejects for 2 s, then 4 s, capped at 4 s.
        assert!(fail(&h, 1_000));
        assert!(!h.is_available(2_999));
        assert!(h.is_available(3_000));
        assert!(fail(&h, 3_000));
        assert!(h.is_available(7_000));
        assert!(fail(&h, 7_000));
        assert!(!h.is_available(10_999));
        assert!(h.is_available(11_000), "capped at max_ms");
        h.record_success();
        for _ in 0..2 {
            assert!(!fail(&h, 11_000), "a success closes the circuit");
        }
        assert!(fail(&h, 11_000));
        assert!(h.is_available(12_000), "and resets the backoff to base");
    }

    #[test]
    fn failures_while_ejected_do_not_extend_the_ejection() {
        let h = Health::default();
        for _ in 0..3 {
            fail(&h, 0);
        }
        assert!(!fail(&h, 500));
        assert!(h.is_available(1_000));
    }

    #[test]
    fn zero_threshold_disables_ejection() {
        let h = Health::default();
        let off = Ejection { after: 0, ..POLICY };
        for _ in 0..100 {
            assert!(!h.record_failure(0, off, DownReason::Failing, || true));
        }
        assert!(h.is_available(0));
    }

    #[test]
    fn active_checks_use_rise_and_fall() {
        let h = Health::default();
        assert_eq!(check(&h, false), None);
        assert_eq!(check(&h, false), Some(false));
        assert_eq!(h.state(0), HealthState::Down);
        assert_eq!(h.down_for(105), 100, "down since the check at 5 ms");
        assert_eq!(check(&h, true), None);
        assert_eq!(check(&h, false), None);
        assert_eq!(check(&h, true), None);
        assert_eq!(check(&h, true), Some(true));
        assert!(h.is_available(0));
        assert_eq!(h.down_for(1_000), 0);
        assert_eq!(h.reason(), DownReason::None);
    }

    #[test]
    fn a_refused_probe_takes_it_down_at_once_and_marks_it_gone() {
        let h = Health::default();
        assert_eq!(
            h.record_check(Err(DownReason::Refused), 2, 3, 7),
            Some(false)
        );
        assert!(h.is_gone());
        assert_eq!(h.reason().as_str(), "refused");
        let slow = Health::default();
        assert_eq!(slow.record_check(Err(DownReason::Timeout), 2, 3, 7), None);
        assert!(!slow.is_gone(), "a timeout is not proof of death");
    }

    #[test]
    fn the_ejection_share_can_forbid_an_ejection() {
        let h = Health::default();
        for _ in 0..5 {
            assert!(!h.record_failure(0, POLICY, DownReason::Timeout, || false));
        }
        assert!(h.is_available(0), "not ejected while the share is used up");
        assert!(h.record_failure(0, POLICY, DownReason::Timeout, || true));
        assert!(h.is_ejected(1));
        assert_eq!(h.down_for(501), 500, "down since 1 ms (0 means never)");
        assert_eq!(h.reason(), DownReason::Timeout);
        h.record_success();
        assert_eq!(h.reason(), DownReason::None);
    }
}
