//! A connection's byte stream, plain TCP or TLS over TCP, behind one type: the HTTP code above reads
//! and writes plaintext through `Read`/`Write` and registers it with mio, and never knows which.
//!
//! The TLS side keeps the non-blocking contract of a socket:
//! * `read` returns plaintext, or `WouldBlock` when the socket has nothing more; it drives the
//!   handshake as bytes arrive. Like a socket under edge-triggered readiness, a caller that stops
//!   reading early must come back by itself (rustls may hold decrypted bytes the poll will not
//!   report again).
//! * `write` takes plaintext only once the handshake is done and only while no encrypted bytes wait
//!   for the socket, so it buffers at most one write's worth. Bytes it took may still sit encrypted
//!   in rustls: `flush` pushes them out (`WouldBlock` while it cannot), and `wants_write` tells the
//!   loop to keep writable interest for them.
//! * A peer closing without `close_notify` reads as end of stream, as on TCP; HTTP framing tells a
//!   cut answer.
//!
//! Handshake failures come out as `io::Error`s of kind `InvalidData` whose text says what was wrong
//! (`tls::describe`). A plain-HTTP client on a TLS port gets Go's plain-text 400, then the close.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::SocketResult;
use super::tls::{ClientTls, Trust, describe};

/// What Go's https server answers a plain-HTTP request with (so does InfluxDB).
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

pub struct TlsStream {
    tcp: TcpStream,
    conn: rustls::Connection,
    /// Client side: what the server's certificate is checked against, for error texts.
    trust: Option<Trust>,
    /// The first byte the peer sent: an ASCII letter on a server connection is a plain-HTTP client.
    first: Option<u8>,
    /// The session failed; what rustls still queues (alerts) is not sent any more.
    failed: bool,
}

/// A failed handshake or a broken TLS record, in words (see `tls::describe`).
#[derive(Debug)]
pub struct TlsFailure(pub String);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

impl Stream {
    /// The server side of an accepted connection.
    pub fn server(tcp: TcpStream, config: &Arc<rustls::ServerConfig>) -> io::Result<Stream> {
        let conn = rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?;
        Ok(Stream::Tls(Box::new(TlsStream { tcp, conn: conn.into(), trust: None, first: None, failed: false })))
    }

    /// Starts a non-blocking connect, with TLS on top when `tls` is set.
    pub fn connect(addr: SocketAddr, tls: Option<&ClientTls>) -> io::Result<Stream> {
        let tcp = TcpStream::connect(addr)?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(Stream::Plain(tcp)),
            Some(tls) => {
                let conn = tls.connection().map_err(io::Error::other)?;
                Ok(Stream::Tls(Box::new(TlsStream {
                    tcp,
                    conn: conn.into(),
                    trust: Some(tls.trust.clone()),
                    first: None,
                    failed: false,
                })))
            }
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.tcp,
        }
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &mut t.tcp,
        }
    }

    /// Peeks at the socket without consuming (for TLS: at the encrypted bytes). An idle pooled
    /// connection must have nothing waiting.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp().peek(buf)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Encrypted bytes wait for the socket: keep writable interest until `flush` sends them.
    pub fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => !t.failed && t.conn.wants_write(),
        }
    }

    /// Still negotiating (TLS only): no plaintext has moved yet.
    pub fn is_handshaking(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.conn.is_handshaking(),
        }
    }

    /// Closing our side: TLS says `close_notify` first (best effort: what the socket does not take
    /// now is dropped, the peer then sees a plain end of stream).
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if let Stream::Tls(t) = self
            && how != Shutdown::Read
        {
            t.conn.send_close_notify();
            let _ = t.push_out();
        }
        self.tcp().shutdown(how)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.tcp().take_error()
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp().set_nodelay(on)
    }
}

impl TlsStream {
    /// Sends encrypted bytes rustls has queued; `WouldBlock` when the socket cannot take them all.
    fn push_out(&mut self) -> io::Result<()> {
        while !self.failed && self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `push_out` for moments when waiting is fine: the loop's writable interest finishes it.
    fn push_out_soon(&mut self) -> io::Result<()> {
        match self.push_out() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            r => r,
        }
    }

    /// Reads TLS records from the socket into rustls. 0: end of stream.
    fn read_tls(&mut self) -> io::Result<usize> {
        let TlsStream { tcp, conn, first, .. } = self;
        loop {
            match conn.read_tls(&mut Recording { tcp, first }) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    /// Decrypts what was read, sending whatever the handshake answers.
    fn process(&mut self) -> io::Result<()> {
        match self.conn.process_new_packets() {
            Ok(_) => self.push_out_soon(),
            Err(error) => {
                let server = matches!(self.conn, rustls::Connection::Server(_));
                if server && self.first.is_some_and(|b| b.is_ascii_uppercase()) {
                    // A plain-HTTP request: answer in its own language rather than with a TLS alert.
                    let _ = self.tcp.write(PLAIN_HTTP_ANSWER);
                } else {
                    // rustls queued an alert that tells the peer why.
                    let _ = self.push_out();
                }
                self.failed = true;
                let text = describe(&error, self.trust.as_ref());
                if server {
                    // Nobody else hears of a client's failed handshake (the connection just closes):
                    // the operator of a mutual-TLS listener wants to see who was refused and why.
                    let peer = self.tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                    log::debug!("TLS with client {peer} failed: {text}");
                }
                Err(io::Error::new(io::ErrorKind::InvalidData, TlsFailure(text)))
            }
        }
    }
}

/// The socket as rustls reads it, noting the first byte the peer ever sent.
struct Recording<'a> {
    tcp: &'a mut TcpStream,
    first: &'a mut Option<u8>,
}

impl Read for Recording<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tcp.read(buf)?;
        if self.first.is_none() && n > 0 {
            *self.first = buf.first().copied();
        }
        Ok(n)
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            self.push_out_soon()?;
            // 0 (end of stream) loops once more: the reader then reports it.
            if self.read_tls()? > 0 {
                self.process()?;
            }
        }
    }
}

impl TlsStream {
    fn write_plain(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Encrypted bytes still waiting go first; nothing more is taken until they are gone.
        self.push_out()?;
        while self.conn.is_handshaking() {
            // Plaintext is taken only after the handshake, so what `write` took is on its way.
            if self.read_tls()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
            self.process()?;
            self.push_out()?;
        }
        let n = self.conn.writer().write(buf)?;
        self.push_out_soon()?;
        Ok(n)
    }
}

impl Stream {
    /// Reads into `buf` until it would block, EOF, or `max` more bytes were read, as
    /// [`super::read_into`] does. A plain socket reads straight into the vector's spare capacity:
    /// `Read::read_to_end` zeroes spare capacity before reading into it, a memset of every byte a
    /// client sends.
    pub fn read_into(&mut self, buf: &mut Vec<u8>, max: usize) -> (usize, SocketResult) {
        match self {
            Stream::Plain(tcp) => recv_into(tcp, buf, max),
            Stream::Tls(_) => super::read_into(self, buf, max),
        }
    }
}

/// Spare capacity a read asks for at least (more when the vector is bigger: it doubles).
const MIN_READ: usize = 8 << 10;

fn recv_into(tcp: &TcpStream, buf: &mut Vec<u8>, max: usize) -> (usize, SocketResult) {
    let start = buf.len();
    loop {
        let total = buf.len() - start;
        if total >= max {
            return (total, SocketResult::Continue);
        }
        if buf.spare_capacity_mut().is_empty() {
            buf.reserve((max - total).min(buf.capacity().max(MIN_READ)));
        }
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min(max - total);
        // SAFETY: `recv` writes at most `want` bytes to the start of the spare capacity, which is at
        // least `want` bytes long, and reports how many it wrote.
        let n = unsafe { libc::recv(tcp.as_raw_fd(), spare.as_mut_ptr().cast(), want, 0) };
        match usize::try_from(n) {
            Ok(0) => return (total, SocketResult::Closed),
            // SAFETY: the first `n` bytes of the spare capacity were just written by `recv`.
            Ok(n) => unsafe { buf.set_len(buf.len() + n) },
            Err(_) => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock => return (total, SocketResult::WouldBlock),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                        return (total, SocketResult::Closed);
                    }
                    _ => return (total, SocketResult::Error(e)),
                }
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write_plain(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(t) => t.push_out(),
        }
    }
}

impl mio::event::Source for Stream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        self.tcp_mut().register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        self.tcp_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.tcp_mut().deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_read_stops_at_max_would_block_and_eof() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut stream = Stream::Plain(TcpStream::from_std(server));
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        peer.write_all(&sent).unwrap();
        let mut buf = b"kept".to_vec();
        let (n, end) = stream.read_into(&mut buf, 30_000);
        assert_eq!(n, 30_000);
        assert!(matches!(end, SocketResult::Continue));
        // The rest arrives in pieces on loopback: read until it is all there.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while buf.len() < 4 + sent.len() && std::time::Instant::now() < deadline {
            let (_, end) = stream.read_into(&mut buf, 1 << 20);
            assert!(matches!(end, SocketResult::WouldBlock), "{end:?}");
        }
        assert_eq!(&buf[..4], b"kept");
        assert!(buf[4..] == sent[..], "every byte, in order");
        drop(peer);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let (n, end) = stream.read_into(&mut buf, 1 << 20);
            assert_eq!(n, 0);
            match end {
                SocketResult::Closed => break,
                SocketResult::WouldBlock if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
