//! One client connection: bytes in, complete requests out, answers back in order. Its life is one
//! `State`, changed only here:
//!
//! ```text
//!   Open ──request answered elsewhere──▶ Awaiting ──answer complete──▶ Open
//!    │  ╲                                   │
//!    │   ╲ Connection: close / error         │ close after it
//!    ▼    ▼                                  ▼
//!  (gone) Closing ──output written──▶ Lingering ──client closed / deadline──▶ (gone)
//! ```
//!
//! Requests are handled one at a time in arrival order; pipelined requests wait in the read buffer
//! until the one before is answered, which keeps answers in order for free. Handlers never touch the
//! connection: they append to its `Output` and return an outcome, and the caller moves the state.
//!
//! Memory per connection is bounded: the head by `MAX_HEAD_BYTES`, the body by `--max-body-bytes` and
//! the shared in-flight budget (reserved before the body is read), pending output by
//! `MAX_CLIENT_OUTPUT_BYTES` (past it the connection is not read until the client catches up).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

use crate::defaults::{
    LINGER, MAX_CLIENT_OUTPUT_BYTES, MAX_HEAD_BYTES, OUTPUT_KEEP_BYTES, RBUF_KEEP_BYTES, RBUF_SHRINK_ABOVE, READ_CHUNK,
};
use crate::http::output::Output;
use crate::http::request::{ChunkedDecoder, Head, parse_head};
use crate::http::response::{Response, write_error};
use crate::net::SocketResult;
use crate::net::stream::Stream;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Reading requests and answering them in order.
    Open,
    /// The current request is answered elsewhere; requests behind it wait. `close_after`: the client
    /// asked to close once it is answered.
    Awaiting { by: Producer, close_after: bool },
    /// Writing what is pending; then our side shuts down.
    Closing,
    /// Answered and shut down on our side; what the client still sends is dropped until it closes too
    /// or `until` passes (closing at once could reset the connection and destroy the answer).
    Lingering { until: Instant },
}

/// What produces an awaited answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    /// The worker's query task with this id.
    Query(usize),
    /// The config thread, answering a `/reload`.
    Reload,
}

/// Request framing: waiting for a head, or reading a body.
enum Phase {
    Head,
    Body { head: Box<Head>, chunked: Option<(ChunkedDecoder, Vec<u8>)> },
}

/// A complete request, ready to be handled.
pub struct Request {
    /// Boxed: a connection holds one from its head to its answer, and its enums stay small.
    pub head: Box<Head>,
    /// Chunked bodies are decoded into their own buffer; Content-Length bodies stay in the read
    /// buffer (see `Connection::take_request`).
    decoded: Option<Vec<u8>>,
    /// Content-Length bodies: the first `len` bytes of the read buffer.
    len: usize,
}

/// A request's body, lent out of the connection while the request is handled.
pub struct Body {
    decoded: Option<Vec<u8>>,
    rbuf: Vec<u8>,
    len: usize,
}

impl Body {
    pub fn bytes(&self) -> &[u8] {
        match &self.decoded {
            Some(b) => b,
            None => &self.rbuf[..self.len.min(self.rbuf.len())],
        }
    }
}

/// How a read ended. Readiness is edge-triggered: after `Limit` the socket still holds data and will
/// not be reported again, so the caller must come back to it by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    Drained,
    Limit,
    Closed,
}

/// What the request parser found.
pub enum Next {
    /// Nothing complete (or nothing may be started) yet.
    Wait,
    Request(Request),
}

/// What the owner must do with the connection after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Close,
}

/// The `Origin` the answer to a request refused while it is read must echo (`http::cors`).
fn cors_origin(head: &Head) -> Option<String> {
    crate::http::cors::origin_to_echo(head, crate::http::router::route(head.method, &head.path))
}

pub struct Connection {
    /// Plain TCP, or TLS when the node has `tlscert`.
    pub stream: Stream,
    pub peer: SocketAddr,
    token: Token,
    /// Tells this connection from an earlier one in the same slot (answers from other threads).
    pub generation: u64,
    state: State,
    /// Bytes read and not consumed.
    rbuf: Vec<u8>,
    pub out: Output,
    phase: Phase,
    last_active: Instant,
    /// Bytes of the shared in-flight budget held for the current request.
    reserved: usize,
    /// The peer closed its side (or reset): no more requests will come.
    peer_closed: bool,
    interest: Interest,
    /// It has sent a write: a writer, paused while a backend is outpaced.
    pub wrote: bool,
    /// Not read for now: its worker paused its writers. Still expires when idle too long.
    pub paused: bool,
    /// The `Origin` of the request whose answer comes later, to echo in that answer's head once it is
    /// written ([`Connection::add_cors_headers`]).
    pub cors_origin: Option<String>,
}

impl Connection {
    pub fn new(stream: Stream, peer: SocketAddr, token: Token, generation: u64) -> Connection {
        Connection {
            stream,
            peer,
            token,
            generation,
            state: State::Open,
            rbuf: Vec::new(),
            out: Output::default(),
            phase: Phase::Head,
            last_active: Instant::now(),
            reserved: 0,
            peer_closed: false,
            interest: Interest::READABLE,
            wrote: false,
            paused: false,
            cors_origin: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The query task answering the current request, if any.
    pub fn task(&self) -> Option<usize> {
        match self.state {
            State::Awaiting { by: Producer::Query(task), .. } => Some(task),
            _ => None,
        }
    }

    pub fn is_awaiting(&self) -> bool {
        matches!(self.state, State::Awaiting { .. })
    }

    /// Idle between requests: nothing buffered either way, nothing in progress, not paused (a paused
    /// connection may have a request waiting in its socket).
    pub fn is_idle(&self) -> bool {
        self.state == State::Open
            && matches!(self.phase, Phase::Head)
            && self.rbuf.is_empty()
            && self.unsent() == 0
            && !self.paused
    }

    /// Output not yet on the socket: `out`, plus one for TLS records still waiting in the stream.
    fn unsent(&self) -> usize {
        self.out.pending() + usize::from(self.stream.wants_write())
    }

    /// Timed out: idle too long (not while an answer is produced elsewhere), done lingering, or idle
    /// while the proxy stops.
    pub fn expired(&self, now: Instant, idle_timeout: Duration, stopping: bool) -> bool {
        match self.state {
            State::Lingering { until } => now >= until,
            State::Awaiting { .. } => false,
            _ => now.duration_since(self.last_active) > idle_timeout || (stopping && self.is_idle()),
        }
    }

    /// A writer between two requests: it may be paused (a request already begun is read to its end,
    /// so no paused connection holds in-flight budget).
    pub fn may_pause(&self) -> bool {
        self.wrote && self.state == State::Open && matches!(self.phase, Phase::Head)
    }

    /// Releases the budget the connection holds; the caller returns it to the shared pool.
    pub fn take_reserved(&mut self) -> usize {
        std::mem::take(&mut self.reserved)
    }

    /// Writes pending output. False when the peer is gone.
    pub fn flush(&mut self) -> bool {
        let mut wrote = false;
        let alive = self.out.flush(&mut self.stream, &mut wrote);
        if wrote {
            self.last_active = Instant::now();
        }
        alive
    }

    /// A lingering connection drops what arrives; false once the client closed (or errored).
    pub fn drain_lingering(&mut self) -> bool {
        let (_, end) = self.stream.read_into(&mut self.rbuf, OUTPUT_KEEP_BYTES);
        self.rbuf.clear();
        matches!(end, SocketResult::WouldBlock)
    }

    /// Reads what the socket has, as far as the state allows: nothing while closing or while output
    /// piles up; while awaiting an answer, up to the buffer limit (so the client going away is noticed
    /// and pipelined requests wait in the socket after that).
    pub fn read(&mut self) -> ReadEnd {
        let limit = self.read_limit();
        let allowed = match self.state {
            State::Open => true,
            State::Awaiting { .. } => self.rbuf.len() < limit,
            State::Closing | State::Lingering { .. } => false,
        };
        if !allowed || self.peer_closed || self.out.pending() >= MAX_CLIENT_OUTPUT_BYTES {
            return ReadEnd::Drained;
        }
        let room = limit.saturating_sub(self.rbuf.len()).max(READ_CHUNK);
        let (n, result) = self.stream.read_into(&mut self.rbuf, room);
        if n > 0 {
            self.last_active = Instant::now();
        }
        match result {
            SocketResult::WouldBlock => ReadEnd::Drained,
            SocketResult::Continue if self.is_awaiting() => ReadEnd::Drained,
            SocketResult::Continue => ReadEnd::Limit,
            SocketResult::Closed | SocketResult::Error(_) => {
                self.peer_closed = true;
                ReadEnd::Closed
            }
        }
    }

    /// Queues an InfluxDB-style error and closes after it.
    fn fail(&mut self, status: u16, msg: &str) {
        write_error(self.out.buf(), status, msg, true);
        self.state = State::Closing;
    }

    /// [`Connection::fail`] for a request whose head was read: a page on another origin can read the
    /// answer, as it can an endpoint's own (`http::cors`); `cors_origin` is the request's, as
    /// [`cors_origin`] finds it.
    fn fail_request(&mut self, cors_origin: Option<String>, status: u16, msg: &str) {
        let at = self.out.buf().len();
        self.fail(status, msg);
        if let Some(origin) = cors_origin {
            crate::http::cors::add_headers(self.out.buf(), at, &origin);
        }
    }

    /// The next complete request, if the connection may start one now. `reserve(n)` takes `n` bytes
    /// of the shared in-flight budget (false: refused).
    pub fn next_request(&mut self, max_body: usize, mut reserve: impl FnMut(usize) -> bool) -> Next {
        if self.state != State::Open || self.out.pending() >= MAX_CLIENT_OUTPUT_BYTES {
            return Next::Wait;
        }
        loop {
            match &mut self.phase {
                Phase::Head => {
                    let head = match parse_head(&self.rbuf) {
                        Ok(Some(h)) => Box::new(h),
                        Ok(None) => return Next::Wait,
                        Err(e) => {
                            self.fail(e.status(), &e.to_string());
                            return Next::Wait;
                        }
                    };
                    self.rbuf.drain(..head.len);
                    // Refused before a byte of the body is read: the client can split its batch.
                    if head.content_length.is_some_and(|n| n > max_body as u64) {
                        self.fail_request(cors_origin(&head), 413, "Request Entity Too Large");
                        return Next::Wait;
                    }
                    if !head.has_body() {
                        return Next::Request(Request { head, decoded: None, len: 0 });
                    }
                    let want = head.content_length.map_or(READ_CHUNK, |n| n as usize);
                    if !reserve(want) {
                        let origin = cors_origin(&head);
                        self.fail_request(
                            origin,
                            503,
                            "proxy overloaded: too much request data in flight, retry later",
                        );
                        return Next::Wait;
                    }
                    self.reserved += want;
                    if head.expect_continue && self.rbuf.is_empty() {
                        Response::new(100).write_to(self.out.buf());
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
                Phase::Body { head, chunked: Some((decoder, body)) } => {
                    let before = body.len();
                    let used = match decoder.decode(&self.rbuf, body, max_body) {
                        Ok(n) => n,
                        Err(e) => {
                            let origin = cors_origin(head);
                            self.fail_request(origin, e.status(), &e.to_string());
                            return Next::Wait;
                        }
                    };
                    self.rbuf.drain(..used);
                    let grown = body.len() - before;
                    // The budget follows the decoded body as it grows.
                    if body.len() > self.reserved {
                        if !reserve(grown) {
                            let origin = cors_origin(head);
                            self.fail_request(
                                origin,
                                503,
                                "proxy overloaded: too much request data in flight, retry later",
                            );
                            return Next::Wait;
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

    /// Lends the request's body out while the request is handled; `give_back` returns the buffer.
    pub fn take_body(&mut self, req: &mut Request) -> Body {
        Body { decoded: req.decoded.take(), rbuf: std::mem::take(&mut self.rbuf), len: req.len }
    }

    /// Takes the read buffer back after a request: what followed the body (pipelined requests) stays.
    pub fn give_back(&mut self, body: Body) {
        let Body { mut rbuf, len, .. } = body;
        rbuf.drain(..len.min(rbuf.len()));
        // Bytes read while the body was lent out cannot exist (reading needs the connection), so the
        // returned buffer is the whole story.
        self.rbuf = rbuf;
        if self.rbuf.capacity() > RBUF_SHRINK_ABOVE && self.rbuf.len() < RBUF_KEEP_BYTES {
            self.rbuf.shrink_to(RBUF_KEEP_BYTES);
        }
    }

    /// The request was answered at once; `close`: the client asked to close (or must).
    pub fn answered(&mut self, close: bool) {
        if close && self.state == State::Open {
            self.state = State::Closing;
        }
    }

    /// The request's answer comes later, from `by`.
    pub fn await_answer(&mut self, by: Producer, close_after: bool) {
        if self.state == State::Open {
            self.state = State::Awaiting { by, close_after };
        }
    }

    /// Puts the CORS headers for [`Connection::cors_origin`] into the awaited answer, whose head starts
    /// at `at` of the output buffer, once that head is there (`http::cors`).
    pub fn add_cors_headers(&mut self, at: usize) {
        if let Some(origin) = &self.cors_origin
            && crate::http::cors::add_headers(self.out.buf(), at, origin)
        {
            self.cors_origin = None;
        }
    }

    /// The awaited answer is complete in `out`; `close`: the connection must close after it (the
    /// client asked, or the answer is delimited by the close).
    pub fn answer_complete(&mut self, close: bool) {
        if let State::Awaiting { close_after, .. } = self.state {
            self.state = if close || close_after { State::Closing } else { State::Open };
        }
    }

    /// End of a turn: writes what it can, then decides. A closing connection with everything written
    /// shuts down its side and lingers; a client that went away is closed once nothing is owed to it
    /// (a request it left in progress is abandoned, as proxies do).
    pub fn settle(&mut self, registry: &Registry, now: Instant) -> Verdict {
        if !self.flush() {
            return Verdict::Close;
        }
        match self.state {
            State::Closing if self.unsent() == 0 => {
                if self.peer_closed {
                    return Verdict::Close;
                }
                self.state = State::Lingering { until: now + LINGER };
                self.rbuf = Vec::new();
                let _ = self.stream.shutdown(std::net::Shutdown::Write);
            }
            State::Awaiting { .. } if self.peer_closed => return Verdict::Close,
            State::Open if self.peer_closed => {
                if self.unsent() == 0 {
                    return Verdict::Close;
                }
                self.state = State::Closing;
            }
            _ => {}
        }
        self.update_interest(registry);
        Verdict::Keep
    }

    /// Registers the interest the connection needs now: writable while output waits, readable unless
    /// output is piling up. READABLE stays on always, so a hang-up is noticed even while not reading.
    pub fn update_interest(&mut self, registry: &Registry) {
        let want_write = self.unsent() > 0;
        let interest = if want_write { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        if interest != self.interest {
            self.interest = interest;
            let _ = registry.reregister(&mut self.stream, self.token, interest);
        }
    }

    /// How many bytes the read buffer may grow to in the current phase.
    fn read_limit(&self) -> usize {
        match &self.phase {
            Phase::Head => MAX_HEAD_BYTES + READ_CHUNK,
            Phase::Body { head, chunked: None } => head.content_length.unwrap_or(0) as usize + READ_CHUNK,
            Phase::Body { .. } => 4 * READ_CHUNK,
        }
    }

    /// Bytes buffered either way, for the log.
    pub fn buffered(&self) -> (usize, usize) {
        (self.rbuf.len(), self.out.pending())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A connection over a real loopback socket, and the client's end.
    fn pair() -> (Connection, std::net::TcpStream, mio::Poll) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let poll = mio::Poll::new().unwrap();
        let mut stream = Stream::Plain(mio::net::TcpStream::from_std(server));
        poll.registry().register(&mut stream, Token(7), Interest::READABLE).unwrap();
        (Connection::new(stream, peer, Token(7), 1), client, poll)
    }

    fn read_all(conn: &mut Connection) {
        for _ in 0..100 {
            if conn.read() == ReadEnd::Drained && !conn.rbuf.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn request(conn: &mut Connection) -> Option<Request> {
        match conn.next_request(1 << 20, |_| true) {
            Next::Request(r) => Some(r),
            Next::Wait => None,
        }
    }

    #[test]
    fn pipelined_requests_wait_while_an_answer_is_awaited() {
        let (mut conn, mut client, poll) = pair();
        client.write_all(b"GET /query?q=a HTTP/1.1\r\n\r\nGET /ping HTTP/1.1\r\n\r\n").unwrap();
        read_all(&mut conn);
        let first = request(&mut conn).expect("first request");
        assert_eq!(first.head.path, "/query");
        conn.await_answer(Producer::Query(3), false);
        assert_eq!(conn.task(), Some(3));
        assert!(request(&mut conn).is_none(), "the second request waits for the first answer");
        conn.out.buf().extend_from_slice(b"answer");
        conn.answer_complete(false);
        assert_eq!(conn.state(), State::Open);
        assert_eq!(request(&mut conn).expect("second request").head.path, "/ping");
        assert_eq!(conn.settle(poll.registry(), Instant::now()), Verdict::Keep);
        let mut got = [0u8; 6];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"answer");
    }

    #[test]
    fn connection_close_lingers_after_the_answer() {
        let (mut conn, mut client, poll) = pair();
        client.write_all(b"GET /ping HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        read_all(&mut conn);
        let req = request(&mut conn).unwrap();
        assert!(!req.head.keep_alive);
        conn.out.buf().extend_from_slice(b"bye");
        conn.answered(true);
        assert_eq!(conn.state(), State::Closing);
        let now = Instant::now();
        assert_eq!(conn.settle(poll.registry(), now), Verdict::Keep);
        assert_eq!(conn.state(), State::Lingering { until: now + LINGER });
        assert!(conn.expired(now + LINGER, Duration::from_secs(100), false));
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bye", "our side shut down after the answer");
    }

    #[test]
    fn an_awaited_answer_can_close_the_connection() {
        let (mut conn, mut client, poll) = pair();
        client.write_all(b"GET /query?q=a HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        read_all(&mut conn);
        let req = request(&mut conn).unwrap();
        conn.await_answer(Producer::Reload, !req.head.keep_alive);
        assert!(!conn.expired(Instant::now() + Duration::from_secs(1000), Duration::from_secs(1), true));
        conn.answer_complete(false);
        assert_eq!(conn.state(), State::Closing);
        assert_eq!(conn.settle(poll.registry(), Instant::now()), Verdict::Keep);
        assert!(matches!(conn.state(), State::Lingering { .. }));
    }

    #[test]
    fn oversized_body_is_refused_before_it_is_read() {
        let (mut conn, mut client, _poll) = pair();
        client.write_all(b"POST /write?db=x HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n").unwrap();
        read_all(&mut conn);
        assert!(request(&mut conn).is_none());
        assert_eq!(conn.state(), State::Closing);
        let text = String::from_utf8_lossy(conn.out.unsent()).to_string();
        assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    }

    #[test]
    fn a_refused_budget_answers_503_and_holds_nothing() {
        let (mut conn, mut client, _poll) = pair();
        client.write_all(b"POST /write?db=x HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789").unwrap();
        read_all(&mut conn);
        assert!(matches!(conn.next_request(1 << 20, |_| false), Next::Wait));
        assert!(String::from_utf8_lossy(conn.out.unsent()).starts_with("HTTP/1.1 503 "));
        assert_eq!(conn.take_reserved(), 0);
    }

    #[test]
    fn body_is_lent_and_the_rest_kept() {
        let (mut conn, mut client, _poll) = pair();
        client.write_all(b"POST /write HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /ping HTTP/1.1\r\n\r\n").unwrap();
        read_all(&mut conn);
        let mut req = request(&mut conn).unwrap();
        assert_eq!(conn.take_reserved(), 3);
        let body = conn.take_body(&mut req);
        assert_eq!(body.bytes(), b"abc");
        conn.give_back(body);
        conn.answered(false);
        assert_eq!(request(&mut conn).unwrap().head.path, "/ping");
    }

    #[test]
    fn a_client_that_left_is_closed_once_nothing_is_owed() {
        let (mut conn, client, poll) = pair();
        drop(client);
        for _ in 0..100 {
            if conn.read() == ReadEnd::Closed {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(conn.settle(poll.registry(), Instant::now()), Verdict::Close);
    }
}
