//! Continuous write load through the proxy, and the bookkeeping durability tests need: which lines
//! were acknowledged (204), which were only attempted, and which ones a backend holds.
//!
//! Every line gets a unique id from a counter shared by all writer threads; the id is both the
//! line's integer field `v` and its timestamp offset (`base + id` ns), so no two lines overwrite each
//! other on an InfluxDB and a backend's content can be compared with the acknowledged ids exactly.
//! Writer thread `w` writes series `<measurement>,w=<w>` on one keep-alive connection, so within a
//! series the ids (and timestamps) increase in the order the proxy acknowledged them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Influxd;
use super::http::{self, HttpConn};

/// How long one request may take before the writer gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Proxy address, "host:port".
    pub addr: String,
    /// Query string of each request, e.g. "db=db".
    pub query: String,
    pub measurement: String,
    /// Writer threads, each with its own keep-alive connection and series.
    pub writers: usize,
    pub lines_per_request: u64,
    /// Pause after each request.
    pub pause: Duration,
    /// Timestamp of id 0, in ns.
    pub base_ns: u64,
    /// First id handed out (so that several loads on one measurement do not overlap).
    pub first_id: u64,
    /// Bodies sent gzipped (level 6, as two members), as `write_acked` sends them.
    pub gzip: bool,
}

impl LoadSpec {
    pub fn new(addr: &str, db: &str, measurement: &str) -> LoadSpec {
        LoadSpec {
            addr: addr.to_string(),
            query: format!("db={db}"),
            measurement: measurement.to_string(),
            writers: 2,
            lines_per_request: 100,
            pause: Duration::from_millis(10),
            base_ns: 1_600_000_000_000_000_000,
            first_id: 0,
            gzip: false,
        }
    }

    /// The line protocol text of id `id` written by writer `w`.
    pub fn line(&self, w: usize, id: u64) -> String {
        format!("{},w={w} v={id}i {}", self.measurement, self.base_ns + id)
    }
}

/// What the writers saw.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Ids of lines in requests answered 204.
    pub acked: BTreeSet<u64>,
    /// Ids of every line sent (acknowledged or not).
    pub attempted: BTreeSet<u64>,
    /// Writer of each attempted id.
    pub writer_of: BTreeMap<u64, usize>,
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// The first few failures, for messages.
    pub errors: Vec<String>,
}

impl LoadResult {
    fn merge(&mut self, other: LoadResult) {
        self.acked.extend(other.acked);
        self.attempted.extend(other.attempted);
        self.writer_of.extend(other.writer_of);
        self.requests_ok += other.requests_ok;
        self.requests_failed += other.requests_failed;
        for e in other.errors {
            if self.errors.len() < 10 {
                self.errors.push(e);
            }
        }
    }

    /// Merges `other` into this result (e.g. two load phases).
    pub fn absorb(&mut self, other: LoadResult) {
        self.merge(other);
    }
}

/// Writer threads running until `stop`.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<LoadResult>>,
    /// Requests answered 204 so far, all writers together.
    ok: Arc<AtomicU64>,
}

impl Load {
    pub fn start(spec: &LoadSpec) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(spec.first_id));
        let ok = Arc::new(AtomicU64::new(0));
        let threads = (0..spec.writers)
            .map(|w| {
                let (spec, stop, next, ok) = (spec.clone(), stop.clone(), next.clone(), ok.clone());
                std::thread::spawn(move || writer(&spec, w, &stop, &next, &ok))
            })
            .collect();
        Load { stop, threads, ok }
    }

    /// Requests acknowledged so far.
    pub fn acked_requests(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until at least `n` requests were acknowledged.
    pub fn wait_acked_requests(&self, n: u64, timeout: Duration) {
        super::wait_until(timeout, &format!("{n} acknowledged write requests"), || self.acked_requests() >= n);
    }

    /// Asks the writers to stop after their current request and collects what they saw.
    pub fn stop(mut self) -> LoadResult {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = LoadResult::default();
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(r) => all.merge(r),
                Err(_) => panic!("a load writer thread panicked"),
            }
        }
        all
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn writer(spec: &LoadSpec, w: usize, stop: &AtomicBool, next: &AtomicU64, ok: &AtomicU64) -> LoadResult {
    let mut result = LoadResult::default();
    let path = format!("/write?{}", spec.query);
    let mut conn: Option<HttpConn> = None;
    let note = |result: &mut LoadResult, e: String| {
        result.requests_failed += 1;
        if result.errors.len() < 10 {
            result.errors.push(e);
        }
    };
    while !stop.load(Ordering::SeqCst) {
        if conn.is_none() {
            match HttpConn::try_connect(&spec.addr, REQUEST_TIMEOUT) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    note(&mut result, format!("writer {w}: connect: {e}"));
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let first = next.fetch_add(spec.lines_per_request, Ordering::SeqCst);
        let ids = first..first + spec.lines_per_request;
        let mut body = String::with_capacity(spec.lines_per_request as usize * 48);
        for id in ids.clone() {
            body += &spec.line(w, id);
            body.push('\n');
            result.attempted.insert(id);
            result.writer_of.insert(id, w);
        }
        let answer = c.try_send("POST", &path, &[], body.as_bytes()).and_then(|()| c.try_read_response());
        match answer {
            Ok(r) if r.status == 204 => {
                result.acked.extend(ids);
                result.requests_ok += 1;
                ok.fetch_add(1, Ordering::Relaxed);
                if r.header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                    conn = None;
                }
            }
            Ok(r) => {
                note(&mut result, format!("writer {w}: HTTP {}: {}", r.status, r.text()));
                if r.header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                    conn = None;
                }
            }
            Err(e) => {
                note(&mut result, format!("writer {w}: {e}"));
                conn = None;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if !spec.pause.is_zero() {
            std::thread::sleep(spec.pause);
        }
    }
    result
}

/// Sends `requests` requests of `lines_per_request` lines on one connection, writer number `w`,
/// ids from `first_id` on; asserts every answer is 204. Returns the ids written.
pub fn write_acked(spec: &LoadSpec, w: usize, first_id: u64, requests: u64, pause: Duration) -> BTreeSet<u64> {
    let mut conn = HttpConn::connect(&spec.addr);
    conn.set_timeout(REQUEST_TIMEOUT);
    let path = format!("/write?{}", spec.query);
    let mut ids = BTreeSet::new();
    for r in 0..requests {
        let first = first_id + r * spec.lines_per_request;
        let mut body = String::new();
        for id in first..first + spec.lines_per_request {
            body += &spec.line(w, id);
            body.push('\n');
        }
        if spec.gzip {
            conn.send("POST", &path, &[("Content-Encoding", "gzip")], &http::gzip_two_members(body.as_bytes()));
        } else {
            conn.send("POST", &path, &[], body.as_bytes());
        }
        let answer = conn.read_response();
        assert_eq!(answer.status, 204, "request {r} (ids {first}..): {}", answer.text());
        ids.extend(first..first + spec.lines_per_request);
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    ids
}

/// The `v` values (ids) of every point of `measurement` on `influxd`.
pub fn stored_ids(influxd: &Influxd, db: &str, measurement: &str) -> Vec<u64> {
    stored_ids_from(influxd, db, &super::procs::quote_ident(measurement))
}

/// The `v` values of `SELECT v FROM <from>`, `from` already quoted (e.g. `"db"."rp"."m"`).
pub fn stored_ids_from(influxd: &Influxd, db: &str, from: &str) -> Vec<u64> {
    influxd
        .values(db, &format!("SELECT v FROM {from}"))
        .iter()
        .map(|row| row.get(1).and_then(|v| v.as_u64()).unwrap_or_else(|| panic!("bad row {row:?}")))
        .collect()
}

/// Points of `SELECT count(v) FROM <from>`.
pub fn count_from(influxd: &Influxd, db: &str, from: &str) -> u64 {
    let rows = influxd.values(db, &format!("SELECT count(v) FROM {from}"));
    rows.first().and_then(|row| row.get(1)?.as_u64()).unwrap_or(0)
}

/// Waits until `influxd` holds every id of `acked` in `measurement`, then checks that everything it
/// holds was attempted (nothing invented, nothing from elsewhere). Returns the stored ids.
pub fn wait_for_ids(
    influxd: &Influxd,
    db: &str,
    measurement: &str,
    acked: &BTreeSet<u64>,
    attempted: &BTreeSet<u64>,
    timeout: Duration,
) -> BTreeSet<u64> {
    wait_for_ids_from(influxd, db, &super::procs::quote_ident(measurement), acked, attempted, timeout)
}

/// [`wait_for_ids`] for `SELECT .. FROM <from>`, `from` already quoted.
pub fn wait_for_ids_from(
    influxd: &Influxd,
    db: &str,
    from: &str,
    acked: &BTreeSet<u64>,
    attempted: &BTreeSet<u64>,
    timeout: Duration,
) -> BTreeSet<u64> {
    let deadline = Instant::now() + timeout;
    let want = acked.len() as u64;
    loop {
        let count = count_from(influxd, db, from);
        if count >= want {
            let stored: BTreeSet<u64> = stored_ids_from(influxd, db, from).into_iter().collect();
            let missing: Vec<u64> = acked.difference(&stored).copied().collect();
            if missing.is_empty() {
                let invented: Vec<u64> = stored.difference(attempted).copied().collect();
                assert!(
                    invented.is_empty(),
                    "{from} on {}: {} points that were never written, e.g. {:?}",
                    influxd.addr(),
                    invented.len(),
                    &invented[..invented.len().min(10)]
                );
                return stored;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{from} on {}: {} of {} acknowledged points missing after {timeout:?}, e.g. {:?} \
                     ({} points stored)",
                    influxd.addr(),
                    missing.len(),
                    acked.len(),
                    &missing[..missing.len().min(10)],
                    stored.len()
                );
            }
        } else if Instant::now() >= deadline {
            panic!(
                "{from} on {}: {count} points stored, {} acknowledged, after {timeout:?}",
                influxd.addr(),
                acked.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
