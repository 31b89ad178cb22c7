//! bistro's cookie names, and the one way to find a cookie in a request.

use http::HeaderMap;
use http::header::COOKIE;

/// The waiter's session cookie.
pub const SESSION: &str = "bistro_session";
/// The balancer's affinity cookie (its default name): the signed token naming the
/// waiter a diner is pinned to.
pub const AFFINITY: &str = "bistro_affinity";

/// The value of the cookie `name` in one `Cookie` line (`a=1; b=2`), unquoted; the
/// first one when it appears twice.
pub fn in_line<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim_end() == name).then(|| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
    })
}

/// The value of the cookie `name` in a request's `Cookie` headers (HTTP/1.1 sends one
/// line, HTTP/2 one field per cookie: both are searched).
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|line| in_line(line, name))
}

/// What one `Set-Cookie` value says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetCookie<'a> {
    /// The cookie's name.
    pub name: &'a str,
    /// Its value (empty when it is being cleared).
    pub value: &'a str,
    /// Whether it tells the client to forget the cookie (`Max-Age` of 0 or less, or an
    /// empty value).
    pub forget: bool,
}

/// Parses `name=value; Attr; Max-Age=0`; `None` when there is no `name=value`.
pub fn parse_set_cookie(header: &str) -> Option<SetCookie<'_>> {
    let mut parts = header.split(';');
    let (name, value) = parts.next()?.trim().split_once('=')?;
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty() {
        return None;
    }
    let expired = parts.any(|attr| {
        let attr = attr.trim();
        attr.len() > 8
            && attr[..8].eq_ignore_ascii_case("max-age=")
            && attr[8..].trim().parse::<i64>().is_ok_and(|n| n <= 0)
    });
    Some(SetCookie {
        name,
        value,
        forget: expired || value.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(COOKIE, l.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_cookie_is_found_in_a_line_or_across_fields() {
        let h = headers(&["theme=dark; bistro_session=abc ; x=1"]);
        assert_eq!(find(&h, SESSION), Some("abc"));
        let h2 = headers(&["theme=dark", "bistro_affinity=\"tok\"", "bistro_session=s"]);
        assert_eq!(find(&h2, AFFINITY), Some("tok"));
        assert_eq!(find(&h2, SESSION), Some("s"));
        assert_eq!(find(&h2, "missing"), None);
        assert_eq!(in_line("a=1; a=2", "a"), Some("1"), "the first wins");
        assert_eq!(in_line("xbistro_session=1", SESSION), None);
        assert_eq!(in_line("novalue; bistro_session=", SESSION), Some(""));
    }

    #[test]
    fn set_cookie_says_what_to_keep_and_what_to_forget() {
        let kept = parse_set_cookie("bistro_session=abc; Path=/; HttpOnly").unwrap();
        assert_eq!(
            (kept.name, kept.value, kept.forget),
            (SESSION, "abc", false)
        );
        let cleared = parse_set_cookie("a=; Max-Age=0; Path=/").unwrap();
        assert_eq!(
            (cleared.name, cleared.value, cleared.forget),
            ("a", "", true)
        );
        assert!(parse_set_cookie("a=b; max-age=-1").unwrap().forget);
        assert!(!parse_set_cookie("a=b; max-age=60").unwrap().forget);
        assert_eq!(parse_set_cookie("garbage"), None);
        assert_eq!(parse_set_cookie("=x"), None);
    }
}
