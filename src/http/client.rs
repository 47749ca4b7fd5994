//! Client side of HTTP/1.1: writing requests to backends (`UpstreamRequest`, the one writer the outbox
//! sender, the query relay and the health ping share), and reading a backend's response head and body
//! framing.
//!
//! Like the server side, parsing borrows the bytes read so far and "incomplete" is `Ok(None)`. The body
//! reader decodes Content-Length, chunked and read-until-close bodies into plain bytes; relaying to a
//! client re-frames them, so one decoder serves writes (short error bodies) and streamed query answers.

use std::fmt;

use super::request::{ChunkError, ChunkedDecoder, trim};
use crate::defaults::{MAX_HEADERS, MAX_UPSTREAM_HEAD_BYTES};

/// A request to a backend. Everything the proxy sends upstream is written by `write_to`, so every
/// request carries the same `Host`, `User-Agent` and framing.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Query string, already encoded, without the `?`.
    pub query: &'a [u8],
    pub host: &'a str,
    /// Extra headers (`Accept`, `Authorization`, `Content-Type`, ...).
    pub headers: &'a [(&'a str, &'a str)],
    /// Sent with `Content-Length` (also when empty) for methods that carry a body.
    pub body: Option<&'a [u8]>,
    /// Ask the backend to close after answering (one-shot requests).
    pub close: bool,
}

impl<'a> UpstreamRequest<'a> {
    pub fn get(path: &'a str, host: &'a str) -> Self {
        UpstreamRequest { method: "GET", path, query: b"", host, headers: &[], body: None, close: false }
    }

    pub fn post(path: &'a str, host: &'a str, body: &'a [u8]) -> Self {
        UpstreamRequest { method: "POST", body: Some(body), ..UpstreamRequest::get(path, host) }
    }

    /// Appends the request (head and body) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.write_head_to(out);
        if let Some(body) = self.body {
            out.extend_from_slice(body);
        }
    }

    /// Appends the request's head to `out`, announcing the body's length but leaving the body out: a
    /// caller that keeps the body elsewhere sends it from there (`upstream::Conn::lend_body`).
    pub fn write_head_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.path.as_bytes());
        if !self.query.is_empty() {
            out.push(b'?');
            out.extend_from_slice(self.query);
        }
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(self.host.as_bytes());
        out.extend_from_slice(b"\r\nUser-Agent: influx-proxy\r\n");
        for (name, value) in self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        if let Some(body) = self.body {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(body.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Every header, in order, for relaying.
    pub headers: Vec<(String, String)>,
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// The backend will close the connection after this response.
    pub close: bool,
    /// Bytes the head took.
    pub len: usize,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// Not an HTTP/1.x response, or a head past the size limit.
    BadHead(String),
    BadBody(ChunkError),
    /// The connection closed before the response was complete.
    Truncated,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::BadHead(e) => write!(f, "invalid response from backend: {e}"),
            ClientError::BadBody(e) => write!(f, "invalid response body from backend: {e}"),
            ClientError::Truncated => f.write_str("backend closed the connection mid-response"),
        }
    }
}

pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_UPSTREAM_HEAD_BYTES => {
            return Err(ClientError::BadHead("response head too large".into()));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ClientError::BadHead(e.to_string())),
    };
    let mut head = ResponseHead {
        status: resp.code.unwrap_or(0),
        headers: Vec::with_capacity(resp.headers.len()),
        content_length: None,
        chunked: false,
        close: resp.version == Some(0),
        len,
    };
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value).into_owned();
        if h.name.eq_ignore_ascii_case("content-length") {
            head.content_length = std::str::from_utf8(trim(h.value)).ok().and_then(|v| v.parse().ok());
            if head.content_length.is_none() {
                return Err(ClientError::BadHead(format!("bad Content-Length {value:?}")));
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = trim(h.value).eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    head.close = false;
                }
            }
        }
        head.headers.push((h.name.to_string(), value));
    }
    if head.chunked {
        head.content_length = None;
    }
    Ok(Some(head))
}

/// How the end of a response body is found.
#[derive(Debug, Clone)]
enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// Decodes a response body as its bytes arrive.
#[derive(Debug, Clone)]
pub struct BodyReader {
    framing: Framing,
}

impl BodyReader {
    /// `no_body`: the request was HEAD, or the status forbids a body (1xx, 204, 304).
    pub fn new(head: &ResponseHead, request_was_head: bool) -> Self {
        let no_body = request_was_head || head.status < 200 || head.status == 204 || head.status == 304;
        let framing = if no_body {
            Framing::Done
        } else if head.chunked {
            Framing::Chunked(ChunkedDecoder::new())
        } else if let Some(n) = head.content_length {
            if n == 0 { Framing::Done } else { Framing::Length(n) }
        } else {
            Framing::UntilClose
        };
        BodyReader { framing }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    /// The body ends when the connection closes (no length, not chunked).
    pub fn until_close(&self) -> bool {
        matches!(self.framing, Framing::UntilClose)
    }

    /// Decodes what it can from `input` into `out`; returns the input bytes consumed.
    pub fn read(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ClientError> {
        match &mut self.framing {
            Framing::Done => Ok(0),
            Framing::Length(left) => {
                let take = input.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[..take]);
                *left -= take as u64;
                if *left == 0 {
                    self.framing = Framing::Done;
                }
                Ok(take)
            }
            Framing::Chunked(dec) => {
                let n = dec.decode(input, out, usize::MAX).map_err(ClientError::BadBody)?;
                if dec.is_done() {
                    self.framing = Framing::Done;
                }
                Ok(n)
            }
            Framing::UntilClose => {
                out.extend_from_slice(input);
                Ok(input.len())
            }
        }
    }

    /// The connection reached EOF: fine for read-until-close bodies, truncation otherwise.
    pub fn eof(&mut self) -> Result<(), ClientError> {
        match self.framing {
            Framing::UntilClose | Framing::Done => {
                self.framing = Framing::Done;
                Ok(())
            }
            _ => Err(ClientError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_requests() {
        let mut out = Vec::new();
        UpstreamRequest { close: true, ..UpstreamRequest::get("/ping", "db1:8086") }.write_to(&mut out);
        assert_eq!(
            out,
            b"GET /ping HTTP/1.1\r\nHost: db1:8086\r\nUser-Agent: influx-proxy\r\nConnection: close\r\n\r\n"
        );
        let mut out = Vec::new();
        UpstreamRequest {
            query: b"db=x",
            headers: &[("Content-Encoding", "gzip")],
            ..UpstreamRequest::post("/write", "h", b"abc")
        }
        .write_to(&mut out);
        assert_eq!(
            out,
            b"POST /write?db=x HTTP/1.1\r\nHost: h\r\nUser-Agent: influx-proxy\r\nContent-Encoding: gzip\r\n\
              Content-Length: 3\r\n\r\nabc"
        );
    }

    #[test]
    fn parses_heads() {
        let r = parse_response_head(b"HTTP/1.1 204 No Content\r\nX-Influxdb-Version: 1.6\r\n\r\n").unwrap().unwrap();
        assert_eq!((r.status, r.close, r.content_length), (204, false, None));
        assert_eq!(r.header("x-influxdb-version"), Some("1.6"));
        let r = parse_response_head(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc").unwrap().unwrap();
        assert!(r.close);
        assert_eq!(r.len, 38);
        assert_eq!(parse_response_head(b"HTTP/1.1 200 OK\r\n"), Ok(None));
        assert!(parse_response_head(b"SSH-2.0\r\n\r\n").is_err());
    }

    fn body(head: &[u8], rest: &[u8], step: usize) -> Result<Vec<u8>, ClientError> {
        let h = parse_response_head(head).unwrap().unwrap();
        let mut r = BodyReader::new(&h, false);
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for chunk in rest.chunks(step) {
            pending.extend_from_slice(chunk);
            let n = r.read(&pending, &mut out)?;
            pending.drain(..n);
        }
        if !r.is_done() {
            r.eof()?;
        }
        Ok(out)
    }

    #[test]
    fn bodies_in_every_framing() {
        for step in [1, 3, 100] {
            assert_eq!(body(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"hello", step).unwrap(), b"hello");
            assert_eq!(
                body(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                    b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
                    step
                )
                .unwrap(),
                b"hello"
            );
            assert_eq!(body(b"HTTP/1.0 200 OK\r\n\r\n", b"until close", step).unwrap(), b"until close");
        }
        assert_eq!(body(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", b"short", 2), Err(ClientError::Truncated));
        assert_eq!(body(b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", b"", 2).unwrap(), b"");
    }
}
