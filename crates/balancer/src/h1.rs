//! The backend side of the proxy as an HTTP/1.1 codec (RFC 9112): the request head the
//! balancer writes, the response head it reads back, and the response body's framing.
//!
//! No I/O here: [`forward`](crate::forward) writes the request and reads the head on
//! the request's own task, and [`body`](crate::body) streams the response body; this
//! module only turns messages into bytes and bytes into messages.
//!
//! Why the balancer speaks HTTP/1.1 to its backends itself instead of through hyper's
//! client: hyper drives each connection in a task of its own and hands it requests and
//! responses through channels, so every proxied request crossed two extra task switches
//! and a driver poll that only found the socket empty; that client side was the largest
//! share of the balancer's instructions per request (docs/benchmarks.md). What the proxy
//! needs of HTTP/1.1 towards its own backends is small: one request at a time per
//! connection, no upgrades (the proxy removes `Upgrade`), trailers dropped.
//!
//! Decisions:
//! - The request's framing is the balancer's own: the client's `Content-Length` and
//!   `Transfer-Encoding` are not copied; a known length is sent as `Content-Length`, a
//!   streamed body of unknown length as chunked.
//! - `Expect` is not forwarded: the balancer's server side already answered the client's
//!   `100-continue`, and the body follows the head at once.
//! - Informational (1xx) responses are skipped; `101` is refused (nothing asked for an
//!   upgrade).
//! - A response whose framing is ambiguous (`Transfer-Encoding` with `Content-Length`)
//!   is read as chunked and its connection closed after; conflicting `Content-Length`
//!   values are a malformed response (RFC 9112 §6.3).

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};

/// Most header fields a response head may carry (as hyper's default).
pub(crate) const MAX_HEADERS: usize = 100;

/// Longest chunk-size line (with extensions) or trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// A backend's response could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The connection failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The backend closed the connection before its response was complete.
    #[error("the connection closed before the response was complete")]
    Closed,
    /// The response breaks HTTP/1.1.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// The response head is larger than `upstream.max_response_header_bytes`.
    #[error("the response head exceeds {limit} bytes")]
    HeadTooLarge {
        /// The configured limit.
        limit: usize,
    },
}

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFraming {
    /// No body and no framing header (a `GET`, say).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The framing for a request without a body: `Content-Length: 0` for the methods whose
/// requests are expected to carry one, as clients do, nothing for the others.
pub(crate) fn empty_framing(method: &Method) -> RequestFraming {
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        RequestFraming::Length(0)
    } else {
        RequestFraming::None
    }
}

/// Appends `n` in decimal.
fn put_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends the head of a request: request line in origin form, the headers but the
/// framing ones and `Expect`, then the balancer's own framing header.
pub(crate) fn encode_request(
    out: &mut Vec<u8>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            put_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk of a chunked body (`data` must not be empty: an empty chunk ends
/// the body).
pub(crate) fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    let mut size = [0u8; 16];
    let mut at = size.len();
    let mut n = data.len();
    loop {
        at -= 1;
        size[at] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&size[at..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body, without trailers.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How the response body is delimited, and how much of it is still to come.
#[derive(Debug)]
pub(crate) enum BodyFraming {
    /// No body (a response to `HEAD`, a 204 or a 304), or a body read to its end.
    Empty,
    /// `Content-Length`: this many bytes still to come.
    Length(u64),
    /// Chunked.
    Chunked(ChunkedDecoder),
    /// Until the backend closes the connection.
    Close,
}

impl BodyFraming {
    /// Whether the whole body has been read.
    pub(crate) fn is_done(&self) -> bool {
        match self {
            BodyFraming::Empty | BodyFraming::Length(0) => true,
            BodyFraming::Chunked(decoder) => decoder.is_done(),
            BodyFraming::Length(_) | BodyFraming::Close => false,
        }
    }

    /// The exact size left, when known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self {
            BodyFraming::Empty => Some(0),
            BodyFraming::Length(n) => Some(*n),
            BodyFraming::Chunked(decoder) if decoder.is_done() => Some(0),
            BodyFraming::Chunked(_) | BodyFraming::Close => None,
        }
    }
}

/// A response head read from a backend.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) framing: BodyFraming,
    /// Whether the connection may carry another request after this response.
    pub(crate) keep_alive: bool,
}

/// The `Bistro-*` names a waiter answers with, as constants: a name that is not one of
/// HTTP's standard ones is otherwise copied into an allocation of its own for every
/// response (two per answer of a waiter, `Bistro-Waiter` and `Bistro-Mode`).
const BISTRO_NAMES: [HeaderName; 9] = [
    bistro_proto::headers::WAITER,
    bistro_proto::headers::MODE,
    bistro_proto::headers::SESSION,
    bistro_proto::headers::BACKUP,
    bistro_proto::headers::LEADER,
    bistro_proto::headers::REPLICATION,
    bistro_proto::headers::SESSION_LOST,
    bistro_proto::headers::REROUTED,
    bistro_proto::headers::REQUEST_ID,
];

/// A field name from the wire; `Bistro-*` names (sent lower-case, as hyper writes
/// them) without an allocation.
fn header_name(bytes: &[u8]) -> Result<HeaderName, UpstreamError> {
    if bytes.starts_with(b"bistro-")
        && let Some(known) = BISTRO_NAMES.iter().find(|n| n.as_str().as_bytes() == bytes)
    {
        return Ok(known.clone());
    }
    HeaderName::from_bytes(bytes).map_err(|_| UpstreamError::Malformed("invalid header name"))
}

/// Where one field sits in the head's bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

/// Header fields the proxy may add to a response (`Via`, `Set-Cookie`,
/// `Bistro-Rerouted`): room for them is made when the map is built, so adding them
/// never grows (and rehashes) it.
const ADDED_FIELDS: usize = 3;

fn span(base: &[u8], part: &[u8]) -> (u32, u32) {
    // httparse's slices point into `base`; their offsets fit in u32 since heads are
    // limited far below 4 GiB.
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    (start as u32, (start + part.len()) as u32)
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Reads one response head from the start of `buf` and removes it from there, skipping
/// informational (1xx) heads before it. `Ok(None)`: the head is not complete yet.
/// `head_request` says the request was `HEAD` (the response has no body whatever its
/// headers say). `fields` is scratch space, kept by the connection so that parsing
/// allocates and initializes nothing per response but the header map.
///
/// # Errors
/// [`UpstreamError::Malformed`] or [`UpstreamError::HeadTooLarge`].
pub(crate) fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
    limit: usize,
    fields: &mut Vec<Field>,
) -> Result<Option<ResponseHead>, UpstreamError> {
    loop {
        fields.clear();
        let (len, code, minor) = {
            let mut raw =
                [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut response,
                buf,
                &mut raw,
            );
            let len = match parsed {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if buf.len() >= limit => {
                    return Err(UpstreamError::HeadTooLarge { limit });
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(UpstreamError::Malformed("more than 100 header fields"));
                }
                Err(_) => return Err(UpstreamError::Malformed("unparsable response head")),
            };
            if len > limit {
                return Err(UpstreamError::HeadTooLarge { limit });
            }
            let (Some(code), Some(minor)) = (response.code, response.version) else {
                return Err(UpstreamError::Malformed("incomplete status line"));
            };
            fields.extend(response.headers.iter().map(|raw| Field {
                name: span(buf, raw.name.as_bytes()),
                value: span(buf, raw.value),
            }));
            (len, code, minor)
        };
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(UpstreamError::Malformed(
                    "101 Switching Protocols to a request that asked for no upgrade",
                ));
            }
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code)
            .map_err(|_| UpstreamError::Malformed("status code out of range"))?;
        // The head's bytes back every header value without a copy.
        let head: Bytes = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(fields.len() + ADDED_FIELDS);
        let mut keep_alive = minor == 1;
        let mut length: Option<u64> = None;
        let mut transfer: Option<bool> = None; // Some(last coding is chunked)
        for field in fields.iter() {
            let name = header_name(&head[field.name.0 as usize..field.name.1 as usize])?;
            let value = HeaderValue::from_maybe_shared(
                head.slice(field.value.0 as usize..field.value.1 as usize),
            )
            .map_err(|_| UpstreamError::Malformed("invalid header value"))?;
            if name == header::CONTENT_LENGTH {
                let n = std::str::from_utf8(value.as_bytes())
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(UpstreamError::Malformed("invalid Content-Length"))?;
                if length.is_some_and(|m| m != n) {
                    return Err(UpstreamError::Malformed(
                        "conflicting Content-Length values",
                    ));
                }
                length = Some(n);
            } else if name == header::TRANSFER_ENCODING {
                let last = value
                    .as_bytes()
                    .rsplit(|&b| b == b',')
                    .next()
                    .map(<[u8]>::trim_ascii)
                    .unwrap_or_default();
                transfer = Some(last.eq_ignore_ascii_case(b"chunked"));
            } else if name == header::CONNECTION {
                if has_token(&value, "close") {
                    keep_alive = false;
                } else if minor == 0 && has_token(&value, "keep-alive") {
                    keep_alive = true;
                }
            }
            headers.append(name, value);
        }
        let no_body =
            head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let framing = if no_body {
            BodyFraming::Empty
        } else {
            match (transfer, length) {
                (Some(true), length) => {
                    // Both framings at once may be an attempt at smuggling: read it as
                    // chunked, then close the connection (RFC 9112 §6.3).
                    keep_alive &= length.is_none();
                    BodyFraming::Chunked(ChunkedDecoder::default())
                }
                (Some(false), _) | (None, None) => {
                    keep_alive = false;
                    BodyFraming::Close
                }
                (None, Some(0)) => BodyFraming::Empty,
                (None, Some(n)) => BodyFraming::Length(n),
            }
        };
        let version = if minor == 1 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        return Ok(Some(ResponseHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// Removes complete informational (1xx) heads from the start of `buf`, and says
/// whether nothing else is there yet: the buffer is empty, or holds the start of what
/// may still be an informational head. A backend may send `100 Continue` while the
/// balancer is still sending the body; that is not the answer.
pub(crate) fn only_interim(buf: &mut BytesMut) -> bool {
    loop {
        if buf.is_empty() {
            return true;
        }
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut raw);
        match response.parse(buf) {
            Ok(httparse::Status::Complete(len))
                if response
                    .code
                    .is_some_and(|c| (100..200).contains(&c) && c != 101) =>
            {
                buf.advance(len);
            }
            Ok(httparse::Status::Complete(_)) | Err(_) => return false,
            // Partial: undecided until the status code is in.
            Ok(httparse::Status::Partial) => {
                return response
                    .code
                    .is_none_or(|c| (100..200).contains(&c) && c != 101);
            }
        }
    }
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In the hexadecimal size (`digits` read so far).
    #[default]
    Size,
    /// Whitespace after the size, before an extension or the line's end.
    SizeSpace,
    /// In a chunk extension (ignored).
    Extension,
    /// After the size line's CR.
    SizeLf,
    /// In the chunk's data.
    Data,
    /// After the data: its CR, then its LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// In a trailer line (ignored), then after its CR.
    Trailer,
    TrailerLf,
    /// After the final empty line's CR.
    EndLf,
    /// The body has ended.
    Done,
}

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body data.
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The body has ended (trailers consumed and dropped).
    End,
}

/// A chunked body's decoder (RFC 9112 §7.1), fed from the connection's buffer.
#[derive(Debug, Default)]
pub(crate) struct ChunkedDecoder {
    state: Chunk,
    /// Data left in the current chunk, or the size read so far.
    size: u64,
    digits: u32,
    /// Bytes of the current size line or of the trailers, for their limits.
    line: usize,
}

impl ChunkedDecoder {
    /// Whether the body has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Consumes what it can of `buf`: data comes out as a slice of the buffer without a
    /// copy.
    ///
    /// # Errors
    /// [`UpstreamError::Malformed`] on a broken chunk framing.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, UpstreamError> {
        let malformed = |what| Err(UpstreamError::Malformed(what));
        loop {
            if self.state == Chunk::Done {
                return Ok(Decoded::End);
            }
            if self.state == Chunk::Data {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let take = self.size.min(buf.len() as u64) as usize;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = Chunk::DataCr;
                }
                return Ok(Decoded::Data(buf.split_to(take).freeze()));
            }
            let Some(&byte) = buf.first() else {
                return Ok(Decoded::More);
            };
            buf.advance(1);
            match self.state {
                Chunk::Size | Chunk::SizeSpace | Chunk::Extension => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return malformed("chunk size line too long");
                    }
                }
                Chunk::TrailerStart | Chunk::Trailer => {
                    self.line += 1;
                    if self.line > MAX_TRAILERS {
                        return malformed("trailers too long");
                    }
                }
                _ => {}
            }
            self.state = match (self.state, byte) {
                (Chunk::Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    if self.digits >= 16 {
                        return malformed("chunk size too large");
                    }
                    let digit = (byte as char).to_digit(16).unwrap_or(0);
                    self.size = self.size << 4 | u64::from(digit);
                    self.digits += 1;
                    Chunk::Size
                }
                (Chunk::Size, _) if self.digits == 0 => return malformed("chunk size missing"),
                (Chunk::Size | Chunk::SizeSpace, b' ' | b'\t') => Chunk::SizeSpace,
                (Chunk::Size | Chunk::SizeSpace, b';') => Chunk::Extension,
                (Chunk::Size | Chunk::SizeSpace | Chunk::Extension, b'\r') => Chunk::SizeLf,
                (Chunk::Extension, b'\n') => return malformed("bare LF in a chunk extension"),
                (Chunk::Extension, _) => Chunk::Extension,
                (Chunk::SizeLf, b'\n') => {
                    self.line = 0;
                    self.digits = 0;
                    if self.size == 0 {
                        Chunk::TrailerStart
                    } else {
                        Chunk::Data
                    }
                }
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataLf, b'\n') => Chunk::Size,
                (Chunk::TrailerStart, b'\r') => Chunk::EndLf,
                (Chunk::TrailerStart | Chunk::Trailer, b'\n') => {
                    return malformed("bare LF in the trailers");
                }
                (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
                (Chunk::TrailerStart | Chunk::Trailer, _) => Chunk::Trailer,
                (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
                (Chunk::EndLf, b'\n') => Chunk::Done,
                _ => return malformed("broken chunk framing"),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        framing: RequestFraming,
    ) -> String {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let mut out = Vec::new();
        encode_request(&mut out, &method, &uri.parse().unwrap(), &map, framing);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_request_head_has_its_own_framing() {
        let head = request(
            Method::POST,
            "/v1/orders?x=1",
            &[
                ("host", "w1"),
                ("content-length", "999"),
                ("expect", "100-continue"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
            ],
            RequestFraming::Length(12_345),
        );
        assert_eq!(
            head,
            "POST /v1/orders?x=1 HTTP/1.1\r\nhost: w1\r\ncookie: a=1\r\ncookie: b=2\r\n\
             content-length: 12345\r\n\r\n"
        );
        let head = request(Method::PUT, "/", &[], RequestFraming::Chunked);
        assert_eq!(head, "PUT / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
        let head = request(Method::GET, "/healthz", &[], empty_framing(&Method::GET));
        assert_eq!(head, "GET /healthz HTTP/1.1\r\n\r\n");
        let head = request(Method::POST, "/", &[], empty_framing(&Method::POST));
        assert_eq!(head, "POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }

    #[test]
    fn chunks_are_sized_in_hex() {
        let mut out = Vec::new();
        encode_chunk(&mut out, &[b'x'; 26]);
        assert_eq!(out, b"1a\r\nxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n");
        let mut one = Vec::new();
        encode_chunk(&mut one, b"y");
        assert_eq!(one, b"1\r\ny\r\n");
    }

    fn parse(bytes: &[u8], head: bool) -> Result<Option<ResponseHead>, UpstreamError> {
        parse_response(&mut BytesMut::from(bytes), head, 64 * 1024, &mut Vec::new())
    }

    #[test]
    fn a_response_head_and_its_framing() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nbistro-mode: stateful\r\n\r\nhello"[..],
        );
        let head = parse_response(&mut buf, false, 1024, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers["bistro-mode"], "stateful");
        assert!(matches!(head.framing, BodyFraming::Length(5)));
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"hello", "the body stays in the buffer");

        let head = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert!(
            matches!(head.framing, BodyFraming::Empty),
            "HEAD has no body"
        );
        let head = parse(
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(head.framing, BodyFraming::Empty));
        let head = parse(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(head.framing, BodyFraming::Chunked(_)) && head.keep_alive);
        let head = parse(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert!(matches!(head.framing, BodyFraming::Close) && !head.keep_alive);
        let head = parse(
            b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive, close\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!head.keep_alive);
        let head = parse(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(!head.keep_alive, "HTTP/1.0 closes unless told otherwise");
        let head = parse(
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(head.keep_alive);
    }

    #[test]
    fn ambiguous_or_broken_framing() {
        let head = parse(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(head.framing, BodyFraming::Chunked(_)));
        assert!(
            !head.keep_alive,
            "both framings: the connection is not reused"
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"SMTP 220 hello\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad, false), Err(UpstreamError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let same = parse(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n",
            false,
        );
        assert!(matches!(
            same.unwrap().unwrap().framing,
            BodyFraming::Length(3)
        ));
    }

    #[test]
    fn informational_heads_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"[..],
        );
        let head = parse_response(&mut buf, false, 1024, &mut Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::CREATED);
        assert!(!head.headers.contains_key("link"));
        assert!(buf.is_empty());
        assert!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-le", false)
                .unwrap()
                .is_none()
        );
        let mut long = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 2000));
        assert!(matches!(
            parse_response(&mut BytesMut::from(&long[..]), false, 1024, &mut Vec::new()),
            Err(UpstreamError::HeadTooLarge { limit: 1024 })
        ));
    }

    #[test]
    fn bistro_names_are_the_constants_and_others_still_parse() {
        for name in &BISTRO_NAMES {
            assert_eq!(header_name(name.as_str().as_bytes()).unwrap(), name);
        }
        assert_eq!(header_name(b"bistro-other").unwrap(), "bistro-other");
        assert_eq!(header_name(b"Content-Type").unwrap(), header::CONTENT_TYPE);
        assert!(header_name(b"bad name").is_err());
    }

    #[test]
    fn interim_heads_are_told_from_answers() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]);
        assert!(only_interim(&mut buf) && buf.is_empty());
        let mut buf = BytesMut::from(&b"HTTP/1.1 10"[..]);
        assert!(only_interim(&mut buf), "too early to tell");
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Too Large\r\n"[..]);
        assert!(!only_interim(&mut buf));
        assert!(
            buf.starts_with(b"HTTP/1.1 413"),
            "the answer is left in place"
        );
    }

    /// Decodes `wire` fed in pieces of `step` bytes; returns the data and whether it ended.
    fn dechunk(wire: &[u8], step: usize) -> Result<(Vec<u8>, bool), UpstreamError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(d) => data.extend_from_slice(&d),
                    Decoded::More => break,
                    Decoded::End => return Ok((data, true)),
                }
            }
        }
        Ok((data, false))
    }

    #[test]
    fn chunked_bodies_decode_however_they_arrive() {
        let wire =
            b"5;name=v\r\nhello\r\n1A \r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, ended) = dechunk(wire, step).unwrap();
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert!(ended);
        }
        let (data, ended) = dechunk(b"3\r\nabc\r\n", 1).unwrap();
        assert_eq!((data.as_slice(), ended), (&b"abc"[..], false));
        let mut buf = BytesMut::from(&b"0\r\n\r\nHTTP/1.1"[..]);
        let mut decoder = ChunkedDecoder::default();
        assert_eq!(decoder.decode(&mut buf).unwrap(), Decoded::End);
        assert_eq!(&buf[..], b"HTTP/1.1", "bytes after the body are left alone");
    }

    #[test]
    fn broken_chunks_are_refused() {
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b"3\r\nabcX\r\n",
            b"3\nabc",
            b"11111111111111111\r\n",
            b"0\r\nbad\n",
        ] {
            assert!(
                matches!(dechunk(bad, 1), Err(UpstreamError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"1;".as_slice(), &[b'e'; MAX_CHUNK_LINE]].concat();
        assert!(dechunk(&long, 64).is_err());
    }
}
