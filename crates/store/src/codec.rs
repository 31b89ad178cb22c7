//! How the central stores encode what they keep: orders and stored responses as JSON
//! documents, times and versions as signed 64-bit integers, session ids as 16 bytes.
//! One place, so SQLite, PostgreSQL and Redis cannot drift apart on it (a document one
//! writes must read back in the others' tests the same way).

use crate::{StoreError, StoredResponse};
use bistro_orders::Order;

/// A document as JSON text.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a document: {e}")))
}

/// An order from its JSON document.
pub(crate) fn decode_order(doc: &str) -> Result<Order, StoreError> {
    serde_json::from_str(doc)
        .map_err(|e| StoreError::Corrupt(format!("an order document does not decode: {e}")))
}

/// A stored idempotent response from its JSON document.
pub(crate) fn decode_response(doc: &str) -> Result<StoredResponse, StoreError> {
    serde_json::from_str(doc)
        .map_err(|e| StoreError::Corrupt(format!("a stored response does not decode: {e}")))
}

/// Unix milliseconds (or a version) as a database's signed 64-bit integer.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored signed integer that must not be negative.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn stored_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative stored number {v}")))
}

/// A session id from its 16 stored bytes.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn session_id(bytes: &[u8]) -> Result<crate::SessionId, StoreError> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("session id of {} bytes", bytes.len())))?;
    Ok(crate::SessionId::from_bytes(bytes))
}

#[cfg(all(test, any(feature = "sqlite", feature = "postgres")))]
mod tests {
    use super::*;
    use crate::SessionId;

    #[test]
    fn numbers_and_ids_round_trip_and_bad_ones_are_corrupt() {
        assert_eq!(ms(u64::MAX), i64::MAX);
        assert_eq!(stored_u64(ms(42)).unwrap(), 42);
        assert!(matches!(stored_u64(-1), Err(StoreError::Corrupt(_))));
        let id = SessionId::generate();
        assert_eq!(session_id(id.as_bytes()).unwrap(), id);
        assert!(matches!(
            session_id(&[1, 2, 3]),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(decode_order("{"), Err(StoreError::Corrupt(_))));
    }
}
