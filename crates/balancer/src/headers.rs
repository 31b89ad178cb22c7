//! Header rewriting at the proxy boundary.
//!
//! - Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message, so
//!   they are removed in both directions: `Connection`, `Keep-Alive`, `Proxy-*`, `TE`,
//!   `Trailer`, `Transfer-Encoding`, `Upgrade`, and every header `Connection` names. hyper
//!   frames each side's body itself (`Content-Length` or chunked).
//! - Requests gain `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` (the
//!   original `Host`) and `Via: 1.1 bistro`; responses gain `Via`. What a client says in
//!   these headers is only believed from a trusted proxy: from anyone else
//!   `X-Forwarded-*` are overwritten and `Forwarded` is removed, so a diner cannot make
//!   a waiter log (or rate-limit) someone else's address. From a trusted proxy the peer
//!   is appended to `X-Forwarded-For` and the other headers are kept.
//!
//! Most requests carry no hop-by-hop header, so a first pass only looks; the removal
//! pass (which may allocate) runs when there is something to remove.

use http::header::{self, Entry, HeaderName};
use http::{HeaderMap, HeaderValue};

/// `Via` value this proxy adds.
pub(crate) static VIA: HeaderValue = HeaderValue::from_static("1.1 bistro");

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

static FIXED_HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// Runs for every header of every message, so it compares the (already lower-case)
/// name by length and bytes instead of hashing.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(
        name,
        "connection" | "te" | "trailer" | "transfer-encoding" | "upgrade" | "keep-alive"
    ) || name.starts_with("proxy-")
}

/// Removes hop-by-hop headers, including those listed in `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy.iter().chain(FIXED_HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Appends `value` to a comma-separated list header, or sets it (one hash lookup).
fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    match headers.entry(name) {
        Entry::Vacant(vacant) => {
            vacant.insert(value.clone());
        }
        Entry::Occupied(mut occupied) => {
            let existing = occupied.get();
            let mut joined = Vec::with_capacity(existing.len() + 2 + value.len());
            joined.extend_from_slice(existing.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(value.as_bytes());
            // Two valid header values joined by ", " are a valid header value.
            if let Ok(joined) = HeaderValue::from_bytes(&joined) {
                occupied.insert(joined);
            }
        }
    }
}

/// Joins several `Cookie` fields into one, `; `-separated, as HTTP/1.1 wants (HTTP/2
/// sends one field per cookie).
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    let mut all = headers.get_all(header::COOKIE).iter();
    if all.next().is_none() || all.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    // Valid header values joined by "; " are a valid header value.
    if let Ok(joined) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, joined);
    }
}

/// Adds the forwarding headers to a request from the peer `peer_ip` (pre-rendered once
/// per connection); `trusted` when the peer is a trusted proxy (see the module docs),
/// `tls` when it came over TLS.
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    peer_ip: &HeaderValue,
    trusted: bool,
    tls: bool,
) {
    static HTTP: HeaderValue = HeaderValue::from_static("http");
    static HTTPS: HeaderValue = HeaderValue::from_static("https");
    let proto = if tls { &HTTPS } else { &HTTP };
    // One growth of the map (hyper sizes it to the parsed headers) instead of several.
    headers.reserve(4);
    if trusted {
        append_list(headers, &X_FORWARDED_FOR, peer_ip);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), proto.clone());
        }
        if !headers.contains_key(&X_FORWARDED_HOST)
            && let Some(host) = headers.get(header::HOST).cloned()
        {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
    } else {
        if headers.contains_key(header::FORWARDED) {
            headers.remove(header::FORWARDED);
        }
        headers.insert(X_FORWARDED_FOR.clone(), peer_ip.clone());
        headers.insert(X_FORWARDED_PROTO.clone(), proto.clone());
        match headers.get(header::HOST).cloned() {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST.clone(), host);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    append_list(headers, &header::VIA, &VIA);
}

/// Adds `Via` to a response.
pub(crate) fn add_via(headers: &mut HeaderMap) {
    append_list(headers, &header::VIA, &VIA);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-authorization", "basic x"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("content-type", "application/json"),
            ("cookie", "a=b"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["content-type", "cookie"]);
    }

    #[test]
    fn leaves_end_to_end_headers_alone() {
        let mut h = map(&[("host", "a"), ("content-length", "3")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn a_trusted_proxys_forwarding_headers_are_appended_to() {
        let ip = HeaderValue::from_static("10.0.0.2");
        let mut h = map(&[
            ("host", "bistro.test"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=1.2.3.4"),
            ("via", "1.0 edge"),
        ]);
        add_forwarded(&mut h, &ip, true, false);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.2");
        assert_eq!(
            h["x-forwarded-proto"], "https",
            "the proxy knows the scheme"
        );
        assert_eq!(h["x-forwarded-host"], "bistro.test");
        assert_eq!(h["forwarded"], "for=1.2.3.4");
        assert_eq!(h["via"], "1.0 edge, 1.1 bistro");
    }

    #[test]
    fn anyone_elses_forwarding_headers_are_overwritten() {
        let ip = HeaderValue::from_static("198.51.100.7");
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "bank.example"),
            ("forwarded", "for=1.2.3.4;proto=https"),
        ]);
        add_forwarded(&mut h, &ip, false, false);
        let xff: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["198.51.100.7"]);
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(
            h.get("x-forwarded-host").is_none(),
            "no Host, no forwarded host"
        );
        assert!(h.get("forwarded").is_none());
        assert_eq!(h["via"], "1.1 bistro");
    }

    #[test]
    fn over_tls_the_forwarded_proto_is_https() {
        let ip = HeaderValue::from_static("198.51.100.7");
        let mut h = map(&[("x-forwarded-proto", "http")]);
        add_forwarded(&mut h, &ip, false, true);
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn http2_cookie_fields_are_joined_for_http1() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
        let mut one = map(&[("cookie", "a=1")]);
        join_cookies(&mut one);
        assert_eq!(one["cookie"], "a=1");
        let mut none = HeaderMap::new();
        join_cookies(&mut none);
        assert!(none.is_empty());
    }
}
