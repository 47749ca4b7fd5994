//! `/write`: parameters → body (gunzip, bounded) → lines → route → outboxes → answer.
//!
//! The client is answered only after every line sits, committed, in the outbox logs of its backends; a
//! 204 therefore means "on this machine's disk, in the page cache at least", and only lines InfluxDB's
//! parser takes are stored. Per line the work is: find the line's end, check it as InfluxDB would and
//! find its measurement (`lineproto`, one walk), look the measurement up (`route`, cached for runs of
//! the same measurement), and copy the line into each backend's open batch. Nothing on that path
//! allocates or takes a lock.
//!
//! Answers, as InfluxDB gives them: 204; 400 with influxd's `unable to parse '<line>': <reason>` for each
//! line it would refuse (the good lines are still written: `partial write`); 400 `partial write` also names
//! measurements that no keymap routes (those lines are dropped and counted); 503 when some line could
//! not be stored on any of its backends (outbox disk limit): the client should retry.

pub mod handler;
pub mod lineproto;
pub mod prom;
pub mod route;
pub mod v2;

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::defaults::{DEFAULT_BATCH_MAX_BYTES, WHOLE_BATCH_MIN_BYTES};
use crate::http::params::{Params, encode_into};
use crate::outbox::set::Outboxes;
use crate::outbox::{AppendError, PayloadCrc, Whole};
use crate::upstream::BackendState;
use lineproto::Lines;
use route::RouteId;

/// Per-worker scratch space, reused across requests so the per-line path does not allocate.
#[derive(Default)]
pub struct Scratch {
    pub gunzip: crate::gunzip::Gunzip,
    pub inflated: Vec<u8>,
    /// Prometheus remote write: the decompressed protobuf and the line protocol made of it.
    pub prom_proto: Vec<u8>,
    pub prom_lines: Vec<u8>,
    /// A body stored whole, compressed by the proxy.
    own_gzip: OwnGzip,
    measurement: Vec<u8>,
    routes: RouteCache,
    /// Lines and bytes per config backend index, for this request.
    lines: Vec<u64>,
    bytes: Vec<u64>,
    targets: Vec<Option<String>>,
    /// Where each line of a run ends (see `OpenBatches::line`).
    run_ends: Vec<usize>,
    /// Unroutable measurement names already logged by this worker (bounded).
    logged_unrouted: std::collections::HashSet<Vec<u8>>,
}

/// How a write request ended.
#[derive(Debug, PartialEq, Eq)]
pub struct WriteResult {
    pub status: u16,
    pub error: Option<String>,
    /// Lines stored in at least one outbox.
    pub lines: u64,
    /// With a 503: seconds the client should wait (`Retry-After`), from the backends' backoff.
    pub retry_after: Option<u64>,
}

impl WriteResult {
    pub fn error(status: u16, msg: impl Into<String>) -> Self {
        WriteResult { status, error: Some(msg.into()), lines: 0, retry_after: None }
    }
}

/// Longest db + rp + precision accepted (they travel with every batch).
const MAX_TARGET_PARAMS: usize = 4096;

/// The parts of a request that decide where its lines go.
pub struct WriteParams<'a> {
    /// Number of the request on this worker: outboxes tell a request's first line by it.
    pub request: u64,
    pub db: &'a str,
    pub rp: Option<&'a str>,
    pub precision: Option<&'a str>,
    /// The body as the client compressed it, when it may be forwarded as it came (see `store`).
    pub gzip: Option<&'a [u8]>,
}

/// Checks `db` against the node's and returns the request's parameters, or the error answer.
pub fn params<'a>(config: &'a Config, p: &'a Params) -> Result<WriteParams<'a>, WriteResult> {
    let db = match (p.non_empty("db"), config.node.db.as_deref()) {
        (Some(db), Some(node_db)) if db != node_db => {
            return Err(WriteResult::error(404, format!("database not found: \"{db}\"")));
        }
        (Some(db), _) => db,
        (None, Some(node_db)) => node_db,
        (None, None) => return Err(WriteResult::error(400, "database is required")),
    };
    let (rp, precision) = (p.non_empty("rp"), p.non_empty("precision"));
    if db.len() + rp.map_or(0, str::len) + precision.map_or(0, str::len) > MAX_TARGET_PARAMS {
        return Err(WriteResult::error(400, "db, rp and precision are too long"));
    }
    Ok(WriteParams { request: 0, db, rp, precision, gzip: None })
}

/// The receive time in the request's precision, as InfluxDB would stamp a point without a timestamp.
/// The units are InfluxDB 1.x's: `u` is microseconds, while `us` and `µ` are not units it knows, so it
/// reads those timestamps as nanoseconds (checked against influxd 1.6.7) — and so must the stamp be.
pub fn now_in_precision(precision: Option<&str>, now: SystemTime) -> i128 {
    let ns = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
    ns / i128::from(lineproto::precision_multiplier(precision))
}

/// `db=..&rp=..&precision=..`: the query string of the batch sent to a backend.
fn target(db: &str, p: &WriteParams) -> String {
    let mut s = String::from("db=");
    encode_into(&mut s, db);
    if let Some(rp) = p.rp {
        s.push_str("&rp=");
        encode_into(&mut s, rp);
    }
    if let Some(precision) = p.precision {
        s.push_str("&precision=");
        encode_into(&mut s, precision);
    }
    s
}

/// The routes of the measurements a request has named so far: the lines of a body mix a few
/// measurements (a Telegraf flush interleaves its inputs, in runs or not), and each is looked up in the
/// keymaps once. A few slots, picked by the name's length and some of its bytes; a name longer than a
/// slot holds is looked up every time. Emptied for every request, so a new config is seen at once.
struct RouteCache {
    slots: [CachedRoute; ROUTE_SLOTS],
}

const ROUTE_SLOTS: usize = 16;
/// The longest measurement name a slot holds.
const ROUTE_NAME_MAX: usize = 48;

#[derive(Clone, Copy)]
struct CachedRoute {
    /// Length of the name; 0: an empty slot (no measurement is empty).
    len: u8,
    name: [u8; ROUTE_NAME_MAX],
    route: Option<RouteId>,
}

impl Default for RouteCache {
    fn default() -> Self {
        RouteCache { slots: [CachedRoute { len: 0, name: [0; ROUTE_NAME_MAX], route: None }; ROUTE_SLOTS] }
    }
}

impl RouteCache {
    #[inline]
    fn lookup(&mut self, routes: &route::Routes, m: &[u8]) -> Option<RouteId> {
        let len = m.len();
        if !(1..=ROUTE_NAME_MAX).contains(&len) {
            return routes.lookup(m);
        }
        let pick = len ^ usize::from(m[0]) ^ usize::from(m[len / 2]) << 1 ^ usize::from(m[len - 1]) << 2;
        let slot = &mut self.slots[pick % ROUTE_SLOTS];
        if usize::from(slot.len) == len && slot.name[..len] == *m {
            return slot.route;
        }
        let route = routes.lookup(m);
        slot.len = len as u8;
        slot.name[..len].copy_from_slice(m);
        slot.route = route;
        route
    }

    fn clear(&mut self) {
        for slot in &mut self.slots {
            slot.len = 0;
        }
    }
}

/// What storing a request's lines came to, turned into the answer by [`Tally::answer`].
#[derive(Default)]
struct Tally {
    /// Lines stored in at least one outbox, and lines none could store.
    stored: u64,
    refused: u64,
    disk_errors: Vec<String>,
    retry_after: Option<u64>,
    /// InfluxDB's text for the lines it would refuse, in body order, one per line (bounded).
    parse_errors: String,
    unparsable: u64,
    quoted: u64,
    unrouted: Vec<(String, u64)>,
}

impl Tally {
    /// Outbox `b` could not take `lines` lines: counted, and remembered for the 503.
    fn disk_error(&mut self, config: &Config, b: usize, outbox: &crate::outbox::Outbox, lines: u64, e: AppendError) {
        BackendState::add(&config.backends[b].state.counters.dropped_disk, lines);
        // Room comes back as the backend takes batches: no sooner than its next send attempt.
        let wait = outbox.retry_in(std::time::Instant::now()).map_or(1, |d| d.as_secs_f64().ceil() as u64);
        self.retry_after = Some(self.retry_after.unwrap_or(1).max(wait.clamp(1, 300)));
        if self.disk_errors.len() < 4 {
            let msg = format!("backend {}: {e}", config.backends[b].name);
            if !self.disk_errors.contains(&msg) {
                if matches!(e, AppendError::Io(_)) {
                    log::error!("{msg}");
                }
                self.disk_errors.push(msg);
            }
        }
    }

    /// Counts the request in `stats` and answers it.
    fn answer(mut self, body_len: usize, stats: &crate::stats::ProxyStats) -> WriteResult {
        let Tally { stored, refused, unparsable, quoted, .. } = self;
        let unrouted_lines: u64 = self.unrouted.iter().map(|(_, n)| n).sum();
        BackendState::add(&stats.write_lines, stored);
        BackendState::add(&stats.write_bytes, body_len as u64);
        BackendState::add(&stats.lines_unparsable, unparsable);
        BackendState::add(&stats.lines_unrouted, unrouted_lines);
        BackendState::add(&stats.lines_refused, refused);

        if refused > 0 {
            return WriteResult {
                status: 503,
                error: Some(format!(
                    "{refused} points could not be stored by the proxy ({}); retry later",
                    self.disk_errors.join("; ")
                )),
                lines: stored,
                retry_after: Some(self.retry_after.unwrap_or(1)),
            };
        }
        let mut problems = Vec::new();
        if unparsable > 0 {
            if unparsable > quoted {
                let _ = write!(self.parse_errors, "\n... and {} more unparsable lines", unparsable - quoted);
            }
            problems.push(std::mem::take(&mut self.parse_errors));
        }
        for (name, n) in self.unrouted.iter().take(10) {
            problems.push(format!("measurement \"{name}\" has no backend ({n} points)"));
        }
        if problems.is_empty() {
            return WriteResult { status: 204, error: None, lines: stored, retry_after: None };
        }
        let joined = problems.join("\n");
        // As influxd: when some lines were good, the refused ones make a "partial write".
        let parsed = stored + unrouted_lines;
        let partial = stored > 0 || (unparsable > 0 && parsed > 0);
        let msg = if partial { format!("partial write: {joined} dropped={unrouted_lines}") } else { joined };
        WriteResult { status: 400, error: Some(msg), lines: stored, retry_after: None }
    }
}

/// Routes and stores the lines of `body` in the outboxes of their backends.
///
/// A large body whose lines are all good, all stamped and all for the same backends, with nothing else
/// in it, is a batch as it stands: it is stored whole, one copy per backend instead of one per line —
/// gzip for backends that take gzip (the client's bytes when it sent them, `p.gzip`, so the proxy never
/// compresses those lines; else compressed here once for all of them), the body for the others. Any
/// other body is stored line by line, into the open batch of each backend.
pub fn store(
    config: &Config,
    p: &WriteParams,
    body: &[u8],
    outboxes: &mut Outboxes,
    scratch: &mut Scratch,
    stats: &crate::stats::ProxyStats,
) -> WriteResult {
    let mut checked = None;
    if (WHOLE_BATCH_MIN_BYTES..=DEFAULT_BATCH_MAX_BYTES).contains(&body.len()) && body.ends_with(b"\n") {
        match look_for_batch(config, p, body, scratch) {
            Batch::Whole(route, lines) => {
                return store_whole(config, p, body, route, lines, outboxes, &mut scratch.own_gzip)
                    .answer(body.len(), stats);
            }
            Batch::Begins { route, len } => checked = Some((route, len)),
            Batch::Not => {}
        }
    }
    store_lines(config, p, body, checked, outboxes, scratch).answer(body.len(), stats)
}

/// How much of a body [`look_for_batch`] found to be a batch as it stands.
enum Batch {
    /// All of it: its route and line count.
    Whole(RouteId, u64),
    /// Its first `len` bytes: good lines with their timestamps and newlines, for `route`, none holding
    /// a newline of its own. Storing line by line need not check them again.
    Begins { route: RouteId, len: usize },
    /// None of it that can be used.
    Not,
}

/// Whether `body` is a batch as it stands: every line good, with its timestamp and for the same
/// backends, nothing else in the body (no blank or comment line, a newline after the last line), and
/// no more lines than a batch of those backends may hold (`maxrowlimit`). The first line that is not
/// ends the look; the lines read before it may still spare `store_lines` their check.
fn look_for_batch(config: &Config, p: &WriteParams, body: &[u8], scratch: &mut Scratch) -> Batch {
    let Scratch { measurement, routes, .. } = scratch;
    routes.clear();
    let (mut route, mut max_rows, mut lines, mut covered) = (None, 0, 0u64, 0usize);
    let mut all = Lines::with_precision(body, p.precision);
    // The text of the line that ends the look, if one does.
    let stopper = loop {
        let line = match all.next() {
            None => break None,
            Some(Err(bad)) => break Some(bad.text),
            Some(Ok(line)) => line,
        };
        let Some(whole) = line.with_newline.filter(|_| line.has_timestamp) else {
            break Some(line.text);
        };
        let Some(r) = routes.lookup(&config.routes, line.measurement(measurement)) else {
            break Some(line.text);
        };
        match route {
            None => {
                let backends = config.routes.backends(r).iter();
                let Some(rows) = backends.map(|&b| config.backends[usize::from(b)].max_row_limit).min() else {
                    break Some(line.text);
                };
                (route, max_rows) = (Some(r), rows);
            }
            Some(first) if first != r => break Some(line.text),
            Some(_) => {}
        }
        if lines as usize >= max_rows {
            break Some(line.text);
        }
        lines += 1;
        covered += whole.len();
    };
    let Some(route) = route else {
        return Batch::Not;
    };
    // The lines taken are the body's first bytes only if nothing was skipped between them (a blank or
    // comment line): then the line that ended the look starts right after them. And they can be told
    // apart at their newlines only if none holds one of its own (in a string).
    let contiguous = match stopper {
        None if covered == body.len() => return Batch::Whole(route, lines),
        None => false,
        Some(text) => text.as_ptr().addr().wrapping_sub(body.as_ptr().addr()) == covered,
    };
    if contiguous && memchr::memchr_iter(b'\n', &body[..covered]).count() as u64 == lines {
        Batch::Begins { route, len: covered }
    } else {
        Batch::Not
    }
}

/// The body being stored whole, compressed by the proxy for the gzip backends of its route: once per
/// level, into a buffer that only grows.
#[derive(Default)]
struct OwnGzip {
    /// The level `bytes[..len]` was made at; 0 when they are not this body's.
    level: u32,
    bytes: Vec<u8>,
    len: usize,
}

impl OwnGzip {
    /// `body` gzipped at `level`, made on the first ask for that level since `forget`; `None` if
    /// compression failed.
    fn at(&mut self, level: u32, body: &[u8], outboxes: &mut Outboxes) -> Option<&[u8]> {
        if self.level != level {
            self.level = 0;
            self.len = outboxes.gzip_into(level, body, &mut self.bytes)?;
            self.level = level;
        }
        Some(&self.bytes[..self.len])
    }

    /// A new body is coming.
    fn forget(&mut self) {
        self.level = 0;
    }
}

/// Stores a body [`look_for_batch`] approved as a batch of its own in each outbox of `route`: gzip for
/// backends with `gzip` on (the client's bytes, or the body compressed here once for all of them),
/// the body as it is for the others.
fn store_whole(
    config: &Config,
    p: &WriteParams,
    body: &[u8],
    route: RouteId,
    lines: u64,
    outboxes: &mut Outboxes,
    own_gzip: &mut OwnGzip,
) -> Tally {
    let mut tally = Tally::default();
    own_gzip.forget();
    // Checksums of what the replicas store, each made once: of the body, and of its gzip (the
    // client's, key 0, or the proxy's at a level).
    let (mut plain_crc, mut gzip_crc) = (None, None::<(u32, PayloadCrc)>);
    for &b in config.routes.backends(route) {
        let b = usize::from(b);
        if outboxes.of(b).is_none() {
            continue;
        }
        let level = config.backends[b].gzip;
        let gzip = match p.gzip {
            _ if level == 0 => None,
            Some(client) => Some(client),
            // Should compression fail, the body is stored plain (and compressed when sent).
            None => own_gzip.at(level, body, outboxes),
        };
        let Some(outbox) = outboxes.of(b) else {
            continue;
        };
        let whole = Whole::new(gzip.unwrap_or(body), lines, gzip.is_some());
        let crc = match gzip {
            None => &*plain_crc.get_or_insert_with(|| PayloadCrc::of(whole)),
            Some(_) => {
                let key = if p.gzip.is_some() { 0 } else { level };
                if gzip_crc.as_ref().is_none_or(|(k, _)| *k != key) {
                    gzip_crc = None;
                }
                &gzip_crc.get_or_insert_with(|| (key, PayloadCrc::of(whole))).1
            }
        };
        let target = target(config.backends[b].db.as_deref().unwrap_or(p.db), p);
        match outbox.append_batch(target.as_bytes(), whole, Some(crc)) {
            // Stored once it is in one outbox, however many take it.
            Ok(()) => tally.stored = lines,
            Err(e) => tally.disk_error(config, b, outbox, lines, e),
        }
    }
    if tally.stored == 0 {
        tally.refused = lines;
    }
    tally
}

/// Stores the lines of `body` into the open batch of each of their backends, a run of lines at a time
/// where they allow it (see [`OpenBatches`]), else one by one. `checked`: the
/// body's first bytes are already known to be good lines with timestamps for this route
/// ([`Batch::Begins`]).
fn store_lines(
    config: &Config,
    p: &WriteParams,
    body: &[u8],
    checked: Option<(RouteId, usize)>,
    outboxes: &mut Outboxes,
    scratch: &mut Scratch,
) -> Tally {
    let request = p.request;
    let n = config.backends.len();
    let Scratch { measurement, routes, lines, bytes, targets, run_ends, logged_unrouted, .. } = scratch;
    lines.clear();
    lines.resize(n, 0);
    bytes.clear();
    bytes.resize(n, 0);
    targets.clear();
    targets.resize(n, None);
    routes.clear();
    run_ends.clear();
    let mut open = OpenBatches { config, p, body, lines, bytes, targets, run: None, run_ends };

    let mut tally = Tally::default();
    let checked_len = checked.map_or(0, |(_, len)| len);
    if let Some((route, len)) = checked {
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &body[..len]) {
            open.line(outboxes, &mut tally, route, start..end + 1);
            start = end + 1;
        }
    }
    let mut ts = String::with_capacity(24);
    let _ = write!(ts, " {}", now_in_precision(p.precision, SystemTime::now()));
    let ts = ts.as_bytes();
    for line in Lines::with_precision(&body[checked_len..], p.precision) {
        let line = match line {
            Ok(l) => l,
            Err(bad) => {
                tally.unparsable += 1;
                tally.quoted += u64::from(note_unparsable(&mut tally.parse_errors, &bad));
                continue;
            }
        };
        let m = line.measurement(measurement);
        let Some(route) = routes.lookup(&config.routes, m) else {
            note_unrouted(&mut tally.unrouted, logged_unrouted, m);
            continue;
        };
        // Stored as the body holds it where it can be (with its timestamp and newline): with the lines
        // around it; else text, receive time, newline.
        match line.with_newline.filter(|_| line.has_timestamp) {
            Some(whole) => {
                let at = whole.as_ptr().addr() - body.as_ptr().addr();
                open.line(outboxes, &mut tally, route, at..at + whole.len());
            }
            None => {
                open.end_run(outboxes, &mut tally);
                let stamp: &[u8] = if line.has_timestamp { b"" } else { ts };
                open.append(outboxes, &mut tally, route, &[line.text, stamp, b"\n"]);
            }
        }
    }
    open.end_run(outboxes, &mut tally);

    for b in 0..n {
        if let Some(outbox) = outboxes.of(b)
            && outbox.current_request() == request
        {
            outbox.finish_request(open.lines[b], open.bytes[b]);
        }
    }
    tally
}

/// Most lines of a run: `run_ends` stays small whatever the body.
const RUN_LINES: usize = 4096;

/// The open batches a request's lines go into, and what each backend took of them.
///
/// Lines stored as the body holds them (timestamp and newline included), one right after the other and
/// for the same route, make a run of up to [`RUN_LINES`], appended to each outbox in one go when a line
/// that does not continue it comes (one copy per batch instead of one per line and backend). A line
/// stored otherwise (receive time added, `\r\n`, no newline at the end of the body), one for another
/// route, or anything skipped in between (blank, comment, bad or unrouted lines) ends a run.
struct OpenBatches<'s> {
    config: &'s Config,
    p: &'s WriteParams<'s>,
    body: &'s [u8],
    /// Lines and bytes per config backend index, for this request.
    lines: &'s mut [u64],
    bytes: &'s mut [u64],
    /// The batch target (`db=..`) per backend, made the first time a line goes there.
    targets: &'s mut [Option<String>],
    /// The run being gathered: its route and where it lies in `body`; `run_ends`: where each of its
    /// lines ends, from the run's start.
    run: Option<(RouteId, std::ops::Range<usize>)>,
    run_ends: &'s mut Vec<usize>,
}

impl OpenBatches<'_> {
    /// Takes the line at `at` in the body (with its timestamp and newline) for `route`: it joins the
    /// run if it continues it, else the run is appended and a new one starts with it.
    #[inline]
    fn line(&mut self, outboxes: &mut Outboxes, tally: &mut Tally, route: RouteId, at: std::ops::Range<usize>) {
        match &mut self.run {
            Some((r, run)) if *r == route && run.end == at.start && self.run_ends.len() < RUN_LINES => {
                run.end = at.end;
                self.run_ends.push(at.end - run.start);
            }
            _ => {
                self.end_run(outboxes, tally);
                self.run_ends.push(at.len());
                self.run = Some((route, at));
            }
        }
    }

    /// Appends the run gathered so far, if any, to the open batch of each backend of its route, and
    /// counts each of its lines stored if one backend took it, refused if none did.
    fn end_run(&mut self, outboxes: &mut Outboxes, tally: &mut Tally) {
        let Some((route, run)) = self.run.take() else {
            return;
        };
        let (config, ends) = (self.config, std::mem::take(self.run_ends));
        let n = ends.len();
        // Lines a backend could not store (its disk), and how many backends lost each: only made when one
        // did. A line is stored if one backend took it.
        let (mut failed, mut lost_by) = (Vec::new(), Vec::<u16>::new());
        let mut tried = 0;
        for &b in config.routes.backends(route) {
            let b = usize::from(b);
            let Some(outbox) = self.enter(outboxes, b) else {
                continue;
            };
            tried += 1;
            outbox.append_lines(&self.body[run.clone()], &ends, &mut failed);
            let (mut lines, mut bytes) = (n as u64, ends[n - 1] as u64);
            for (i, e) in failed.drain(..) {
                tally.disk_error(config, b, outbox, 1, e);
                lost_by.resize(n, 0);
                lost_by[i] += 1;
                lines -= 1;
                bytes -= (ends[i] - if i == 0 { 0 } else { ends[i - 1] }) as u64;
            }
            self.lines[b] += lines;
            self.bytes[b] += bytes;
        }
        let refused = match tried {
            0 => n,
            _ => lost_by.iter().filter(|&&k| k == tried).count(),
        };
        tally.stored += (n - refused) as u64;
        tally.refused += refused as u64;
        *self.run_ends = ends;
        self.run_ends.clear();
    }

    /// The outbox of backend `b`, told of this request when it is the first line going there.
    #[inline]
    fn enter<'o>(&mut self, outboxes: &'o mut Outboxes, b: usize) -> Option<&'o mut crate::outbox::Outbox> {
        let (config, p) = (self.config, self.p);
        let outbox = outboxes.of(b)?;
        if outbox.current_request() != p.request {
            let t = self.targets[b].get_or_insert_with(|| target(config.backends[b].db.as_deref().unwrap_or(p.db), p));
            outbox.enter_request(p.request, t.as_bytes());
        }
        Some(outbox)
    }

    /// Appends one line (`parts` joined) to the open batch of each backend of `route`, and counts it
    /// stored if one took it, refused if none did.
    #[inline]
    fn append(&mut self, outboxes: &mut Outboxes, tally: &mut Tally, route: RouteId, parts: &[&[u8]]) {
        let config = self.config;
        let size = parts.iter().map(|p| p.len() as u64).sum::<u64>();
        let mut taken = false;
        for &b in config.routes.backends(route) {
            let b = usize::from(b);
            let Some(outbox) = self.enter(outboxes, b) else {
                continue;
            };
            match outbox.append_line(parts) {
                Ok(()) => {
                    taken = true;
                    self.lines[b] += 1;
                    self.bytes[b] += size;
                }
                Err(e) => tally.disk_error(config, b, outbox, 1, e),
            }
        }
        if taken {
            tally.stored += 1;
        } else {
            tally.refused += 1;
        }
    }
}

/// Most bytes of refused lines quoted in one answer; influxd quotes them all, but a body of bad lines
/// should not make an answer as large as itself.
const MAX_QUOTED_BYTES: usize = 1 << 20;

/// Appends InfluxDB's `unable to parse '<line>': <reason>` for `bad` (lines separated by `\n`): always
/// for the first bad line, then while the text stays under [`MAX_QUOTED_BYTES`]. Whether it did.
fn note_unparsable(out: &mut String, bad: &lineproto::BadLine) -> bool {
    if !out.is_empty() && out.len() + bad.text.len() > MAX_QUOTED_BYTES {
        return false;
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str("unable to parse '");
    push_lossy_like_go(out, bad.text);
    let _ = write!(out, "': {}", bad.error);
    true
}

/// Appends `bytes` as text, each byte that is not part of valid UTF-8 becoming one U+FFFD, as Go's JSON
/// encoder does with influxd's messages (Rust's `from_utf8_lossy` would merge some of them).
fn push_lossy_like_go(out: &mut String, mut bytes: &[u8]) {
    loop {
        match std::str::from_utf8(bytes) {
            Ok(text) => return out.push_str(text),
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len());
                out.extend(std::iter::repeat_n('\u{FFFD}', bad));
                bytes = &rest[bad..];
            }
        }
    }
}

fn note_unrouted(unrouted: &mut Vec<(String, u64)>, logged: &mut std::collections::HashSet<Vec<u8>>, m: &[u8]) {
    let name = String::from_utf8_lossy(m);
    if let Some((_, count)) = unrouted.iter_mut().find(|(n, _)| *n == name) {
        *count += 1;
    } else if unrouted.len() < 100 {
        unrouted.push((name.into_owned(), 1));
    }
    if logged.len() < 10_000 && logged.insert(m.to_vec()) {
        log::warn!(
            "measurement {:?} matches no keymap and there is no m:_default_: its lines are dropped (logged once)",
            String::from_utf8_lossy(m)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_cache_answers_as_the_keymaps_do() {
        let long = "m".repeat(ROUTE_NAME_MAX + 5);
        let maps: Vec<(&[u8], Vec<usize>)> =
            vec![(b"cpu", vec![0]), (b"mem", vec![1]), (b"disk", vec![0, 1]), (long.as_bytes(), vec![1])];
        let keymaps = route::Routes::build(&maps, b"_default_", &[]);
        let other = route::Routes::build(&[(b"cpu", vec![1]), (b"_default_", vec![2])], b"_default_", &[]);
        // Many names, so that slots are shared and overwritten; each asked several times, interleaved.
        let mut names: Vec<String> = ["cpu", "mem", "disk", "net", "c", "cpux", "dis", &long].map(String::from).into();
        names.extend((0..40).map(|i| format!("m{i}")));
        let mut cache = RouteCache::default();
        for round in 0..3 {
            for (k, n) in names.iter().enumerate().filter(|(k, _)| (k + round) % 2 == 0).chain(names.iter().enumerate())
            {
                assert_eq!(cache.lookup(&keymaps, n.as_bytes()), keymaps.lookup(n.as_bytes()), "{n} ({k})");
            }
        }
        // Emptied, it answers for the keymaps it is given next.
        let backends = |r: &route::Routes, id: Option<RouteId>| id.map(|id| r.backends(id).to_vec());
        assert_eq!(cache.lookup(&keymaps, b"net"), None);
        cache.clear();
        assert_eq!(backends(&other, cache.lookup(&other, b"cpu")), Some(vec![1]));
        assert_eq!(backends(&other, cache.lookup(&other, b"mem")), Some(vec![2]), "mem goes to the default now");
        assert_eq!(backends(&other, cache.lookup(&other, b"net")), Some(vec![2]), "net was routed nowhere before");
    }

    #[test]
    fn precision_units() {
        let t = UNIX_EPOCH + std::time::Duration::from_nanos(1_700_000_123_456_789_012);
        assert_eq!(now_in_precision(None, t), 1_700_000_123_456_789_012);
        assert_eq!(now_in_precision(Some("ns"), t), 1_700_000_123_456_789_012);
        assert_eq!(now_in_precision(Some("u"), t), 1_700_000_123_456_789);
        // influxd 1.6 reads `us` and `µ` timestamps as nanoseconds.
        assert_eq!(now_in_precision(Some("us"), t), 1_700_000_123_456_789_012);
        assert_eq!(now_in_precision(Some("µ"), t), 1_700_000_123_456_789_012);
        assert_eq!(now_in_precision(Some("ms"), t), 1_700_000_123_456);
        assert_eq!(now_in_precision(Some("s"), t), 1_700_000_123);
        assert_eq!(now_in_precision(Some("m"), t), 28_333_335);
        assert_eq!(now_in_precision(Some("h"), t), 472_222);
        assert_eq!(now_in_precision(Some("weird"), t), 1_700_000_123_456_789_012);
    }

    #[test]
    fn a_line_counts_as_stored_when_one_replica_takes_it() {
        use crate::cli::SyncPolicy;
        use crate::config::RawConfig;
        use crate::outbox::LogOptions;
        use crate::upstream::Registry;
        use std::sync::atomic::Ordering::Relaxed;
        // Backend a may hold 128 KiB of backlog (nothing is sent here, so it fills up); b takes everything.
        // `limited`: b is as small as a.
        let run = |limited: bool| {
            let b_disk = if limited { "131072" } else { "1000000000" };
            let json = format!(
                r#"{{"NODES": {{"l1": {{"interval": "0"}}}},
                    "BACKENDS": {{"a": {{"url": "http://127.0.0.1:9", "maxdisk": "131072", "interval": "60000"}},
                                 "b": {{"url": "http://127.0.0.1:10", "maxdisk": "{b_disk}", "interval": "60000"}}}},
                    "KEYMAPS": {{"_default_": ["a", "b"]}}}}"#
            );
            let registry = Registry::default();
            let config = Config::build(RawConfig::from_json(&json).unwrap(), "l1", &registry).unwrap();
            // Removed when the test ends, failing or not.
            struct Dir(std::path::PathBuf);
            impl Drop for Dir {
                fn drop(&mut self) {
                    let _ = std::fs::remove_dir_all(&self.0);
                }
            }
            let dir = Dir(std::env::temp_dir().join(format!("ifxp-store-{}-{limited}", std::process::id())));
            let _ = std::fs::remove_dir_all(&dir.0);
            let opts = LogOptions {
                data_dir: dir.0.clone(),
                worker: 0,
                threads: 1,
                segment_bytes: 64 << 10,
                sync: SyncPolicy::Never,
            };
            let mut outboxes = Outboxes::open(&config, opts, &registry);
            let (mut scratch, stats) = (Scratch::default(), crate::stats::ProxyStats::default());
            let mut answers = Vec::new();
            for request in 0..20u64 {
                // 300 lines of ~100 bytes: stored line by line, in runs.
                let body: String = (0..300)
                    .map(|i| format!("m,host=h{i} value={request}{i:050} {}\n", 1_700_000_000_000_000_000u64 + i))
                    .collect();
                let p = WriteParams { request: request + 1, db: "x", rp: None, precision: None, gzip: None };
                answers.push(store(&config, &p, body.as_bytes(), &mut outboxes, &mut scratch, &stats));
            }
            // Lines each backend kept, and lost for its disk.
            let kept = |b: usize| {
                let c = &config.backends[b].state.counters;
                (c.lines_in.load(Relaxed), c.dropped_disk.load(Relaxed))
            };
            (answers, kept(0), kept(1))
        };

        let (answers, a, b) = run(false);
        assert!(a.1 > 0 && a.0 + a.1 == 6000, "a kept {} lines and lost {}", a.0, a.1);
        assert_eq!(b, (6000, 0));
        for r in &answers {
            assert_eq!((r.status, r.lines), (204, 300), "{r:?}");
        }

        // Both full: a line lost by both is refused (503), one either took is stored.
        let (answers, a, b) = run(true);
        assert_eq!(a, b, "the same lines fit both");
        let stored: u64 = answers.iter().map(|r| r.lines).sum();
        assert!(a.1 > 0 && stored == a.0, "{stored} lines answered stored, a kept {} and lost {}", a.0, a.1);
        assert!(answers.iter().any(|r| r.status == 503 && r.lines < 300), "{answers:?}");
    }

    #[test]
    fn targets_are_encoded() {
        let p = WriteParams { request: 1, db: "my db", rp: Some("a&b"), precision: Some("s"), gzip: None };
        assert_eq!(target("my db", &p), "db=my%20db&rp=a%26b&precision=s");
        let p = WriteParams { request: 1, db: "x", rp: None, precision: None, gzip: None };
        assert_eq!(target("y", &p), "db=y");
    }
}
