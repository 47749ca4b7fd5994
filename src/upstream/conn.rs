//! A non-blocking HTTP/1.1 client connection to a backend, registered on a worker's poll.
//!
//! It only moves bytes: `out` holds the request being sent, `inbuf` what the backend answered. Response
//! parsing lives in `http::client`; what a response means lives with the caller (outbox or query).

use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::net::{SocketResult, read_into, write_from};

pub struct Conn {
    pub token: Token,
    stream: TcpStream,
    connected: bool,
    /// Request bytes; `sent` of them are written.
    pub out: Vec<u8>,
    sent: usize,
    /// Response bytes read and not consumed yet.
    pub inbuf: Vec<u8>,
    /// Completed request/response exchanges. A failure on a reused connection before any answer may
    /// just be the backend having closed it while idle, which deserves one immediate retry.
    pub exchanges: u64,
}

/// Why a connection is unusable, for logs and health.
pub type ConnError = String;

impl Conn {
    pub fn connect(addr: SocketAddr, token: Token, registry: &Registry) -> io::Result<Conn> {
        let mut stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Conn {
            token,
            stream,
            connected: false,
            out: Vec::new(),
            sent: 0,
            inbuf: Vec::new(),
            exchanges: 0,
        })
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    /// Starts a new request: the caller fills `out` after this.
    pub fn begin_request(&mut self) {
        self.out.clear();
        self.sent = 0;
    }

    pub fn request_sent(&self) -> bool {
        self.sent >= self.out.len()
    }

    /// Completes the connect if needed, then writes what is left of `out`. `Ok(true)`: all written.
    pub fn flush(&mut self) -> Result<bool, ConnError> {
        if !self.connected {
            if let Ok(Some(e)) | Err(e) = self.stream.take_error() {
                return Err(format!("connect: {e}"));
            }
            match self.stream.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(format!("connect: {e}")),
            }
        }
        match write_from(&mut self.stream, &self.out, &mut self.sent) {
            SocketResult::Continue => Ok(true),
            SocketResult::WouldBlock => Ok(false),
            SocketResult::Closed => Err("connection closed by backend".into()),
            SocketResult::Error(e) => Err(format!("write: {e}")),
        }
    }

    /// Reads what has arrived (at most `max` bytes) into `inbuf`. `Ok(true)`: the backend closed.
    pub fn fill(&mut self, max: usize) -> Result<bool, ConnError> {
        if !self.connected {
            return Ok(false);
        }
        match read_into(&mut self.stream, &mut self.inbuf, max) {
            (_, SocketResult::Closed) => Ok(true),
            (_, SocketResult::Error(e)) => Err(format!("read: {e}")),
            _ => Ok(false),
        }
    }

    pub fn set_interest(&mut self, registry: &Registry, interest: Interest) {
        let _ = registry.reregister(&mut self.stream, self.token, interest);
    }
}
