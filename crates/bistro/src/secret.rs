//! Fresh secrets for the processes `bistro` starts itself (an admin token for `bistro
//! up`'s balancer, an affinity key for the benches): 128 bits from the operating
//! system's generator (through rand's thread-local CSPRNG), as hex.

use rand::Rng;

/// 32 hex characters of fresh randomness.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_hex_and_differ() {
        let (a, b) = (super::random_hex(), super::random_hex());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
