//! Integration-test harness shared by every `tests/*.rs` file (each does `mod util;`), and by
//! the end-to-end bench programs (`benches/common` includes it with `#[path]`).
//!
//! It starts private copies of the real servers the proxy sits between (`redis-server`
//! for its configuration, `influxd` as a backend), a scriptable fake InfluxDB for
//! failures a real one cannot produce on demand (hangs, resets, 5xx), and the proxy
//! binary itself, fed with a configuration written into Redis in the key layout of
//! the original Go influx-proxy. A tiny blocking HTTP/1.1 client talks to all of them.
//!
//! Rules every helper follows, so that tests can run in parallel threads and in
//! several test binaries at once: each process is killed and reaped when its handle
//! is dropped (also while a test panics), every temporary directory is removed on
//! drop unless `KEEP_TEST_DIRS=1`, ports come from [`free_port`], and every wait has a
//! deadline after which the test panics with the relevant log tail.

#![allow(dead_code, unused_imports)]

pub mod fake;
pub mod http;
pub mod inspect;
pub mod load;
pub mod procs;
pub mod proxy;
pub mod rng;
pub mod site;

pub use fake::{Behavior, FakeBackend, Recorded};
pub use http::{HttpConn, Response};
pub use procs::{Influxd, Process, Redis, set_toml};
pub use proxy::{Proxy, ProxyBuilder, ProxyConfig};

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A directory under the system temp dir, removed on drop unless `KEEP_TEST_DIRS=1`.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        loop {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let name = format!("influx-proxy-test.{label}.{}.{seq}", std::process::id());
            let path = std::env::temp_dir().join(name);
            // A leftover from an earlier run that had the same pid must not be reused.
            match std::fs::create_dir(&path) {
                Ok(()) => return TempDir { path },
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create temp dir {}: {e}", path.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_some_and(|v| v == "1") {
            eprintln!("KEEP_TEST_DIRS=1: keeping {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A TCP port that is free on 127.0.0.1 and not handed out before by this process.
///
/// Ports are drawn below the kernel's ephemeral range: a port from `bind(":0")` can be
/// taken, between our check and the server's own bind, as the local end of one of the
/// many outgoing connections the tests make, and the server would then fail to bind.
/// Other test binaries draw from the same range, so servers are still restarted on a
/// fresh port when their bind fails (see `procs`).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let (low, high) = quiet_port_range();
    let random = RandomState::new();
    for attempt in 0..10_000u64 {
        let port = if high > low {
            low + (random.hash_one(attempt) % u64::from(high - low)) as u16
        } else {
            match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
                Ok(addr) => addr.port(),
                Err(e) => panic!("cannot bind 127.0.0.1:0: {e}"),
            }
        };
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free TCP port found on 127.0.0.1");
}

/// `[low, high)` between 10000 and the start of the ephemeral range, or an empty range
/// when that leaves too little room and `free_port` must fall back to `bind(":0")`.
fn quiet_port_range() -> (u16, u16) {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(0);
    if ephemeral_start >= 12_000 { (10_000, ephemeral_start) } else { (0, 0) }
}

/// Polls `f` every 10 ms until it returns true; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
