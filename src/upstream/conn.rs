//! A non-blocking HTTP/1.1 client connection to a backend, registered on a worker's poll.
//!
//! It only moves bytes: `out` holds the request being sent, `inbuf` what the backend answered. Response
//! parsing lives in `http::client`; what a response means lives with the caller (outbox or query).

use std::fmt;
use std::io;

use mio::{Interest, Registry, Token};

use crate::config::Backend;
use crate::http::client::{BodyReader, ClientError, ResponseHead, parse_response_head};
use crate::net::stream::Stream;
use crate::net::{SocketResult, read_into, send_file, write_from};

/// A request body the caller keeps (see [`Conn::lend_body`]): its bytes and, when they lie in a file
/// (a batch in its outbox log), the file and their offset in it. A plain connection then sends them
/// with `sendfile`; TLS encrypts the bytes.
#[derive(Clone, Copy, Default)]
pub struct LentBody<'a> {
    pub bytes: &'a [u8],
    pub file: Option<(&'a std::fs::File, u64)>,
}

pub struct Conn {
    pub token: Token,
    stream: Stream,
    connected: bool,
    /// Request bytes; `sent` of them are written (then `sent - out.len()` of the lent body).
    pub out: Vec<u8>,
    sent: usize,
    /// Length of the request body the caller keeps and passes to every `drive` (a sealed batch sent
    /// straight from its outbox log, without a copy into `out`); 0 when the body is in `out`.
    lent: usize,
    /// Response bytes read and not consumed yet.
    pub inbuf: Vec<u8>,
    /// Completed request/response exchanges. A failure on a reused connection before any answer may
    /// just be the backend having closed it while idle, which deserves one immediate retry.
    pub exchanges: u64,
}

/// Why a connection is unusable, for logs and health (`Display` says what happened).
#[derive(Debug)]
pub enum ConnError {
    Connect(io::Error),
    Write(io::Error),
    Read(io::Error),
    /// The backend closed the connection while the request was being sent.
    ClosedWhileSending,
    /// The backend closed the connection before a complete answer head.
    ClosedBeforeAnswer,
    /// The answer is not HTTP/1.1 as this proxy reads it.
    Protocol(ClientError),
    /// An exchange was driven without a connection (a bug, reported rather than panicked on).
    NotConnected,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Connect(e) => write!(f, "connect: {e}"),
            ConnError::Write(e) => write!(f, "write: {e}"),
            ConnError::Read(e) => write!(f, "read: {e}"),
            ConnError::ClosedWhileSending => f.write_str("connection closed by backend"),
            ConnError::ClosedBeforeAnswer => f.write_str("connection closed before an answer"),
            ConnError::Protocol(e) => e.fmt(f),
            ConnError::NotConnected => f.write_str("no connection"),
        }
    }
}

impl From<ClientError> for ConnError {
    fn from(e: ClientError) -> Self {
        ConnError::Protocol(e)
    }
}

impl Conn {
    /// Starts connecting to `backend` (TLS on top for an https url).
    pub fn connect(backend: &Backend, token: Token, registry: &Registry) -> io::Result<Conn> {
        Conn::connect_to(backend.addr, backend.tls.as_deref(), token, registry)
    }

    /// Starts connecting to `addr`, with TLS on top when `tls` is set.
    pub fn connect_to(
        addr: std::net::SocketAddr,
        tls: Option<&crate::net::tls::ClientTls>,
        token: Token,
        registry: &Registry,
    ) -> io::Result<Conn> {
        let mut stream = Stream::connect(addr, tls)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Conn { token, stream, connected: false, out: Vec::new(), sent: 0, lent: 0, inbuf: Vec::new(), exchanges: 0 })
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    /// Registers a deregistered (pooled) connection again under `token`, ready for a new request.
    pub fn register(&mut self, token: Token, registry: &Registry) -> io::Result<()> {
        self.token = token;
        self.out.clear();
        self.sent = 0;
        registry.register(&mut self.stream, token, Interest::READABLE | Interest::WRITABLE)
    }

    /// An idle connection the backend has not closed and sent nothing on: a non-blocking peek finds
    /// no bytes and no end of stream.
    pub fn idle_and_open(&self) -> bool {
        let mut byte = [0u8; 1];
        self.connected
            && self.inbuf.is_empty()
            && matches!(self.stream.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Starts a new request on this (possibly reused) connection: the caller fills `out` after this.
    /// Readiness is edge-triggered and an idle connection only watches for reads, so writability is
    /// asked for again: a request larger than the socket buffer needs the writable events.
    pub fn begin_request(&mut self, registry: &Registry) {
        self.out.clear();
        self.sent = 0;
        self.lent = 0;
        self.set_interest(registry, Interest::READABLE | Interest::WRITABLE);
    }

    /// The request's body, `len` bytes, follows `out` but stays with the caller, who passes it to
    /// every `drive` until the request is sent.
    pub fn lend_body(&mut self, len: usize) {
        self.lent = len;
    }

    /// Every byte is on the socket (none waits encrypted in the TLS layer either).
    pub fn request_sent(&self) -> bool {
        self.sent >= self.out.len() + self.lent && !self.stream.wants_write()
    }

    /// Completes the connect if needed, then writes what is left of `out` and of the `lent` body.
    /// `Ok(true)`: all written.
    pub fn flush(&mut self, lent: LentBody<'_>) -> Result<bool, ConnError> {
        if !self.connected {
            if let Ok(Some(e)) | Err(e) = self.stream.take_error() {
                return Err(ConnError::Connect(e));
            }
            match self.stream.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(ConnError::Connect(e)),
            }
        }
        // Written even when all of `out` is: `write_from` ends by flushing, which is what pushes a TLS
        // stream's last encrypted bytes out after a write that would have blocked.
        let head = self.out.len();
        let mut pos = self.sent.min(head);
        let mut result = write_from(&mut self.stream, &self.out, &mut pos);
        self.sent = self.sent.max(pos);
        if self.lent > 0 && self.sent >= head && matches!(result, SocketResult::Continue) {
            if lent.bytes.len() != self.lent {
                return Err(ConnError::Write(io::Error::other("the request body changed while it was sent")));
            }
            let mut pos = self.sent - head;
            result = match (&self.stream, lent.file) {
                (Stream::Plain(tcp), Some((file, offset))) => send_file(tcp, file, offset, self.lent, &mut pos),
                _ => write_from(&mut self.stream, lent.bytes, &mut pos),
            };
            self.sent = head + pos;
        }
        match result {
            SocketResult::Continue => Ok(true),
            SocketResult::WouldBlock => Ok(false),
            SocketResult::Closed => Err(ConnError::ClosedWhileSending),
            SocketResult::Error(e) => Err(ConnError::Write(e)),
        }
    }

    /// Reads what has arrived (at most `max` bytes) into `inbuf`.
    pub fn fill(&mut self, max: usize) -> Result<Fill, ConnError> {
        if !self.connected {
            return Ok(Fill { read: 0, closed: false, blocked: true });
        }
        match read_into(&mut self.stream, &mut self.inbuf, max) {
            (read, SocketResult::Closed) => Ok(Fill { read, closed: true, blocked: false }),
            (_, SocketResult::Error(e)) => Err(ConnError::Read(e)),
            (read, SocketResult::WouldBlock) => Ok(Fill { read, closed: false, blocked: true }),
            (read, SocketResult::Continue) => Ok(Fill { read, closed: false, blocked: false }),
        }
    }

    pub fn set_interest(&mut self, registry: &Registry, interest: Interest) {
        let _ = registry.reregister(&mut self.stream, self.token, interest);
    }

    /// Advances one request/response exchange: sends what is left of the request (`lent`: the body
    /// given to `lend_body`, else empty), then reads at most `budget` bytes of the answer, decoding
    /// body bytes into `body`. The caller passes a small budget (or 0) when it cannot take more output
    /// yet; the socket is then read again when it asks.
    pub fn drive(
        &mut self,
        ex: &mut Exchange,
        body: &mut Vec<u8>,
        budget: usize,
        registry: &Registry,
        lent: LentBody<'_>,
    ) -> Result<Drive, ConnError> {
        if !self.request_sent() {
            if !self.flush(lent)? {
                return Ok(Drive { done: false, blocked: true, read: 0 });
            }
            // Keep the buffer for the next request (a fresh allocation of this size costs page faults),
            // unless an oversized request grew it.
            self.out.clear();
            if self.out.capacity() > 16 << 20 {
                self.out = Vec::new();
            }
            self.set_interest(registry, Interest::READABLE);
        }
        let fill = if budget > 0 { self.fill(budget)? } else { Fill { read: 0, closed: false, blocked: false } };
        let read = fill.read;
        if ex.reader.is_none() {
            match parse_response_head(&self.inbuf)? {
                Some(head) => {
                    self.inbuf.drain(..head.len);
                    ex.reader = Some(BodyReader::new(&head, false));
                    ex.head = Some(head);
                }
                None if fill.closed => return Err(ConnError::ClosedBeforeAnswer),
                None => {
                    return Ok(Drive { done: false, blocked: fill.blocked, read });
                }
            }
        }
        let Some(reader) = ex.reader.as_mut() else {
            return Ok(Drive { done: false, blocked: true, read });
        };
        let n = reader.read(&self.inbuf, body)?;
        self.inbuf.drain(..n);
        if fill.closed && !reader.is_done() {
            reader.eof()?;
        }
        if reader.is_done() {
            self.exchanges += 1;
            ex.done = true;
            ex.reusable = !fill.closed && self.inbuf.is_empty() && ex.head.as_ref().is_some_and(|h| !h.close);
            return Ok(Drive { done: true, blocked: false, read });
        }
        Ok(Drive { done: false, blocked: fill.blocked && self.inbuf.is_empty(), read })
    }
}

/// What one `fill` did.
#[derive(Debug, Clone, Copy)]
pub struct Fill {
    pub read: usize,
    pub closed: bool,
    /// The socket has nothing more for now.
    pub blocked: bool,
}

/// What one `drive` did.
#[derive(Debug, Clone, Copy)]
pub struct Drive {
    pub done: bool,
    /// Nothing more can happen until the socket is ready again.
    pub blocked: bool,
    /// Bytes read from the socket by this call.
    pub read: usize,
}

/// The response side of one exchange.
#[derive(Debug, Default)]
pub struct Exchange {
    pub head: Option<ResponseHead>,
    reader: Option<BodyReader>,
    pub done: bool,
    /// The connection may carry another request.
    pub reusable: bool,
}

impl Exchange {
    pub fn status(&self) -> u16 {
        self.head.as_ref().map_or(0, |h| h.status)
    }
}
