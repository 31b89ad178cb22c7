//! Problem types (RFC 9457): every error a bistro part answers has a `type` URI under
//! one prefix, ending in a stable kind (`.../session-lost`) that programs match on.

/// The prefix of every bistro problem `type`.
pub const TYPE_PREFIX: &str = "https://bistro.dev/problems/";
/// The media type of problem answers.
pub const MEDIA_TYPE: &str = "application/problem+json";

/// The `type` URI of the problem kind `kind`.
pub fn type_uri(kind: &str) -> String {
    format!("{TYPE_PREFIX}{kind}")
}

/// The kind a `type` URI names: its last path segment (a foreign `type` too, so a
/// proxy's problem still says something).
pub fn kind_of(type_uri: &str) -> &str {
    type_uri.rsplit('/').next().unwrap_or(type_uri)
}

/// The kind of a problem body (`{"type": ...}`), if the bytes are one.
pub fn kind_in_body(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(kind_of(v.get("type")?.as_str()?).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_uris_match() {
        assert_eq!(
            type_uri("session-lost"),
            "https://bistro.dev/problems/session-lost"
        );
        assert_eq!(kind_of(&type_uri("unknown-session")), "unknown-session");
        assert_eq!(
            kind_in_body(
                br#"{"type":"https://bistro.dev/problems/store-unavailable","status":503}"#
            )
            .as_deref(),
            Some("store-unavailable")
        );
        assert_eq!(kind_in_body(b"<html>bad gateway</html>"), None);
        assert_eq!(kind_in_body(br#"{"status":502}"#), None);
    }
}
