//! Limits per client IP: open connections, and the rate of session-creating requests.
//!
//! One client must not be able to take the restaurant for itself: by holding thousands
//! of connections, or by creating sessions as fast as it can (each one an empty order
//! a stateful waiter keeps in memory, or a row in the central store). Both limits are
//! keyed by client IP and answered `429` problem+json with `Retry-After`.
//!
//! - **Connections** are counted per socket peer. A trusted proxy speaks for many
//!   clients, so its connections are not counted.
//! - **Session creations** go through a token bucket per client IP (the IP from
//!   `X-Forwarded-For` when the peer is a trusted proxy, see [`client_ip`](crate::client_ip)):
//!   `session_burst_per_ip` tokens, refilled at `session_rate_per_ip` per second.
//!
//! Both tables are behind one mutex each, taken once per connection (open and close)
//! and once per session-creating request, never on the ordinary request path. The
//! bucket table forgets buckets that have refilled completely (a full bucket is what a
//! new client gets anyway), so its size follows the clients that are actually busy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Open connections per client IP.
#[derive(Debug)]
pub(crate) struct Connections {
    limit: usize,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One counted connection; gives its place back when dropped.
#[derive(Debug)]
pub(crate) struct Counted {
    table: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = lock(&self.table.open);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl Connections {
    /// At most `limit` connections per IP (0: no limit, nothing is counted).
    pub(crate) fn new(limit: usize) -> Arc<Connections> {
        Arc::new(Connections {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new connection from `ip`; `None` when `ip` already holds the limit.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Option<Counted>> {
        if self.limit == 0 {
            return Some(None);
        }
        let mut open = lock(&self.open);
        let n = open.entry(ip).or_insert(0);
        if *n as usize >= self.limit {
            return None;
        }
        *n += 1;
        Some(Some(Counted {
            table: self.clone(),
            ip,
        }))
    }

    /// Connections counted for `ip` now.
    #[cfg(test)]
    pub(crate) fn open(&self, ip: IpAddr) -> u32 {
        lock(&self.open).get(&ip).copied().unwrap_or(0)
    }
}

/// Token buckets for session-creating requests, per client IP.
#[derive(Debug)]
pub(crate) struct SessionRate {
    /// Tokens per millisecond.
    per_ms: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// Buckets kept before full ones are swept out.
const SWEEP_AT: usize = 4096;

impl SessionRate {
    /// `rate` per second with bursts of `burst`; `None` when `rate` is 0 (no limit).
    pub(crate) fn new(rate: u32, burst: u32) -> Option<SessionRate> {
        (rate > 0).then(|| SessionRate {
            per_ms: f64::from(rate) / 1000.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a token for `ip` at `now_ms`; `Err(ms)` says how long until one is free.
    pub(crate) fn take(&self, ip: IpAddr, now_ms: u64) -> Result<(), u64> {
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= SWEEP_AT {
            let (per_ms, burst) = (self.per_ms, self.burst);
            buckets.retain(|_, b| b.refilled(per_ms, burst, now_ms) < burst);
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at_ms: now_ms,
        });
        let tokens = bucket.refilled(self.per_ms, self.burst, now_ms);
        bucket.at_ms = now_ms;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(((1.0 - tokens) / self.per_ms).ceil() as u64)
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.buckets).len()
    }
}

impl Bucket {
    fn refilled(&self, per_ms: f64, burst: f64, now_ms: u64) -> f64 {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64;
        (self.tokens + elapsed * per_ms).min(burst)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain counters: a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn connections_are_capped_per_ip_and_given_back() {
        let table = Connections::new(2);
        let a = table.admit(ip(1)).unwrap();
        let b = table.admit(ip(1)).unwrap();
        assert!(table.admit(ip(1)).is_none(), "the third is refused");
        assert!(table.admit(ip(2)).unwrap().is_some(), "another IP is not");
        drop(a);
        assert_eq!(table.open(ip(1)), 1);
        assert!(table.admit(ip(1)).is_some());
        drop(b);
        let unlimited = Connections::new(0);
        for _ in 0..100 {
            assert!(
                unlimited.admit(ip(1)).unwrap().is_none(),
                "not even counted"
            );
        }
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let rate = SessionRate::new(10, 3).unwrap();
        for _ in 0..3 {
            assert_eq!(rate.take(ip(1), 1_000), Ok(()));
        }
        assert_eq!(rate.take(ip(1), 1_000), Err(100), "one token every 100 ms");
        assert_eq!(rate.take(ip(2), 1_000), Ok(()), "buckets are per IP");
        assert_eq!(rate.take(ip(1), 1_050), Err(50));
        assert_eq!(rate.take(ip(1), 1_100), Ok(()));
        assert!(SessionRate::new(0, 10).is_none(), "0 disables the limit");
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let rate = SessionRate::new(1000, 1).unwrap();
        for i in 0..SWEEP_AT as u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            assert_eq!(rate.take(ip, 0), Ok(()));
        }
        assert_eq!(rate.tracked(), SWEEP_AT);
        assert_eq!(rate.take(ip(9), 10), Ok(()), "refilled long ago");
        assert_eq!(rate.tracked(), 1, "only the bucket just used is left");
    }
}
