//! When a failed request may be sent again, and how many retries the balancer can afford.
//!
//! The rules (which the proxy applies with [`RetrySafety`](crate::RetrySafety)):
//!
//! - A request that never reached a backend (connect failed, or hyper handed it back
//!   unsent) may go to another backend, unless the diner is pinned to a stateful one
//!   (then the session-lost policy decides).
//! - A request that failed after it was sent is sent again only if it is idempotent
//!   ([`is_idempotent`]) or carries `Idempotency-Key` (the waiter replays the first
//!   result), and only if its body was buffered.
//! - Never once response bytes reached the client: the proxy only retries before it
//!   hands a response to hyper.
//! - A [`RetryBudget`] bounds the extra load: each request deposits `budget_ratio` of a
//!   retry, each retry withdraws one, and a small per-second floor lets a quiet balancer
//!   retry too. During an outage retries add at most ~20% load instead of multiplying it.

use crate::config::ResendPolicy;
use crate::error::RetrySafety;
use http::{HeaderMap, Method};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Whether `method` may be repeated without changing the outcome (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Whether a request may be sent again after it reached a backend, under `policy`.
pub(crate) fn may_resend(policy: ResendPolicy, method: &Method, headers: &HeaderMap) -> bool {
    match policy {
        ResendPolicy::Idempotent => {
            is_idempotent(method) || headers.contains_key("idempotency-key")
        }
        ResendPolicy::IdempotencyKey => headers.contains_key("idempotency-key"),
        ResendPolicy::Never => false,
    }
}

/// What the proxy knows about a failed attempt when it decides what comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failed {
    /// Whether the request may have reached the backend.
    pub(crate) safety: RetrySafety,
    /// Whether the request can still be sent (a streamed body is used up once sent).
    pub(crate) available: bool,
    /// Whether it may be sent again after reaching a backend ([`may_resend`], with its
    /// body buffered).
    pub(crate) resendable: bool,
    /// Whether the diner is pinned to the backend that failed.
    pub(crate) pinned: bool,
    /// Whether that backend holds sessions of its own (stateful or replicated).
    pub(crate) holds_sessions: bool,
    /// Whether the failure says the backend is down (not just this exchange).
    pub(crate) backend_down: bool,
}

/// What to do after a failed attempt: the retry rules of the module docs as one pure
/// decision, tested as a table; the proxy then applies it (which backend, the budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextAttempt {
    /// The diner's own backend was never reached: its backup takes over (replicated),
    /// or the session-lost policy decides, then another backend.
    PinnedElsewhere,
    /// Never reached a backend: another one, if the budget allows.
    Elsewhere,
    /// May have reached it, and may be sent again (budget allowing): to the same
    /// backend when `stay` (it alone holds the diner's notes), else elsewhere.
    Resend {
        /// Whether the request goes back to the same backend.
        stay: bool,
    },
    /// Answer the client with the failure.
    Fail,
}

/// The decision for `failed` (see [`NextAttempt`]).
pub(crate) fn next_attempt(failed: Failed) -> NextAttempt {
    match failed.safety {
        RetrySafety::NotSent if failed.available && failed.pinned => NextAttempt::PinnedElsewhere,
        RetrySafety::NotSent if failed.available => NextAttempt::Elsewhere,
        RetrySafety::MaybeSent if failed.resendable => {
            // A session-holding pinned backend is the only one with the diner's notes:
            // the request goes back there, unless it just went down.
            let stay = failed.pinned && failed.holds_sessions;
            if stay && failed.backend_down {
                NextAttempt::Fail
            } else {
                NextAttempt::Resend { stay }
            }
        }
        _ => NextAttempt::Fail,
    }
}

/// Deposits are counted in thousandths of a retry.
const MILLI: u64 = 1000;

/// Most retries that can be saved up (beyond the per-second floor).
const MAX_SAVED: u64 = 100 * MILLI;

/// One worker's retry budget. Only its worker touches it, so plain loads and stores
/// suffice (no read-modify-write), and nothing is shared between cores.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    ratio_milli: u64,
    floor_per_sec: u64,
    balance: AtomicU64,
    floor_second: AtomicU64,
    floor_used: AtomicU64,
}

impl RetryBudget {
    /// A budget of `ratio` retries per request plus `floor_per_sec` retries per second.
    pub(crate) fn new(ratio: f64, floor_per_sec: u32) -> RetryBudget {
        RetryBudget {
            ratio_milli: (ratio.clamp(0.0, 1.0) * MILLI as f64).round() as u64,
            floor_per_sec: u64::from(floor_per_sec),
            balance: AtomicU64::new(0),
            floor_second: AtomicU64::new(0),
            floor_used: AtomicU64::new(0),
        }
    }

    /// Called once per request.
    pub(crate) fn deposit(&self) {
        let b = self.balance.load(Relaxed);
        if b < MAX_SAVED {
            self.balance
                .store((b + self.ratio_milli).min(MAX_SAVED), Relaxed);
        }
    }

    /// Takes one retry at `now_ms` (balancer clock); `false` when the budget is spent.
    pub(crate) fn withdraw(&self, now_ms: u64) -> bool {
        let b = self.balance.load(Relaxed);
        if b >= MILLI {
            self.balance.store(b - MILLI, Relaxed);
            return true;
        }
        let second = now_ms / 1000;
        if self.floor_second.load(Relaxed) != second {
            self.floor_second.store(second, Relaxed);
            self.floor_used.store(0, Relaxed);
        }
        let used = self.floor_used.load(Relaxed);
        if used < self.floor_per_sec {
            self.floor_used.store(used + 1, Relaxed);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_attempt_follows_the_retry_rules() {
        use NextAttempt::*;
        use RetrySafety::*;
        // (safety, available, resendable, pinned, holds sessions, backend down) → next
        let table = [
            ((NotSent, true, false, false, false, false), Elsewhere),
            ((NotSent, true, false, true, true, false), PinnedElsewhere),
            ((NotSent, true, true, true, false, true), PinnedElsewhere),
            ((NotSent, false, false, false, false, false), Fail),
            ((NotSent, false, true, true, true, false), Fail),
            ((MaybeSent, true, false, false, false, false), Fail),
            (
                (MaybeSent, true, true, false, false, false),
                Resend { stay: false },
            ),
            (
                (MaybeSent, true, true, true, false, false),
                Resend { stay: false },
            ),
            (
                (MaybeSent, true, true, true, true, false),
                Resend { stay: true },
            ),
            ((MaybeSent, true, true, true, true, true), Fail),
            (
                (MaybeSent, true, true, false, true, true),
                Resend { stay: false },
            ),
            ((Never, true, true, false, false, false), Fail),
            ((Never, true, true, true, true, false), Fail),
        ];
        for ((safety, available, resendable, pinned, holds_sessions, backend_down), want) in table {
            let failed = Failed {
                safety,
                available,
                resendable,
                pinned,
                holds_sessions,
                backend_down,
            };
            assert_eq!(next_attempt(failed), want, "{failed:?}");
        }
    }

    #[test]
    fn idempotency() {
        let p = ResendPolicy::Idempotent;
        let mut headers = HeaderMap::new();
        assert!(may_resend(p, &Method::GET, &headers));
        assert!(may_resend(p, &Method::DELETE, &headers));
        assert!(!may_resend(p, &Method::POST, &headers));
        assert!(!may_resend(p, &Method::PATCH, &headers));
        assert!(!may_resend(
            ResendPolicy::IdempotencyKey,
            &Method::GET,
            &headers
        ));
        headers.insert("idempotency-key", "k1".parse().unwrap());
        assert!(may_resend(p, &Method::POST, &headers));
        assert!(may_resend(
            ResendPolicy::IdempotencyKey,
            &Method::POST,
            &headers
        ));
        assert!(!may_resend(ResendPolicy::Never, &Method::GET, &headers));
    }

    #[test]
    fn budget_allows_the_ratio_plus_the_floor() {
        let budget = RetryBudget::new(0.2, 3);
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..1000).filter(|_| budget.withdraw(5_000)).count();
        assert_eq!(granted, 20 + 3);
        assert!(!budget.withdraw(5_999));
        assert!(budget.withdraw(6_000), "the floor renews every second");
    }

    #[test]
    fn savings_are_capped() {
        let budget = RetryBudget::new(1.0, 0);
        for _ in 0..1_000 {
            budget.deposit();
        }
        assert_eq!((0..1000).filter(|_| budget.withdraw(0)).count(), 100);
    }
}
