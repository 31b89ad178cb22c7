//! Affinity tokens: the signed cookie that pins a diner to one waiter.
//!
//! A token names a backend by its **id** (never its address), for a replicated waiter
//! also the **backup** that keeps the session's copy (from the waiter's `Bistro-Backup`),
//! and carries the unix second it was issued, signed with HMAC-SHA256 under a key every
//! balancer replica shares, so any replica can verify a token another issued and a diner
//! cannot forge one to pick a waiter. Layout before base64url (no padding):
//!
//! ```text
//! version (2) | issued_at (u64, big endian) | id length (1) | id | backup length (1) | backup | tag (16)
//! ```
//!
//! Version 1 tokens (no backup fields) are still accepted, so cookies issued before an
//! upgrade keep their diners where they were.
//!
//! The tag is the HMAC truncated to its first 128 bits (RFC 2104 §5 allows truncation
//! to half the output; 128 bits is far beyond guessing), which keeps the cookie short on
//! every request.
//!
//! A token that is malformed or carries a bad tag (forged, or signed with another key:
//! the two cannot be told apart), or that is older than `max_age_secs`, is *treated as
//! absent*: the diner is balanced as new and gets a fresh cookie. Such events are
//! counted, never an error for the client.
//!
//! The key is expanded into HMAC's inner and outer states once; each request clones
//! that state (a copy of two SHA-256 states, ~160 ns all told) instead of re-keying.

use crate::config::AffinityConfig;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;

const VERSION: u8 = 2;
/// Tokens without a backup, issued before version 2.
const VERSION_1: u8 = 1;
const TAG_LEN: usize = 16;
const MAX_ID: usize = crate::spec::MAX_ID_LEN;
const MAX_RAW: usize = 1 + 8 + 1 + MAX_ID + 1 + MAX_ID + TAG_LEN;
/// Tokens issued up to this far in the future (clock skew between replicas) are accepted.
const MAX_SKEW_SECS: u64 = 300;

/// A backend id read from a token, held on the stack.
#[derive(Clone, Copy)]
pub(crate) struct TokenId {
    buf: [u8; MAX_ID],
    len: u8,
}

impl TokenId {
    /// The id.
    pub(crate) fn as_str(&self) -> &str {
        // Only ids the balancer signed get here, and those are ASCII.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Debug for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request's affinity cookie says.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Verdict {
    /// No cookie.
    Absent,
    /// A genuine, fresh token.
    Valid {
        backend: TokenId,
        /// The backup a replicated waiter named for the session.
        backup: Option<TokenId>,
        issued_at: u64,
    },
    /// Malformed, bad signature or wrong key.
    Forged,
    /// Genuine but older than the maximum age.
    Expired,
}

/// Issues and verifies affinity tokens and builds the cookie headers.
#[derive(Clone)]
pub(crate) struct Affinity {
    mac: Hmac<Sha256>,
    cookie: String,
    max_age: u64,
    /// `; Path=/; HttpOnly; SameSite=Lax[; Secure][; Max-Age=N]`
    attributes: String,
    clear: HeaderValue,
}

impl std::fmt::Debug for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Affinity")
            .field("cookie", &self.cookie)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl Affinity {
    /// An issuer/verifier for `config` signing with `key`.
    pub(crate) fn new(config: &AffinityConfig, key: &[u8]) -> Affinity {
        // HMAC accepts keys of any length.
        let mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
        let mut attributes = String::from("; Path=/; HttpOnly; SameSite=Lax");
        if config.secure {
            attributes.push_str("; Secure");
        }
        let mut clear = format!("{}={attributes}", config.cookie);
        if let Some(age) = config.cookie_max_age_secs {
            attributes.push_str(&format!("; Max-Age={age}"));
        }
        clear.push_str("; Max-Age=0");
        Affinity {
            mac,
            cookie: config.cookie.clone(),
            max_age: config.max_age_secs,
            attributes,
            clear: HeaderValue::try_from(clear).expect("validated cookie names make valid headers"),
        }
    }

    /// A token naming `backend`, issued at `issued_at` (unix seconds).
    #[cfg(test)]
    pub(crate) fn issue(&self, backend: &str, issued_at: u64) -> String {
        self.issue_pair(backend, None, issued_at)
    }

    /// A token naming `backend` and the `backup` keeping its sessions' copies.
    pub(crate) fn issue_pair(&self, backend: &str, backup: Option<&str>, issued_at: u64) -> String {
        let id = &backend.as_bytes()[..backend.len().min(MAX_ID)];
        let backup = backup.map_or(&[][..], |b| &b.as_bytes()[..b.len().min(MAX_ID)]);
        let mut raw = [0u8; MAX_RAW];
        raw[0] = VERSION;
        raw[1..9].copy_from_slice(&issued_at.to_be_bytes());
        raw[9] = id.len() as u8;
        raw[10..10 + id.len()].copy_from_slice(id);
        let at = 10 + id.len();
        raw[at] = backup.len() as u8;
        raw[at + 1..at + 1 + backup.len()].copy_from_slice(backup);
        let body = at + 1 + backup.len();
        let mut mac = self.mac.clone();
        mac.update(&raw[..body]);
        raw[body..body + TAG_LEN].copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(&raw[..body + TAG_LEN])
    }

    /// Checks a token at `now` (unix seconds).
    pub(crate) fn verify(&self, token: &str, now: u64) -> Verdict {
        let mut raw = [0u8; MAX_RAW + 3];
        if token.len() > MAX_RAW.div_ceil(3) * 4 {
            return Verdict::Forged;
        }
        let Ok(len) = URL_SAFE_NO_PAD.decode_slice(token.as_bytes(), &mut raw) else {
            return Verdict::Forged;
        };
        if len < 10 + 1 + TAG_LEN || !matches!(raw[0], VERSION | VERSION_1) {
            return Verdict::Forged;
        }
        let id_len = usize::from(raw[9]);
        if id_len == 0 || id_len > MAX_ID || len < 10 + id_len + TAG_LEN {
            return Verdict::Forged;
        }
        let (backup_at, backup_len) = if raw[0] == VERSION {
            let at = 10 + id_len + 1;
            (at, usize::from(raw[at - 1]))
        } else {
            (10 + id_len, 0)
        };
        let body = backup_at + backup_len;
        if backup_len > MAX_ID || len != body + TAG_LEN {
            return Verdict::Forged;
        }
        let mut mac = self.mac.clone();
        mac.update(&raw[..body]);
        if mac.verify_truncated_left(&raw[body..len]).is_err() {
            return Verdict::Forged;
        }
        let issued_at = u64::from_be_bytes(raw[1..9].try_into().expect("eight bytes"));
        if issued_at > now.saturating_add(MAX_SKEW_SECS) {
            return Verdict::Forged;
        }
        if now.saturating_sub(issued_at) > self.max_age {
            return Verdict::Expired;
        }
        let id = |bytes: &[u8]| {
            let mut id = TokenId {
                buf: [0; MAX_ID],
                len: bytes.len() as u8,
            };
            id.buf[..bytes.len()].copy_from_slice(bytes);
            id
        };
        Verdict::Valid {
            backend: id(&raw[10..10 + id_len]),
            backup: (backup_len > 0).then(|| id(&raw[backup_at..body])),
            issued_at,
        }
    }

    /// Reads and checks the request's affinity cookie.
    pub(crate) fn read(&self, headers: &HeaderMap, now: u64) -> Verdict {
        match find_cookie(headers, &self.cookie) {
            None | Some("") => Verdict::Absent,
            Some(token) => self.verify(token, now),
        }
    }

    /// Re-checks a verdict reached earlier for the same token: only the age can change.
    pub(crate) fn revalidate(&self, verdict: Verdict, now: u64) -> Verdict {
        match verdict {
            Verdict::Valid { issued_at, .. } if now.saturating_sub(issued_at) > self.max_age => {
                Verdict::Expired
            }
            other => other,
        }
    }

    /// Whether a valid token is old enough to be re-issued (past half its life), so an
    /// active diner never hits the maximum age.
    pub(crate) fn needs_refresh(&self, issued_at: u64, now: u64) -> bool {
        now.saturating_sub(issued_at) > self.max_age / 2
    }

    /// `Set-Cookie` pinning the diner to `backend`.
    #[cfg(test)]
    pub(crate) fn set_cookie(&self, backend: &str, now: u64) -> HeaderValue {
        self.set_cookie_pair(backend, None, now)
    }

    /// `Set-Cookie` pinning the diner to `backend`, with `backup` to fall back to.
    pub(crate) fn set_cookie_pair(
        &self,
        backend: &str,
        backup: Option<&str>,
        now: u64,
    ) -> HeaderValue {
        let token = self.issue_pair(backend, backup, now);
        let mut value =
            String::with_capacity(self.cookie.len() + 1 + token.len() + self.attributes.len());
        value.push_str(&self.cookie);
        value.push('=');
        value.push_str(&token);
        value.push_str(&self.attributes);
        HeaderValue::try_from(value).expect("base64url and validated names make valid headers")
    }

    /// `Set-Cookie` removing the affinity cookie (`Max-Age=0`).
    pub(crate) fn clear_cookie(&self) -> HeaderValue {
        self.clear.clone()
    }
}

/// One connection's memory of its last `Cookie` header and the verdict on it.
///
/// A diner's keep-alive connection sends the same `Cookie` header on every request, so
/// a byte comparison with the last one replaces the parse, the base64 decoding and the
/// HMAC on nearly every request. When the header changed, the worker's
/// [`RecentVerdicts`] are asked before the HMAC, so a signature is checked about once
/// per worker and cookie. Verdicts are deterministic for a given token, except for its
/// age, which is re-checked every time.
#[derive(Debug, Default)]
pub(crate) struct VerdictCache {
    last: std::sync::Mutex<Option<(Vec<u8>, Verdict)>>,
}

impl VerdictCache {
    /// The request's affinity verdict, from the cache when its `Cookie` header is the
    /// same as last time, else from `recent`, else checked (and remembered in both).
    pub(crate) fn read(
        &self,
        recent: &RecentVerdicts,
        affinity: &Affinity,
        headers: &HeaderMap,
        now: u64,
    ) -> Verdict {
        let mut cookies = headers.get_all(COOKIE).iter();
        let (Some(only), None) = (cookies.next(), cookies.next()) else {
            return affinity.read(headers, now);
        };
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((seen, verdict)) = &*last
            && seen.as_slice() == only.as_bytes()
        {
            return affinity.revalidate(*verdict, now);
        }
        let verdict = match recent.get(only.as_bytes()) {
            Some(verdict) => verdict,
            None => {
                let verdict = affinity.read(headers, now);
                recent.insert(only.as_bytes(), verdict);
                verdict
            }
        };
        // Reuses the buffer: on a connection carrying many diners this runs per request.
        match &mut *last {
            Some((seen, remembered)) => {
                seen.clear();
                seen.extend_from_slice(only.as_bytes());
                *remembered = verdict;
            }
            None => *last = Some((only.as_bytes().to_vec(), verdict)),
        }
        affinity.revalidate(verdict, now)
    }
}

/// Most verdicts a worker remembers; a full table is emptied and starts over.
const RECENT_VERDICTS: usize = 1024;
/// Longest `Cookie` header whose verdict is remembered; longer ones are always checked.
const RECENT_COOKIE_BYTES: usize = 256;

/// One worker's verdicts on the `Cookie` headers it saw recently, on any connection.
///
/// A connection does not always carry one diner: behind a CDN or an ingress, one
/// keep-alive connection carries requests from many diners, each with its own cookie,
/// and the per-connection [`VerdictCache`] then misses on nearly every request. This
/// table keeps the HMAC off the hot path in that case too, at the price of one hash of
/// the header. It is bounded in entries and in key length, and keyed with the standard
/// library's randomly seeded SipHash, so clients choosing cookies can neither grow it
/// nor aim at collisions; at worst they empty it, which costs what no cache costs (one
/// HMAC per request). Like the connection's cache, it stores verdicts whose only moving
/// part, the age, is re-checked on every use.
#[derive(Debug, Default)]
pub(crate) struct RecentVerdicts {
    seen: std::sync::Mutex<std::collections::HashMap<Box<[u8]>, Verdict>>,
}

impl RecentVerdicts {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Box<[u8]>, Verdict>> {
        // Verdicts are plain values; a panic elsewhere cannot leave the map invalid.
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The verdict remembered for this `Cookie` header, if any.
    pub(crate) fn get(&self, cookie: &[u8]) -> Option<Verdict> {
        if cookie.len() > RECENT_COOKIE_BYTES {
            return None;
        }
        self.lock().get(cookie).copied()
    }

    /// Remembers the verdict on this `Cookie` header (unless it is too long).
    pub(crate) fn insert(&self, cookie: &[u8], verdict: Verdict) {
        if cookie.len() > RECENT_COOKIE_BYTES {
            return;
        }
        let mut seen = self.lock();
        if seen.len() >= RECENT_VERDICTS {
            seen.clear();
        }
        seen.insert(cookie.into(), verdict);
    }

    /// Verdicts held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

pub(crate) use bistro_proto::cookies::find as find_cookie;

#[cfg(test)]
mod tests {
    use super::*;

    fn affinity(key: &[u8]) -> Affinity {
        Affinity::new(
            &AffinityConfig {
                max_age_secs: 3600,
                ..AffinityConfig::default()
            },
            key,
        )
    }

    const KEY: &[u8] = b"0123456789abcdef-test-key";

    #[test]
    fn a_token_carries_the_backup_and_version_1_tokens_still_verify() {
        let a = affinity(KEY);
        match a.verify(&a.issue_pair("w1", Some("w3"), NOW), NOW) {
            Verdict::Valid {
                backend, backup, ..
            } => {
                assert_eq!(backend.as_str(), "w1");
                assert_eq!(
                    backup.map(|b| b.as_str().to_string()).as_deref(),
                    Some("w3")
                );
            }
            other => panic!("{other:?}"),
        }
        // A token from before backups: version 1, no backup fields, same key.
        let mut raw = vec![VERSION_1];
        raw.extend_from_slice(&NOW.to_be_bytes());
        raw.push(2);
        raw.extend_from_slice(b"w2");
        let mut mac = a.mac.clone();
        mac.update(&raw);
        raw.extend_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        match a.verify(&URL_SAFE_NO_PAD.encode(&raw), NOW) {
            Verdict::Valid {
                backend, backup, ..
            } => {
                assert_eq!(backend.as_str(), "w2");
                assert!(backup.is_none());
            }
            other => panic!("{other:?}"),
        }
        // The backup is signed too: changing it breaks the tag.
        let mut raw = URL_SAFE_NO_PAD
            .decode(a.issue_pair("w1", Some("w3"), NOW))
            .unwrap();
        let at = 10 + 2 + 1;
        raw[at] = b'w';
        raw[at + 1] = b'9';
        assert!(matches!(
            a.verify(&URL_SAFE_NO_PAD.encode(&raw), NOW),
            Verdict::Forged
        ));
    }
    const NOW: u64 = 1_700_000_000;

    #[test]
    fn round_trip() {
        let a = affinity(KEY);
        let token = a.issue("w1", NOW);
        assert!(token.len() < 64, "{token}");
        match a.verify(&token, NOW + 10) {
            Verdict::Valid {
                backend, issued_at, ..
            } => {
                assert_eq!(backend.as_str(), "w1");
                assert_eq!(issued_at, NOW);
            }
            other => panic!("{other:?}"),
        }
    }

    /// The exact bytes of a token: issued cookies must survive upgrades of the HMAC and
    /// SHA-256 crates. The expected value was computed outside Rust (Python's hmac and
    /// hashlib): version 2, issued_at, "w1", backup "w3", then 16 bytes of HMAC-SHA256.
    #[test]
    fn token_bytes_are_stable() {
        let token = affinity(KEY).issue_pair("w1", Some("w3"), NOW);
        assert_eq!(token, "AgAAAABlU_EAAncxAnczY0iLJY32TxLSQEBTS5EIhg");
    }

    #[test]
    fn token_does_not_reveal_an_address_and_longest_ids_fit() {
        let a = affinity(KEY);
        let id = "w".repeat(MAX_ID);
        assert!(
            matches!(a.verify(&a.issue(&id, NOW), NOW), Verdict::Valid { backend, .. } if backend.as_str() == id)
        );
    }

    #[test]
    fn forged_signature_is_rejected() {
        let a = affinity(KEY);
        let mut raw = URL_SAFE_NO_PAD.decode(a.issue("w1", NOW)).unwrap();
        raw[10] = b'x'; // w1 -> x1, tag unchanged
        assert!(matches!(
            a.verify(&URL_SAFE_NO_PAD.encode(&raw), NOW),
            Verdict::Forged
        ));
        let last = raw.len() - 1;
        raw[10] = b'w';
        raw[last] ^= 1; // tag flipped
        assert!(matches!(
            a.verify(&URL_SAFE_NO_PAD.encode(&raw), NOW),
            Verdict::Forged
        ));
    }

    #[test]
    fn wrong_key_is_rejected() {
        let token = affinity(b"another key of enough length").issue("w1", NOW);
        assert!(matches!(affinity(KEY).verify(&token, NOW), Verdict::Forged));
    }

    #[test]
    fn garbage_is_rejected() {
        let a = affinity(KEY);
        for token in ["", "%%%", "AAAA", &"A".repeat(500), "w1"] {
            assert!(matches!(a.verify(token, NOW), Verdict::Forged), "{token}");
        }
    }

    #[test]
    fn expired_and_future_tokens() {
        let a = affinity(KEY);
        assert!(matches!(
            a.verify(&a.issue("w1", NOW), NOW + 3601),
            Verdict::Expired
        ));
        assert!(matches!(
            a.verify(&a.issue("w1", NOW), NOW + 3600),
            Verdict::Valid { .. }
        ));
        assert!(matches!(
            a.verify(&a.issue("w1", NOW + 1000), NOW),
            Verdict::Forged
        ));
        assert!(a.needs_refresh(NOW, NOW + 1801));
        assert!(!a.needs_refresh(NOW, NOW + 1800));
    }

    #[test]
    fn cookie_attributes() {
        let config = AffinityConfig {
            secure: true,
            cookie_max_age_secs: Some(60),
            ..AffinityConfig::default()
        };
        let a = Affinity::new(&config, KEY);
        let set = a.set_cookie("w1", NOW);
        let set = set.to_str().unwrap();
        assert!(set.starts_with("bistro_affinity="), "{set}");
        assert!(
            set.ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=60"),
            "{set}"
        );
        assert_eq!(
            a.clear_cookie().to_str().unwrap(),
            "bistro_affinity=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0"
        );
    }

    #[test]
    fn the_cache_skips_the_signature_but_not_the_age() {
        let a = affinity(KEY);
        let cache = VerdictCache::default();
        let recent = RecentVerdicts::default();
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            format!("bistro_affinity={}", a.issue("w1", NOW))
                .parse()
                .unwrap(),
        );
        assert!(matches!(
            cache.read(&recent, &a, &headers, NOW),
            Verdict::Valid { .. }
        ));
        assert!(matches!(
            cache.read(&recent, &a, &headers, NOW + 10),
            Verdict::Valid { .. }
        ));
        assert!(
            matches!(
                cache.read(&recent, &a, &headers, NOW + 3601),
                Verdict::Expired
            ),
            "age is re-checked"
        );
        // A different cookie is verified afresh.
        headers.insert(COOKIE, "bistro_affinity=forged".parse().unwrap());
        assert!(matches!(
            cache.read(&recent, &a, &headers, NOW),
            Verdict::Forged
        ));
        headers.remove(COOKIE);
        assert!(matches!(
            cache.read(&recent, &a, &headers, NOW),
            Verdict::Absent
        ));
    }

    #[test]
    fn a_cookie_seen_on_another_connection_is_not_checked_again() {
        let a = affinity(KEY);
        let recent = RecentVerdicts::default();
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "bistro_affinity=not-a-real-token".parse().unwrap());
        let genuine = a.verify(&a.issue("w2", NOW), NOW);
        // A verdict the worker remembers is used as is: the HMAC is not run again.
        recent.insert(b"bistro_affinity=not-a-real-token", genuine);
        let fresh_connection = VerdictCache::default();
        assert!(matches!(
            fresh_connection.read(&recent, &a, &headers, NOW),
            Verdict::Valid { backend, .. } if backend.as_str() == "w2"
        ));
        // ... but its age still is checked.
        assert!(matches!(
            VerdictCache::default().read(&recent, &a, &headers, NOW + 3601),
            Verdict::Expired
        ));
        // A cookie the worker never saw is checked and remembered.
        headers.insert(
            COOKIE,
            format!("bistro_affinity={}", a.issue("w1", NOW))
                .parse()
                .unwrap(),
        );
        assert!(matches!(
            VerdictCache::default().read(&recent, &a, &headers, NOW),
            Verdict::Valid { backend, .. } if backend.as_str() == "w1"
        ));
        assert_eq!(recent.len(), 2);
    }

    #[test]
    fn recent_verdicts_stay_bounded() {
        let recent = RecentVerdicts::default();
        for i in 0..RECENT_VERDICTS + 10 {
            recent.insert(format!("bistro_affinity={i}").as_bytes(), Verdict::Forged);
        }
        assert!(recent.len() <= RECENT_VERDICTS);
        let long = vec![b'a'; RECENT_COOKIE_BYTES + 1];
        recent.insert(&long, Verdict::Forged);
        assert!(
            recent.get(&long).is_none(),
            "long headers are never remembered"
        );
    }

    #[test]
    fn reads_the_cookie_among_others() {
        let a = affinity(KEY);
        let mut headers = HeaderMap::new();
        assert!(matches!(a.read(&headers, NOW), Verdict::Absent));
        let token = a.issue("w2", NOW);
        headers.append(COOKIE, "bistro_session=abc".parse().unwrap());
        headers.append(
            COOKIE,
            format!("x=1;bistro_affinity={token}; y=2").parse().unwrap(),
        );
        assert!(
            matches!(a.read(&headers, NOW), Verdict::Valid { backend, .. } if backend.as_str() == "w2")
        );
        assert_eq!(find_cookie(&headers, "y"), Some("2"));
        assert_eq!(find_cookie(&headers, "bistro"), None);
    }
}
