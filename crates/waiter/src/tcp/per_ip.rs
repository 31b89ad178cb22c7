//! Open connections per client address, for the TCP front end's per-address cap.
//!
//! The global cap ([`TcpConfig::max_connections`](crate::TcpConfig)) protects the
//! waiter; this one protects the other clients: without it, one address could open
//! every slot and lock everyone else out. A connection takes a [`Place`] when it is
//! accepted and gives it back when dropped, so a connection task cannot forget to.
//!
//! The table is behind one mutex, taken twice per connection (open and close), never
//! per command; it holds only the addresses that have a connection open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Open connections per client address, at most `limit` each.
#[derive(Debug)]
pub(crate) struct PerIp {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; gives its place back when dropped.
#[derive(Debug)]
pub(crate) struct Place {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// At most `limit` connections per address.
    pub(crate) fn new(limit: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new connection from `ip`; `None` when `ip` already holds the limit.
    ///
    /// IPv4 clients of a dual-stack listener (`::ffff:a.b.c.d`) count as their IPv4
    /// address, so one client is one key however it connects.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Place> {
        let ip = ip.to_canonical();
        let mut open = self.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            if *n == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(Place {
            table: self.clone(),
            ip,
        })
    }

    /// The limit per address.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Connections counted for `ip` now.
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Plain counts, updated in one step each: a panic elsewhere cannot leave them
        // half-changed, so a poisoned lock is still good.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn each_address_gets_its_own_limit_and_places_come_back() {
        let table = PerIp::new(2);
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let first = table.admit(a).unwrap();
        let _second = table.admit(a).unwrap();
        assert!(table.admit(a).is_none(), "a third from the same address");
        let _other = table.admit(b).expect("another address is not affected");
        drop(first);
        assert_eq!(table.open(a), 1);
        let _again = table.admit(a).expect("a place came back");
        assert_eq!(table.open(a), 2);
    }

    #[test]
    fn the_table_forgets_addresses_without_connections() {
        let table = PerIp::new(1);
        let a = IpAddr::from([10, 0, 0, 1]);
        drop(table.admit(a).unwrap());
        assert!(table.lock().is_empty());
        let zero = PerIp::new(0);
        assert!(zero.admit(a).is_none());
        assert!(zero.lock().is_empty());
    }

    #[test]
    fn a_mapped_ipv4_address_counts_as_its_ipv4_address() {
        let table = PerIp::new(1);
        let v4 = Ipv4Addr::new(192, 0, 2, 7);
        let _place = table.admit(IpAddr::V4(v4)).unwrap();
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        assert!(table.admit(mapped).is_none());
        assert!(table.admit(IpAddr::V6(Ipv6Addr::LOCALHOST)).is_some());
    }
}
