//! Server side of HTTP/1.1: reading a client's request head, and de-chunking a request body.
//!
//! Both parsers borrow the bytes the connection has read so far and report "need more bytes" as
//! `Ok(None)` / a partial count, never as an error. Everything a handler needs from the head is copied
//! into a small owned [`Head`], so the read buffer can be compacted while the body is still arriving.

use std::fmt;

use crate::defaults::{MAX_HEAD_BYTES, MAX_HEADERS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    /// `DELETE /jobs/ID` cancels a job.
    Delete,
    /// A browser's preflight of a cross-origin request (`http::cors`).
    Options,
    Other,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

/// What the proxy needs from a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    /// Path without the query string, as sent (InfluxDB paths need no decoding).
    pub path: String,
    /// Raw query string after `?`, without the `?`.
    pub query: String,
    /// HTTP/1.0 clients get `Connection: close` unless they asked for keep-alive.
    pub keep_alive: bool,
    /// The client speaks HTTP/1.0 (no chunked responses).
    pub http10: bool,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub expect_continue: bool,
    /// `Content-Encoding: gzip`
    pub gzip_body: bool,
    /// `Accept-Encoding` mentions gzip
    pub accept_gzip: bool,
    /// `Content-Type: application/x-www-form-urlencoded`
    pub form_body: bool,
    pub authorization: Option<String>,
    /// Raw `Accept-Encoding` value, relayed to backends on queries.
    pub accept_encoding: Option<String>,
    /// Raw `Accept` value (`application/csv`, msgpack...), relayed to backends on queries.
    pub accept: Option<String>,
    /// A non-empty `Origin` (a browser's cross-origin request), echoed in the answer (`http::cors`).
    pub origin: Option<String>,
    /// Bytes the head took in the buffer, request line to the blank line included.
    pub len: usize,
}

impl Head {
    pub fn has_body(&self) -> bool {
        self.chunked || self.content_length.is_some_and(|n| n > 0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The head is larger than [`MAX_HEAD_BYTES`] or has more than [`MAX_HEADERS`] headers: 431.
    TooLarge,
    /// Not HTTP/1.x: 400.
    Malformed,
    /// Content-Length that is not a number, or two that disagree: 400.
    BadContentLength,
    /// A transfer coding other than chunked: 501.
    UnsupportedTransferEncoding,
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            HeadError::Malformed | HeadError::BadContentLength => 400,
            HeadError::UnsupportedTransferEncoding => 501,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeadError::TooLarge => "request header fields too large",
            HeadError::Malformed => "malformed HTTP request",
            HeadError::BadContentLength => "invalid Content-Length header",
            HeadError::UnsupportedTransferEncoding => "unsupported Transfer-Encoding",
        })
    }
}

/// Parses a request head at the start of `buf`. `Ok(None)`: not complete yet (and still within limits).
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let http10 = req.version == Some(0);
    let mut head = Head {
        method,
        path: path.to_string(),
        query: query.to_string(),
        keep_alive: !http10,
        http10,
        content_length: None,
        chunked: false,
        expect_continue: false,
        gzip_body: false,
        accept_gzip: false,
        form_body: false,
        authorization: None,
        accept_encoding: None,
        accept: None,
        origin: None,
        len,
    };
    for h in req.headers.iter() {
        let value = h.value;
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(value).ok_or(HeadError::BadContentLength)?;
            if head.content_length.is_some_and(|prev| prev != n) {
                return Err(HeadError::BadContentLength);
            }
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only `chunked` (possibly after `identity`) is understood; anything else cannot be framed.
            let v = trim(value);
            if v.eq_ignore_ascii_case(b"chunked") {
                head.chunked = true;
            } else if !v.eq_ignore_ascii_case(b"identity") {
                return Err(HeadError::UnsupportedTransferEncoding);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = trim(value).eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("content-encoding") {
            head.gzip_body = trim(value).eq_ignore_ascii_case(b"gzip");
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            head.accept_gzip = value.split(|&b| b == b',').any(|t| {
                let t = trim(t);
                let coding = t.split(|&b| b == b';').next().unwrap_or(t);
                trim(coding).eq_ignore_ascii_case(b"gzip")
            });
            head.accept_encoding = std::str::from_utf8(value).ok().map(str::to_string);
        } else if name.eq_ignore_ascii_case("accept") {
            head.accept = std::str::from_utf8(value).ok().map(str::to_string);
        } else if name.eq_ignore_ascii_case("content-type") {
            let v = trim(value);
            let mime = v.split(|&b| b == b';').next().unwrap_or(v);
            head.form_body = trim(mime).eq_ignore_ascii_case(b"application/x-www-form-urlencoded");
        } else if name.eq_ignore_ascii_case("origin") && head.origin.is_none() {
            // The first, as Go's `Header.Get` in InfluxDB.
            head.origin = std::str::from_utf8(trim(value)).ok().filter(|o| !o.is_empty()).map(str::to_string);
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = std::str::from_utf8(value).ok().map(|s| s.trim().to_string());
        }
    }
    // RFC 9112 6.3: with both, chunked wins and the length is ignored.
    if head.chunked {
        head.content_length = None;
    }
    Ok(Some(head))
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

pub(crate) fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Incremental decoder of a chunked body. Feed it whatever bytes have arrived; it appends the payload to
/// `out` and says how many input bytes it consumed, so the caller can drop them.
#[derive(Debug, Clone, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// bytes of the current size line or trailer line seen, to bound them
    line_len: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; `digits` so far.
    #[default]
    SizeStart,
    Size {
        size: u64,
    },
    /// After `;`: chunk extensions, ignored up to the end of the line.
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// Trailer section after the last chunk; `empty` while the current line has no bytes yet.
    Trailer {
        empty: bool,
    },
    TrailerLf {
        empty: bool,
    },
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    Malformed,
    /// The decoded body would pass the limit given to [`ChunkedDecoder::decode`].
    TooLarge,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::Malformed => "malformed chunked encoding",
            ChunkError::TooLarge => "request entity too large",
        })
    }
}

impl ChunkError {
    /// The answer to a client whose body failed to decode.
    pub fn status(self) -> u16 {
        match self {
            ChunkError::Malformed => 400,
            ChunkError::TooLarge => 413,
        }
    }
}

/// Longest chunk-size line or trailer line accepted (extensions included).
const MAX_CHUNK_LINE: usize = 4096;

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input`, appending payload bytes to `out` (never letting `out` pass `limit` bytes).
    /// Returns the number of input bytes consumed; once the last chunk and the trailers are read,
    /// [`is_done`](ChunkedDecoder::is_done) is true and nothing after them is consumed.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<usize, ChunkError> {
        use ChunkState::*;
        let mut i = 0;
        while i < input.len() && self.state != Done {
            if let Data { left } = self.state {
                let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[i..i + take]);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 { DataCr } else { Data { left } };
                continue;
            }
            let b = input[i];
            i += 1;
            self.state = match (self.state, b) {
                (SizeStart, _) | (Size { .. }, _) if b.is_ascii_hexdigit() => {
                    let size = match self.state {
                        Size { size } => size,
                        _ => 0,
                    };
                    let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                    let size = size.checked_mul(16).and_then(|s| s.checked_add(digit));
                    match size {
                        Some(size) if size <= (limit - out.len().min(limit)) as u64 => Size { size },
                        _ => return Err(ChunkError::TooLarge),
                    }
                }
                (Size { size }, b';' | b' ' | b'\t') => Extension { size },
                (Size { size } | Extension { size }, b'\r') => SizeLf { size },
                (Size { size } | Extension { size } | SizeLf { size }, b'\n') => {
                    self.line_len = 0;
                    if size == 0 { Trailer { empty: true } } else { Data { left: size } }
                }
                (Extension { size }, _) => {
                    self.bump_line()?;
                    Extension { size }
                }
                (DataCr, b'\r') => DataLf,
                (DataCr | DataLf, b'\n') => SizeStart,
                (Trailer { empty }, b'\r') => TrailerLf { empty },
                (Trailer { empty } | TrailerLf { empty }, b'\n') => {
                    self.line_len = 0;
                    if empty { Done } else { Trailer { empty: true } }
                }
                (Trailer { .. }, _) => {
                    self.bump_line()?;
                    Trailer { empty: false }
                }
                _ => return Err(ChunkError::Malformed),
            };
        }
        Ok(i)
    }

    fn bump_line(&mut self) -> Result<(), ChunkError> {
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE {
            return Err(ChunkError::Malformed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Option<Head>, HeadError> {
        parse_head(s.as_bytes())
    }

    #[test]
    fn parses_a_write_head() {
        let h = head(
            "POST /write?db=x&precision=s HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\
             Content-Encoding: gzip\r\nExpect: 100-continue\r\nAccept-Encoding: deflate, gzip;q=1\r\n\r\nbody",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.path, "/write");
        assert_eq!(h.query, "db=x&precision=s");
        assert_eq!(h.content_length, Some(12));
        assert!(h.gzip_body && h.expect_continue && h.accept_gzip && h.keep_alive && !h.chunked);
        assert_eq!(h.len, h.len.min(200));
        assert!(h.has_body());
    }

    #[test]
    fn partial_head_needs_more() {
        assert_eq!(head("GET /ping HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(head(""), Ok(None));
    }

    #[test]
    fn oversized_head_is_431() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(head(&big), Err(HeadError::TooLarge));
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X{i}: 1\r\n")).collect();
        assert_eq!(head(&format!("GET / HTTP/1.1\r\n{many}\r\n")), Err(HeadError::TooLarge));
        assert_eq!(HeadError::TooLarge.status(), 431);
    }

    #[test]
    fn connection_and_version_rules() {
        let h = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap();
        assert!(h.keep_alive);
        let h = head("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn bad_framing_headers() {
        assert_eq!(head("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Err(HeadError::BadContentLength));
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HeadError::BadContentLength)
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(HeadError::UnsupportedTransferEncoding)
        );
        assert_eq!(head("garbage\r\n\r\n"), Err(HeadError::Malformed));
        let h = head("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert!(h.chunked && h.content_length.is_none());
    }

    fn dechunk_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() && !d.is_done() {
            let end = (pos + step).min(input.len());
            // The caller keeps unconsumed bytes and offers them again with more.
            let n = d.decode(&input[pos..end], &mut out, 1 << 20)?;
            pos += n;
            if n == 0 && end == input.len() {
                break;
            }
        }
        assert!(d.is_done(), "not done");
        Ok((out, pos))
    }

    #[test]
    fn dechunks_in_any_split() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n world!\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (out, used) = dechunk_all(body, step).unwrap();
            assert_eq!(out, b"hello world!");
            assert_eq!(&body[used..], b"NEXT");
        }
        let (out, _) = dechunk_all(b"A\nabcdefghij\n0\n\n", 3).unwrap();
        assert_eq!(out, b"abcdefghij");
    }

    #[test]
    fn chunk_errors() {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        assert_eq!(d.decode(b"zz\r\n", &mut out, 100), Err(ChunkError::Malformed));
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.decode(b"65\r\n", &mut out, 100), Err(ChunkError::TooLarge));
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.decode(b"ffffffffffffffffffff\r\n", &mut out, 100), Err(ChunkError::TooLarge));
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.decode(b"3\r\nabcX", &mut out, 100), Err(ChunkError::Malformed));
        let mut d = ChunkedDecoder::new();
        let long_ext = format!("1;{}", "e".repeat(MAX_CHUNK_LINE + 1));
        assert_eq!(d.decode(long_ext.as_bytes(), &mut out, 100), Err(ChunkError::Malformed));
    }
}
