//! Session and order identifiers.
//!
//! Session ids are bearer secrets (whoever holds one sees the orders), so they come from
//! a CSPRNG and carry 128 bits. They are kept as 16 raw bytes, which keeps a stateful
//! waiter's per-session memory small, and shown as 22 characters of unpadded base64url.
//! Parsing is strict, so a garbage cookie never reaches a store.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use std::fmt;

/// A 128-bit random session id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// A fresh id from the thread-local CSPRNG (ChaCha, seeded by the OS).
    pub fn generate() -> SessionId {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        SessionId(bytes)
    }

    /// Parses the 22-character base64url form; `None` for anything else.
    pub fn parse(s: &str) -> Option<SessionId> {
        if s.len() != 22 {
            return None;
        }
        let mut out = [0u8; 16];
        match URL_SAFE_NO_PAD.decode_slice(s.as_bytes(), &mut out) {
            Ok(16) => Some(SessionId(out)),
            _ => None,
        }
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Builds an id from raw bytes (as read back from a store).
    pub fn from_bytes(bytes: [u8; 16]) -> SessionId {
        SessionId(bytes)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 22];
        let n = URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut buf)
            .expect("16 bytes encode to 22 characters");
        f.write_str(std::str::from_utf8(&buf[..n]).expect("base64 is ASCII"))
    }
}

impl serde::Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SessionId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        SessionId::parse(&s).ok_or_else(|| serde::de::Error::custom("not a session id"))
    }
}

impl fmt::Debug for SessionId {
    // Never log a whole session id: it is a bearer secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.to_string();
        write!(f, "SessionId({}…)", &s[..6])
    }
}

/// A fresh random order id: 96 bits, 16 characters of base64url.
pub fn new_order_id() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `s` has the shape of an order id (so path garbage never reaches a store).
pub fn is_order_id(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_round_trip_and_are_distinct() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        let s = a.to_string();
        assert_eq!(s.len(), 22);
        assert_eq!(SessionId::parse(&s), Some(a));
        assert!(
            !format!("{a:?}").contains(&s),
            "debug output must not leak the id"
        );
    }

    #[test]
    fn garbage_is_not_a_session_id() {
        for bad in [
            "",
            "short",
            "!!!!!!!!!!!!!!!!!!!!!!",
            "AAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAA/",
        ] {
            assert_eq!(SessionId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn order_ids_have_the_checked_shape() {
        let id = new_order_id();
        assert!(is_order_id(&id), "{id}");
        assert!(!is_order_id("../../etc/passwd"));
    }
}
