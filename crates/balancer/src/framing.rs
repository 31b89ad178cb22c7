//! How a request's body is delimited, and refusing requests where that is ambiguous.
//!
//! Request smuggling lives in the gap between two parsers that delimit one message
//! differently. hyper already refuses most ambiguity before the balancer sees a request
//! (tested over raw sockets in `tests/hardening.rs`):
//!
//! - conflicting `Content-Length` values (two headers or `5, 6`): 400 and close;
//! - `Transfer-Encoding` whose last coding is not `chunked`, or on HTTP/1.0: 400 and close;
//! - `Content-Length` *with* `Transfer-Encoding: chunked`: hyper follows RFC 9112 §6.3,
//!   drops `Content-Length`, reads the body as chunked and closes the connection after
//!   the response, so bytes after the chunked body are never read as a request.
//!
//! The balancer re-frames every body it forwards (hyper writes `Content-Length` or
//! chunked from the body it is given), so the backend never sees the client's framing.
//! [`check`] repeats the rules on the headers hyper hands over, as a second line should a
//! future hyper let an ambiguous request through, and yields the declared length.

use http::HeaderMap;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};

/// Why a request's framing is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// Both `Content-Length` and `Transfer-Encoding`.
    #[error("the request has both Content-Length and Transfer-Encoding; send only one")]
    Both,
    /// `Content-Length` values that are not one and the same number.
    #[error("the request's Content-Length is not a single number")]
    BadLength,
}

/// The declared body length (`None`: chunked or no body), or why the framing is refused.
pub(crate) fn check(headers: &HeaderMap) -> Result<Option<u64>, FramingError> {
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter().peekable();
    if lengths.peek().is_none() {
        return Ok(None);
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        return Err(FramingError::Both);
    }
    let mut declared = None;
    for value in lengths {
        let text = value.to_str().map_err(|_| FramingError::BadLength)?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FramingError::BadLength);
            }
            let n: u64 = part.parse().map_err(|_| FramingError::BadLength)?;
            if declared.is_some_and(|d| d != n) {
                return Err(FramingError::BadLength);
            }
            declared = Some(n);
        }
    }
    Ok(declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn plain_lengths_and_no_length() {
        assert_eq!(check(&headers(&[])), Ok(None));
        assert_eq!(check(&headers(&[("content-length", "42")])), Ok(Some(42)));
        assert_eq!(
            check(&headers(&[("transfer-encoding", "chunked")])),
            Ok(None)
        );
        assert_eq!(
            check(&headers(&[
                ("content-length", "7"),
                ("content-length", "7")
            ])),
            Ok(Some(7)),
            "repeated identical values are one length (RFC 9110 §8.6)"
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert_eq!(
            check(&headers(&[
                ("content-length", "5"),
                ("transfer-encoding", "chunked")
            ])),
            Err(FramingError::Both)
        );
        for bad in [
            &[("content-length", "5"), ("content-length", "6")][..],
            &[("content-length", "5, 6")],
            &[("content-length", "-1")],
            &[("content-length", "+5")],
            &[("content-length", "")],
            &[("content-length", "99999999999999999999999")],
        ] {
            assert_eq!(
                check(&headers(bad)),
                Err(FramingError::BadLength),
                "{bad:?}"
            );
        }
    }
}
