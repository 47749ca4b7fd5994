//! Sockets: the per-worker `SO_REUSEPORT` listener (after `listen::claim_address` made sure the address
//! is ours alone), accepting within the file-descriptor budget (`fds`), and read/write helpers whose
//! outcome is an enum, so callers branch on `WouldBlock`/`Closed` instead of threading `io::Error` kinds
//! around. `stream` is the connection's byte stream (plain or TLS), `tls` the certificates and trust
//! behind it.

pub mod fds;
pub mod listen;
pub mod stream;
pub mod tls;

pub use fds::{Accepted, FdReserve, accept};
pub use listen::{AddressClaim, ListenError, claim_address};

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds one listener of the shared address. Every worker binds its own with `SO_REUSEPORT`, and the
/// kernel spreads new connections across them, so accepting needs no lock and no hand-off.
pub fn reuseport_listener(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// How a read or write on a non-blocking socket ended.
#[derive(Debug)]
pub enum SocketResult {
    /// Some bytes moved and more may follow.
    Continue,
    /// The kernel has nothing more for us now.
    WouldBlock,
    /// The peer closed (read of 0 bytes) or reset.
    Closed,
    Error(io::Error),
}

/// Reads into `buf` until it would block, EOF, or `max` more bytes were read. Returns the bytes read
/// and how it ended.
pub fn read_into<R: Read>(src: &mut R, buf: &mut Vec<u8>, max: usize) -> (usize, SocketResult) {
    let start = buf.len();
    // `read_to_end` keeps what it read when it stops on an error (WouldBlock included); `take` bounds
    // it. It zeroes spare capacity before reading into it (for readers without `read_buf`, as here):
    // client connections on plain sockets use `Stream::read_into`, which does not.
    let result = src.take(max as u64).read_to_end(buf);
    let total = buf.len() - start;
    match result {
        Ok(_) if total >= max => (total, SocketResult::Continue),
        Ok(_) => (total, SocketResult::Closed),
        Err(e) => match e.kind() {
            io::ErrorKind::WouldBlock => (total, SocketResult::WouldBlock),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => (total, SocketResult::Closed),
            _ => (total, SocketResult::Error(e)),
        },
    }
}

/// Writes `data[*pos..]` until done or it would block, advancing `pos`. Done means flushed: a stream
/// that buffers (TLS) reports `WouldBlock` while bytes it took still wait for the socket.
pub fn write_from<W: Write>(dst: &mut W, data: &[u8], pos: &mut usize) -> SocketResult {
    while *pos < data.len() {
        match dst.write(&data[*pos..]) {
            Ok(0) => return SocketResult::Closed,
            Ok(n) => *pos += n,
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock => return SocketResult::WouldBlock,
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                    return SocketResult::Closed;
                }
                _ => return SocketResult::Error(e),
            },
        }
    }
    match dst.flush() {
        Ok(()) => SocketResult::Continue,
        Err(e) => match e.kind() {
            io::ErrorKind::WouldBlock => SocketResult::WouldBlock,
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => SocketResult::Closed,
            _ => SocketResult::Error(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_listeners_share_a_port() {
        let a = reuseport_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = a.local_addr().unwrap();
        let b = reuseport_listener(addr).unwrap();
        assert_eq!(b.local_addr().unwrap(), addr);
    }

    #[test]
    fn read_stops_at_max_and_reports_eof() {
        let mut src: &[u8] = b"hello world";
        let mut buf = Vec::new();
        let (n, r) = read_into(&mut src, &mut buf, 5);
        assert_eq!((n, &buf[..]), (5, &b"hello"[..]));
        assert!(matches!(r, SocketResult::Continue));
        let (n, r) = read_into(&mut src, &mut buf, 100);
        assert_eq!(n, 6);
        assert!(matches!(r, SocketResult::Closed));
        assert_eq!(buf, b"hello world");
    }
}
