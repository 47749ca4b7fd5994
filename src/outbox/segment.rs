//! One segment file of an outbox log: a fixed-size, preallocated, memory-mapped file of framed records.
//!
//! ```text
//! segment: [header 64 B][record][record]...[record being filled][zeros: terminator][stale bytes]
//! header:  magic "IFXPSEG1" | seq u64 | acked u64 | created unix ms u64 | reserved
//! record:  magic u32 | target_len u16 | flags u8 | 0 u8 | commit u64 | target | payload | pad to 8
//!          commit = crc32(seq ++ flags if not 0 ++ target ++ payload) << 32 | payload_len
//! flags:   0: payload = lines of line protocol;
//!          1 (`FLAG_GZIP`): payload = line count u64 ++ gzip members (a body stored whole: the
//!          client's own gzip, or the body compressed when stored)
//! ```
//!
//! Logs written before `FLAG_GZIP` existed hold only flag-0 records and read the same; a binary from
//! before it calls a gzip record damaged (it keeps a `.damaged` copy of the file and skips the record).
//!
//! Crash safety rests on two single, aligned 8-byte writes: `commit` makes a record's bytes (up to
//! `payload_len`) valid, `acked` moves the acknowledged position. Payload bytes are always stored before
//! the commit that covers them (release ordering for stores into the mapping; a whole record's header,
//! payload and then commit word are written with `pwrite`, each call returning before the next), so a
//! process killed at any instruction leaves either the old or the new commit word, each consistent with
//! the bytes it covers. The mapping is `MAP_SHARED`: stores land in the page cache (as do `pwrite`s) and survive the
//! process. Power loss is what `--sync` is for.
//!
//! Files are written full of zeros when created, so a full disk shows up as an error when a segment is
//! created, never as SIGBUS on a store into a sparse page; it also makes first stores into the mapping
//! cheap (no block allocation per page fault). Fully acknowledged files are recycled without zeroing:
//! the sequence number in every record's checksum makes a stale record of a file's previous life
//! invalid, and every append leaves `TERMINATOR` zero bytes after the last byte written, so the records
//! of this life end at a zero slot and the stale bytes beyond it are never mistaken for a torn write.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapMut, MmapOptions, UncheckedAdvice};

pub const SEGMENT_MAGIC: &[u8; 8] = b"IFXPSEG1";
pub const HEADER_LEN: usize = 64;
const ACKED_AT: usize = 16;
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"RECD");
pub const RECORD_HEADER: usize = 16;
/// Record flag: the payload is a line count and gzip members (see the module comment).
pub const FLAG_GZIP: u8 = 1;
/// Bytes of a gzip record's payload before its members: the count of lines they hold.
pub const GZIP_LINES_LEN: usize = 8;
/// Zero bytes kept after the last byte written: they cover the padding and the next record header.
pub const TERMINATOR: usize = 24;
const COMMIT_AT: usize = 8;
const PAGE: usize = 4096;
/// Acknowledged bytes given back to the kernel at once. Each `madvise` interrupts the other cores
/// to flush their TLBs; a call per acknowledged batch cost 3.5% of the proxy's CPU under load.
const RELEASE_STEP: usize = 2 << 20;

pub fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Bytes a record with this target and payload occupies.
pub fn record_len(target_len: usize, payload_len: usize) -> usize {
    align8(RECORD_HEADER + target_len + payload_len)
}

pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:016x}.log")
}

pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".log")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// What is at an offset of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A valid record: target and payload byte ranges, where the next record starts, and whether
    /// the payload is a gzip record's (line count and members).
    Record { target: (usize, usize), payload: (usize, usize), next: usize, gzip: bool },
    /// Zeros, or a record header with nothing committed: the end of the records.
    End,
    /// Bytes that are not a valid record.
    Damaged(&'static str),
}

/// The checksum of a record: its segment's sequence number, its flags (when not 0, so that records
/// without flags keep the checksum they always had), target and payload.
pub fn record_crc(seq: u64, flags: u8) -> crc32fast::Hasher {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    if flags != 0 {
        h.update(&[flags]);
    }
    h
}

/// Reads the slot at `off` of the bytes of segment `seq`.
pub fn read_slot(buf: &[u8], off: usize, seq: u64) -> Slot {
    read_slot_checked(buf, off, seq, true)
}

/// [`read_slot`], checking the checksum only if `verify`: a record this process wrote is known good (the
/// commit word covers exactly what was stored), and checking it again would read every payload byte
/// once more on each send.
pub fn read_slot_checked(buf: &[u8], off: usize, seq: u64, verify: bool) -> Slot {
    let Some(header) = buf.get(off..off + RECORD_HEADER) else {
        return Slot::End;
    };
    let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let target_len = usize::from(u16::from_le_bytes([header[4], header[5]]));
    let commit = u64::from_le_bytes(header[8..16].try_into().unwrap_or([0; 8]));
    if magic == 0 {
        return if header.iter().all(|&b| b == 0) { Slot::End } else { Slot::Damaged("bad record header") };
    }
    let flags = header[6];
    if magic != RECORD_MAGIC || flags & !FLAG_GZIP != 0 || header[7] != 0 {
        return Slot::Damaged("bad record header");
    }
    let payload_len = (commit & 0xffff_ffff) as usize;
    if payload_len == 0 {
        // A record was begun but no request finished appending to it.
        return Slot::End;
    }
    let target = off + RECORD_HEADER;
    let payload = target + target_len;
    let end = payload + payload_len;
    let Some(bytes) = buf.get(target..end) else {
        return Slot::Damaged("record runs past the end of the file");
    };
    let gzip = flags & FLAG_GZIP != 0;
    if gzip && payload_len < GZIP_LINES_LEN {
        return Slot::Damaged("gzip record without its line count");
    }
    if verify {
        let mut crc = record_crc(seq, flags);
        crc.update(bytes);
        if crc.finalize() != (commit >> 32) as u32 {
            return Slot::Damaged("checksum mismatch");
        }
    }
    Slot::Record { target: (target, payload), payload: (payload, end), next: align8(end), gzip }
}

pub struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    file: File,
    map: Option<MmapMut>,
    /// File size.
    pub size: usize,
    /// End of the records (the append position of the tail).
    pub end: usize,
    /// Next record to send; mirrors the header's `acked`.
    pub read: usize,
    /// Damaged byte ranges found by recovery, skipped when reading.
    pub holes: Vec<(usize, usize)>,
    /// Start of the pages already given back to the kernel (see [`Segment::release_acked`]).
    released: usize,
    /// Every record was written by this process: reading them back needs no checksum (see
    /// [`read_slot_checked`]). False for recovered segments. Dropping the mapping changes nothing:
    /// mapped or not, the bytes are the file's page cache, which the kernel may write back and read
    /// again at any time, and no one else writes the file (see `map`). Checking again cost 2-4% of the
    /// proxy's CPU under load, where the sender is often a segment behind (and unmapped ones are
    /// mapped again to be sent).
    trusted: bool,
}

impl Segment {
    /// Creates, preallocates and maps a new segment.
    pub fn create(dir: &Path, seq: u64, size: usize) -> io::Result<Segment> {
        let path = dir.join(segment_file_name(seq));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        let mut seg = Segment {
            seq,
            path,
            file,
            map: None,
            size,
            end: HEADER_LEN,
            read: HEADER_LEN,
            holes: Vec::new(),
            released: HEADER_LEN,
            trusted: true,
        };
        if let Err(e) = seg.zero_fill(size).and_then(|()| seg.map()) {
            let _ = std::fs::remove_file(&seg.path);
            return Err(e);
        }
        seg.write_header();
        Ok(seg)
    }

    /// Makes a fully acknowledged segment the new segment `seq`: renamed, fresh header, first slot
    /// zeroed (older bytes stay; see the module doc for why they are harmless). Reusing
    /// files is much cheaper than creating them: their blocks are allocated and their pages cached, while
    /// a new file costs a block allocation per page on first touch.
    pub fn recycle(mut self, dir: &Path, seq: u64) -> io::Result<Segment> {
        self.map()?;
        // Invalidate the old header and first slot before the rename: a crash in between leaves a
        // header recovery deletes, never the old life's records under the new name.
        self.bytes_mut()[..HEADER_LEN].fill(0);
        self.terminate(HEADER_LEN);
        let path = dir.join(segment_file_name(seq));
        std::fs::rename(&self.path, &path)?;
        self.path = path;
        self.seq = seq;
        self.end = HEADER_LEN;
        self.read = HEADER_LEN;
        self.holes.clear();
        // Records of the old life beyond `end` are never read (`slot_at` stops at `end`); the new ones
        // are written over them (through this mapping, or through the file for whole records).
        self.trusted = true;
        self.write_header();
        Ok(self)
    }

    /// Zeroes the `TERMINATOR` bytes at `at` (fewer at the end of the file).
    #[inline]
    pub fn terminate(&mut self, at: usize) {
        let b = self.bytes_mut();
        // Called for every line: a fixed-size store compiles to a few moves, a variable-length fill to a
        // call to memset.
        if let Some(t) = b.get_mut(at..at + TERMINATOR) {
            t.copy_from_slice(&[0; TERMINATOR]);
            return;
        }
        let end = (at + TERMINATOR).min(b.len());
        if at < end {
            b[at..end].fill(0);
        }
    }

    /// Writes `bytes` at `at` through the file instead of the mapping. The kernel copies them straight
    /// into the page cache, which the mapping shares, so they show in it at once, and no page of the
    /// mapping is faulted in for them: storing a large body through the mapping cost a fault per 4 KiB
    /// page first touched, half of the store's time. `&mut self`: no reference into the mapping is
    /// live meanwhile.
    pub fn write_at(&mut self, bytes: &[u8], at: usize) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if at.checked_add(bytes.len()).is_none_or(|end| end > self.size) {
            return Err(io::Error::other("write past the end of the segment"));
        }
        self.file.write_all_at(bytes, at as u64)
    }

    /// [`Segment::terminate`] through the file (see [`Segment::write_at`]).
    pub fn write_terminator(&mut self, at: usize) -> io::Result<()> {
        let end = (at + TERMINATOR).min(self.size);
        if at >= end {
            return Ok(());
        }
        self.write_at(&[0; TERMINATOR][..end - at], at)
    }

    /// Writes zeros over the first `len` bytes with plain writes: blocks get allocated in bulk (and a
    /// full disk is an error here, never a SIGBUS on a store into the mapping later).
    fn zero_fill(&mut self, len: usize) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let mut off = 0;
        while off < len {
            let n = (len - off).min(ZEROS.len());
            self.file.write_all_at(&ZEROS[..n], off as u64)?;
            off += n;
        }
        Ok(())
    }

    fn write_header(&mut self) {
        let seq = self.seq;
        let map = self.bytes_mut();
        if map.len() < HEADER_LEN {
            return;
        }
        map[8..16].copy_from_slice(&seq.to_le_bytes());
        map[ACKED_AT..ACKED_AT + 8].copy_from_slice(&(HEADER_LEN as u64).to_le_bytes());
        let now = crate::upstream::unix_ms(std::time::SystemTime::now());
        map[24..32].copy_from_slice(&now.to_le_bytes());
        // The magic goes last: a header with a magic is complete.
        map[..8].copy_from_slice(SEGMENT_MAGIC);
    }

    /// Opens an existing segment for recovery (mapped).
    pub fn open(path: &Path, seq: u64) -> io::Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let size = usize::try_from(file.metadata()?.len()).map_err(|_| io::Error::other("segment too large"))?;
        let mut seg = Segment {
            seq,
            path: path.to_path_buf(),
            file,
            map: None,
            size,
            end: HEADER_LEN,
            read: HEADER_LEN,
            holes: Vec::new(),
            released: HEADER_LEN,
            trusted: false,
        };
        seg.map()?;
        Ok(seg)
    }

    pub fn map(&mut self) -> io::Result<()> {
        if self.map.is_none() && self.size > 0 {
            // SAFETY: mapping a file is unsafe because its bytes may change, or vanish (truncation:
            // SIGBUS on access), behind the program's back. Only this `Segment` changes a segment file
            // while it is mapped: through the mapping, or through the file with `write_at`, which needs
            // `&mut self` (so no reference into the mapping lives across it) and never writes past the
            // end. Nothing else does: the file lives in the data directory on which
            // `run::lock_data_dir` holds an exclusive flock, so no other influx-proxy opens it; in this
            // process only this `Segment` has it open (a worker has one outbox per backend identity,
            // each with its own `w<N>` directory, see `Outbox::open`; tests use private directories),
            // and no code ever shrinks a segment (recovery renames or deletes whole files after
            // dropping their mapping). The mapping is `size` bytes, the file's own length (zero-filled
            // to `size` in `create`, read from its metadata in `open`), so every mapped page has file
            // bytes behind it.
            self.map = Some(unsafe { MmapOptions::new().len(self.size).map_mut(&self.file)? });
            self.released = HEADER_LEN;
        }
        Ok(())
    }

    /// Drops the mapping of a segment that is neither being read nor appended to.
    pub fn unmap(&mut self) {
        self.map = None;
    }

    /// The segment's file, for sending records from it (`sendfile`).
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or(&mut [])
    }

    /// The 8-byte word at `at` of the mapping, for one store that cannot tear: a process killed at any
    /// instruction leaves the old or the new value in the file, never a mix (see the module doc).
    /// `None` if the word is not inside the mapping or not 8-aligned.
    fn word_mut(&mut self, at: usize) -> Option<&AtomicU64> {
        let map = self.map.as_mut()?;
        if at.checked_add(8).is_none_or(|end| end > map.len()) {
            return None;
        }
        // In bounds (checked above): `add` stays inside the mapping.
        let word = map.as_mut_ptr().wrapping_add(at).cast::<u64>();
        if !word.cast::<AtomicU64>().is_aligned() {
            return None;
        }
        // SAFETY: `AtomicU64::from_ptr` needs a pointer that is aligned, valid for reads and writes
        // for the returned lifetime, and not accessed non-atomically meanwhile.
        // * Aligned: checked just above.
        // * Valid: the 8 bytes lie inside the mapping (checked above), which is mapped read-write and
        //   whose pages all have file bytes behind them (see `map`); the pointer comes from
        //   `&mut MmapMut`, so it carries write permission.
        // * Not aliased: the returned reference borrows `self` mutably, so for as long as it lives no
        //   other reference into the mapping can exist in this process (`bytes`, `bytes_mut` and the
        //   mapping itself are only reachable through `self`), and no other process writes the file
        //   (see `map`). It is used for one store and dropped.
        Some(unsafe { AtomicU64::from_ptr(word) })
    }

    /// The header's checks: magic and sequence number. `Ok(false)`: an all-zero header (a segment whose
    /// creation was interrupted; it never held records).
    pub fn header_ok(&self) -> Result<bool, &'static str> {
        let b = self.bytes();
        let Some(h) = b.get(..HEADER_LEN) else {
            return if b.iter().all(|&x| x == 0) { Ok(false) } else { Err("file shorter than a header") };
        };
        if h.iter().all(|&x| x == 0) {
            return Ok(false);
        }
        if &h[..8] != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        if h[8..16] != self.seq.to_le_bytes() {
            return Err("sequence number does not match the file name");
        }
        Ok(true)
    }

    /// The header's acknowledged position. A plain read is enough: the word is only stored through
    /// `word_mut`, which needs `&mut self`, and a load cannot be torn by a crash the way a store can.
    pub fn stored_acked(&self) -> usize {
        self.bytes()
            .get(ACKED_AT..ACKED_AT + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(HEADER_LEN, |w| u64::from_le_bytes(w) as usize)
    }

    /// Moves the acknowledged position; one aligned store.
    pub fn store_acked(&mut self, off: usize) {
        self.read = off;
        if let Some(w) = self.word_mut(ACKED_AT) {
            w.store((off as u64).to_le(), Ordering::Release);
        }
    }

    /// Publishes `payload_len` bytes of the record at `off` with their checksum; one aligned store.
    /// Release ordering keeps the payload stores before it, so the commit never covers bytes that are
    /// not written yet.
    pub fn store_commit(&mut self, off: usize, payload_len: usize, crc: u32) {
        if let Some(w) = self.word_mut(off + COMMIT_AT) {
            w.store((u64::from(crc) << 32 | payload_len as u64).to_le(), Ordering::Release);
        }
    }

    /// [`Segment::store_commit`] through the file (see [`Segment::write_at`]): the same eight bytes, at
    /// the same aligned place, copied into the page cache by one `pwrite`.
    pub fn write_commit(&mut self, off: usize, payload_len: usize, crc: u32) -> io::Result<()> {
        self.write_at(&(u64::from(crc) << 32 | payload_len as u64).to_le_bytes(), off + COMMIT_AT)
    }

    /// Gives acknowledged pages back to the kernel once [`RELEASE_STEP`] of them have gathered: they
    /// stay in the file and the page cache, but no longer count in this process's resident memory.
    pub fn release_acked(&mut self) {
        let upto = self.read / PAGE * PAGE;
        if upto >= self.released + RELEASE_STEP
            && let Some(map) = &self.map
            && upto <= map.len()
        {
            // SAFETY: `unchecked_advise_range` is unsafe because some advice changes what memory
            // holds. MADV_DONTNEED on a `MAP_SHARED` file mapping does not: it drops this process's
            // page-table entries and the next access reads the same bytes back from the page cache /
            // file. The range [released, upto) lies inside this mapping (`upto <= map.len()` checked
            // above; memmap2 rounds the start down to its page, which stays inside the page-aligned
            // mapping), so no other memory of the process is touched, and `&mut self` means no
            // reference into the mapping is live across the call.
            let _ =
                unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, self.released, upto - self.released) };
            self.released = upto;
        }
    }

    /// Forces `[from, to)` to disk (msync), for `--sync`.
    pub fn sync_range(&self, from: usize, to: usize) -> io::Result<()> {
        match &self.map {
            Some(map) if to > from => map.flush_range(from, to - from),
            _ => Ok(()),
        }
    }

    /// `off`, or the end of the recovery hole starting there.
    pub fn skip_holes(&self, mut off: usize) -> usize {
        for &(start, end) in &self.holes {
            if off == start {
                off = end;
            }
        }
        off
    }

    /// The slot at `off`, skipping recovery holes.
    pub fn slot_at(&self, off: usize) -> (usize, Slot) {
        let off = self.skip_holes(off);
        if off >= self.end {
            return (off, Slot::End);
        }
        (off, read_slot_checked(self.bytes(), off, self.seq, !self.trusted))
    }
}

/// What recovery found in one segment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub records: u64,
    pub payload_bytes: u64,
    /// (offset, length, reason) of every damaged range between valid records.
    pub damage: Vec<(usize, usize, &'static str)>,
    /// Bytes after the last valid record that are not zeros: a write that was under way when the
    /// process stopped (never acknowledged to its client), or damage at the very end.
    pub torn_tail: usize,
}

/// Finds the records of a recovered segment from its acknowledged position on, and sets `end`, `read`
/// and `holes`. A damaged record is skipped by searching for the next valid one, so one flipped byte
/// costs one record, not the rest of the segment.
pub fn scan(seg: &mut Segment) -> ScanReport {
    let mut report = ScanReport::default();
    let len = seg.size;
    let mut acked = seg.stored_acked();
    if acked < HEADER_LEN || acked > len || !acked.is_multiple_of(8) {
        report.damage.push((ACKED_AT, 8, "bad acknowledged position; resending the whole segment"));
        acked = HEADER_LEN;
    }
    let seq = seg.seq;
    let buf = seg.bytes();
    let mut off = acked;
    let mut holes = Vec::new();
    loop {
        let slot = read_slot(buf, off, seq);
        if let Slot::Record { payload, next, .. } = slot {
            report.records += 1;
            report.payload_bytes += (payload.1 - payload.0) as u64;
            off = next;
            continue;
        }
        if let Slot::Damaged(reason) = slot
            && let Some(q) = (off + 8..len).step_by(8).find(|&q| matches!(read_slot(buf, q, seq), Slot::Record { .. }))
        {
            report.damage.push((off, q - off, reason));
            holes.push((off, q));
            off = q;
            continue;
        }
        // Up to the terminator: what lies beyond are stale bytes of a recycled file's previous life.
        let rest = buf.get(off..).unwrap_or(&[]);
        let written = rest.windows(16).position(|w| w.iter().all(|&b| b == 0)).unwrap_or(rest.len());
        report.torn_tail = rest[..written].iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        break;
    }
    seg.end = off;
    seg.read = acked;
    seg.holes = holes;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn write_record(seg: &mut Segment, off: usize, target: &[u8], payload: &[u8]) -> usize {
        let b = seg.bytes_mut();
        b[off..off + 4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        b[off + 4..off + 6].copy_from_slice(&(target.len() as u16).to_le_bytes());
        let t = off + RECORD_HEADER;
        b[t..t + target.len()].copy_from_slice(target);
        b[t + target.len()..t + target.len() + payload.len()].copy_from_slice(payload);
        let mut h = record_crc(seg.seq, 0);
        h.update(target);
        h.update(payload);
        seg.store_commit(off, payload.len(), h.finalize());
        off + record_len(target.len(), payload.len())
    }

    #[test]
    fn names() {
        assert_eq!(segment_file_name(0x2a), "000000000000002a.log");
        assert_eq!(parse_segment_file_name("000000000000002a.log"), Some(42));
        assert_eq!(parse_segment_file_name("2a.log"), None);
        assert_eq!(parse_segment_file_name("000000000000002a.log.damaged"), None);
    }

    #[test]
    fn records_survive_reopen_and_damage_is_skipped() {
        let dir = std::env::temp_dir().join(format!("ifxp-seg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut seg = Segment::create(&dir, 7, 1 << 16).unwrap();
        let mut off = HEADER_LEN;
        let mut starts = Vec::new();
        for i in 0..5 {
            starts.push(off);
            off = write_record(&mut seg, off, b"db=x", format!("m v={i}\n").as_bytes());
        }
        // A begun record with nothing committed ends the list.
        seg.bytes_mut()[off..off + 4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        seg.store_acked(starts[1]);
        drop(seg);

        let mut seg = Segment::open(&dir.join(segment_file_name(7)), 7).unwrap();
        assert_eq!(seg.header_ok(), Ok(true));
        let r = scan(&mut seg);
        assert_eq!((r.records, r.damage.len(), r.torn_tail), (4, 0, 4));
        assert_eq!(seg.read, starts[1]);

        // Flip one payload byte of the third record: only that record is lost.
        let flip = starts[2] + RECORD_HEADER + 5;
        seg.bytes_mut()[flip] ^= 0x40;
        let r = scan(&mut seg);
        assert_eq!(r.records, 3);
        assert_eq!(r.damage, vec![(starts[2], starts[3] - starts[2], "checksum mismatch")]);
        assert_eq!(seg.slot_at(starts[2]).0, starts[3]);

        // Bytes past the zero terminator are stale (a recycled file's previous life): not a torn tail.
        seg.bytes_mut()[off + 100] = b'x';
        let r = scan(&mut seg);
        assert_eq!(r.torn_tail, 4, "only the begun record's magic was written in this life");
        assert_eq!(seg.end, off);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn acknowledged_pages_are_given_back_in_steps_and_keep_their_bytes() {
        let dir = std::env::temp_dir().join(format!("ifxp-seg-release-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let size = 3 * RELEASE_STEP;
        let mut seg = Segment::create(&dir, 1, size).unwrap();
        for (i, b) in seg.bytes_mut()[HEADER_LEN..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        // Less than a step acknowledged: nothing given back yet.
        seg.store_acked(HEADER_LEN + RELEASE_STEP - 1);
        seg.release_acked();
        assert_eq!(seg.released, HEADER_LEN);
        // A step or more: everything acknowledged, to its last whole page.
        let acked = HEADER_LEN + RELEASE_STEP + PAGE + 7;
        seg.store_acked(acked);
        seg.release_acked();
        assert_eq!(seg.released, acked / PAGE * PAGE);
        // The pages come back from the page cache unchanged.
        assert!(seg.bytes()[HEADER_LEN..].iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        drop(seg);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn slots_reject_lies() {
        let mut buf = vec![0u8; 256];
        assert_eq!(read_slot(&buf, 0, 0), Slot::End);
        assert_eq!(read_slot(&buf, 250, 0), Slot::End);
        buf[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        buf[8..16].copy_from_slice(&(1000u64).to_le_bytes());
        assert_eq!(read_slot(&buf, 0, 0), Slot::Damaged("record runs past the end of the file"));
        buf[8..16].copy_from_slice(&(10u64 | 1 << 40).to_le_bytes());
        assert_eq!(read_slot(&buf, 0, 0), Slot::Damaged("checksum mismatch"));
        buf[0] = b'Z';
        assert_eq!(read_slot(&buf, 0, 0), Slot::Damaged("bad record header"));
    }

    #[test]
    fn the_gzip_flag_is_covered_by_the_checksum() {
        let mut buf = vec![0u8; 256];
        let (target, payload) = (b"db=x", b"\x02\0\0\0\0\0\0\0gzip members");
        buf[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        buf[4..6].copy_from_slice(&(target.len() as u16).to_le_bytes());
        buf[6] = FLAG_GZIP;
        buf[16..20].copy_from_slice(target);
        buf[20..20 + payload.len()].copy_from_slice(payload);
        let mut crc = record_crc(9, FLAG_GZIP);
        crc.update(target);
        crc.update(payload);
        let commit = u64::from(crc.finalize()) << 32 | payload.len() as u64;
        buf[8..16].copy_from_slice(&commit.to_le_bytes());
        let end = 20 + payload.len();
        assert_eq!(
            read_slot(&buf, 0, 9),
            Slot::Record { target: (16, 20), payload: (20, end), next: align8(end), gzip: true }
        );
        buf[6] = 0;
        assert_eq!(read_slot(&buf, 0, 9), Slot::Damaged("checksum mismatch"), "a lost flag is caught");
        buf[6] = 2;
        assert_eq!(read_slot(&buf, 0, 9), Slot::Damaged("bad record header"), "unknown flags");
    }
}
