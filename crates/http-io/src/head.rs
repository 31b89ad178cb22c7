//! How big a request head is, as both servers' `max_header_bytes` limits count it.

use http::{HeaderMap, Method, Uri};

/// The size of a request head: the request line, and per field its name, its value,
/// `": "` and CRLF (what HTTP/1.1 puts on the wire, whatever the client's spacing).
/// The servers check it once hyper has parsed the head, so an oversized head is
/// answered with a problem document instead of hyper's bare `431`.
pub fn head_size(method: &Method, uri: &Uri, headers: &HeaderMap) -> usize {
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len());
    let line = method.as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    headers.iter().fold(line, |size, (name, value)| {
        size + name.as_str().len() + value.len() + 4
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::{COOKIE, HOST};

    #[test]
    fn a_head_is_counted_as_it_goes_on_the_wire() {
        let mut headers = HeaderMap::new();
        headers.append(HOST, HeaderValue::from_static("a"));
        headers.append(COOKIE, HeaderValue::from_static("x=1"));
        headers.append(COOKIE, HeaderValue::from_static("y=22"));
        let uri: Uri = "/v1/orders?x=1".parse().unwrap();
        let wire = "GET /v1/orders?x=1 HTTP/1.1\r\nhost: a\r\ncookie: x=1\r\ncookie: y=22\r\n";
        assert_eq!(head_size(&Method::GET, &uri, &headers), wire.len());
    }
}
