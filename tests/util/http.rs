//! A blocking HTTP/1.1 client written for tests: it does exactly what it is told, so
//! tests can also send malformed, pipelined or chunked requests, and every read has a
//! timeout so a hung server fails the test instead of hanging it. Also gzip and URL
//! encoding helpers, and the message parsing the fake backend reuses.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use libdeflater::{CompressionLvl, Compressor};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The read buffer of an [`HttpConn`] unless chosen (`BufReader::new`'s).
const DEFAULT_READ_BUFFER: usize = 8 * 1024;

#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body of {} response is not JSON ({e}): {:?}", self.status, self.text()))
    }
}

pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// One request on a fresh connection (`Connection: close` unless given); interim 1xx
/// responses are skipped. `addr` is "host:port", an "http://host:port" URL also works.
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    try_request(addr, method, path, headers, body, DEFAULT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr} failed: {e}"))
}

/// Like [`request`], but returns I/O errors (refused, reset, timed out) to the caller.
pub fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    let mut conn = HttpConn::try_connect(addr, timeout)?;
    let mut all = headers.to_vec();
    if find_pair(headers, "connection").is_none() {
        all.push(("Connection", "close"));
    }
    conn.try_send(method, path, &all, body)?;
    loop {
        let response = conn.try_read_response()?;
        if response.status >= 200 {
            return Ok(response);
        }
    }
}

pub fn get(addr: &str, path: &str) -> Response {
    request(addr, "GET", path, &[], b"")
}

pub fn post(addr: &str, path: &str, body: &[u8]) -> Response {
    request(addr, "POST", path, &[], body)
}

/// A keep-alive connection for tests that care about what happens on one connection.
pub struct HttpConn {
    addr: String,
    reader: BufReader<TcpStream>,
    timeout: Duration,
    /// Methods of requests sent with `send` and not yet answered: a HEAD response has
    /// no body although it may carry a Content-Length.
    unanswered: VecDeque<String>,
}

impl HttpConn {
    pub fn connect(addr: &str) -> HttpConn {
        HttpConn::try_connect(addr, DEFAULT_TIMEOUT).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: &str, timeout: Duration) -> io::Result<HttpConn> {
        HttpConn::try_connect_buffered(addr, timeout, DEFAULT_READ_BUFFER)
    }

    /// Like [`HttpConn::try_connect`], reading through a buffer of `capacity` bytes: what one read
    /// from the socket takes in when the caller asks for less (see [`HttpConn::try_read_streamed`]).
    pub fn try_connect_buffered(addr: &str, timeout: Duration, capacity: usize) -> io::Result<HttpConn> {
        let addr = host_port(addr).to_string();
        let stream = TcpStream::connect(&addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let reader = BufReader::with_capacity(capacity, stream);
        Ok(HttpConn { addr, reader, timeout, unanswered: VecDeque::new() })
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        let stream = self.reader.get_ref();
        stream.set_read_timeout(Some(timeout)).expect("set_read_timeout");
        stream.set_write_timeout(Some(timeout)).expect("set_write_timeout");
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    /// Writes one request. Host and Content-Length are added unless given; with a
    /// `Transfer-Encoding` header the body is sent as is (see [`chunked`]).
    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        self.try_send(method, path, headers, body)
            .unwrap_or_else(|e| panic!("sending {method} {path} to {} failed: {e}", self.addr));
    }

    pub fn try_send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if find_pair(headers, "host").is_none() {
            head += &format!("Host: {}\r\n", self.addr);
        }
        for (name, value) in headers {
            head += &format!("{name}: {value}\r\n");
        }
        let framed =
            find_pair(headers, "content-length").is_some() || find_pair(headers, "transfer-encoding").is_some();
        if !framed && (!body.is_empty() || !matches!(method, "GET" | "HEAD")) {
            head += &format!("Content-Length: {}\r\n", body.len());
        }
        head += "\r\n";
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.reader.get_mut().write_all(&bytes)?;
        self.unanswered.push_back(method.to_string());
        Ok(())
    }

    /// Writes bytes verbatim, for pipelining, malformed or hand-framed requests.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let addr = &self.addr;
        self.reader.get_mut().write_all(bytes).unwrap_or_else(|e| panic!("write to {addr}: {e}"));
    }

    /// The next response, read as the answer to the oldest unanswered `send` (or to a
    /// GET after `send_raw`). A `100 Continue` is returned as a response of its own.
    pub fn read_response(&mut self) -> Response {
        self.try_read_response().unwrap_or_else(|e| panic!("reading a response from {} failed: {e}", self.addr))
    }

    /// The next response, read as the answer to a `method` request.
    pub fn read_response_to(&mut self, method: &str) -> Response {
        self.try_read_response_to(method)
            .unwrap_or_else(|e| panic!("reading a response from {} failed: {e}", self.addr))
    }

    pub fn try_read_response(&mut self) -> io::Result<Response> {
        let method = self.unanswered.front().cloned().unwrap_or_else(|| "GET".into());
        self.try_read_response_to(&method)
    }

    pub fn try_read_response_to(&mut self, method: &str) -> io::Result<Response> {
        let response = read_response(&mut self.reader, method)?;
        if response.status >= 200 {
            self.unanswered.pop_front();
        }
        Ok(response)
    }

    /// The status line and headers of the next response (to the oldest unanswered `send`), its
    /// body left to be read in pieces as it arrives from [`Streamed::body`]: for answers too large
    /// to hold, or read at a chosen pace. The body must be read to its end before the connection
    /// is used again.
    pub fn try_read_streamed(&mut self) -> io::Result<Streamed<'_>> {
        let method = self.unanswered.front().cloned().unwrap_or_else(|| "GET".into());
        let (status, headers) = read_head(&mut self.reader)?;
        if status >= 200 {
            self.unanswered.pop_front();
        }
        let framing = if bodiless(&method, status) { Framing::Done } else { framing(&headers, true)? };
        let body = BodyReader { reader: &mut self.reader, framing, chunks_started: false };
        Ok(Streamed { status, headers, body })
    }

    /// Whether the server closes the connection (EOF or reset) within `wait`, without
    /// sending anything more. Unexpected bytes make it panic.
    pub fn closed_by_peer(&mut self, wait: Duration) -> bool {
        let timeout = self.timeout;
        self.set_timeout(wait);
        let mut byte = [0u8; 1];
        let closed = match self.reader.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => panic!("{} sent unexpected data instead of closing", self.addr),
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        };
        self.set_timeout(timeout);
        closed
    }
}

fn host_port(addr: &str) -> &str {
    addr.trim_start_matches("http://").trim_end_matches('/')
}

fn find_pair<'a>(headers: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
}

fn read_response(reader: &mut impl BufRead, method: &str) -> io::Result<Response> {
    let (status, headers) = read_head(reader)?;
    let body = if bodiless(method, status) { Vec::new() } else { read_body(reader, &headers, true)? };
    Ok(Response { status, headers, body })
}

/// The status and headers of a response.
fn read_head(reader: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    let line = read_line(reader)?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status.filter(|_| version.starts_with("HTTP/1.")) else {
        return Err(invalid(format!("bad status line {line:?}")));
    };
    Ok((status, read_headers(reader)?))
}

/// Whether a response with `status` to a `method` request has no body, whatever its headers say.
fn bodiless(method: &str, status: u16) -> bool {
    method.eq_ignore_ascii_case("HEAD") || status < 200 || status == 204 || status == 304
}

/// A response whose body is read as it arrives (see [`HttpConn::try_read_streamed`]).
pub struct Streamed<'a> {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: BodyReader<'a>,
}

impl Streamed<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// How a message body is delimited.
enum Framing {
    /// Chunked transfer encoding; the bytes left of the chunk being read.
    Chunked(usize),
    /// Content-Length; the bytes left.
    Length(u64),
    /// The rest of the stream.
    UntilEof,
    /// Nothing (more) to read.
    Done,
}

/// The framing `headers` announce: chunked, Content-Length, or else the rest of the stream when
/// `until_eof` (responses) or nothing (requests).
fn framing(headers: &[(String, String)], until_eof: bool) -> io::Result<Framing> {
    let chunked =
        find_header(headers, "transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    Ok(if chunked {
        Framing::Chunked(0)
    } else if let Some(len) = find_header(headers, "content-length") {
        Framing::Length(len.parse().map_err(|_| invalid(format!("bad Content-Length {len:?}")))?)
    } else if until_eof {
        Framing::UntilEof
    } else {
        Framing::Done
    })
}

/// A response body decoded as it is read: each `read` takes at most what is left of the current
/// chunk (or of the Content-Length) straight from the connection's buffer or socket; the end of
/// the body reads as 0, the connection closing before it as `UnexpectedEof`.
pub struct BodyReader<'a> {
    reader: &'a mut BufReader<TcpStream>,
    framing: Framing,
    /// Whether a chunk was read, so that a chunk's CRLF precedes the next size line.
    chunks_started: bool,
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let want = match &mut self.framing {
            Framing::Done | Framing::Length(0) => return Ok(0),
            Framing::Length(left) => buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX)),
            Framing::UntilEof => buf.len(),
            Framing::Chunked(left) => {
                if *left == 0 {
                    if self.chunks_started {
                        read_chunk_end(self.reader)?;
                    }
                    self.chunks_started = true;
                    *left = read_chunk_size(self.reader)?;
                    if *left == 0 {
                        self.framing = Framing::Done;
                        return Ok(0);
                    }
                }
                buf.len().min(*left)
            }
        };
        let n = self.reader.read(&mut buf[..want])?;
        match &mut self.framing {
            Framing::UntilEof if n == 0 => self.framing = Framing::Done,
            Framing::Length(_) | Framing::Chunked(_) if n == 0 => {
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "connection closed in the body"));
            }
            Framing::Length(left) => *left -= n as u64,
            Framing::Chunked(left) => *left -= n,
            Framing::UntilEof | Framing::Done => {}
        }
        Ok(n)
    }
}

/// One CRLF- (or LF-) terminated line without its terminator; EOF before any byte is
/// `UnexpectedEof`.
pub fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Err(io::Error::new(ErrorKind::UnexpectedEof, "connection closed"));
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(ErrorKind::UnexpectedEof, "connection closed mid-line"));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Header lines up to the empty line ending the head.
pub fn read_headers(reader: &mut impl BufRead) -> io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok(headers);
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("bad header line {line:?}")));
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
}

/// A message body framed by chunked encoding or Content-Length; otherwise the rest of
/// the stream when `until_eof` (responses) or nothing (requests).
pub fn read_body(reader: &mut impl BufRead, headers: &[(String, String)], until_eof: bool) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match framing(headers, until_eof)? {
        Framing::Chunked(_) => return read_chunked(reader),
        Framing::Length(len) => {
            body.resize(usize::try_from(len).map_err(|_| invalid(format!("bad Content-Length {len}")))?, 0);
            reader.read_exact(&mut body)?;
        }
        Framing::UntilEof => {
            reader.read_to_end(&mut body)?;
        }
        Framing::Done => {}
    }
    Ok(body)
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size = read_chunk_size(reader)?;
        if size == 0 {
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        read_chunk_end(reader)?;
    }
}

/// The size of the next chunk from its size line; at the last chunk (0), its trailers are read too.
fn read_chunk_size(reader: &mut impl BufRead) -> io::Result<usize> {
    let line = read_line(reader)?;
    let size = line.split(';').next().unwrap_or_default().trim();
    let size = usize::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
    if size == 0 {
        while !read_line(reader)?.is_empty() {} // trailers
    }
    Ok(size)
}

/// The CRLF after a chunk's data.
fn read_chunk_end(reader: &mut impl BufRead) -> io::Result<()> {
    if read_line(reader)?.is_empty() { Ok(()) } else { Err(invalid("chunk data not followed by CRLF".into())) }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message)
}

/// Chunked transfer encoding of `parts`, one chunk each, with the final empty chunk.
pub fn chunked(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts.iter().filter(|p| !p.is_empty()) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    gzip_with(data, CompressionLvl::default())
}

/// [`gzip`] at compression `level`.
pub fn gzip_with(data: &[u8], level: CompressionLvl) -> Vec<u8> {
    let mut compressor = Compressor::new(level);
    let mut out = vec![0; compressor.gzip_compress_bound(data.len())];
    let len = compressor.gzip_compress(data, &mut out).expect("gzip compression failed");
    out.truncate(len);
    out
}

/// `body` as two gzip members at level 6, cut at a line boundary near its middle: what the proxy
/// makes of a batch (one member, level 1) never equals these bytes.
pub fn gzip_two_members(body: &[u8]) -> Vec<u8> {
    let cut = body[..body.len() / 2].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let level = CompressionLvl::new(6).expect("level 6");
    let mut gz = gzip_with(&body[..cut], level);
    gz.extend(gzip_with(&body[cut..], level));
    gz
}

/// Decompresses a gzip stream (every member, as InfluxDB reads it); panics on anything else.
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    try_gunzip(data).unwrap_or_else(|| panic!("not a valid gzip stream ({} bytes)", data.len()))
}

pub fn try_gunzip(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    influx_proxy::gunzip::Gunzip::new().decompress(data, 1 << 30, &mut out).ok()?;
    Some(out)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// Decodes a query component the way Go's `url.ParseQuery` (and so influxd) does.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// "k1=v1&k2=v2" with both sides encoded.
pub fn query_string(params: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    pairs.join("&")
}

pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}
