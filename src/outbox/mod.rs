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
//!
//! Files: `segment.rs` (one mmap'd segment file) → `log.rs` (a directory of segments: append, commit,
//! ack, recover, recycle) → this file (the outbox: what gets appended where, and when a batch is sealed)
//! → `sender.rs` (POST, answer, retry) with `classify.rs` (what an answer means) and `park.rs` (the
//! parked logs); `dirs.rs` says where it all lives on disk, `deflate.rs` gzips a batch, and `set.rs`
//! keeps the outboxes of one worker in step with the config.

mod classify;
pub mod deflate;
mod dirs;
#[cfg(feature = "isal")]
mod igzip;
pub mod log;
mod park;
pub mod segment;
mod sender;
pub mod set;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use crate::cli::SyncPolicy;
use crate::config::Backend;
use crate::defaults::{DEFAULT_BATCH_MAX_BYTES, FIRST_RETRY_BACKOFF};

/// How early an old batch may be sealed (see `Outbox::tick`).
const SEAL_SLACK: std::time::Duration = std::time::Duration::from_millis(2);
use crate::upstream::BackendState;
use crate::upstream::conn::Conn;
use crate::upstream::lag::LagTracker;
pub use classify::{Outcome, classify, refused_lines};
use dirs::{META_FILE, write_meta};
pub use dirs::{backend_dir, fnv1a, stored_backends};
use log::Log;
pub use log::{AppendError, PayloadCrc, Recovery, Whole};
use park::{Parked, parked_dirs, parked_segment_bytes};
use sender::InFlight;

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

/// A sending source: which log a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `logs[i]`: adopted logs first, the own log last.
    Main(usize),
    Parked(usize),
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
    /// A gzip record the backend refused as a whole (could not read it, or found it too large): it is
    /// sent decompressed and compressed again by the proxy (see `sender.rs`).
    refused_gzip: Option<(Source, log::Front)>,
    /// Removed from the config: takes no new lines, sends what it has.
    pub retired: bool,
    /// Publishes how old the pending data of each target is (read by the planner).
    lag: LagTracker,
    /// The least backlog (payload bytes of the main logs) seen since the backend last began taking
    /// batches (see `outpaced`); `None` while it does not.
    least_pending: Option<u64>,
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
            refused_gzip: None,
            retired: false,
            lag: LagTracker::new(opts.worker),
            least_pending: None,
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
        self.append_to_open(|log| log.append(parts).map(|()| 1)).map(|_| ())
    }

    /// Appends lines that lie one after the other in `run`, each with its newline (`ends[i]`: where
    /// line `i` ends in `run`), as [`Outbox::append_line`] would one by one: the same bytes, the same
    /// batches (sealed at `maxrowlimit` lines or [`DEFAULT_BATCH_MAX_BYTES`]), in one copy per batch
    /// instead of one per line. A line that cannot be stored (disk limit, file error) is pushed to
    /// `failed` with its error, and the lines after it are still tried, as one by one.
    pub fn append_lines(&mut self, run: &[u8], ends: &[usize], failed: &mut Vec<(usize, AppendError)>) {
        let max_rows = self.backend.max_row_limit;
        let mut done = 0;
        while done < ends.len() {
            let from = if done == 0 { 0 } else { ends[done - 1] };
            let taken = self.append_to_open(|log| {
                // The open batch takes lines while it has fewer than `max_rows` and is under its byte
                // limit before each (as when they come one by one), and as many as the segment holds.
                let (lines, len) = log.open_record().map_or((0, 0), |o| (o.lines, o.payload_len()));
                let room = DEFAULT_BATCH_MAX_BYTES.saturating_sub(len);
                let rest = &ends[done..];
                let by_bytes = 1 + rest[..rest.len() - 1].partition_point(|&e| e - from < room);
                let want = &rest[..by_bytes.min(max_rows.saturating_sub(lines)).max(1)];
                let fit = want.partition_point(|&e| log.fits(e - from));
                if fit == 0 {
                    // Not even the first line fits: it goes on in a new segment, the way single lines do.
                    return log.append(&[&run[from..rest[0]]]).map(|()| 1);
                }
                let appended = log.append_run(&run[from..want[fit - 1]], fit);
                debug_assert!(appended, "the lines were found to fit");
                Ok(fit)
            });
            match taken {
                Ok(n) => done += n,
                // Nothing of this pass was appended: its first line is lost, the next one is tried.
                Err(e) => {
                    failed.push((done, e));
                    done += 1;
                }
            }
        }
    }

    /// Runs `append` on the own log with a record open for the current target (begun if none is), then
    /// seals that record if it is full; `append` says how many lines it appended.
    #[inline]
    fn append_to_open(
        &mut self,
        append: impl FnOnce(&mut Log) -> Result<usize, AppendError>,
    ) -> Result<usize, AppendError> {
        let max_rows = self.backend.max_row_limit;
        let last = self.logs.len() - 1;
        let log = &mut self.logs[last];
        let begun = log.records_begun();
        if log.open_record().is_none() {
            log.begin(&self.target)?;
        }
        let appended = append(log);
        // A batch begins here, or inside `append` when the segment is full: either way, once per batch.
        for _ in begun..log.records_begun() {
            self.lag.begun(&self.backend.state.lag, &self.target, Instant::now());
        }
        let n = appended?;
        if let Some(open) = log.open_record()
            && (open.lines >= max_rows || open.payload_len() >= DEFAULT_BATCH_MAX_BYTES)
        {
            log.seal();
        }
        Ok(n)
    }

    /// Appends a request's lines as a batch of their own, sealed at once: `payload` holds `lines`
    /// lines, or with `gzip` it is those lines gzipped, stored and sent as it is (see `write::store`).
    /// The batch before it is sealed first, so the order of lines is kept. It is committed (and
    /// counted) when this returns.
    pub fn append_batch(&mut self, target: &[u8], w: Whole<'_>, crc: Option<&PayloadCrc>) -> Result<(), AppendError> {
        let last = self.logs.len() - 1;
        let log = &mut self.logs[last];
        let begun = log.records_begun();
        // On error no record was kept for it (none begun, or the one begun erased): it is not a batch the lag
        // board waits for.
        log.append_record(target, w, crc)?;
        for _ in begun..log.records_begun() {
            self.lag.begun(&self.backend.state.lag, target, Instant::now());
        }
        // Bytes as stored, as `bytes_sent` counts them when the backend acknowledges the record.
        let c = &self.backend.state.counters;
        BackendState::add(&c.lines_in, w.lines);
        BackendState::add(&c.bytes_in, (w.payload.len() + if w.gzip { segment::GZIP_LINES_LEN } else { 0 }) as u64);
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

    /// Seals the open batch if it is old enough.
    pub fn seal_aged(&mut self, now: Instant) {
        // Replicas open their batches at the same line, microseconds apart: the slack seals them at the
        // same tick, so they stay byte-identical and the worker compresses each batch once (deflate.rs).
        if let Some(open) = self.own().open_record()
            && now.duration_since(open.opened) + SEAL_SLACK >= self.backend.interval
        {
            self.own().seal();
        }
    }

    /// Compresses the batches sealed since the last call (see `Log::gzip_sealed`).
    pub fn gzip_sealed(&mut self, deflate: &mut deflate::Deflate) {
        let level = self.backend.gzip;
        for log in &mut self.logs {
            log.gzip_sealed(level, deflate);
        }
    }

    /// Fails a send past its timeout and starts sending when due. Batches old enough were sealed and
    /// compressed just before, for all outboxes at once (`Outboxes::tick`).
    pub fn tick(&mut self, cx: &mut Cx) {
        if let Some(f) = &self.inflight
            && cx.now >= f.deadline
        {
            let timeout = self.backend.timeout;
            self.fail(cx, format!("no answer within {} ms", timeout.as_millis()));
        }
        self.pump(cx);
    }

    /// When this outbox next needs `tick`, given that `tick` has just run at about `now`: only
    /// deadlines something can act on count. Data waiting for a backend the health checker says is
    /// down is looked at again after `recheck` (the checker marks it up without waking anyone), and a
    /// deadline that has passed although `tick` just ran cannot be acted on yet either: it too is
    /// looked at after `recheck`, so a worker never spins on it.
    pub fn next_deadline(&self, now: Instant, recheck: Duration) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(open) = self.logs.last().and_then(|l| l.open_record()) {
            consider(open.opened + self.backend.interval);
        }
        if let Some(f) = &self.inflight {
            consider(f.deadline);
        } else if self.reachable() {
            if self.logs.iter().any(|l| l.pending_records() > 0) {
                // Sealed batches to send: at the retry time, or now (recovered logs have no other
                // deadline to wake the worker for them).
                consider(self.retry_at.unwrap_or(now));
            }
            for p in self.parked.iter().filter(|p| p.log.pending_records() > 0) {
                consider(p.retry_at);
            }
        } else if self.pending_records() > 0 {
            consider(now + recheck);
        }
        next.map(|t| if t <= now { now + recheck } else { t })
    }

    /// Seals the open batch now (shutdown: send everything).
    pub fn seal_open(&mut self) {
        self.own().seal();
    }

    /// Nothing left to send anywhere.
    pub fn is_drained(&self) -> bool {
        self.inflight.is_none() && self.parked.is_empty() && self.logs.iter().all(Log::is_drained)
    }

    /// How long until the next send attempt while backing off after a failure (`None`: not backing off).
    pub fn retry_in(&self, now: Instant) -> Option<std::time::Duration> {
        self.retry_at.map(|t| t.saturating_duration_since(now))
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

    /// The backend takes this outbox's batches (up, not failing, not backing off) and yet what waits
    /// for it has grown by more than `limit` bytes since it was least: writers are outpacing it.
    ///
    /// Growth, not size: a backlog left by an outage, recovered at start or adopted shrinks while it is
    /// delivered, and pauses no one unless new writes come faster than it goes out.
    pub fn outpaced(&mut self, limit: u64) -> bool {
        let taking = !self.retired && self.failing.is_none() && self.retry_at.is_none() && self.state().is_up();
        if !taking {
            // Growth while the backend does not take batches is what the outbox is for.
            self.least_pending = None;
            return false;
        }
        let pending: u64 = self.logs.iter().map(Log::pending_bytes).sum();
        let least = self.least_pending.get_or_insert(pending);
        *least = (*least).min(pending);
        pending - *least > limit
    }

    /// Sealed batches not yet acknowledged, parked ones included.
    pub fn pending_records(&self) -> u64 {
        self.logs.iter().chain(self.parked.iter().map(|p| &p.log)).map(Log::pending_records).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RawConfig};
    use crate::upstream::Registry;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// An outbox of a backend of its own with `maxrowlimit` rows and `maxdisk` bytes, in a fresh directory
    /// with segments of `segment_bytes`.
    fn outbox(name: &str, max_rows: usize, max_disk: u64, segment_bytes: usize) -> (Outbox, Dir) {
        let json = format!(
            r#"{{"NODES": {{"l1": {{"interval": "0"}}}},
                "BACKENDS": {{"b": {{"url": "http://127.0.0.1:9", "maxrowlimit": "{max_rows}",
                                   "maxdisk": "{max_disk}", "interval": "60000"}}}},
                "KEYMAPS": {{"_default_": ["b"]}}}}"#
        );
        let config = Config::build(RawConfig::from_json(&json).unwrap(), "l1", &Registry::default()).unwrap();
        let dir = std::env::temp_dir().join(format!("ifxp-outbox-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = LogOptions { data_dir: dir.clone(), worker: 0, threads: 1, segment_bytes, sync: SyncPolicy::Never };
        let (outbox, _) = Outbox::open(config.backends[0].clone(), Token(0), &opts).unwrap();
        (outbox, Dir(dir))
    }

    /// Every record the outbox would send: its target, payload and line count.
    fn records(outbox: &mut Outbox) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
        let log = outbox.own();
        log.seal();
        let mut out = Vec::new();
        while let Some(f) = log.front() {
            let (target, payload) = log.record(&f);
            out.push((target.to_vec(), payload.to_vec(), log.record_lines(&f)));
            log.ack(&f);
        }
        out
    }

    #[test]
    fn a_run_of_lines_makes_the_batches_its_lines_make_one_by_one() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut below = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        // (maxrowlimit, maxdisk, segment size, lines): batches cut by rows and by segments (a line longer
        // than a segment among them), by DEFAULT_BATCH_MAX_BYTES, and lines refused for maxdisk (those
        // that need a new segment once the backlog is full; shorter ones after them still fit).
        let cases = [(7, u64::MAX, 4096, 3000), (1_000_000, u64::MAX, 16 << 20, 90_000), (50, 16_384, 4096, 3000)];
        for (case, (max_rows, max_disk, segment_bytes, count)) in cases.into_iter().enumerate() {
            let lines: Vec<Vec<u8>> = (0..count)
                .map(|i| {
                    let len = if i == 1234 { 6000 } else { 20 + below(200) as usize };
                    let mut l = format!("m{i},t=v f={} ", "1".repeat(len)).into_bytes();
                    l.extend_from_slice(format!("{}\n", 1_700_000_000_000_000_000u64 + i as u64).as_bytes());
                    l
                })
                .collect();
            let (mut one_by_one, _d1) = outbox(&format!("{case}-lines"), max_rows, max_disk, segment_bytes);
            let (mut runs, _d2) = outbox(&format!("{case}-runs"), max_rows, max_disk, segment_bytes);
            let (mut lost_one_by_one, mut lost_in_runs) = (Vec::new(), Vec::new());
            for (request, chunk) in lines.chunks(1000).enumerate() {
                let first = request * 1000;
                one_by_one.enter_request(request as u64, b"db=x");
                runs.enter_request(request as u64, b"db=x");
                for (i, line) in chunk.iter().enumerate() {
                    if one_by_one.append_line(&[line]).is_err() {
                        lost_one_by_one.push(first + i);
                    }
                }
                // Runs of random lengths, as the lines of a body fall into them.
                let mut at = 0;
                while at < chunk.len() {
                    let run = &chunk[at..(at + 1 + below(400) as usize).min(chunk.len())];
                    let ends: Vec<usize> =
                        run.iter().scan(0, |end, l| Some(*end + l.len()).inspect(|e| *end = *e)).collect();
                    let mut failed = Vec::new();
                    runs.append_lines(&run.concat(), &ends, &mut failed);
                    lost_in_runs.extend(failed.iter().map(|(i, _)| first + at + i));
                    at += run.len();
                }
                one_by_one.finish_request(0, 0);
                runs.finish_request(0, 0);
            }
            assert_eq!(lost_one_by_one, lost_in_runs, "case {case}: lines refused");
            let refused = lost_in_runs.len();
            assert_eq!(refused == 0, max_disk == u64::MAX, "case {case}: {refused} lines refused");
            // The runs' records as a restart finds them: their checksums hold.
            runs.own().seal();
            let (backend, opts) = (runs.backend.clone(), runs.opts.clone());
            drop(runs);
            let (mut runs, recovery) = Outbox::open(backend, Token(0), &opts).unwrap();
            assert!(recovery.problems.is_empty() && recovery.cut_bytes == 0, "case {case}: {:?}", recovery.problems);
            let (a, b) = (records(&mut one_by_one), records(&mut runs));
            assert!(a.len() > 2, "case {case}: {} batches", a.len());
            assert_eq!(a.len(), b.len(), "case {case}: batch count");
            for (k, (a, b)) in a.iter().zip(&b).enumerate() {
                assert!(a == b, "case {case}: batch {k} differs ({} and {} lines)", a.2, b.2);
            }
            assert_eq!(b.iter().map(|r| r.2).sum::<u64>(), (count - refused) as u64);
        }
    }
}
