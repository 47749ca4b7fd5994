//! The outbox of one (worker, backend): where routed lines wait, on disk, until the backend has them.
//!
//! Lines are appended to the open record of the worker's own log (see `log.rs`), one record per batch
//! target (db, rp, precision). A batch is sealed at `maxrowlimit` lines, at [`DEFAULT_BATCH_MAX_BYTES`],
//! or `interval` ms after it was opened; the sender then POSTs sealed records one at a time, in order,
//! gzipped at the backend's level, and acknowledges a record only when the backend answered 2xx.
//!
//! What an answer means (`classify`):
//! * 2xx: acknowledged, space recycled.
//! * network error, timeout, 5xx, 401/403/408/429: kept and retried in order, with a backoff that doubles
//!   from 100 ms up to the backend's `rewriteinterval`.
//! * 400 (partial write, parse error, field type conflict): InfluxDB stored the good lines; the batch is
//!   dropped and counted, never retried forever.
//! * 404 "database not found", 500 "retention policy not found": the record is moved to a parked log of
//!   its target, so other targets keep flowing; the parked log is retried every `rewriteinterval` and
//!   drained once the backend accepts it (e.g. after `CREATE DATABASE`). Later records of a parked target
//!   join its parked log, so its order is kept.
//! * other 4xx (e.g. 413): dropped and counted.
//!
//! Logs left by workers that no longer exist (the thread count went down) are adopted read-only and sent
//! before this worker's own log, so a backend's data keeps its order.

pub mod deflate;
pub mod log;
pub mod segment;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use crate::cli::SyncPolicy;
use crate::config::{Backend, Fields};
use crate::defaults::{DEFAULT_BATCH_MAX_BYTES, FIRST_RETRY_BACKOFF, MAX_UPSTREAM_ERROR_BODY, READ_CHUNK};
use crate::upstream::BackendState;
use crate::upstream::conn::{Conn, Exchange};
use crate::upstream::lag::LagTracker;
pub use log::{AppendError, Recovery};
use log::{Front, Log};

/// What an outbox needs from its worker to send: the time, the poll to register connections with, and
/// the worker's compressor.
pub struct Cx<'a> {
    pub now: Instant,
    pub registry: &'a Registry,
    pub deflate: &'a mut deflate::Deflate,
}

/// Where a worker keeps its outbox logs and how.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub data_dir: PathBuf,
    pub worker: usize,
    pub threads: usize,
    pub segment_bytes: usize,
    pub sync: SyncPolicy,
}

/// Directory of a backend's logs: its name made file-safe, plus a hash of the exact name and url (a
/// changed url is a new backend; `a b` and `a_b` must not share a directory).
pub fn backend_dir(data_dir: &Path, name: &str, url: &str) -> PathBuf {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    let identity = format!("{name}\n{url}");
    data_dir.join("backends").join(format!("{safe}@{:016x}", fnv1a(identity.as_bytes())))
}

pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

const META_FILE: &str = "backend.meta";

/// Writes a backend's name and fields next to its logs (JSON, readable by the owner only: the fields
/// may hold a password), so a restart can deliver them even if the backend has left the config.
fn write_meta(dir: &Path, name: &str, fields: &Fields) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let text = serde_json::json!({ "name": name, "fields": fields }).to_string();
    let path = dir.join(META_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    crate::config::source::write_private(&path, text.as_bytes())
}

/// (name, fields) of every backend directory under `data_dir`.
pub fn stored_backends(data_dir: &Path) -> Vec<(String, Fields)> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("backends")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join(META_FILE)) else { continue };
        let Ok(meta) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        let name = meta.get("name").and_then(|n| n.as_str()).map(str::to_string);
        let fields: Option<Fields> = meta
            .get("fields")
            .and_then(|f| f.as_object())
            .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect());
        if let (Some(name), Some(fields)) = (name, fields) {
            found.push((name, fields));
        }
    }
    found.sort();
    found
}

/// A sending source: which log a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `logs[i]`: adopted logs first, the own log last.
    Main(usize),
    Parked(usize),
}

/// A target whose records wait for the backend to create its database or retention policy.
struct Parked {
    target: Vec<u8>,
    log: Log,
    retry_at: Instant,
}

struct InFlight {
    source: Source,
    front: Front,
    lines: u64,
    bytes: u64,
    deadline: Instant,
    ex: Exchange,
    answer: Vec<u8>,
    /// The connection had served earlier requests (see `Conn::exchanges`).
    reused: bool,
}

/// What a backend's answer means for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ack,
    Retry(String),
    Park(String),
    DropBadData(String),
    DropRejected(String),
}

/// How many lines of a batch a 400 answer says were not stored: InfluxDB lists each unparsable line
/// (`unable to parse`) and counts the points it dropped (`dropped=N`). `None` when the answer says
/// neither (then the whole batch counts as lost).
pub fn refused_lines(body: &[u8]) -> Option<u64> {
    let unparsable = memchr::memmem::find_iter(body, b"unable to parse").count() as u64;
    let dropped = memchr::memmem::rfind(body, b"dropped=").and_then(|i| {
        let digits: Vec<u8> = body[i + 8..].iter().copied().take_while(u8::is_ascii_digit).collect();
        std::str::from_utf8(&digits).ok()?.parse::<u64>().ok()
    });
    match (unparsable, dropped) {
        (0, None) => None,
        (n, d) => Some(n + d.unwrap_or(0)),
    }
}

/// The decision table of the module doc.
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    let msg = || {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let text = text.strip_prefix("{\"error\":\"").and_then(|t| t.strip_suffix("\"}")).unwrap_or(text);
        format!("HTTP {status}: {}", text.chars().take(300).collect::<String>())
    };
    let says = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    match status {
        200..=299 => Outcome::Ack,
        404 if says(b"database not found") => Outcome::Park(msg()),
        500 if says(b"retention policy not found") => Outcome::Park(msg()),
        400 => Outcome::DropBadData(msg()),
        401 | 403 | 408 | 429 | 500..=599 => Outcome::Retry(msg()),
        _ => Outcome::DropRejected(msg()),
    }
}

pub struct Outbox {
    pub backend: Arc<Backend>,
    pub token: Token,
    opts: LogOptions,
    dir: PathBuf,
    /// Adopted logs first, this worker's own log last.
    logs: Vec<Log>,
    parked: Vec<Parked>,
    /// Request that last appended, and the target its lines go to.
    request: u64,
    target: Vec<u8>,
    conn: Option<Conn>,
    inflight: Option<InFlight>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The failure being retried, logged once when it starts and once when it ends.
    failing: Option<String>,
    /// Alternates parked and main sources when both are ready.
    parked_turn: bool,
    /// Removed from the config: takes no new lines, sends what it has.
    pub retired: bool,
    /// Publishes how old the pending data of each target is (read by the planner).
    lag: LagTracker,
}

impl Outbox {
    /// Opens the worker's own log for `backend` (recovering it) and adopts orphaned ones.
    pub fn open(backend: Arc<Backend>, token: Token, opts: &LogOptions) -> io::Result<(Outbox, Recovery)> {
        let dir = backend_dir(&opts.data_dir, &backend.name, &backend.url);
        write_meta(&dir, &backend.name, &backend.fields.0)?;
        let state = backend.state.clone();
        let own_dir = dir.join(format!("w{}", opts.worker));
        let mut total = Recovery::default();
        let mut merge = |r: Recovery| {
            total.segments += r.segments;
            total.records += r.records;
            total.payload_bytes += r.payload_bytes;
            total.cut_bytes += r.cut_bytes;
            total.problems.extend(r.problems);
        };
        let mut logs = Vec::new();
        let mut parked = Vec::new();
        // Orphans: w<j> for j >= threads belongs to worker j % threads.
        let mut orphans: Vec<(usize, PathBuf)> = std::fs::read_dir(&dir)?
            .flatten()
            .filter_map(|e| {
                let j: usize = e.file_name().to_str()?.strip_prefix('w')?.parse().ok()?;
                (j >= opts.threads && j % opts.threads == opts.worker).then(|| (j, e.path()))
            })
            .collect();
        orphans.sort();
        for (_, path) in orphans {
            for sub in parked_dirs(&path) {
                let (log, r) = Log::open(&sub, false, opts.segment_bytes, backend.max_disk, opts.sync, state.clone())?;
                merge(r);
                logs.push(log);
            }
            let (log, r) = Log::open(&path, false, opts.segment_bytes, backend.max_disk, opts.sync, state.clone())?;
            merge(r);
            logs.push(log);
        }
        let (own, r) = Log::open(&own_dir, true, opts.segment_bytes, backend.max_disk, opts.sync, state.clone())?;
        merge(r);
        let now = Instant::now();
        for sub in parked_dirs(&own_dir) {
            let (mut log, r) =
                Log::open(&sub, true, parked_segment_bytes(opts), backend.max_disk, opts.sync, state.clone())?;
            merge(r);
            match log.front() {
                Some(f) => {
                    let target = log.record(&f).0.to_vec();
                    parked.push(Parked { target, log, retry_at: now });
                }
                None => {
                    drop(log);
                    let _ = std::fs::remove_dir_all(&sub);
                }
            }
        }
        logs.push(own);
        let mut outbox = Outbox {
            backend,
            token,
            opts: opts.clone(),
            dir: own_dir,
            logs,
            parked,
            request: u64::MAX,
            target: Vec::new(),
            conn: None,
            inflight: None,
            retry_at: None,
            backoff: FIRST_RETRY_BACKOFF,
            failing: None,
            parked_turn: false,
            retired: false,
            lag: LagTracker::new(opts.worker),
        };
        let recovered = outbox.logs.iter().map(Log::pending_records).sum();
        outbox.lag.recovered(&outbox.backend.state.lag, recovered, now);
        outbox.publish_parked();
        Ok((outbox, total))
    }

    fn state(&self) -> &BackendState {
        &self.backend.state
    }

    /// Worth sending to: the health checker says up. A retired backend is no longer checked, so its
    /// own send attempts (with their backoff) are the only way to find out.
    fn reachable(&self) -> bool {
        self.retired || self.state().is_up()
    }

    fn own(&mut self) -> &mut Log {
        let last = self.logs.len() - 1;
        &mut self.logs[last]
    }

    /// A new config kept this backend: take its new settings.
    pub fn update(&mut self, backend: Arc<Backend>) {
        if backend.fields != self.backend.fields
            && let Some(dir) = self.dir.parent()
            && let Err(e) = write_meta(dir, &backend.name, &backend.fields.0)
        {
            ::log::warn!("backend {}: cannot update {META_FILE}: {e}", backend.name);
        }
        for log in &mut self.logs {
            log.max_disk = backend.max_disk;
        }
        for p in &mut self.parked {
            p.log.max_disk = backend.max_disk;
        }
        self.backend = backend;
        self.retired = false;
    }

    // ---------------------------------------------------------------- appending (the per-line path)

    /// Called for the first line of each request routed here: `target` (the request's
    /// `db=..&rp=..&precision=..` for this backend) becomes the target of the lines that follow.
    pub fn enter_request(&mut self, request: u64, target: &[u8]) {
        self.request = request;
        if self.target != target {
            self.target.clear();
            self.target.extend_from_slice(target);
            let own = self.own();
            if own.open_record().is_some() {
                own.seal();
            }
        }
    }

    #[inline]
    pub fn current_request(&self) -> u64 {
        self.request
    }

    /// Appends one line (its parts are concatenated: text, optional timestamp, newline).
    #[inline]
    pub fn append_line(&mut self, parts: &[&[u8]]) -> Result<(), AppendError> {
        let max_rows = self.backend.max_row_limit;
        let last = self.logs.len() - 1;
        let log = &mut self.logs[last];
        if log.open_record().is_none() {
            log.begin(&self.target)?;
            self.lag.begun(&self.backend.state.lag, &self.target, Instant::now());
        }
        log.append(parts)?;
        if let Some(open) = log.open_record()
            && (open.lines >= max_rows || open.payload_len() >= DEFAULT_BATCH_MAX_BYTES)
        {
            log.seal();
        }
        Ok(())
    }

    /// The request is fully appended: commit it before it is answered.
    pub fn finish_request(&mut self, lines: u64, bytes: u64) {
        self.own().commit();
        let c = &self.backend.state.counters;
        BackendState::add(&c.lines_in, lines);
        BackendState::add(&c.bytes_in, bytes);
    }

    // ---------------------------------------------------------------- timers

    /// Seals a batch that is old enough, fails a send past its timeout, and starts sending when due.
    pub fn tick(&mut self, cx: &mut Cx) {
        let interval = self.backend.interval;
        if let Some(open) = self.own().open_record()
            && cx.now.duration_since(open.opened) >= interval
        {
            self.own().seal();
        }
        if let Some(f) = &self.inflight
            && cx.now >= f.deadline
        {
            let timeout = self.backend.timeout;
            self.fail(cx, format!("no answer within {} ms", timeout.as_millis()));
        }
        self.pump(cx);
    }

    /// When this outbox next needs `tick`.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(open) = self.logs.last().and_then(|l| l.open_record()) {
            consider(open.opened + self.backend.interval);
        }
        if let Some(f) = &self.inflight {
            consider(f.deadline);
        } else if let Some(t) = self.retry_at {
            consider(t);
        }
        for p in &self.parked {
            consider(p.retry_at);
        }
        next
    }

    /// Seals the open batch now (shutdown: send everything).
    pub fn seal_open(&mut self) {
        self.own().seal();
    }

    /// Nothing left to send anywhere.
    pub fn is_drained(&self) -> bool {
        self.inflight.is_none() && self.parked.is_empty() && self.logs.iter().all(Log::is_drained)
    }

    /// Nothing more will happen soon: drained, or waiting only for a backend that is down, in
    /// backoff, or parked. Shutdown stops waiting when every outbox is settled.
    pub fn settled(&self, now: Instant) -> bool {
        if self.inflight.is_some() {
            return false;
        }
        let main_pending = self.logs.iter().any(|l| l.pending_records() > 0);
        !main_pending || !self.state().is_up() || self.retry_at.is_some_and(|t| t > now)
    }

    /// Sealed batches not yet acknowledged, parked ones included.
    pub fn pending_records(&self) -> u64 {
        self.logs.iter().chain(self.parked.iter().map(|p| &p.log)).map(Log::pending_records).sum()
    }

    // ---------------------------------------------------------------- sending

    /// Starts the next send if nothing is in flight and the backend may be sent to.
    pub fn pump(&mut self, cx: &mut Cx) {
        if self.inflight.is_some() {
            return;
        }
        let main_ready = self.retry_at.is_none_or(|t| cx.now >= t) && self.reachable();
        let Some((source, front)) = self.next_record(cx.now, main_ready) else {
            self.logs.retain_mut(|l| !l.remove_if_drained());
            return;
        };
        self.start_send(cx, source, front);
    }

    /// Picks the record to send next. Records of parked targets met on the way are moved to their
    /// parked log.
    fn next_record(&mut self, now: Instant, main_ready: bool) -> Option<(Source, Front)> {
        self.parked_turn = !self.parked_turn;
        let parked_due = self.reachable().then(|| self.parked.iter().position(|p| now >= p.retry_at)).flatten();
        if let Some(i) = parked_due
            && (self.parked_turn || !main_ready)
        {
            match self.parked[i].log.front() {
                Some(f) => return Some((Source::Parked(i), f)),
                None => {
                    let p = self.parked.swap_remove(i);
                    self.unpark(p);
                    self.publish_parked();
                }
            }
        }
        if !main_ready {
            return None;
        }
        // Moving records copies them: a few per call keeps a long parked backlog from stalling the
        // worker; the next tick moves on.
        let mut moves = 0;
        for i in 0..self.logs.len() {
            while let Some(f) = self.logs[i].front() {
                let target = self.logs[i].record(&f).0;
                let Some(p) = self.parked.iter().position(|p| p.target == target) else {
                    return Some((Source::Main(i), f));
                };
                if moves == MAX_MOVES_PER_PUMP {
                    return None;
                }
                moves += 1;
                if let Err(e) = self.move_to_parked(Source::Main(i), f, p) {
                    self.backoff_after(now, format!("cannot park a batch: {e}"));
                    return None;
                }
            }
        }
        None
    }

    fn log_of(&mut self, source: Source) -> Option<&mut Log> {
        match source {
            Source::Main(i) => self.logs.get_mut(i),
            Source::Parked(i) => self.parked.get_mut(i).map(|p| &mut p.log),
        }
    }

    fn start_send(&mut self, cx: &mut Cx, source: Source, front: Front) {
        let backend = self.backend.clone();
        if self.conn.is_none() {
            match Conn::connect(backend.addr, self.token, cx.registry) {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    self.backoff_after(cx.now, format!("connect to {}: {e}", backend.url));
                    return;
                }
            }
        }
        let level = backend.gzip;
        // Split borrows: the record is read from the log while the request is written into the conn.
        let Outbox { logs, parked, conn, .. } = self;
        let log = match source {
            Source::Main(i) => &logs[i],
            Source::Parked(i) => &parked[i].log,
        };
        let Some(conn) = conn.as_mut() else { return };
        let (target, payload) = log.record(&front);
        let lines = memchr::memchr_iter(b'\n', payload).count() as u64;
        // A failed compression cannot happen with libdeflate's bound-sized buffer; plain bytes are
        // still right if it did.
        let (body, gzipped) = match (level > 0).then(|| cx.deflate.gzip(level, payload)).flatten() {
            Some(gz) => (gz, true),
            None => (payload, false),
        };
        conn.begin_request(cx.registry);
        let out = &mut conn.out;
        out.extend_from_slice(b"POST /write?");
        out.extend_from_slice(target);
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(backend.host.as_bytes());
        out.extend_from_slice(b"\r\nUser-Agent: influx-proxy\r\nContent-Type: text/plain; charset=utf-8\r\n");
        if gzipped {
            out.extend_from_slice(b"Content-Encoding: gzip\r\n");
        }
        if let Some(auth) = &backend.auth {
            out.extend_from_slice(b"Authorization: ");
            out.extend_from_slice(crate::http::basic_auth(&auth.username, &auth.password).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
        let reused = conn.exchanges > 0;
        self.inflight = Some(InFlight {
            source,
            front,
            lines,
            bytes: front.payload_len() as u64,
            deadline: cx.now + backend.timeout,
            ex: Exchange::default(),
            answer: Vec::new(),
            reused,
        });
        self.on_event(cx);
    }

    /// Readiness on the connection (or a nudge after starting a send).
    pub fn on_event(&mut self, cx: &mut Cx) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Some(f) = self.inflight.as_mut() else {
            // Idle keep-alive connection: anything readable is the backend closing it (or junk).
            if !matches!(conn.fill(READ_CHUNK), Ok(fill) if !fill.closed && fill.read == 0) {
                self.drop_conn(cx.registry);
            }
            return;
        };
        // An answer to a write is small; a backend streaming more than a few MB is not answering a
        // write, and the send timeout will deal with it. The bound keeps this event handler short.
        let mut step = conn.drive(&mut f.ex, &mut f.answer, READ_CHUNK, cx.registry);
        for _ in 0..64 {
            match step {
                Ok(d) if !d.done && !d.blocked => {
                    f.answer.truncate(MAX_UPSTREAM_ERROR_BODY);
                    step = conn.drive(&mut f.ex, &mut f.answer, READ_CHUNK, cx.registry);
                }
                _ => break,
            }
        }
        f.answer.truncate(MAX_UPSTREAM_ERROR_BODY);
        match step {
            // Still reading after all those rounds: this is no answer to a write. Failing now is
            // better than leaving bytes in the socket with no event to come for them.
            Ok(d) if !d.done && !d.blocked => self.fail(cx, "endless answer to a write".into()),
            Ok(d) if !d.done => {}
            Ok(_) => {
                let Some(f) = self.inflight.take() else {
                    return;
                };
                if !f.ex.reusable {
                    self.drop_conn(cx.registry);
                }
                let status = f.ex.status();
                self.handle_answer(cx, f, status);
            }
            Err(e) => self.fail(cx, e),
        }
    }

    fn handle_answer(&mut self, cx: &mut Cx, f: InFlight, status: u16) {
        let outcome = classify(status, &f.answer);
        let name = self.backend.name.clone();
        let c = &self.backend.state.counters;
        match outcome {
            Outcome::Ack => {
                if self.retired {
                    self.backend.state.set_up(true, None);
                }
                BackendState::add(&c.lines_sent, f.lines);
                BackendState::add(&c.bytes_sent, f.bytes);
                BackendState::add(&c.batches_sent, 1);
                self.ack(f.source, &f.front);
                if let Source::Parked(i) = f.source
                    && let Some(p) = self.parked.get_mut(i)
                {
                    p.retry_at = cx.now;
                }
                if let Some(what) = self.failing.take() {
                    ::log::info!("backend {name}: writes succeed again (after: {what})");
                    self.backend.state.set_error("");
                }
                self.backoff = FIRST_RETRY_BACKOFF;
                self.retry_at = None;
            }
            Outcome::Retry(msg) => {
                BackendState::add(&c.retries, 1);
                if let Source::Parked(i) = f.source
                    && let Some(p) = self.parked.get_mut(i)
                {
                    // A parked target retries on its own clock, or it would be picked again at once.
                    p.retry_at = cx.now + self.backoff;
                }
                self.backoff_after(cx.now, msg);
            }
            Outcome::Park(msg) => {
                let target = String::from_utf8_lossy(self.log_of(f.source).map_or(&[][..], |l| l.record(&f.front).0))
                    .into_owned();
                match f.source {
                    Source::Parked(i) => {
                        if let Some(p) = self.parked.get_mut(i) {
                            p.retry_at = cx.now + self.backend.rewrite_interval;
                        }
                    }
                    Source::Main(_) => {
                        ::log::warn!(
                            "backend {name}: {msg}; parking writes to {target} until the backend accepts them \
                             (other databases keep flowing)"
                        );
                        if let Err(e) = self.park(f.source, f.front) {
                            self.backoff_after(cx.now, format!("cannot park a batch: {e}"));
                        }
                    }
                }
            }
            Outcome::DropBadData(msg) => {
                // InfluxDB stored the batch's good lines; only the ones it names are lost.
                let refused = refused_lines(&f.answer).unwrap_or(f.lines).min(f.lines);
                BackendState::add(&c.dropped_bad_data, refused);
                ::log::warn!(
                    "backend {name}: refused {refused} of a batch of {} lines as bad data (it kept the others; \
                     the batch is not retried): {msg}",
                    f.lines
                );
                self.backend.state.set_error(&msg);
                self.ack(f.source, &f.front);
            }
            Outcome::DropRejected(msg) => {
                BackendState::add(&c.dropped_rejected, f.lines);
                ::log::error!("backend {name}: dropped a batch of {} lines it rejected: {msg}", f.lines);
                self.backend.state.set_error(&msg);
                self.ack(f.source, &f.front);
            }
        }
        self.pump(cx);
    }

    fn ack(&mut self, source: Source, front: &Front) {
        let Outbox { logs, parked, lag, backend, .. } = self;
        match source {
            Source::Main(i) => {
                if let Some(log) = logs.get_mut(i) {
                    lag.done(&backend.state.lag, log.record(front).0, log.is_recovered(front));
                    log.ack(front);
                }
            }
            Source::Parked(i) => {
                if let Some(p) = parked.get_mut(i) {
                    p.log.ack(front);
                }
            }
        }
    }

    fn publish_parked(&self) {
        self.lag.parked(&self.backend.state.lag, self.parked.iter().map(|p| &p.target[..]));
    }

    /// Network-level failure of the send in flight.
    fn fail(&mut self, cx: &mut Cx, why: String) {
        self.drop_conn(cx.registry);
        let Some(f) = self.inflight.take() else {
            return;
        };
        if f.reused && f.ex.head.is_none() {
            // Probably a keep-alive connection the backend closed while idle: retry once, fresh.
            self.start_send(cx, f.source, f.front);
            if let Some(nf) = &mut self.inflight {
                nf.reused = false;
            }
            return;
        }
        BackendState::add(&self.backend.state.counters.retries, 1);
        if let Source::Parked(i) = f.source {
            if let Some(p) = self.parked.get_mut(i) {
                p.retry_at = cx.now + self.backend.rewrite_interval;
            }
            return;
        }
        self.backoff_after(cx.now, format!("{}: {why}", self.backend.url));
    }

    fn backoff_after(&mut self, now: Instant, why: String) {
        if self.failing.as_deref() != Some(&why) {
            ::log::warn!(
                "backend {}: write failed, data kept and retried (next in {} ms, at most every {} ms): {why}",
                self.backend.name,
                self.backoff.as_millis(),
                self.backend.rewrite_interval.as_millis()
            );
            self.failing = Some(why.clone());
        }
        self.backend.state.set_error(&why);
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.backend.rewrite_interval);
    }

    /// Forgets the send in flight and its connection (after a bug was caught): the record stays in the
    /// log and is sent again.
    pub fn reset_sender(&mut self, registry: &Registry) {
        self.inflight = None;
        self.drop_conn(registry);
    }

    fn drop_conn(&mut self, registry: &Registry) {
        if let Some(mut c) = self.conn.take() {
            c.deregister(registry);
        }
    }

    // ---------------------------------------------------------------- parking

    /// Moves the record at the front of `source` into the parked log of its target.
    /// On error the record stays where it is and is retried.
    fn park(&mut self, source: Source, front: Front) -> Result<(), AppendError> {
        let target = match self.log_of(source) {
            Some(l) => l.record(&front).0.to_vec(),
            None => return Ok(()),
        };
        let i = match self.parked.iter().position(|p| p.target == target) {
            Some(i) => i,
            None => {
                let sub = self.dir.join(format!("parked-{:016x}", fnv1a(&target)));
                let opened = Log::open(
                    &sub,
                    true,
                    parked_segment_bytes(&self.opts),
                    self.backend.max_disk,
                    self.opts.sync,
                    self.backend.state.clone(),
                );
                match opened {
                    Ok((log, _)) => {
                        let retry_at = Instant::now() + self.backend.rewrite_interval;
                        self.parked.push(Parked { target, log, retry_at });
                        self.publish_parked();
                        self.parked.len() - 1
                    }
                    Err(e) => {
                        ::log::error!("backend {}: cannot create parked log {}: {e}", self.backend.name, sub.display());
                        return Err(AppendError::Io(e));
                    }
                }
            }
        };
        self.move_to_parked(source, front, i)
    }

    /// Copies the front record of `source` into parked log `parked`, then acknowledges it. On error
    /// nothing is acknowledged: the record stays and is tried again.
    fn move_to_parked(&mut self, source: Source, front: Front, parked: usize) -> Result<(), AppendError> {
        let Outbox { logs, parked: all, backend, lag, .. } = self;
        let Source::Main(li) = source else { return Ok(()) };
        let (Some(from), Some(p)) = (logs.get_mut(li), all.get_mut(parked)) else {
            return Ok(());
        };
        let (target, payload) = from.record(&front);
        let lines = memchr::memchr_iter(b'\n', payload).count() as u64;
        p.log.copy_record(target, payload)?;
        BackendState::add(&backend.state.counters.parked, lines);
        lag.done(&backend.state.lag, target, from.is_recovered(&front));
        from.ack(&front);
        Ok(())
    }

    fn unpark(&mut self, p: Parked) {
        ::log::info!(
            "backend {}: parked writes to {} delivered; target unparked",
            self.backend.name,
            String::from_utf8_lossy(&p.target)
        );
        let dir = p.log.dir().to_path_buf();
        drop(p);
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn parked_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("parked-")))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Records moved to parked logs per `pump`.
const MAX_MOVES_PER_PUMP: usize = 16;

/// Parked logs are usually small; their segments are too.
fn parked_segment_bytes(opts: &LogOptions) -> usize {
    (opts.segment_bytes / 8).max(64 << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(204, b""), Outcome::Ack);
        assert!(matches!(classify(404, b"{\"error\":\"database not found: \\\"x\\\"\"}"), Outcome::Park(_)));
        assert!(matches!(classify(500, b"{\"error\":\"retention policy not found: r\"}"), Outcome::Park(_)));
        assert!(matches!(classify(500, b"{\"error\":\"timeout\"}"), Outcome::Retry(_)));
        assert!(matches!(classify(503, b""), Outcome::Retry(_)));
        assert!(matches!(classify(401, b""), Outcome::Retry(_)));
        assert!(matches!(classify(400, b"{\"error\":\"partial write\"}"), Outcome::DropBadData(_)));
        assert!(matches!(classify(413, b""), Outcome::DropRejected(_)));
        assert!(matches!(classify(404, b"404 page not found"), Outcome::DropRejected(_)));
        match classify(400, b"{\"error\":\"unable to parse 'x': missing fields\"}") {
            Outcome::DropBadData(m) => {
                assert_eq!(m, "HTTP 400: unable to parse 'x': missing fields")
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn refused_lines_are_read_from_the_answer() {
        let partial = b"{\"error\":\"partial write: unable to parse 'a': missing fields\\nunable to parse 'b': bad timestamp dropped=0\"}";
        assert_eq!(refused_lines(partial), Some(2));
        let conflict = b"{\"error\":\"partial write: field type conflict: input field \\\"v\\\" dropped=3\"}";
        assert_eq!(refused_lines(conflict), Some(3));
        assert_eq!(refused_lines(b"{\"error\":\"something else\"}"), None);
    }

    #[test]
    fn backend_metadata_round_trips_and_names_do_not_collide() {
        let data = std::env::temp_dir().join(format!("ifxp-meta-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let fields: Fields = [("url", "http://a:1"), ("password", "pw")].map(|(k, v)| (k.into(), v.into())).into();
        let (one, two) = (backend_dir(&data, "a b", "http://a:1"), backend_dir(&data, "a_b", "http://a:1"));
        assert_ne!(one, two, "names that sanitize alike keep their own directories");
        write_meta(&one, "a b", &fields).unwrap();
        assert_eq!(stored_backends(&data), vec![("a b".to_string(), fields)]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(one.join(META_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the file may hold a password: owner only");
        std::fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn backend_dirs_are_safe_names() {
        let d = backend_dir(Path::new("/d"), "../we ird", "http://a:1");
        let name = d.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".._we_ird@"), "{name}");
        assert_ne!(backend_dir(Path::new("/d"), "b", "http://a:1"), backend_dir(Path::new("/d"), "b", "http://a:2"));
    }
}
