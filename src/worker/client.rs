//! One client connection: bytes in, complete requests out, responses back in order.
//!
//! Requests on a connection are handled one at a time in arrival order; pipelined requests wait in the
//! read buffer until the one before is answered, which keeps responses in order for free. A request
//! whose answer comes later (a query relayed from a backend) parks the connection in `busy` until the
//! answer is complete.
//!
//! Memory per connection is bounded: the head by `MAX_HEAD_BYTES`, the body by `--max-body-bytes` and
//! the shared in-flight budget (reserved before the body is read), pending output by
//! `MAX_CLIENT_OUTPUT_BYTES` (past it the connection is not read until the client catches up).

use std::net::SocketAddr;
use std::time::Instant;

use mio::{Interest, Registry, Token};

use crate::defaults::{MAX_CLIENT_OUTPUT_BYTES, MAX_HEAD_BYTES, READ_CHUNK};
use crate::http::request::{ChunkedDecoder, Head, parse_head};
use crate::http::response::{Response, write_error};
use crate::net::stream::Stream;
use crate::net::{SocketResult, read_into, write_from};

pub struct Client {
    pub stream: Stream,
    pub peer: SocketAddr,
    pub token: Token,
    /// Bytes read and not consumed.
    pub rbuf: Vec<u8>,
    /// Response bytes not yet written; `wpos` of them are.
    pub wbuf: Vec<u8>,
    wpos: usize,
    pub phase: Phase,
    pub last_active: Instant,
    /// Bytes of the shared in-flight budget this connection holds for its current request.
    pub reserved: usize,
    /// Close once `wbuf` is written.
    pub closing: bool,
    /// A response is being produced elsewhere (query in flight): do not start the next request.
    pub busy: bool,
    /// The query task producing that response.
    pub task: Option<usize>,
    /// The request being answered asked for `Connection: close`.
    pub close_when_done: bool,
    /// Answered, our side shut down; unread input is dropped until this deadline or the client's close.
    pub linger_until: Option<Instant>,
    interest: Interest,
}

pub enum Phase {
    /// Waiting for a request head.
    Head,
    /// Head read; body arriving.
    Body { head: Head, chunked: Option<(ChunkedDecoder, Vec<u8>)> },
}

/// A complete request, ready to be handled.
pub struct Request {
    pub head: Head,
    /// Chunked bodies are decoded into their own buffer; Content-Length bodies stay in `rbuf`.
    pub decoded: Option<Vec<u8>>,
    /// Content-Length bodies: the first `len` bytes of `rbuf`.
    pub len: usize,
}

/// How a read ended. Readiness is edge-triggered: after `Limit` the socket still holds data and will
/// not be reported again, so the caller must come back to it by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    Drained,
    Limit,
    Closed,
}

/// What reading found.
pub enum Next {
    /// Nothing complete yet.
    Wait,
    Request(Request),
    /// The connection must be closed now (error answer already queued, or peer gone).
    Close,
}

impl Client {
    pub fn new(stream: Stream, peer: SocketAddr, token: Token) -> Client {
        Client {
            stream,
            peer,
            token,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            phase: Phase::Head,
            last_active: Instant::now(),
            reserved: 0,
            closing: false,
            busy: false,
            task: None,
            close_when_done: false,
            linger_until: None,
            interest: Interest::READABLE,
        }
    }

    /// Idle between requests: nothing buffered either way.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Head) && self.rbuf.is_empty() && self.pending_output() == 0 && !self.busy
    }

    /// Bytes not yet on the socket; TLS records still waiting in the stream count as one.
    pub fn pending_output(&self) -> usize {
        self.wbuf.len() - self.wpos + usize::from(self.stream.wants_write())
    }

    /// Reads what the socket has, up to `limit` buffered bytes.
    pub fn read(&mut self, limit: usize) -> ReadEnd {
        let room = limit.saturating_sub(self.rbuf.len()).max(READ_CHUNK);
        let (n, result) = read_into(&mut self.stream, &mut self.rbuf, room);
        if n > 0 {
            self.last_active = Instant::now();
        }
        match result {
            SocketResult::WouldBlock => ReadEnd::Drained,
            SocketResult::Continue => ReadEnd::Limit,
            SocketResult::Closed | SocketResult::Error(_) => ReadEnd::Closed,
        }
    }

    /// Writes pending output. Returns false when the peer is gone.
    pub fn flush(&mut self) -> bool {
        let r = write_from(&mut self.stream, &self.wbuf, &mut self.wpos);
        if self.wpos > 0 {
            self.last_active = Instant::now();
        }
        if self.wpos >= self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if self.wbuf.capacity() > 1 << 20 {
                self.wbuf = Vec::new();
            }
        } else if self.wpos >= 1 << 20 {
            // A client slower than a relayed answer never empties the buffer: drop what it has taken,
            // or the buffer would grow by the whole answer.
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        !matches!(r, SocketResult::Closed | SocketResult::Error(_))
    }

    /// Registers the interest the connection needs now: writable while output waits, readable unless
    /// output is piling up or a request is being answered elsewhere.
    pub fn update_interest(&mut self, registry: &Registry) {
        let want_read = !self.closing && self.pending_output() < MAX_CLIENT_OUTPUT_BYTES;
        let want_write = self.pending_output() > 0;
        let interest = match (want_read, want_write) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (false, true) => Interest::WRITABLE,
            // Keep READABLE so a hang-up is noticed even while we are not reading.
            _ => Interest::READABLE,
        };
        if interest != self.interest {
            self.interest = interest;
            let _ = registry.reregister(&mut self.stream, self.token, interest);
        }
    }

    /// Queues an InfluxDB-style error and marks the connection to close after it.
    pub fn fail(&mut self, status: u16, msg: &str) {
        write_error(&mut self.wbuf, status, msg, true);
        self.closing = true;
    }

    /// Advances the request parser over `rbuf`.
    /// `reserve(n)` takes `n` bytes of the shared budget (false: refused).
    pub fn next_request(&mut self, max_body: usize, mut reserve: impl FnMut(usize) -> bool) -> Next {
        loop {
            match &mut self.phase {
                Phase::Head => {
                    let head = match parse_head(&self.rbuf) {
                        Ok(Some(h)) => h,
                        Ok(None) => return Next::Wait,
                        Err(e) => {
                            self.fail(e.status(), &e.to_string());
                            return Next::Close;
                        }
                    };
                    self.rbuf.drain(..head.len);
                    if head.content_length.is_some_and(|n| n > max_body as u64) {
                        self.fail(413, "Request Entity Too Large");
                        return Next::Close;
                    }
                    if !head.has_body() {
                        return Next::Request(Request { head, decoded: None, len: 0 });
                    }
                    let want = head.content_length.map_or(READ_CHUNK, |n| n as usize);
                    if !reserve(want) {
                        self.fail(503, "proxy overloaded: too much request data in flight, retry later");
                        return Next::Close;
                    }
                    self.reserved += want;
                    if head.expect_continue && self.rbuf.is_empty() {
                        Response::new(100).write_to(&mut self.wbuf);
                    }
                    let chunked = head.chunked.then(|| (ChunkedDecoder::new(), Vec::new()));
                    self.phase = Phase::Body { head, chunked };
                }
                Phase::Body { head, chunked: None } => {
                    let len = head.content_length.unwrap_or(0) as usize;
                    if self.rbuf.len() < len {
                        if self.rbuf.capacity() < len {
                            self.rbuf.reserve_exact(len - self.rbuf.len());
                        }
                        return Next::Wait;
                    }
                    let Phase::Body { head, .. } = std::mem::replace(&mut self.phase, Phase::Head) else {
                        return Next::Wait;
                    };
                    return Next::Request(Request { head, decoded: None, len });
                }
                Phase::Body { chunked: Some((decoder, body)), .. } => {
                    let before = body.len();
                    let used = match decoder.decode(&self.rbuf, body, max_body) {
                        Ok(n) => n,
                        Err(e) => {
                            let status = if e == crate::http::request::ChunkError::TooLarge { 413 } else { 400 };
                            self.fail(status, &e.to_string());
                            return Next::Close;
                        }
                    };
                    self.rbuf.drain(..used);
                    let grown = body.len() - before;
                    // The budget follows the decoded body as it grows.
                    if body.len() > self.reserved {
                        if !reserve(grown) {
                            self.fail(503, "proxy overloaded: too much request data in flight, retry later");
                            return Next::Close;
                        }
                        self.reserved += grown;
                    }
                    if !decoder.is_done() {
                        return Next::Wait;
                    }
                    let Phase::Body { head, chunked: Some((_, body)) } =
                        std::mem::replace(&mut self.phase, Phase::Head)
                    else {
                        return Next::Wait;
                    };
                    return Next::Request(Request { head, decoded: Some(body), len: 0 });
                }
            }
        }
    }

    /// How many bytes the read buffer may grow to in the current phase.
    pub fn read_limit(&self) -> usize {
        match &self.phase {
            Phase::Head => MAX_HEAD_BYTES + READ_CHUNK,
            Phase::Body { head, chunked: None } => head.content_length.unwrap_or(0) as usize + READ_CHUNK,
            Phase::Body { .. } => 4 * READ_CHUNK,
        }
    }

    /// Releases the buffer space of a finished request: drops consumed bytes and oversized buffers.
    pub fn consumed(&mut self, len: usize) {
        self.rbuf.drain(..len.min(self.rbuf.len()));
        if self.rbuf.capacity() > 4 << 20 && self.rbuf.len() < 64 << 10 {
            self.rbuf.shrink_to(64 << 10);
        }
    }
}
