//! An outbox log: the ordered sequence of segment files of one (worker, backend), appended to at the tail
//! and acknowledged from the head.
//!
//! Invariants:
//! * Records are sent and acknowledged strictly in order; the acknowledged position only moves forward,
//!   one aligned store at a time, so it survives a crash wherever it happens.
//! * The open record (the batch being filled) lives at the end of the tail segment. It is committed
//!   after every request that appended to it, before that request is answered, and sealed when the
//!   batch is full or old; only sealed records are sent.
//! * At most the head and the tail segment are mapped; the ones in between are closed files, so a long
//!   outage costs disk, not memory.
//! * Segments recovered at start are read-only: new records always go to a fresh segment, so a torn tail
//!   left by a crash is never appended after.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::deflate::{Deflate, KeptGzip};
use super::segment::{
    self, FLAG_GZIP, GZIP_LINES_LEN, HEADER_LEN, RECORD_HEADER, RECORD_MAGIC, Segment, Slot, TERMINATOR, record_len,
};
use crate::cli::SyncPolicy;
use crate::defaults::SPARE_SEGMENTS;
use crate::upstream::BackendState;
use crate::upstream::conn::LentBody;

#[derive(Debug)]
pub enum AppendError {
    /// The backend's `maxdisk` is reached.
    DiskFull,
    /// Creating or mapping a segment failed (disk full, permissions...).
    Io(io::Error),
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::DiskFull => f.write_str("outbox disk limit (maxdisk) reached"),
            AppendError::Io(e) => write!(f, "outbox file error: {e}"),
        }
    }
}

/// The record being filled.
#[derive(Debug)]
pub struct OpenRecord {
    /// Offset of the record in the tail segment.
    start: usize,
    target_len: usize,
    /// The record's flags (`FLAG_GZIP`).
    flags: u8,
    /// Payload bytes appended so far.
    len: usize,
    /// Payload bytes covered by the commit word.
    committed: usize,
    /// Checksum of the target and the first `summed` payload bytes.
    crc: crc32fast::Hasher,
    /// Payload bytes in `crc`: the committed ones, and those of a whole record written through the
    /// file (checksummed from the caller's bytes, not read back from the mapping).
    summed: usize,
    pub lines: usize,
    pub opened: Instant,
}

impl OpenRecord {
    pub fn payload_len(&self) -> usize {
        self.len
    }
}

/// A record stored whole: `payload` holding `lines` lines, or with `gzip` the gzip members holding them
/// (as [`Log::record`] gives them back).
#[derive(Clone, Copy, Debug)]
pub struct Whole<'a> {
    pub payload: &'a [u8],
    pub lines: u64,
    pub gzip: bool,
}

impl<'a> Whole<'a> {
    pub fn new(payload: &'a [u8], lines: u64, gzip: bool) -> Self {
        Whole { payload, lines, gzip }
    }
}

/// The checksum of a whole record's payload (see [`Log::append_record`]), made once for every log that
/// stores the same bytes: the replicas of one body. Each log joins it to the checksum of its own record
/// header (segment number, flags, target) instead of reading the payload again.
#[derive(Clone)]
pub struct PayloadCrc {
    crc: crc32fast::Hasher,
    /// Address and length of the bytes it covers, with their line count and kind.
    of: (usize, usize, u64, bool),
}

impl PayloadCrc {
    pub fn of(w: Whole<'_>) -> PayloadCrc {
        let mut crc = crc32fast::Hasher::new();
        if w.gzip {
            crc.update(&w.lines.to_le_bytes());
        }
        crc.update(w.payload);
        PayloadCrc { crc, of: Self::place(w) }
    }

    /// Made by [`PayloadCrc::of`] from the bytes at this very place, so that a checksum of another body
    /// is never taken by mistake. (A caller that refills a buffer in place drops its checksum then.)
    fn covers(&self, w: Whole<'_>) -> bool {
        self.of == Self::place(w)
    }

    fn place(w: Whole<'_>) -> (usize, usize, u64, bool) {
        (w.payload.as_ptr() as usize, w.payload.len(), w.lines, w.gzip)
    }
}

/// The oldest unacknowledged sealed record, as positions (no borrow), so the sender can hold it while
/// the log keeps taking appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Front {
    seq: u64,
    off: usize,
    target: (usize, usize),
    payload: (usize, usize),
    next: usize,
    /// A gzip record: its payload is a line count and gzip members.
    gzip: bool,
}

impl Front {
    /// Bytes of the record's payload as stored (a gzip record's line count included).
    pub fn payload_len(&self) -> usize {
        self.payload.1 - self.payload.0
    }

    /// The payload is gzip: a body stored whole (the client's own members, or compressed when stored).
    pub fn is_gzip(&self) -> bool {
        self.gzip
    }
}

/// What opening a log found on disk.
#[derive(Debug, Default)]
pub struct Recovery {
    pub segments: usize,
    pub records: u64,
    pub payload_bytes: u64,
    /// Bytes cut: damaged ranges and torn tails.
    pub cut_bytes: u64,
    /// One line per problem, for the log.
    pub problems: Vec<String>,
}

pub struct Log {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    next_seq: u64,
    /// Own log of a worker (appends go here) or an adopted one (read only, deleted once drained).
    writable: bool,
    segment_bytes: usize,
    open: Option<OpenRecord>,
    pub max_disk: u64,
    sync: SyncPolicy,
    state: Arc<BackendState>,
    /// Fully acknowledged segments kept for reuse (at most `SPARE_SEGMENTS`).
    spares: Vec<Segment>,
    /// A record moved from another log is being copied: the disk cap does not apply to it.
    moving: bool,
    /// Segments numbered from here on were created by this run; older ones were recovered and are
    /// read-only.
    first_fresh_seq: u64,
    /// Sealed, unacknowledged records of this log.
    pending_records: u64,
    pending_bytes: u64,
    /// Records begun by this run (also those `append` begins when a segment fills): lets the outbox
    /// see every new batch for its lag bookkeeping.
    records_begun: u64,
    /// The last front found: (segment seq, offset) identify it, and a sealed record never changes.
    front_cache: Option<Front>,
    /// The records this run sealed and that are not acknowledged yet, oldest first (at most
    /// [`SEALED_KEPT`]): what the sender need not work out again.
    sealed: VecDeque<Sealed>,
}

/// A record sealed by this run.
struct Sealed {
    seq: u64,
    off: usize,
    /// Where its payload is in its segment.
    payload: (usize, usize),
    lines: u64,
    /// A gzip record: nothing to compress.
    stored_gzip: bool,
    /// The payload gzipped, made once for all the replicas that sealed the same batch.
    gzip: Option<KeptGzip>,
    /// `gzip_sealed` has seen it (and compressed it, budget allowing).
    considered: bool,
}

/// Sealed records remembered (about 80 bytes each); beyond, through a long outage, the sender
/// counts their lines and compresses them when it sends them.
const SEALED_KEPT: usize = 8192;

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering whatever a previous run left there.
    pub fn open(
        dir: &Path,
        writable: bool,
        segment_bytes: usize,
        max_disk: u64,
        sync: SyncPolicy,
        state: Arc<BackendState>,
    ) -> io::Result<(Log, Recovery)> {
        std::fs::create_dir_all(dir)?;
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(seq) = entry.file_name().to_str().and_then(segment::parse_segment_file_name) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut log = Log {
            dir: dir.to_path_buf(),
            segments: VecDeque::new(),
            next_seq: seqs.last().map_or(0, |s| s + 1),
            writable,
            segment_bytes: segment_bytes.max(HEADER_LEN + 4096),
            open: None,
            max_disk,
            sync,
            state,
            spares: Vec::new(),
            moving: false,
            first_fresh_seq: 0,
            pending_records: 0,
            pending_bytes: 0,
            records_begun: 0,
            front_cache: None,
            sealed: VecDeque::new(),
        };
        log.first_fresh_seq = log.next_seq;
        let mut rec = Recovery::default();
        for seq in seqs {
            let path = dir.join(segment::segment_file_name(seq));
            let mut seg = Segment::open(&path, seq)?;
            match seg.header_ok() {
                Ok(false) => {
                    // Created but never written: an interrupted rotation.
                    drop(seg);
                    std::fs::remove_file(&path)?;
                    continue;
                }
                Err(reason) => {
                    rec.cut_bytes += seg.size as u64;
                    rec.problems.push(format!("{}: {reason}; moved aside as .damaged", path.display()));
                    drop(seg);
                    std::fs::rename(&path, path.with_extension("log.damaged"))?;
                    continue;
                }
                Ok(true) => {}
            }
            let report = segment::scan(&mut seg);
            if !report.damage.is_empty() {
                let copy = path.with_extension("log.damaged");
                if !copy.exists() {
                    let _ = std::fs::copy(&path, &copy);
                }
            }
            for (off, len, reason) in &report.damage {
                rec.cut_bytes += *len as u64;
                rec.problems.push(format!(
                    "{}: {reason}: {len} bytes at offset {off} skipped (intact records before and after are kept; \
                     a copy of the file is in .damaged)",
                    path.display()
                ));
            }
            if report.torn_tail > 0 {
                rec.cut_bytes += report.torn_tail as u64;
                rec.problems.push(format!(
                    "{}: cut a torn tail of {} bytes at offset {} (a write that never completed)",
                    path.display(),
                    report.torn_tail,
                    seg.end
                ));
            }
            if report.records == 0 {
                drop(seg);
                std::fs::remove_file(&path)?;
                continue;
            }
            rec.segments += 1;
            rec.records += report.records;
            rec.payload_bytes += report.payload_bytes;
            BackendState::add(&log.state.disk_bytes, seg.size as u64);
            if !log.segments.is_empty() {
                seg.unmap();
            }
            log.segments.push_back(seg);
        }
        log.pending_records = rec.records;
        log.pending_bytes = rec.payload_bytes;
        BackendState::add(&log.state.backlog_records, rec.records);
        BackendState::add(&log.state.backlog_bytes, rec.payload_bytes);
        BackendState::add(&log.state.counters.recovery_cut_bytes, rec.cut_bytes);
        Ok((log, rec))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn open_record(&self) -> Option<&OpenRecord> {
        self.open.as_ref()
    }

    /// Target bytes of the open record.
    pub fn open_target(&self) -> Option<&[u8]> {
        let open = self.open.as_ref()?;
        let tail = self.segments.back()?;
        let t = open.start + RECORD_HEADER;
        tail.bytes().get(t..t + open.target_len)
    }

    /// Nothing sealed is waiting and nothing is open.
    pub fn is_drained(&self) -> bool {
        self.pending_records == 0 && self.open.is_none()
    }

    pub fn pending_records(&self) -> u64 {
        self.pending_records
    }

    /// Payload bytes of the sealed records not yet acknowledged.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Starts a new record for `target`, sealing the open one.
    pub fn begin(&mut self, target: &[u8]) -> Result<(), AppendError> {
        self.begin_flagged(target, 0, false)
    }

    /// Starts a record; `through_file`: its header goes through the file, as a whole record's payload
    /// and commit word do (see [`Log::whole_record`]), else through the mapping.
    fn begin_flagged(&mut self, target: &[u8], flags: u8, through_file: bool) -> Result<(), AppendError> {
        self.seal();
        if !self.writable {
            return Err(AppendError::Io(io::Error::other("log is read-only")));
        }
        if target.len() > usize::from(u16::MAX) {
            return Err(AppendError::Io(io::Error::other("batch target (db, rp, precision) too long")));
        }
        self.ensure_room(record_len(target.len(), 1))?;
        let tail = self.segments.back_mut().ok_or(AppendError::DiskFull)?;
        let start = tail.end;
        // Magic, target length, flags, a zero byte and a zero commit word (nothing committed yet).
        let mut header = [0u8; RECORD_HEADER];
        header[..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        header[4..6].copy_from_slice(&(target.len() as u16).to_le_bytes());
        header[6] = flags;
        if through_file {
            // Header, target and the terminator after them in one write, as `terminate` leaves it below:
            // until the payload is written over those zeros, a kill leaves a log that ends at this
            // header (its commit word is zero) with nothing of a file's previous life after it.
            let mut head = Vec::with_capacity(RECORD_HEADER + target.len() + TERMINATOR);
            head.extend_from_slice(&header);
            head.extend_from_slice(target);
            let end = (start + head.len() + TERMINATOR).min(tail.size).max(start + head.len());
            head.resize(end - start, 0);
            tail.write_at(&head, start).map_err(AppendError::Io)?;
        } else {
            let b = tail.bytes_mut();
            b[start..start + RECORD_HEADER].copy_from_slice(&header);
            b[start + RECORD_HEADER..start + RECORD_HEADER + target.len()].copy_from_slice(target);
            tail.terminate(start + RECORD_HEADER + target.len());
        }
        let mut crc = segment::record_crc(tail.seq, flags);
        crc.update(target);
        self.open = Some(OpenRecord {
            start,
            target_len: target.len(),
            flags,
            len: 0,
            committed: 0,
            crc,
            summed: 0,
            lines: 0,
            opened: Instant::now(),
        });
        self.records_begun += 1;
        Ok(())
    }

    /// Appends one line (given as parts, e.g. text, timestamp, newline) to the open record. When the
    /// segment is full the record is sealed and continued in a new segment.
    #[inline]
    pub fn append(&mut self, parts: &[&[u8]]) -> Result<(), AppendError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if !self.fits(total) {
            return self.append_in_new_segment(parts, total);
        }
        self.copy_in(parts, total, 1);
        Ok(())
    }

    /// Appends `lines` lines that lie one after the other in `run`, each with its newline, to the open
    /// record in one copy, if they fit in the tail segment; whether they did (if not, nothing is
    /// appended: the caller takes fewer, or gives the first line to [`Log::append`], which continues the
    /// record in a new segment).
    #[inline]
    pub fn append_run(&mut self, run: &[u8], lines: usize) -> bool {
        if !self.fits(run.len()) {
            return false;
        }
        self.copy_in(&[run], run.len(), lines);
        true
    }

    /// The open record can take `total` more bytes in the tail segment, padding included.
    #[inline]
    pub(super) fn fits(&self, total: usize) -> bool {
        match (&self.open, self.segments.back()) {
            (Some(open), Some(tail)) => open.start + record_len(open.target_len, open.len + total) <= tail.size,
            _ => false,
        }
    }

    #[inline]
    fn copy_in(&mut self, parts: &[&[u8]], total: usize, lines: usize) {
        let (Some(open), Some(tail)) = (&mut self.open, self.segments.back_mut()) else {
            return;
        };
        let mut pos = open.start + RECORD_HEADER + open.target_len + open.len;
        let b = tail.bytes_mut();
        for p in parts {
            b[pos..pos + p.len()].copy_from_slice(p);
            pos += p.len();
        }
        tail.terminate(pos);
        open.len += total;
        open.lines += lines;
    }

    #[cold]
    fn append_in_new_segment(&mut self, parts: &[&[u8]], total: usize) -> Result<(), AppendError> {
        if self.open.is_none() {
            return Err(AppendError::Io(io::Error::other("append without an open record")));
        }
        let target = self.open_target().map(<[u8]>::to_vec).unwrap_or_default();
        let flags = self.open.as_ref().map_or(0, |o| o.flags);
        self.seal();
        // A line bigger than a whole segment gets a segment of its own size.
        self.ensure_room(record_len(target.len(), total))?;
        self.begin_flagged(&target, flags, false)?;
        if !self.fits(total) {
            return Err(AppendError::Io(io::Error::other("line does not fit in a fresh segment")));
        }
        self.copy_in(parts, total, 1);
        Ok(())
    }

    /// Appends a whole record moved from another log of the same backend (parking), as [`Log::record`]
    /// gave it. It is already counted against `maxdisk`, so the cap does not apply; on error nothing
    /// is left open.
    pub fn copy_record(&mut self, target: &[u8], w: Whole<'_>) -> Result<(), AppendError> {
        self.whole_record(target, w, None, true)
    }

    /// Appends and seals a record of its own (a body stored whole, see `Outbox::append_batch`).
    /// `crc`: the payload's checksum if the caller has it (made for another replica); it is used only
    /// if it covers these bytes. On error nothing is left open.
    pub fn append_record(&mut self, target: &[u8], w: Whole<'_>, crc: Option<&PayloadCrc>) -> Result<(), AppendError> {
        self.whole_record(target, w, crc, false)
    }

    fn whole_record(
        &mut self,
        target: &[u8],
        w: Whole<'_>,
        crc: Option<&PayloadCrc>,
        moving: bool,
    ) -> Result<(), AppendError> {
        let Whole { payload, lines, gzip } = w;
        self.seal();
        if !self.writable {
            return Err(AppendError::Io(io::Error::other("log is read-only")));
        }
        let count = lines.to_le_bytes();
        let parts: &[&[u8]] = if gzip { &[&count, payload] } else { &[payload] };
        let total = GZIP_LINES_LEN * usize::from(gzip) + payload.len();
        // Room for all of it first: a record is never continued in another segment.
        self.moving = moving;
        let begun = self
            .ensure_room(record_len(target.len(), total))
            .and_then(|()| self.begin_flagged(target, if gzip { FLAG_GZIP } else { 0 }, true));
        self.moving = false;
        begun?;
        if !self.fits(total) {
            // Not possible after `ensure_room`; the begun record holds nothing and sealing erases it.
            self.seal();
            return Err(AppendError::Io(io::Error::other("record does not fit in a fresh segment")));
        }
        let sum = match crc {
            Some(c) if c.covers(w) => c.crc.clone(),
            _ => PayloadCrc::of(w).crc,
        };
        let written = self.write_in(parts, total, &sum).and_then(|()| self.commit_through_file());
        if let Some(open) = &mut self.open {
            open.lines = lines as usize;
        }
        // A record whose bytes or commit could not all be written holds nothing, and sealing erases it.
        self.seal();
        written.map_err(AppendError::Io)
    }

    /// [`Log::commit`] of a whole record, whose header and payload were written through the file: its
    /// commit word goes the same way. Their page was filled by `pwrite` and is not mapped yet (or no
    /// longer writable): a store through the mapping would fault it in for writing, which cost ~1.5% of
    /// the proxy's CPU under load (`ext4_page_mkwrite`, once per record). The eight bytes are one
    /// aligned copy into the page cache, whole or not at all for a process that dies.
    fn commit_through_file(&mut self) -> io::Result<()> {
        let (Some(open), Some(tail)) = (&mut self.open, self.segments.back_mut()) else {
            return Err(io::Error::other("commit without an open record"));
        };
        // The payload is all checksummed (`write_in`): nothing to read back from the mapping.
        debug_assert_eq!(open.summed, open.len);
        if let Err(e) = tail.write_commit(open.start, open.len, open.crc.clone().finalize()) {
            // Nothing of it counts: `seal` must not commit it through the mapping instead, but erase it.
            open.len = open.committed;
            return Err(e);
        }
        open.committed = open.len;
        let payload = open.start + RECORD_HEADER + open.target_len;
        let (from, to) = (payload, payload + open.len);
        if self.sync == SyncPolicy::Always {
            self.sync_open(from, to);
        }
        Ok(())
    }

    /// Writes a whole record's payload through the file rather than the mapping (see
    /// [`Segment::write_at`]); `sum` is the checksum of the parts. The record is committed by
    /// [`Log::commit_through_file`]; on error nothing of it is.
    fn write_in(&mut self, parts: &[&[u8]], total: usize, sum: &crc32fast::Hasher) -> io::Result<()> {
        let (Some(open), Some(tail)) = (&mut self.open, self.segments.back_mut()) else {
            return Err(io::Error::other("write without an open record"));
        };
        let mut pos = open.start + RECORD_HEADER + open.target_len + open.len;
        for p in parts {
            tail.write_at(p, pos)?;
            pos += p.len();
        }
        tail.write_terminator(pos)?;
        open.crc.combine(sum);
        open.len += total;
        open.summed = open.len;
        Ok(())
    }

    /// Makes every appended byte part of the open record, durably for a crash of the process (and for
    /// power loss with `--sync always`). Called before a request is answered.
    pub fn commit(&mut self) {
        let (Some(open), Some(tail)) = (&mut self.open, self.segments.back_mut()) else {
            return;
        };
        if open.len == open.committed {
            return;
        }
        let payload = open.start + RECORD_HEADER + open.target_len;
        let (from, to) = (payload + open.committed, payload + open.len);
        open.crc.update(&tail.bytes()[payload + open.summed..to]);
        open.summed = open.len;
        tail.store_commit(open.start, open.len, open.crc.clone().finalize());
        open.committed = open.len;
        if self.sync == SyncPolicy::Always {
            self.sync_open(from, to);
        }
    }

    fn sync_open(&self, from: usize, to: usize) {
        if let (Some(open), Some(tail)) = (&self.open, self.segments.back())
            && let Err(e) = tail.sync_range(open.start, to.max(from))
        {
            log::error!("msync of {} failed: {e}", tail.path.display());
        }
    }

    /// Commits and closes the open record; it becomes sendable.
    pub fn seal(&mut self) {
        self.commit();
        let Some(open) = self.open.take() else { return };
        let Some(tail) = self.segments.back_mut() else {
            return;
        };
        if open.committed == 0 {
            // Begun but empty: erase the header so the tail ends cleanly.
            let end = open.start + RECORD_HEADER + open.target_len;
            tail.bytes_mut()[open.start..end].fill(0);
            return;
        }
        tail.end = open.start + record_len(open.target_len, open.committed);
        if self.sync != SyncPolicy::Never
            && let Err(e) = tail.sync_range(open.start, tail.end)
        {
            log::error!("msync of {} failed: {e}", tail.path.display());
        }
        self.pending_records += 1;
        self.pending_bytes += open.committed as u64;
        if self.sealed.len() < SEALED_KEPT {
            let payload = open.start + RECORD_HEADER + open.target_len;
            self.sealed.push_back(Sealed {
                seq: tail.seq,
                off: open.start,
                payload: (payload, payload + open.committed),
                lines: open.lines as u64,
                stored_gzip: open.flags & FLAG_GZIP != 0,
                gzip: None,
                considered: false,
            });
        }
        BackendState::add(&self.state.backlog_records, 1);
        BackendState::add(&self.state.backlog_bytes, open.committed as u64);
    }

    /// Makes sure the tail has `need` free bytes, creating a segment if not (bigger than
    /// `segment_bytes` when `need` is).
    fn ensure_room(&mut self, need: usize) -> Result<(), AppendError> {
        if let Some(tail) = self.segments.back()
            && self.writable_tail()
            && tail.end + need <= tail.size
        {
            return Ok(());
        }
        let size = self.segment_bytes.max(HEADER_LEN + need);
        // The cap is on data waiting for the backend (all workers together), not on files: a fully
        // acknowledged tail or a spare holds nothing and must not block new data. A new segment, fresh
        // or reused, is room for `size` more. With nothing waiting, a segment is always allowed, so
        // each worker can hold one.
        let waiting = self.state.backlog_bytes.load(std::sync::atomic::Ordering::Relaxed);
        if !self.moving && waiting > 0 && waiting + size as u64 > self.max_disk {
            return Err(AppendError::DiskFull);
        }
        let spare = self.spares.iter().position(|s| s.size >= size).map(|i| self.spares.swap_remove(i));
        let seg = match spare {
            Some(spare) => match spare.recycle(&self.dir, self.next_seq) {
                Ok(seg) => seg,
                Err(e) => {
                    // The spare's file is in an unknown state: forget it, its bytes are not counted.
                    BackendState::sub(&self.state.disk_bytes, self.segment_bytes as u64);
                    return Err(AppendError::Io(e));
                }
            },
            None => {
                let seg = Segment::create(&self.dir, self.next_seq, size).map_err(AppendError::Io)?;
                BackendState::add(&self.state.disk_bytes, size as u64);
                seg
            }
        };
        self.next_seq += 1;
        if self.sync != SyncPolicy::Never {
            sync_dir(&self.dir);
        }
        if self.segments.len() >= 2
            && let Some(old_tail) = self.segments.back_mut()
        {
            old_tail.unmap();
        }
        self.segments.push_back(seg);
        Ok(())
    }

    /// The last segment takes appends: it was created by this run (recovered ones never do).
    fn writable_tail(&self) -> bool {
        self.writable && self.segments.back().is_some_and(|s| s.seq >= self.first_fresh_seq)
    }

    /// The head segment is also the segment appends go to, so it is not deleted when read to its end.
    fn head_is_tail(&self) -> bool {
        self.segments.len() == 1 && self.writable_tail()
    }

    /// The oldest sealed record not yet acknowledged.
    pub fn front(&mut self) -> Option<Front> {
        loop {
            let only_segment = self.segments.len() == 1;
            let open_start = self.open.as_ref().map(|o| o.start);
            let seg = self.segments.front_mut()?;
            if let Err(e) = seg.map() {
                log::error!("cannot map {}: {e}", seg.path.display());
                return None;
            }
            let limit = match open_start {
                Some(start) if only_segment => start,
                _ => seg.end,
            };
            // The front is asked for on every pump; a record read (and checked) once is not read again.
            if let Some(cached) = self.front_cache
                && cached.seq == seg.seq
                && cached.off == seg.skip_holes(seg.read)
                && cached.off < limit
            {
                return Some(cached);
            }
            let (off, slot) = seg.slot_at(seg.read);
            if off < limit {
                match slot {
                    Slot::Record { target, payload, next, gzip } => {
                        let front = Front { seq: seg.seq, off, target, payload, next, gzip };
                        self.front_cache = Some(front);
                        return Some(front);
                    }
                    Slot::End | Slot::Damaged(_) => {
                        // Only possible if the file changed under us: skip the rest of the segment.
                        log::error!("{}: unreadable record at offset {off}; skipping to the end", seg.path.display());
                        seg.read = limit;
                        seg.store_acked(limit);
                        continue;
                    }
                }
            }
            if self.head_is_tail() {
                return None;
            }
            self.pop_head();
        }
    }

    pub fn records_begun(&self) -> u64 {
        self.records_begun
    }

    /// The record was recovered from disk at start (not appended by this run).
    pub fn is_recovered(&self, front: &Front) -> bool {
        front.seq < self.first_fresh_seq
    }

    /// What is remembered of `front`, when this run sealed it.
    fn sealed_front(&self, front: &Front) -> Option<&Sealed> {
        self.sealed.front().filter(|s| (s.seq, s.off) == (front.seq, front.off))
    }

    /// Lines (points) of `front`: a gzip record says; one this run sealed is remembered; else its
    /// newlines are counted.
    pub fn record_lines(&self, front: &Front) -> u64 {
        if front.gzip {
            let count = self.stored_payload(front).get(..GZIP_LINES_LEN).and_then(|c| c.try_into().ok());
            return count.map_or(0, u64::from_le_bytes);
        }
        match self.sealed_front(front) {
            Some(s) => s.lines,
            None => memchr::memchr_iter(b'\n', self.record(front).1).count() as u64,
        }
    }

    /// The payload of `front` gzipped at `level`, when it was compressed at its seal.
    pub fn record_gzip(&self, front: &Front, level: u32) -> Option<&[u8]> {
        self.sealed_front(front)?.gzip.as_ref().filter(|g| g.level == level).map(|g| &g.bytes[..])
    }

    /// Compresses the records sealed since the last call and keeps the result with them (as far as
    /// the worker's budget goes, see `Deflate::keep`). Replicas seal byte-identical batches at the same
    /// moment: called for all of a worker's outboxes right after they sealed, `deflate` compresses
    /// each batch once (its cache serves the other replicas), however far behind one replica's sends
    /// are.
    /// At `level` 0 (no compression) the new records are only marked seen, so that a reload turning
    /// compression on later does not compress the whole backlog at once.
    pub fn gzip_sealed(&mut self, level: u32, deflate: &mut Deflate) {
        let Log { sealed, segments, .. } = self;
        for s in sealed.iter_mut().rev().take_while(|s| !s.considered) {
            s.considered = true;
            if level == 0 || s.stored_gzip {
                continue;
            }
            let segment = segments.iter().rev().find(|g| g.seq == s.seq);
            if let Some(payload) = segment.and_then(|g| g.bytes().get(s.payload.0..s.payload.1)) {
                s.gzip = deflate.keep(level, payload);
            }
        }
    }

    /// Target and payload bytes of `front`; the payload of a gzip record is its gzip members.
    pub fn record(&self, front: &Front) -> (&[u8], &[u8]) {
        let payload = self.stored_payload(front);
        let payload = if front.gzip { payload.get(GZIP_LINES_LEN..).unwrap_or(&[]) } else { payload };
        let target = match self.segments.front() {
            Some(seg) if seg.seq == front.seq => seg.bytes().get(front.target.0..front.target.1),
            _ => None,
        };
        (target.unwrap_or(&[]), payload)
    }

    /// The payload [`Log::record`] gives, with its place in the segment file, for sending it from
    /// the file (see `LentBody`).
    pub fn lent_payload(&self, front: &Front) -> LentBody<'_> {
        let bytes = self.record(front).1;
        let skip = if front.gzip { GZIP_LINES_LEN } else { 0 };
        let file = match self.segments.front() {
            Some(seg) if seg.seq == front.seq && !bytes.is_empty() => {
                Some((seg.file(), (front.payload.0 + skip) as u64))
            }
            _ => None,
        };
        LentBody { bytes, file }
    }

    /// The payload of `front` as stored.
    fn stored_payload(&self, front: &Front) -> &[u8] {
        match self.segments.front() {
            Some(seg) if seg.seq == front.seq => seg.bytes().get(front.payload.0..front.payload.1).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Acknowledges `front` (which must still be the front).
    pub fn ack(&mut self, front: &Front) {
        let Some(seg) = self.segments.front_mut() else {
            return;
        };
        if seg.seq != front.seq || seg.skip_holes(seg.read) != front.off {
            log::error!("acknowledgement for a record that is not the front of {}", self.dir.display());
            return;
        }
        seg.store_acked(front.next);
        seg.release_acked();
        // Also drops what a skipped (damaged) record left at the head.
        while self.sealed.front().is_some_and(|s| (s.seq, s.off) <= (front.seq, front.off)) {
            self.sealed.pop_front();
        }
        let bytes = front.payload_len() as u64;
        self.pending_records = self.pending_records.saturating_sub(1);
        self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
        BackendState::sub(&self.state.backlog_records, 1);
        BackendState::sub(&self.state.backlog_bytes, bytes);
        let exhausted = front.next >= seg.end;
        if exhausted && !self.head_is_tail() {
            self.pop_head();
        }
    }

    /// Deletes the head segment (fully acknowledged).
    fn pop_head(&mut self) {
        if let Some(mut seg) = self.segments.pop_front() {
            if self.writable && self.spares.len() < SPARE_SEGMENTS && seg.size == self.segment_bytes {
                // Kept for a later rotation (see `Segment::recycle`).
                seg.unmap();
                self.spares.push(seg);
                return;
            }
            BackendState::sub(&self.state.disk_bytes, seg.size as u64);
            let path = seg.path.clone();
            drop(seg);
            if let Err(e) = std::fs::remove_file(&path) {
                log::warn!("cannot delete acknowledged segment {}: {e}", path.display());
            }
        }
    }

    /// Removes the directory of a drained, read-only log.
    pub fn remove_if_drained(&mut self) -> bool {
        if self.writable || !self.segments.is_empty() {
            return false;
        }
        let _ = std::fs::remove_dir(&self.dir);
        true
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.seal();
        for seg in self.segments.iter().chain(&self.spares) {
            BackendState::sub(&self.state.disk_bytes, seg.size as u64);
        }
        // Spares hold nothing: their files are not left behind (a removed backend's log is dropped
        // for good, and a restart would delete them anyway).
        for seg in self.spares.drain(..) {
            let path = seg.path.clone();
            drop(seg);
            let _ = std::fs::remove_file(&path);
        }
        BackendState::sub(&self.state.backlog_records, self.pending_records);
        BackendState::sub(&self.state.backlog_bytes, self.pending_bytes);
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    struct Dir(PathBuf);
    impl Dir {
        fn new(name: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("ifxp-log-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn state() -> Arc<BackendState> {
        Arc::new(BackendState::new("b", "http://x"))
    }

    fn open(dir: &Path, seg: usize) -> (Log, Recovery) {
        Log::open(dir, true, seg, u64::MAX, SyncPolicy::Never, state()).unwrap()
    }

    /// Every (target, payload) the log would send, acknowledging as it goes.
    fn drain(log: &mut Log) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Some(f) = log.front() {
            let (t, p) = log.record(&f);
            out.push((String::from_utf8_lossy(t).into_owned(), String::from_utf8_lossy(p).into_owned()));
            log.ack(&f);
        }
        out
    }

    fn line(log: &mut Log, text: &str) {
        log.append(&[text.as_bytes(), b"\n"]).unwrap();
    }

    #[test]
    fn append_seal_send_ack() {
        let d = Dir::new("basic");
        let (mut log, rec) = open(&d.0, 1 << 16);
        assert_eq!(rec.records, 0);
        log.begin(b"db=a").unwrap();
        line(&mut log, "m v=1");
        line(&mut log, "m v=2");
        log.commit();
        assert!(log.front().is_none(), "an open batch is not sent");
        log.seal();
        log.begin(b"db=b").unwrap();
        line(&mut log, "n v=3");
        log.seal();
        assert_eq!(log.pending_records(), 2);
        assert_eq!(drain(&mut log), vec![("db=a".into(), "m v=1\nm v=2\n".into()), ("db=b".into(), "n v=3\n".into())]);
        assert!(log.is_drained());
    }

    #[test]
    fn sealed_records_remember_their_lines_until_acknowledged() {
        let d = Dir::new("lines");
        {
            let (mut log, _) = open(&d.0, 1 << 16);
            log.begin(b"db=a").unwrap();
            line(&mut log, "m v=1");
            line(&mut log, "m v=2");
            log.seal();
            log.copy_record(b"db=b", Whole::new(b"n v=1\nn v=2\nn v=3\n", 3, false)).unwrap();
            let first = log.front().unwrap();
            assert_eq!(log.record_lines(&first), 2);
            log.ack(&first);
            let second = log.front().unwrap();
            assert_eq!(log.record_lines(&second), 3, "a copied record keeps its count, not its appends");
            log.begin(b"db=c").unwrap();
            line(&mut log, "o v=1");
            log.seal();
            std::mem::forget(log);
        }
        // Recovered records were sealed by another run: their newlines are counted.
        let (mut log, _) = open(&d.0, 1 << 16);
        let f = log.front().unwrap();
        assert_eq!(log.record(&f).1, b"n v=1\nn v=2\nn v=3\n");
        assert!(log.sealed_front(&f).is_none());
        assert_eq!(log.record_lines(&f), 3);
    }

    #[test]
    fn a_payload_checksum_serves_every_replica_and_only_its_own_bytes() {
        let (a, b) = (Dir::new("crc-a"), Dir::new("crc-b"));
        let body = b"m v=1 1\nm v=2 2\n";
        let copy = body.to_vec();
        let crc = PayloadCrc::of(Whole::new(body, 2, false));
        {
            let ((mut la, _), (mut lb, _)) = (open(&a.0, 1 << 16), open(&b.0, 1 << 16));
            la.append_record(b"db=a", Whole::new(body, 2, false), Some(&crc)).unwrap();
            lb.append_record(b"db=b", Whole::new(body, 2, false), Some(&crc)).unwrap();
            // Not these bytes (same text elsewhere, another count, or gzip): each log sums its own.
            la.append_record(b"db=a", Whole::new(b"n v=3 3\n", 1, false), Some(&crc)).unwrap();
            la.append_record(b"db=a", Whole::new(&copy, 3, false), Some(&crc)).unwrap();
            la.append_record(b"db=a", Whole::new(body, 2, true), Some(&crc)).unwrap();
            std::mem::forget((la, lb));
        }
        // Recovery checks every record's checksum.
        let ((mut la, ra), (mut lb, rb)) = (open(&a.0, 1 << 16), open(&b.0, 1 << 16));
        assert_eq!(
            (ra.records, ra.cut_bytes, rb.records, rb.cut_bytes),
            (4, 0, 1, 0),
            "{:?} {:?}",
            ra.problems,
            rb.problems
        );
        assert_eq!(drain(&mut lb), vec![("db=b".to_string(), "m v=1 1\nm v=2 2\n".to_string())]);
        assert_eq!(drain(&mut la).len(), 4);
    }

    /// Minor page faults taken by this thread so far.
    fn thread_faults() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `getrusage` writes one `rusage` into the pointer it is given, valid and writable here.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: initialised: zeroed, then filled by the successful call.
        unsafe { usage.assume_init() }.ru_minflt
    }

    #[test]
    fn whole_records_are_stored_without_faulting_in_the_mapping() {
        // Header, payload and commit word all go through the file. A store into the mapping would
        // fault in, for writing, the page the last record's `pwrite` ended on: once per record.
        let d = Dir::new("no-faults");
        let body = b"cpu,host=a usage=1.5 1700000000000000000\n".repeat(1000);
        {
            let (mut log, _) = open(&d.0, 8 << 20);
            log.append_record(b"db=a", Whole::new(&body, 1000, false), None).unwrap();
            let before = thread_faults();
            for _ in 0..50 {
                log.append_record(b"db=a", Whole::new(&body, 1000, false), None).unwrap();
            }
            let faults = thread_faults() - before;
            assert!(faults < 10, "{faults} page faults for 50 records");
            std::mem::forget(log);
        }
        let (mut log, rec) = open(&d.0, 8 << 20);
        assert_eq!((rec.records, rec.cut_bytes), (51, 0), "{:?}", rec.problems);
        let sent = drain(&mut log);
        assert!(sent.len() == 51 && sent.iter().all(|(t, p)| t == "db=a" && p.as_bytes() == body));
    }

    #[test]
    fn a_whole_record_cut_short_by_a_kill_is_not_recovered() {
        // A kill after the header and target (1), after the payload but before the commit word (2), in a
        // file whose bytes further on are not zero (a recycled file's previous life): recovery keeps the
        // record before, and cuts exactly what was written of the unfinished one.
        let body = b"m v=1 1\nm v=2 2\n";
        for (case, stop_after_payload) in [("header", false), ("payload", true)] {
            let d = Dir::new(&format!("cut-whole-{case}"));
            {
                let (mut log, _) = open(&d.0, 1 << 16);
                log.append_record(b"db=a", Whole::new(body, 2, false), None).unwrap();
                let tail = log.segments.back_mut().unwrap();
                let end = tail.end;
                tail.write_at(&[0x5a; 4096], end + TERMINATOR).unwrap();
                log.begin_flagged(b"db=b", 0, true).unwrap();
                if stop_after_payload {
                    let sum = PayloadCrc::of(Whole::new(body, 2, false)).crc;
                    log.write_in(&[body], body.len(), &sum).unwrap();
                }
                std::mem::forget(log);
            }
            let (mut log, rec) = open(&d.0, 1 << 16);
            let written = RECORD_HEADER + 4 + if stop_after_payload { body.len() } else { 0 };
            assert_eq!((rec.records, rec.cut_bytes), (1, written as u64), "{case}: {:?}", rec.problems);
            assert_eq!(drain(&mut log), vec![("db=a".to_string(), String::from_utf8_lossy(body).into_owned())]);
        }
    }

    #[test]
    fn gzip_records_keep_their_members_and_line_count_through_recovery_and_copies() {
        let d = Dir::new("gzip-rec");
        let members = b"\x1f\x8b not checked here";
        {
            let (mut log, _) = open(&d.0, 1 << 16);
            log.begin(b"db=a").unwrap();
            line(&mut log, "m v=1 1");
            log.append_record(b"db=a", Whole::new(members, 2000, true), None).unwrap();
            log.append_record(b"db=a", Whole::new(b"m v=2 2\nm v=3 3\n", 2, false), None).unwrap();
            assert!(log.open_record().is_none(), "a whole record is sealed at once");
            let mut deflate = Deflate::default();
            log.gzip_sealed(1, &mut deflate);
            let first = log.front().unwrap();
            assert!(!first.is_gzip() && log.record_gzip(&first, 1).is_some(), "the batch before is compressed");
            log.ack(&first);
            let gz = log.front().unwrap();
            assert!(gz.is_gzip());
            assert_eq!(log.record(&gz), (&b"db=a"[..], &members[..]));
            assert_eq!(log.record_lines(&gz), 2000);
            assert_eq!(log.record_gzip(&gz, 1), None, "never compressed again");
            std::mem::forget(log);
        }
        let (mut log, rec) = open(&d.0, 1 << 16);
        assert_eq!((rec.records, rec.cut_bytes), (2, 0), "{:?}", rec.problems);
        let gz = log.front().unwrap();
        assert!(gz.is_gzip(), "the flag is read back");
        assert_eq!(log.record(&gz).1, members);
        assert_eq!(log.record_lines(&gz), 2000);
        let p = Dir::new("gzip-rec-parked");
        let (mut parked, _) = open(&p.0, 1 << 16);
        let (target, payload) = log.record(&gz);
        parked.copy_record(target, Whole::new(payload, log.record_lines(&gz), gz.is_gzip())).unwrap();
        let copy = parked.front().unwrap();
        assert!(copy.is_gzip());
        assert_eq!((parked.record(&copy).1, parked.record_lines(&copy)), (&members[..], 2000));
        log.ack(&gz);
        let plain = log.front().unwrap();
        assert!(!plain.is_gzip());
        assert_eq!(log.record(&plain).1, b"m v=2 2\nm v=3 3\n");
    }

    #[test]
    fn replicas_sealing_the_same_batch_compress_it_once() {
        let (da, db) = (Dir::new("gz-a"), Dir::new("gz-b"));
        let (mut a, _) = open(&da.0, 1 << 16);
        let (mut b, _) = open(&db.0, 1 << 16);
        let mut deflate = Deflate::default();
        for log in [&mut a, &mut b] {
            log.begin(b"db=x").unwrap();
            for i in 0..100 {
                line(log, &format!("m v={i} {i}"));
            }
            log.seal();
        }
        a.gzip_sealed(1, &mut deflate);
        b.gzip_sealed(1, &mut deflate);
        let (fa, fb) = (a.front().unwrap(), b.front().unwrap());
        let (ga, gb) = (a.record_gzip(&fa, 1).unwrap(), b.record_gzip(&fb, 1).unwrap());
        assert_eq!(ga.as_ptr(), gb.as_ptr(), "one compression serves both replicas");
        let mut plain = Vec::new();
        crate::gunzip::Gunzip::new().decompress(ga, 1 << 20, &mut plain).unwrap();
        assert_eq!(plain, a.record(&fa).1);
        assert_eq!(a.record_gzip(&fa, 6), None, "another level is compressed when sent");
        // Later seals are compressed by a later call; what was compressed is not compressed again.
        a.begin(b"db=x").unwrap();
        line(&mut a, "m v=1 1");
        a.seal();
        a.gzip_sealed(1, &mut deflate);
        a.ack(&fa);
        let next = a.front().unwrap();
        assert!(a.record_gzip(&next, 1).is_some());
    }

    #[test]
    fn uncommitted_lines_are_not_recovered() {
        let d = Dir::new("commit");
        {
            let (mut log, _) = open(&d.0, 1 << 16);
            log.begin(b"db=a").unwrap();
            line(&mut log, "kept v=1");
            log.commit();
            line(&mut log, "kept v=3");
            log.commit();
            line(&mut log, "never committed v=4");
            // Simulated crash: forget the log without sealing it.
            std::mem::forget(log);
        }
        let (mut log, rec) = open(&d.0, 1 << 16);
        assert_eq!(rec.records, 1);
        assert!(rec.cut_bytes > 0, "the uncommitted line is a torn tail");
        assert_eq!(drain(&mut log), vec![("db=a".into(), "kept v=1\nkept v=3\n".into())]);
    }

    #[test]
    fn rotation_keeps_order_and_deletes_acked_segments() {
        let d = Dir::new("rotate");
        let seg = HEADER_LEN + 4096;
        let (mut log, _) = open(&d.0, seg);
        let st = log.state.clone();
        let mut want = Vec::new();
        log.begin(b"db=a").unwrap();
        for i in 0..5000 {
            let l = format!("m v={i}");
            line(&mut log, &l);
            want.push(l);
            if i % 37 == 0 {
                log.commit();
            }
        }
        log.seal();
        let segments = log.segment_count();
        assert!(segments > SPARE_SEGMENTS + 2, "{segments}");
        let files = || std::fs::read_dir(&d.0).unwrap().count();
        let before = files();
        let got: Vec<String> =
            drain(&mut log).into_iter().flat_map(|(_, p)| p.lines().map(String::from).collect::<Vec<_>>()).collect();
        assert_eq!(got, want);
        assert!(files() < before);
        assert_eq!(log.segment_count(), 1, "only the tail remains");
        assert_eq!(st.backlog_records.load(Relaxed), 0);
        assert_eq!(files(), 1 + SPARE_SEGMENTS, "the tail and the spares");
        assert_eq!(st.disk_bytes.load(Relaxed), (1 + SPARE_SEGMENTS) as u64 * seg as u64);
        drop(log);
        assert_eq!(files(), 1, "spares are deleted with their log; the tail stays");
        assert_eq!(st.disk_bytes.load(Relaxed), 0);
    }

    #[test]
    fn a_line_bigger_than_a_segment_gets_its_own() {
        let d = Dir::new("big");
        let (mut log, _) = open(&d.0, HEADER_LEN + 4096);
        let big = "x".repeat(100_000);
        log.begin(b"db=a").unwrap();
        line(&mut log, "small v=1");
        line(&mut log, &big);
        line(&mut log, "small v=2");
        log.seal();
        let payloads: String = drain(&mut log).into_iter().map(|(_, p)| p).collect();
        assert_eq!(payloads, format!("small v=1\n{big}\nsmall v=2\n"));
    }

    #[test]
    fn disk_limit_refuses_new_segments() {
        let d = Dir::new("cap");
        let seg = HEADER_LEN + 4096;
        let (mut log, _) = Log::open(&d.0, true, seg, 2 * seg as u64, SyncPolicy::Never, state()).unwrap();
        let fill = |log: &mut Log| {
            log.begin(b"db=a").unwrap();
            let mut refused = 0;
            for i in 0..3000 {
                if log.append(&[format!("m v={i}\n").as_bytes()]).is_err() {
                    refused += 1;
                    if log.open_record().is_none() && log.begin(b"db=a").is_err() {
                        continue;
                    }
                }
            }
            log.seal();
            refused
        };
        assert!(fill(&mut log) > 0);
        assert!(log.segment_count() <= 2);
        // Acknowledging frees space: appends work again.
        drain(&mut log);
        log.begin(b"db=a").unwrap();
        line(&mut log, "again v=1");
        log.seal();
        assert_eq!(drain(&mut log).len(), 1);
        // Emptied segments kept for reuse are new room too: the cap applies to them as well.
        log.max_disk = u64::MAX;
        assert_eq!(fill(&mut log), 0);
        drain(&mut log);
        assert_eq!(log.spares.len(), SPARE_SEGMENTS);
        log.max_disk = 2 * seg as u64;
        assert!(fill(&mut log) > 0);
        assert!(log.segment_count() <= 2, "{}", log.segment_count());
    }

    #[test]
    fn recovered_segments_are_read_only_and_acks_survive() {
        let d = Dir::new("reopen");
        {
            let (mut log, _) = open(&d.0, 1 << 16);
            for i in 0..5 {
                log.begin(b"db=a").unwrap();
                line(&mut log, &format!("m v={i}"));
                log.seal();
            }
            let f = log.front().unwrap();
            log.ack(&f);
        }
        let (mut log, rec) = open(&d.0, 1 << 16);
        assert_eq!(rec.records, 4);
        log.begin(b"db=b").unwrap();
        line(&mut log, "new v=9");
        log.seal();
        let got = drain(&mut log);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].1, "m v=1\n");
        assert_eq!(got[4], ("db=b".into(), "new v=9\n".into()));
        drop(log);
        let (_, rec) = open(&d.0, 1 << 16);
        assert_eq!(rec.records, 0);
    }

    #[test]
    fn a_recycled_segment_never_replays_its_old_records() {
        let d = Dir::new("recycle");
        let seg = HEADER_LEN + 4096;
        let old: Vec<String> = (0..300).map(|i| format!("old{i:03} v={i}")).collect();
        {
            let (mut log, _) = open(&d.0, seg);
            for l in &old {
                log.begin(b"db=a").unwrap();
                line(&mut log, l);
                log.seal();
            }
            assert_eq!(drain(&mut log).len(), old.len());
            // The emptied head became the spare; the next rotations reuse files full of old records.
            for i in 0..120 {
                log.begin(b"db=a").unwrap();
                line(&mut log, &format!("new{i:03} v={i}"));
                log.seal();
            }
            std::mem::forget(log);
        }
        let (mut log, rec) = open(&d.0, seg);
        let got: Vec<String> = drain(&mut log).into_iter().map(|(_, p)| p).collect();
        let want: Vec<String> = (0..120).map(|i| format!("new{i:03} v={i}\n")).collect();
        assert_eq!(got, want);
        assert_eq!(rec.cut_bytes, 0, "{:?}", rec.problems);
    }

    /// A tiny deterministic generator (no dependency needed for property tests).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        let _ = std::fs::remove_dir_all(to);
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }

    /// kill -9 at random moments: the files at any instant (every store is in the shared mapping at
    /// once) must recover to exactly the committed, unacknowledged lines, in order.
    #[test]
    fn random_crash_points_lose_nothing_committed() {
        for seed in 1..=12u64 {
            let d = Dir::new(&format!("crash{seed}"));
            let snap = Dir::new(&format!("crash{seed}-snap"));
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let (mut log, _) = open(&d.0, HEADER_LEN + 2048);
            // Model: committed lines not yet acknowledged, in order.
            let mut committed: Vec<String> = Vec::new();
            let mut uncommitted: Vec<String> = Vec::new();
            let mut acked = 0usize;
            let mut n = 0;
            for _step in 0..400 {
                match rng.below(10) {
                    0..=4 => {
                        if log.open_record().is_none() {
                            log.begin(b"db=t").unwrap();
                        }
                        let l = format!("m v={n}");
                        n += 1;
                        line(&mut log, &l);
                        uncommitted.push(l);
                    }
                    5 | 6 => {
                        log.commit();
                        committed.append(&mut uncommitted);
                    }
                    7 => {
                        log.seal();
                        committed.append(&mut uncommitted);
                    }
                    8 => {
                        if let Some(f) = log.front() {
                            let lines = log.record(&f).1.iter().filter(|&&b| b == b'\n').count();
                            log.ack(&f);
                            acked += lines;
                        }
                    }
                    _ => {
                        // Crash here: snapshot the files and recover from the copy.
                        copy_dir(&d.0, &snap.0);
                        let (mut rec_log, rec) = open(&snap.0, HEADER_LEN + 2048);
                        let got: Vec<String> = drain(&mut rec_log)
                            .into_iter()
                            .flat_map(|(_, p)| p.lines().map(String::from).collect::<Vec<_>>())
                            .collect();
                        assert_eq!(got, committed[acked..].to_vec(), "seed {seed}: {:?}", rec.problems);
                    }
                }
            }
            std::mem::forget(log);
        }
    }

    /// Damage anywhere (truncation, flipped bytes) never panics recovery and never yields a record that
    /// was not written: everything recovered is a whole, committed record.
    #[test]
    fn random_damage_is_cut_not_replayed() {
        let d = Dir::new("damage-src");
        let mut written = Vec::new();
        {
            let (mut log, _) = open(&d.0, 1 << 16);
            for i in 0..200 {
                log.begin(b"db=t").unwrap();
                let l = format!("rec{i} v={i}");
                line(&mut log, &l);
                log.seal();
                written.push(format!("{l}\n"));
            }
        }
        let file = std::fs::read_dir(&d.0).unwrap().flatten().next().unwrap().path();
        let original = std::fs::read(&file).unwrap();
        let mut rng = Rng(7);
        for round in 0..60 {
            let snap = Dir::new(&format!("damage-{round}"));
            std::fs::create_dir_all(&snap.0).unwrap();
            let mut bytes = original.clone();
            let used = original.iter().rposition(|&b| b != 0).unwrap() + 1;
            if round % 2 == 0 {
                bytes.truncate(HEADER_LEN + rng.below((used - HEADER_LEN) as u64) as usize);
            } else {
                for _ in 0..=rng.below(3) {
                    let at = HEADER_LEN + rng.below((used - HEADER_LEN) as u64) as usize;
                    bytes[at] ^= 1 << rng.below(8);
                }
            }
            std::fs::write(snap.0.join(file.file_name().unwrap()), &bytes).unwrap();
            let (mut log, _) = open(&snap.0, 1 << 16);
            let got: Vec<String> = drain(&mut log).into_iter().map(|(_, p)| p).collect();
            let mut it = written.iter();
            for g in &got {
                assert!(it.any(|w| w == g), "round {round}: recovered {g:?} is not a written record, or out of order");
            }
            if round % 2 == 0 {
                // A truncation keeps every record before the cut.
                let kept = written.iter().take_while(|w| got.contains(w)).count();
                assert_eq!(kept, got.len());
            } else {
                // Flipped bytes cost at most the records they hit (and their neighbours' padding).
                assert!(got.len() >= written.len() - 4 * 2, "round {round}: only {} recovered", got.len());
            }
        }
    }
}
