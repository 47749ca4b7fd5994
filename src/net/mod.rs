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

/// Sends bytes `offset + *pos .. offset + len` of `file` to `dst` with `sendfile`, advancing `pos` as
/// [`write_from`] does. The kernel hands the file's page-cache pages to the socket: no copy through
/// this process's memory, and no page faults on a mapping of the file.
pub fn send_file<S: std::os::fd::AsRawFd>(
    dst: &S,
    file: &std::fs::File,
    offset: u64,
    len: usize,
    pos: &mut usize,
) -> SocketResult {
    use std::os::fd::AsRawFd as _;
    while *pos < len {
        let Ok(mut at) = libc::off_t::try_from(offset + *pos as u64) else {
            return SocketResult::Error(io::Error::other("file offset out of range"));
        };
        // SAFETY: both descriptors are open for the duration of the call (borrowed), and `at` is a
        // valid `off_t` the call may update; nothing else is read or written through pointers.
        let n = unsafe { libc::sendfile(dst.as_raw_fd(), file.as_raw_fd(), &mut at, len - *pos) };
        match n {
            0 => return SocketResult::Error(io::Error::other("the file ended before the body")),
            n if n > 0 => *pos += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return SocketResult::WouldBlock,
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => return SocketResult::Closed,
                    _ => return SocketResult::Error(e),
                }
            }
        }
    }
    SocketResult::Continue
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

    #[test]
    fn send_file_sends_its_range_whole_through_a_full_socket() {
        use std::io::Write as _;
        let path = std::env::temp_dir().join(format!("ifxp-sendfile-{}", std::process::id()));
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        std::fs::File::create(&path).unwrap().write_all(&data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut receiver, _) = listener.accept().unwrap();
        sender.set_nonblocking(true).unwrap();
        socket2::SockRef::from(&sender).set_send_buffer_size(64 << 10).unwrap();
        socket2::SockRef::from(&receiver).set_recv_buffer_size(64 << 10).unwrap();
        let reader = std::thread::spawn(move || {
            // Late, so that the sender finds the socket full first.
            std::thread::sleep(std::time::Duration::from_millis(50));
            let mut got = Vec::new();
            receiver.read_to_end(&mut got).unwrap();
            got
        });
        let (offset, len) = (100u64, 3_000_000usize);
        let (mut pos, mut blocked) = (0, 0);
        loop {
            match send_file(&sender, &file, offset, len, &mut pos) {
                SocketResult::Continue => break,
                SocketResult::WouldBlock => {
                    blocked += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(pos, len);
        // Past the end of the file: an error, not a hang or a short body taken for whole.
        // The socket may still be full from the range above: wait for room as a sender would.
        let mut pos = 0;
        let end = loop {
            match send_file(&sender, &file, 3_999_000, 2000, &mut pos) {
                SocketResult::WouldBlock => std::thread::sleep(std::time::Duration::from_millis(1)),
                other => break other,
            }
        };
        assert!(matches!(end, SocketResult::Error(_)), "{end:?}");
        assert_eq!(pos, 1000);
        drop(sender);
        let got = reader.join().unwrap();
        assert!(blocked > 0, "the socket never filled up: the test did not test resuming");
        assert_eq!(got.len(), len + 1000);
        assert!(got[..len] == data[100..100 + len], "bytes differ");
        let _ = std::fs::remove_file(&path);
    }
}
