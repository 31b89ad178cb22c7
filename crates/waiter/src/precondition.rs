//! `If-Match`: the diner's "only if the order is still as I saw it".
//!
//! Every order response carries `ETag: "<version>"`. A client that sends the tag back in
//! `If-Match` gets its change applied only if the order is still at that version, and a
//! 412 `version-mismatch` naming the current version otherwise, so two diners sharing a
//! session (or one diner with two tabs) never overwrite each other unknowingly.
//!
//! The parser is lenient about the spelling of a tag (`"3"`, `3` and `W/"3"` all mean
//! version 3: the versions *are* strong validators, and clients and proxies commonly
//! weaken or unquote tags) and strict about meaning: a tag that is not a version can never
//! match, so it yields 412 rather than being ignored.

use http::HeaderMap;
use http::header::IF_MATCH;

/// A parsed `If-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: any current version.
    Any,
    /// One of these versions (a tag that is not a number is kept as `None`: it never
    /// matches).
    Versions(Vec<Option<u64>>),
}

/// `If-Match` is present but empty or not text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the If-Match header is empty or not text; send the ETag of the order as you last read it, e.g. If-Match: \"3\""
)]
pub struct BadIfMatch;

impl IfMatch {
    /// Reads `If-Match` from `headers`: `Ok(None)` when absent.
    ///
    /// # Errors
    /// [`BadIfMatch`] when the header holds no tag at all.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<IfMatch>, BadIfMatch> {
        let mut tags = Vec::new();
        let mut any = false;
        let mut present = false;
        for value in headers.get_all(IF_MATCH) {
            present = true;
            let text = value.to_str().map_err(|_| BadIfMatch)?;
            for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if tag == "*" {
                    any = true;
                } else {
                    tags.push(parse_tag(tag));
                }
            }
        }
        match (present, any, tags.is_empty()) {
            (false, _, _) => Ok(None),
            (true, true, _) => Ok(Some(IfMatch::Any)),
            (true, false, true) => Err(BadIfMatch),
            (true, false, false) => Ok(Some(IfMatch::Versions(tags))),
        }
    }

    /// Whether an order at `version` satisfies the condition.
    pub fn matches(&self, version: u64) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::Versions(tags) => tags.contains(&Some(version)),
        }
    }

    /// Whether the condition names particular versions (so a lost compare-and-set must
    /// be reported as 412 rather than retried).
    pub fn pins_version(&self) -> bool {
        matches!(self, IfMatch::Versions(_))
    }
}

fn parse_tag(tag: &str) -> Option<u64> {
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let tag = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag);
    tag.parse().ok()
}

/// The `ETag` value for an order at `version`.
pub fn etag(version: u64) -> http::HeaderValue {
    http::HeaderValue::from_str(&format!("\"{version}\""))
        .expect("digits and quotes are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(values: &[&str]) -> Result<Option<IfMatch>, BadIfMatch> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(IF_MATCH, HeaderValue::from_str(v).unwrap());
        }
        IfMatch::from_headers(&h)
    }

    #[test]
    fn every_accepted_spelling_of_version_3() {
        for v in ["\"3\"", "3", "W/\"3\"", " \"3\" ", "\"1\", \"3\""] {
            let m = parse(&[v]).unwrap().unwrap();
            assert!(m.matches(3), "{v}");
            assert!(!m.matches(4), "{v}");
            assert!(m.pins_version());
        }
    }

    #[test]
    fn star_matches_anything_and_pins_nothing() {
        let m = parse(&["*"]).unwrap().unwrap();
        assert!(m.matches(1) && m.matches(99));
        assert!(!m.pins_version());
    }

    #[test]
    fn absent_garbage_and_empty() {
        assert_eq!(parse(&[]).unwrap(), None);
        let garbage = parse(&["\"abc\""]).unwrap().unwrap();
        assert!(!garbage.matches(0) && !garbage.matches(3));
        assert_eq!(parse(&[""]), Err(BadIfMatch));
        assert_eq!(parse(&[" , "]), Err(BadIfMatch));
    }

    #[test]
    fn etags_are_strong_and_quoted() {
        assert_eq!(etag(7), "\"7\"");
    }
}
