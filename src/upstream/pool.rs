//! Idle keep-alive connections to backends, kept for the next query of the same worker.
//!
//! A query used to open a fresh connection to its backend each time (a connect, a few syscalls and a
//! TCP handshake on the backend: about 0.1 ms and 100 µs of CPU). A connection whose exchange completed
//! cleanly (answer read to its end, nothing extra in the buffer, no `Connection: close`) is put here
//! instead of being closed, and the next query to that backend address takes it.
//!
//! Invariants:
//! * One pool per worker thread. It is thread-local because each worker runs on its own thread and
//!   owns everything registered on its poll; the query code reaches it without a handle being threaded
//!   through every call. Nothing in it is ever shared between threads.
//! * Pooled connections are deregistered from the poll: an idle one delivers no events, and taking it
//!   registers it again under the new query's token.
//! * Bounded: at most [`MAX_IDLE_PER_BACKEND`] per backend address and [`MAX_IDLE`] in all; the oldest
//!   goes first. A connection idle for [`IDLE_TIMEOUT`] is closed (on the next access, and by the
//!   worker's periodic sweep), well before backends and middleboxes usually drop idle connections.
//! * A connection is checked before it is handed out (a non-blocking peek): one the backend closed, or
//!   one with unexpected bytes waiting, is dropped. A backend can still close one just as it is reused:
//!   the caller retries once on a fresh connection when a reused one fails before any answer byte.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use super::conn::Conn;

/// Idle connections kept per backend address, per worker.
pub const MAX_IDLE_PER_BACKEND: usize = 4;
/// Idle connections kept in all, per worker.
pub const MAX_IDLE: usize = 64;
/// An idle connection older than this is closed rather than reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a pooled connection can serve: the backend's address, and whether it speaks TLS (a config
/// change from http to https on the same address must not get a plain connection back).
pub type Key = (SocketAddr, bool);

struct Idle {
    addr: Key,
    conn: Conn,
    since: Instant,
}

/// Oldest first.
#[derive(Default)]
pub struct Pool {
    idle: VecDeque<Idle>,
}

impl Pool {
    /// Keeps `conn` (already deregistered) for reuse, closing the oldest idle ones beyond the bounds.
    pub fn put(&mut self, addr: Key, conn: Conn, now: Instant) {
        self.prune(now);
        if self.idle.iter().filter(|i| i.addr == addr).count() >= MAX_IDLE_PER_BACKEND
            && let Some(oldest) = self.idle.iter().position(|i| i.addr == addr)
        {
            self.idle.remove(oldest);
        }
        if self.idle.len() >= MAX_IDLE {
            self.idle.pop_front();
        }
        self.idle.push_back(Idle { addr, conn, since: now });
    }

    /// The most recently used idle connection to `addr` that still looks usable, registered under
    /// `token`.
    pub fn take(&mut self, addr: Key, token: Token, registry: &Registry, now: Instant) -> Option<Conn> {
        self.prune(now);
        while let Some(i) = self.idle.iter().rposition(|i| i.addr == addr) {
            let Some(Idle { mut conn, .. }) = self.idle.remove(i) else { break };
            if conn.idle_and_open() && conn.register(token, registry).is_ok() {
                return Some(conn);
            }
        }
        None
    }

    /// Closes the connections idle for longer than [`IDLE_TIMEOUT`].
    pub fn prune(&mut self, now: Instant) {
        while self.idle.front().is_some_and(|i| now.duration_since(i.since) >= IDLE_TIMEOUT) {
            self.idle.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.idle.len()
    }

    pub fn is_empty(&self) -> bool {
        self.idle.is_empty()
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// [`Pool::put`] on this worker's pool.
pub fn put(addr: Key, conn: Conn, now: Instant) {
    POOL.with(|p| p.borrow_mut().put(addr, conn, now));
}

/// [`Pool::take`] on this worker's pool.
pub fn take(addr: Key, token: Token, registry: &Registry, now: Instant) -> Option<Conn> {
    POOL.with(|p| p.borrow_mut().take(addr, token, registry, now))
}

/// [`Pool::prune`] on this worker's pool.
pub fn prune(now: Instant) {
    POOL.with(|p| p.borrow_mut().prune(now));
}

/// Idle connections in this worker's pool.
pub fn idle_count() -> usize {
    POOL.with(|p| p.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::Poll;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A connection to `listener` that has completed its connect, and the server's end of it.
    fn pair(listener: &TcpListener, poll: &Poll, token: Token) -> (Conn, std::net::TcpStream) {
        let addr = listener.local_addr().unwrap();
        let mut conn = Conn::connect_to(addr, None, token, poll.registry()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !conn.flush(crate::upstream::conn::LentBody::default()).unwrap() {
            assert!(Instant::now() < deadline, "connect did not complete");
            std::thread::sleep(Duration::from_millis(1));
        }
        conn.deregister(poll.registry());
        (conn, server)
    }

    #[test]
    fn reuse_bounds_expiry_and_closed_peers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = (listener.local_addr().unwrap(), false);
        let poll = Poll::new().unwrap();
        let t0 = Instant::now();
        let mut pool = Pool::default();
        let mut servers = Vec::new();
        for i in 0..MAX_IDLE_PER_BACKEND + 2 {
            let (conn, server) = pair(&listener, &poll, Token(i));
            servers.push(server);
            pool.put(addr, conn, t0);
        }
        assert_eq!(pool.len(), MAX_IDLE_PER_BACKEND, "bounded per backend");

        // The newest is handed out first, re-registered under the new token.
        let conn = pool.take(addr, Token(99), poll.registry(), t0).expect("an idle connection");
        assert_eq!(conn.token, Token(99));
        assert_eq!(pool.len(), MAX_IDLE_PER_BACKEND - 1);
        let other: Key = ("127.0.0.1:1".parse().unwrap(), false);
        assert!(pool.take(other, Token(1), poll.registry(), t0).is_none(), "only for its own address");

        // A connection its peer closed is dropped, not handed out: close every server end but the
        // oldest kept one (index 2: 0 and 1 were pushed out by the bound).
        let mut conn = conn;
        conn.deregister(poll.registry());
        pool.put(addr, conn, t0);
        for s in servers.iter_mut().skip(3) {
            s.shutdown(std::net::Shutdown::Both).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut survivor = pool.take(addr, Token(7), poll.registry(), t0).expect("the one still open");
        assert!(pool.is_empty(), "closed ones dropped on the way");
        // And it is the one whose server end is still open: it carries a request.
        survivor.begin_request(poll.registry());
        survivor.out.extend_from_slice(b"ping");
        assert!(survivor.flush(crate::upstream::conn::LentBody::default()).unwrap());
        let mut got = [0u8; 4];
        servers[2].set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        servers[2].read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");

        // Unexpected bytes waiting on an idle connection: not reused.
        survivor.deregister(poll.registry());
        pool.put(addr, survivor, t0);
        servers[2].write_all(b"junk").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(pool.take(addr, Token(8), poll.registry(), t0).is_none());

        // Expiry.
        let (conn, _server) = pair(&listener, &poll, Token(9));
        pool.put(addr, conn, t0);
        pool.prune(t0 + IDLE_TIMEOUT);
        assert!(pool.is_empty(), "closed once idle for IDLE_TIMEOUT");
    }
}
