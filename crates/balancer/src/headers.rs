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
//! A message's names are first looked at in one pass ([`RequestNames`],
//! [`rewrite_response`]): most carry no hop-by-hop header and none of the headers the
//! balancer adds or reads, so the removal pass (which may allocate) and the lookups
//! (hashing names that are not standard ones runs over their bytes) only happen when
//! there is something to find.

use bistro_proto::headers::BACKUP as BISTRO_BACKUP;
use bistro_proto::mode::Mode;
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

/// Whether a (lower-case) field name is hop-by-hop. Called from a `match` on each name
/// of every message, after the names that `match` looks for, so it compares bytes
/// instead of hashing.
#[inline]
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "te" | "trailer" | "transfer-encoding" | "upgrade" | "keep-alive"
    ) || name.starts_with("proxy-")
}

/// Removes hop-by-hop headers, including those listed in `Connection` (the request
/// path does this through [`RequestNames::strip_hop_by_hop`], the response path in
/// [`rewrite_response`]).
#[cfg(test)]
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.keys().any(|name| is_hop_by_hop(name.as_str())) {
        remove_hop_by_hop(headers);
    }
}

/// The removal pass of [`strip_hop_by_hop`], for a map known to hold some.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
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

/// Which forwarding headers a request carries, for [`add_forwarded`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Forwarding {
    forwarded: bool,
    /// Any of `X-Forwarded-For`, `-Proto`, `-Host`.
    x_forwarded: bool,
    via: bool,
}

/// What one pass over a client request's field names finds.
///
/// Most requests carry no hop-by-hop header, no request id and none of the forwarding
/// headers, and knowing that spares a lookup of each: looking a name up hashes it, and
/// for names that are not standard ones (`X-Request-Id`, `X-Forwarded-*`) the hash
/// runs over their bytes. One `match` on each name compiles to a switch on its length.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestNames {
    /// A hop-by-hop header (see [`strip_hop_by_hop`]).
    pub(crate) hop_by_hop: bool,
    /// `X-Request-Id`.
    pub(crate) request_id: bool,
    pub(crate) forwarding: Forwarding,
}

impl RequestNames {
    /// Looks at every name of `headers`.
    pub(crate) fn scan(headers: &HeaderMap) -> RequestNames {
        let mut names = RequestNames::default();
        for name in headers.keys() {
            match name.as_str() {
                "x-request-id" => names.request_id = true,
                "forwarded" => names.forwarding.forwarded = true,
                "via" => names.forwarding.via = true,
                "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" => {
                    names.forwarding.x_forwarded = true;
                }
                other => names.hop_by_hop |= is_hop_by_hop(other),
            }
        }
        names
    }

    /// [`strip_hop_by_hop`] for a request scanned into `self`; what is left is looked
    /// at again when something was removed.
    pub(crate) fn strip_hop_by_hop(&mut self, headers: &mut HeaderMap) {
        if self.hop_by_hop {
            remove_hop_by_hop(headers);
            *self = RequestNames::scan(headers);
        }
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

/// [`add_forwarded_to`] for a request not scanned yet.
#[cfg(test)]
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    peer_ip: &HeaderValue,
    trusted: bool,
    tls: bool,
) {
    let forwarding = RequestNames::scan(headers).forwarding;
    add_forwarded_to(headers, forwarding, peer_ip, trusted, tls);
}

/// Adds the forwarding headers to a request that carries the `forwarding` ones, from
/// the peer `peer_ip` (pre-rendered once per connection); `trusted` when the peer is a
/// trusted proxy (see the module docs), `tls` when it came over TLS.
pub(crate) fn add_forwarded_to(
    headers: &mut HeaderMap,
    forwarding: Forwarding,
    peer_ip: &HeaderValue,
    trusted: bool,
    tls: bool,
) {
    static HTTP: HeaderValue = HeaderValue::from_static("http");
    static HTTPS: HeaderValue = HeaderValue::from_static("https");
    let proto = if tls { &HTTPS } else { &HTTP };
    // One growth of the map (hyper sizes it to the parsed headers) instead of several.
    headers.reserve(4);
    if !trusted {
        untrusted_forwarded(headers, forwarding, peer_ip, proto);
        return;
    }
    append_list(headers, &X_FORWARDED_FOR, peer_ip);
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), proto.clone());
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = headers.get(header::HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    append_list(headers, &header::VIA, &VIA);
}

/// [`add_forwarded_to`] for a peer that is not a trusted proxy: whatever it said in the
/// forwarding headers is replaced. A name the request is known not to carry (most
/// requests carry none of them, nor `Via`) is added without looking it up.
fn untrusted_forwarded(
    headers: &mut HeaderMap,
    Forwarding {
        forwarded,
        x_forwarded,
        via,
    }: Forwarding,
    peer_ip: &HeaderValue,
    proto: &HeaderValue,
) {
    if forwarded {
        headers.remove(header::FORWARDED);
    }
    let host = headers.get(header::HOST).cloned();
    if x_forwarded {
        headers.insert(X_FORWARDED_FOR.clone(), peer_ip.clone());
        headers.insert(X_FORWARDED_PROTO.clone(), proto.clone());
        match host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST.clone(), host);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    } else {
        headers.append(X_FORWARDED_FOR.clone(), peer_ip.clone());
        headers.append(X_FORWARDED_PROTO.clone(), proto.clone());
        if let Some(host) = host {
            headers.append(X_FORWARDED_HOST.clone(), host);
        }
    }
    if via {
        append_list(headers, &header::VIA, &VIA);
    } else {
        headers.append(header::VIA, VIA.clone());
    }
}

/// Adds `Via` to a response the balancer wrote itself.
pub(crate) fn add_via(headers: &mut HeaderMap) {
    append_list(headers, &header::VIA, &VIA);
}

/// What the balancer reads from a backend's response head.
#[derive(Debug, Default)]
pub(crate) struct FromBackend {
    /// The first `Bistro-Mode` value, when it names a mode.
    pub(crate) mode: Option<Mode>,
    /// The first `Bistro-Backup` value.
    pub(crate) backup: Option<HeaderValue>,
}

/// Rewrites a backend's response head for the client (hop-by-hop headers out, `Via`
/// in) and returns what the balancer reads from it.
///
/// One pass over the field names finds all of it: looking each name up would hash it,
/// and `Bistro-*` names are not standard ones, so their hash runs over their bytes.
/// The mode is read before the hop-by-hop headers go and the backup after; a head
/// with hop-by-hop headers (rare) is looked at again once they are gone.
pub(crate) fn rewrite_response(headers: &mut HeaderMap) -> FromBackend {
    let mut seen = FromBackend::default();
    let (mut mode_seen, mut via, mut hop_by_hop) = (false, false, false);
    for (name, value) in headers.iter() {
        // One `match` on the name compiles to a switch on its length; the names are
        // `BISTRO_MODE` and `BISTRO_BACKUP` (checked in the tests).
        match name.as_str() {
            "bistro-mode" if !mode_seen => {
                mode_seen = true;
                seen.mode = Mode::from_wire(value.as_bytes());
            }
            "bistro-backup" if seen.backup.is_none() => seen.backup = Some(value.clone()),
            "via" => via = true,
            other => hop_by_hop |= is_hop_by_hop(other),
        }
    }
    if hop_by_hop {
        remove_hop_by_hop(headers);
        seen.backup = headers.get(&BISTRO_BACKUP).cloned();
        via = headers.contains_key(header::VIA);
    }
    if via {
        append_list(headers, &header::VIA, &VIA);
    } else {
        headers.append(header::VIA, VIA.clone());
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use bistro_proto::headers::MODE as BISTRO_MODE;

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
    fn a_response_is_rewritten_and_read_in_one_pass() {
        let mut h = map(&[
            ("content-type", "application/json"),
            ("bistro-mode", "replicated"),
            ("bistro-mode", "stateless"),
            ("bistro-backup", "w2"),
        ]);
        let seen = rewrite_response(&mut h);
        assert_eq!(seen.mode, Some(Mode::Replicated), "the first value counts");
        assert_eq!(seen.backup.unwrap(), "w2");
        assert_eq!(h["via"], "1.1 bistro");

        let mut proxied = map(&[("via", "1.0 edge"), ("bistro-mode", "nonsense")]);
        let seen = rewrite_response(&mut proxied);
        assert_eq!(seen.mode, None);
        assert!(seen.backup.is_none());
        assert_eq!(proxied["via"], "1.0 edge, 1.1 bistro");
    }

    #[test]
    fn the_names_matched_by_hand_are_the_protocols() {
        assert_eq!(BISTRO_MODE.as_str(), "bistro-mode");
        assert_eq!(BISTRO_BACKUP.as_str(), "bistro-backup");
        assert_eq!(header::FORWARDED.as_str(), "forwarded");
        assert_eq!(header::VIA.as_str(), "via");
        for name in [&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST] {
            assert!(name.as_str().starts_with("x-forwarded-"));
        }
    }

    #[test]
    fn a_plain_request_gets_the_forwarding_headers() {
        let ip = HeaderValue::from_static("198.51.100.7");
        let mut h = map(&[("host", "bistro.test"), ("cookie", "a=b")]);
        add_forwarded(&mut h, &ip, false, false);
        assert_eq!(h["x-forwarded-for"], "198.51.100.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "bistro.test");
        assert_eq!(h["via"], "1.1 bistro");
        assert_eq!(h.len(), 6);
    }

    #[test]
    fn a_backup_named_in_connection_is_not_read() {
        let mut h = map(&[
            ("connection", "bistro-backup, via"),
            ("bistro-backup", "w2"),
            ("bistro-mode", "stateful"),
            ("via", "1.0 hop"),
        ]);
        let seen = rewrite_response(&mut h);
        assert!(
            seen.backup.is_none(),
            "a hop-by-hop header is not the message's"
        );
        assert_eq!(
            seen.mode,
            Some(Mode::Stateful),
            "read before the strip, as before"
        );
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["bistro-mode", "via"]);
        assert_eq!(h["via"], "1.1 bistro");
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
