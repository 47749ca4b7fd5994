//! File descriptors as a budget: the process's open-file limit, the share of it client connections may
//! take, and accepting when it is spent anyway.
//!
//! A proxy started under the common soft limit of 1024 open files would stop answering at about a
//! thousand clients: `accept` fails with EMFILE, the connection stays in the listen queue, and with
//! edge-triggered readiness nobody looks at the listener again until a new client arrives (and fails
//! the same way). So at start the soft limit is raised to the hard one, the per-worker connection limit
//! is sized to what the limit allows (leaving room for outbox segment files and backend sockets), and if
//! descriptors still run out, [`accept`] spends one descriptor kept in reserve to take a waiting
//! connection off the queue and close it: the client sees a closed connection at once, never a hang.
//! Invariants: [`accept`] either hands over a connection, reports the queue empty, or has made progress
//! on the queue (a connection shed); it only stops on an error that shedding cannot cure.

use std::fs::File;
use std::io;
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};

/// Descriptors kept out of the client connections' share whatever the limit: the listeners, the log
/// and config files, Redis, the health checker, a few outbox segments.
const FIXED_HEADROOM: u64 = 64;
/// And this fraction of the limit (1/4): outbox segment files (one per segment of backlog, per worker
/// and backend) and backend connections grow with the number of backends and with their backlog.
const HEADROOM_DIVISOR: u64 = 4;
/// A soft limit is never raised past this even if the hard limit is "unlimited".
const MAX_NOFILE: u64 = 1 << 20;

/// What raising the open-file limit found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit the process was started with.
    pub was: u64,
    /// The soft limit now in force.
    pub now: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (capped by the kernel's `nr_open`). On failure the
/// limit in force is kept: a proxy that can serve fewer clients still serves.
// `rlim_t` is u64 on 64-bit Linux, but not everywhere: the conversions are needed somewhere.
#[allow(clippy::useless_conversion)]
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let was = u64::from(lim.rlim_cur);
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(MAX_NOFILE)
        .min(MAX_NOFILE);
    let want = u64::from(lim.rlim_max).min(ceiling).max(was);
    if want == was {
        return Ok(NofileLimit { was, now: was });
    }
    let raised = libc::rlimit { rlim_cur: want as libc::rlim_t, rlim_max: lim.rlim_max };
    // SAFETY: setrlimit reads the struct we pass; raising the soft limit up to the hard one needs no
    // privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NofileLimit { was, now: want })
}

/// Client connections one worker may hold: `wanted` (`--max-connections`), or less if `threads`
/// workers at that many each would not fit in `nofile` open files with the headroom kept (at least 1).
pub fn connections_per_worker(wanted: usize, nofile: u64, threads: usize) -> usize {
    let headroom = FIXED_HEADROOM + nofile / HEADROOM_DIVISOR;
    let share = nofile.saturating_sub(headroom) / threads.max(1) as u64;
    let share = usize::try_from(share).unwrap_or(usize::MAX).max(1);
    wanted.min(share)
}

/// One descriptor held open and unused, to spend on taking a connection off the listen queue when the
/// process is out of descriptors. One per worker: workers run out independently.
#[derive(Debug)]
pub struct FdReserve {
    spare: Option<File>,
    /// Whether connections are being shed now, so the log says so once per episode, not per client.
    shedding: bool,
}

impl FdReserve {
    pub fn new() -> io::Result<FdReserve> {
        Ok(FdReserve { spare: Some(open_spare()?), shedding: false })
    }

    /// Whether a descriptor is held (false while another thread took the one freed for shedding).
    pub fn is_held(&self) -> bool {
        self.spare.is_some()
    }
}

fn open_spare() -> io::Result<File> {
    // std opens with O_CLOEXEC.
    File::open("/dev/null")
}

/// How one call of [`accept`] ended.
#[derive(Debug)]
pub enum Accepted {
    Connection(TcpStream, SocketAddr),
    /// The process is out of file descriptors: one waiting connection was taken off the queue with the
    /// reserve descriptor and closed at once. Call again: more may be waiting.
    Shed,
    /// Nothing is waiting.
    Drained,
    /// Accepting failed in a way shedding cannot cure now (e.g. out of descriptors and the reserve could
    /// not be had back yet); try again on the next readiness.
    Failed(io::Error),
}

/// Takes one connection off `listener`, shedding it if the process is out of file descriptors.
pub fn accept(listener: &TcpListener, reserve: &mut FdReserve) -> Accepted {
    if reserve.spare.is_none() {
        reserve.spare = open_spare().ok();
    }
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if reserve.shedding {
                    reserve.shedding = false;
                    log::info!("file descriptors are available again: accepting connections");
                }
                return Accepted::Connection(stream, peer);
            }
            Err(e) => match classify(&e) {
                AcceptError::Retry => continue,
                AcceptError::Empty => return Accepted::Drained,
                AcceptError::OutOfFds => return shed(listener, reserve, e),
                AcceptError::Other => return Accepted::Failed(e),
            },
        }
    }
}

enum AcceptError {
    Retry,
    Empty,
    OutOfFds,
    Other,
}

fn classify(e: &io::Error) -> AcceptError {
    match e.kind() {
        io::ErrorKind::WouldBlock => AcceptError::Empty,
        // A signal, or a client that gave up while it waited in the queue: the next one may be fine.
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => AcceptError::Retry,
        _ if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => AcceptError::OutOfFds,
        _ => AcceptError::Other,
    }
}

/// Out of descriptors: close the spare, accept (the freed descriptor goes to the connection), close the
/// connection, take the spare back.
fn shed(listener: &TcpListener, reserve: &mut FdReserve, cause: io::Error) -> Accepted {
    let Some(spare) = reserve.spare.take() else {
        return Accepted::Failed(cause);
    };
    if !reserve.shedding {
        reserve.shedding = true;
        log::warn!("out of file descriptors ({cause}): closing new client connections at once until some close");
    }
    drop(spare);
    let outcome = loop {
        match listener.accept() {
            Ok((stream, _)) => {
                drop(stream);
                break Accepted::Shed;
            }
            Err(e) => match classify(&e) {
                AcceptError::Retry => continue,
                AcceptError::Empty => break Accepted::Drained,
                // Another thread took the freed descriptor first.
                AcceptError::OutOfFds | AcceptError::Other => break Accepted::Failed(e),
            },
        }
    };
    reserve.spare = open_spare().ok();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn connection_share_leaves_headroom() {
        // 1024 files, 2 workers: 64 + 256 kept, 352 each.
        assert_eq!(connections_per_worker(4096, 1024, 2), 352);
        assert_eq!(connections_per_worker(100, 1024, 2), 100);
        assert_eq!(connections_per_worker(4096, 1 << 20, 8), 4096);
        assert_eq!(connections_per_worker(4096, 16, 4), 1);
        assert_eq!(connections_per_worker(4096, 1024, 0), 704);
    }

    #[test]
    fn accept_hands_over_connections_then_drains() {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let mut reserve = FdReserve::new().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match accept(&listener, &mut reserve) {
                Accepted::Connection(..) => break,
                Accepted::Drained if std::time::Instant::now() < deadline => std::thread::yield_now(),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(accept(&listener, &mut reserve), Accepted::Drained));
        assert!(reserve.is_held());
    }

    /// Env var that makes [`sheds_when_out_of_fds_child`] do its work: it lowers the process's file
    /// limit, so it runs in a child process of its own, never among the other tests.
    const CHILD: &str = "INFLUX_PROXY_FD_SHED_CHILD";

    #[test]
    fn accept_sheds_when_out_of_fds() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args(["--exact", "net::fds::tests::sheds_when_out_of_fds_child", "--ignored", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("1 passed"), "child test failed:\n{text}");
        assert!(text.contains("CHILD-OK"), "child test did not run:\n{text}");
    }

    #[test]
    #[ignore = "run by accept_sheds_when_out_of_fds in a child process"]
    fn sheds_when_out_of_fds_child() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut reserve = FdReserve::new().unwrap();
        let mut clients: Vec<std::net::TcpStream> =
            (0..3).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(std::time::Duration::from_millis(100));
        // Spend every descriptor left under a low limit.
        let lim = libc::rlimit { rlim_cur: 256, rlim_max: 256 };
        // SAFETY: setrlimit reads the struct we pass.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
        let mut hog = Vec::new();
        while let Ok(f) = File::open("/dev/null") {
            hog.push(f);
        }
        // Without the reserve this is EMFILE and the clients hang in the queue.
        for _ in 0..3 {
            assert!(matches!(accept(&listener, &mut reserve), Accepted::Shed));
        }
        assert!(matches!(accept(&listener, &mut reserve), Accepted::Drained));
        assert!(reserve.is_held(), "the reserve descriptor was not taken back");
        for c in &mut clients {
            c.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 1];
            // EOF or reset: closed by the accepting side, not left waiting in the queue.
            match c.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("a shed client was not closed: {other:?}"),
            }
        }
        // Two descriptors free again: one for the new client, one for its accepted connection.
        drop(hog.pop());
        drop(hog.pop());
        let _late = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        // One descriptor free again: a real connection.
        assert!(matches!(accept(&listener, &mut reserve), Accepted::Connection(..)));
        println!("CHILD-OK");
    }
}
