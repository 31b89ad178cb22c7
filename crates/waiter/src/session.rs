//! Which diner is asking: the session id in a cookie or a header, and the cookies the
//! waiter sets.
//!
//! A session id is a bearer secret (whoever holds it sees the orders), so it travels in
//! an `HttpOnly; SameSite=Lax` cookie named `bistro_session`. Clients without a cookie jar
//! (scripts, `nc`) may send it in a `Bistro-Session` header instead; when both are sent
//! the header wins, because it is the more deliberate of the two.
//!
//! Extraction only reads: whether the session *exists* is the store's answer, given in
//! the same round trip as the read or write the request needs. A value that is not a
//! well-formed id is reported as [`SessionRef::Malformed`], which the handlers answer
//! exactly like an unknown session (404 `unknown-session`): the request named a session
//! this waiter cannot serve, and silently starting a fresh one would hide that the
//! diner's notes are gone.

use axum::extract::FromRequestParts;
use bistro_store::SessionId;
use http::request::Parts;
use http::{HeaderMap, HeaderValue};
use std::convert::Infallible;

/// The session cookie's name.
pub use bistro_proto::cookies::SESSION as COOKIE_NAME;
/// The header that carries a session id for clients without cookies, and that tells a
/// client the id of a session the waiter just created.
pub use bistro_proto::headers::SESSION as SESSION_HEADER;

/// The session a request names, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRef {
    /// The request names no session.
    Absent,
    /// The request names this (well-formed) session id.
    Named(SessionId),
    /// The request names something that cannot be a session id.
    Malformed,
}

impl SessionRef {
    /// Reads the `Bistro-Session` header, else the `bistro_session` cookie.
    pub fn from_headers(headers: &HeaderMap) -> SessionRef {
        if let Some(value) = headers.get(&SESSION_HEADER) {
            return match value.to_str() {
                Ok(s) if s.trim().is_empty() => SessionRef::Absent,
                Ok(s) => parse(s.trim()),
                Err(_) => SessionRef::Malformed,
            };
        }
        match bistro_proto::cookies::find(headers, COOKIE_NAME) {
            // An empty value is what a cleared cookie looks like to some clients.
            Some("") | None => SessionRef::Absent,
            Some(value) => parse(value),
        }
    }
}

fn parse(s: &str) -> SessionRef {
    match SessionId::parse(s) {
        Some(id) => SessionRef::Named(id),
        None => SessionRef::Malformed,
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SessionRef {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(SessionRef::from_headers(&parts.headers))
    }
}

/// Whether the request reached the proxy in front of the waiter over HTTPS
/// (`X-Forwarded-Proto: https`, which bistro's balancer sets under TLS), so its session
/// cookie should be `Secure`.
///
/// Believed from anyone: the header can only make the cookie stricter. A client that
/// forges it over plain HTTP gets a cookie its browser will not send back, which hurts
/// no one else.
pub fn forwarded_https(headers: &http::HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|first| first.trim().eq_ignore_ascii_case("https"))
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(session: SessionId, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{COOKIE_NAME}={session}; Path=/; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&text).expect("a session id is base64url, a valid header value")
}

/// `Set-Cookie` that makes the client forget its session cookie.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("bistro_session=; Max-Age=0; Path=/")
}

/// The `Bistro-Session` header value announcing a new session.
pub fn session_header(session: SessionId) -> HeaderValue {
    HeaderValue::from_str(&session.to_string())
        .expect("a session id is base64url, a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn reads_the_cookie_among_others() {
        let id = SessionId::generate();
        let h = headers(&[("cookie", &format!("a=1; {COOKIE_NAME}={id}; b=2"))]);
        assert_eq!(SessionRef::from_headers(&h), SessionRef::Named(id));
        let h = headers(&[
            ("cookie", "a=1"),
            ("cookie", &format!("{COOKIE_NAME}={id}")),
        ]);
        assert_eq!(SessionRef::from_headers(&h), SessionRef::Named(id));
    }

    #[test]
    fn the_header_wins_over_the_cookie() {
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let h = headers(&[
            ("cookie", &format!("{COOKIE_NAME}={a}")),
            ("bistro-session", &b.to_string()),
        ]);
        assert_eq!(SessionRef::from_headers(&h), SessionRef::Named(b));
    }

    #[test]
    fn absent_empty_and_malformed() {
        assert_eq!(SessionRef::from_headers(&headers(&[])), SessionRef::Absent);
        assert_eq!(
            SessionRef::from_headers(&headers(&[("cookie", "other=1")])),
            SessionRef::Absent
        );
        assert_eq!(
            SessionRef::from_headers(&headers(&[("cookie", "bistro_session=")])),
            SessionRef::Absent
        );
        assert_eq!(
            SessionRef::from_headers(&headers(&[("cookie", "bistro_session=nope")])),
            SessionRef::Malformed
        );
        assert_eq!(
            SessionRef::from_headers(&headers(&[("bistro-session", "../etc")])),
            SessionRef::Malformed
        );
        // A cookie whose name merely ends in the session cookie's name is someone else's.
        assert_eq!(
            SessionRef::from_headers(&headers(&[("cookie", "xbistro_session=abc")])),
            SessionRef::Absent
        );
    }

    #[test]
    fn cookies_carry_the_required_attributes() {
        let id = SessionId::generate();
        let plain = set_cookie(id, false);
        assert_eq!(
            plain.to_str().unwrap(),
            format!("bistro_session={id}; Path=/; HttpOnly; SameSite=Lax")
        );
        assert!(set_cookie(id, true).to_str().unwrap().ends_with("; Secure"));
        assert_eq!(
            clear_cookie().to_str().unwrap(),
            "bistro_session=; Max-Age=0; Path=/"
        );
        assert_eq!(session_header(id).to_str().unwrap(), id.to_string());
    }

    #[test]
    fn https_at_the_proxy_is_read_from_x_forwarded_proto() {
        let with = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("x-forwarded-proto", v.parse().unwrap());
            forwarded_https(&h)
        };
        assert!(with("https"));
        assert!(with("HTTPS"));
        assert!(with("https, http"), "the first proxy's scheme counts");
        assert!(!with("http"));
        assert!(!with("http, https"));
        assert!(!forwarded_https(&http::HeaderMap::new()));
    }
}
