//! Who the client is: the socket's peer, or, when the peer is a trusted proxy, the
//! address that proxy reports in `X-Forwarded-For`.
//!
//! The client IP keys the per-IP session limit (see [`per_ip`](crate::per_ip)) and the
//! `client_ip` hash key, so a diner must not be able to choose it. `X-Forwarded-For`
//! is a list each proxy appends to; everything left of the last trusted hop was
//! written by whoever sent the request and proves nothing. So the list is read from
//! the right, skipping trusted proxies, and the first address that is not one is the
//! client (the rule of nginx's `real_ip_recursive on`).

use crate::config::Cidr;
use http::HeaderMap;
use std::net::IpAddr;

/// Whether `ip` is one of `trusted`.
pub(crate) fn is_trusted(trusted: &[Cidr], ip: IpAddr) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// The client's IP for a request from `peer`. `peer_trusted` says whether `peer` is a
/// trusted proxy (decided once per connection).
pub(crate) fn resolve(
    peer: IpAddr,
    peer_trusted: bool,
    headers: &HeaderMap,
    trusted: &[Cidr],
) -> IpAddr {
    if !peer_trusted {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut leftmost = None;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            // A hop nobody can read ends what can be believed.
            break;
        };
        if !is_trusted(trusted, ip) {
            return ip;
        }
        leftmost = Some(ip);
    }
    // Every hop was a trusted proxy (or none was readable): the earliest of them, or
    // the peer itself, is the best knowledge there is.
    leftmost.unwrap_or(peer)
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:5`,
/// `[2001:db8::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    hop.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> Vec<Cidr> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&["203.0.113.9"]);
        assert_eq!(
            resolve(ip("198.51.100.1"), false, &h, &trusted()),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn through_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let peer = ip("10.0.0.5");
        // The client forged the first entry; the edge proxy appended the real address.
        let h = headers(&["6.6.6.6, 203.0.113.9", "10.1.2.3"]);
        assert_eq!(resolve(peer, true, &h, &trusted()), ip("203.0.113.9"));
        let ported = headers(&["[2001:db8::7]:4431, 10.9.9.9:80"]);
        assert_eq!(resolve(peer, true, &ported, &trusted()), ip("2001:db8::7"));
        let only_proxies = headers(&["10.1.1.1, 10.2.2.2"]);
        assert_eq!(
            resolve(peer, true, &only_proxies, &trusted()),
            ip("10.1.1.1")
        );
        assert_eq!(resolve(peer, true, &HeaderMap::new(), &trusted()), peer);
        let garbage = headers(&["not-an-ip, 10.2.2.2"]);
        assert_eq!(resolve(peer, true, &garbage, &trusted()), ip("10.2.2.2"));
    }
}
