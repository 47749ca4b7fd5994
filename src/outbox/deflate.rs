//! Gzip of outgoing batches, one instance per worker.
//!
//! The replicas of a measurement get the same lines in the same order from the same worker, so their
//! outboxes seal byte-identical batches, at the same tick. Compressing is most of what sending costs,
//! so a batch is compressed once for all its replicas: right after sealing, every outbox of the worker
//! asks for its new batches ([`Deflate::keep`]); the last few batches compressed (and their plain
//! bytes, to compare against) are kept, an identical batch of another replica gets the same result,
//! and each record holds it ([`KeptGzip`]) until it is sent, however far behind one replica is. The
//! bytes records hold are bounded per worker ([`HELD_BYTES`]); past that, and for batches recovered
//! from disk, a batch is compressed when it is sent ([`Deflate::gzip`], through the same cache).
//!
//! Memory: one output buffer, at most `KEPT` cache entries of at most `MAX_KEPT` plain bytes each
//! (plus their compressed bytes), and at most `HELD_BYTES` of compressed batches held by records.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use libdeflater::{CompressionLvl, Compressor};

#[cfg(feature = "isal")]
use super::igzip::Igzip;
use crate::defaults::DEFAULT_BATCH_MAX_BYTES;
use crate::gunzip::Gunzip;

/// A batch compressed recently.
#[derive(Default)]
struct Kept {
    level: u32,
    plain: Vec<u8>,
    gz: Arc<[u8]>,
}

#[derive(Default)]
pub struct Deflate {
    compressors: Compressors,
    /// For the rare gzip record a backend refuses as a whole ([`Deflate::recompress`]).
    gunzip: Option<Gunzip>,
    plain: Vec<u8>,
    /// Compression output, sized for the largest batch so far (bounded, see `gzip`).
    out: Vec<u8>,
    /// Recently compressed batches; the next one to overwrite is `kept[next]`.
    kept: Vec<Kept>,
    next: usize,
    /// Compressed bytes the sealed records of this worker hold ([`KeptGzip`]s alive).
    held: Arc<AtomicUsize>,
}

/// A compressed batch kept with its sealed record until sent; counts against the worker's
/// [`HELD_BYTES`] while it lives.
pub struct KeptGzip {
    pub level: u32,
    pub bytes: Arc<[u8]>,
    held: Arc<AtomicUsize>,
}

impl Drop for KeptGzip {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes.len(), Relaxed);
    }
}

/// Compressed batches the records of one worker keep at most; beyond, batches are compressed when
/// sent (through the cache). A batch shared by replicas counts once per record holding it, so with
/// two replicas about half of this is memory; the bound is checked before a batch is added, so it may
/// be passed by one batch. On the load bench one sink often runs 100–200 ms behind the other:
/// 16 MiB covers that, and replicas then compress each batch once instead of 1.5 times on average.
const HELD_BYTES: usize = 16 << 20;

/// Batches larger than this are compressed but not kept for reuse.
const MAX_KEPT: usize = 8 << 20;
/// Batches kept for reuse.
const KEPT: usize = 4;

impl Deflate {
    /// `payload` gzipped at `level`, for a sealed record to keep until it is sent; `None` when the
    /// worker's records already hold [`HELD_BYTES`] (or compression failed).
    pub fn keep(&mut self, level: u32, payload: &[u8]) -> Option<KeptGzip> {
        if self.held.load(Relaxed) >= HELD_BYTES {
            return None;
        }
        let bytes = match self.gzip_kept(level, payload)? {
            Compressed::Kept(i) => Arc::clone(&self.kept[i].gz),
            Compressed::Out(n) => Arc::from(&self.out[..n]),
        };
        self.held.fetch_add(bytes.len(), Relaxed);
        Some(KeptGzip { level, bytes, held: Arc::clone(&self.held) })
    }

    /// `payload` gzipped at `level` (1..=12), or `None` if compression failed (send it plain then).
    pub fn gzip(&mut self, level: u32, payload: &[u8]) -> Option<&[u8]> {
        match self.gzip_kept(level, payload)? {
            Compressed::Kept(i) => Some(&self.kept[i].gz),
            Compressed::Out(n) => Some(&self.out[..n]),
        }
    }

    /// The gzip `members` of a record a backend refused as a whole (InfluxDB's reader is stricter than
    /// libdeflate in a few corners of the format), decompressed and, at `level` > 0, compressed again
    /// by the proxy; with whether the result is gzip. `None` if they do not decompress (within the
    /// size any body stored whole has, see `write::store`).
    pub fn recompress(&mut self, level: u32, members: &[u8]) -> Option<(&[u8], bool)> {
        let mut plain = std::mem::take(&mut self.plain);
        let gunzip = self.gunzip.get_or_insert_with(Gunzip::new);
        let inflated = gunzip.decompress(members, DEFAULT_BATCH_MAX_BYTES, &mut plain).is_ok();
        let compressed = if inflated && level > 0 { self.gzip_kept(level, &plain) } else { None };
        self.plain = plain;
        match compressed {
            _ if !inflated => None,
            None if level == 0 => Some((&self.plain, false)),
            None => None,
            Some(Compressed::Kept(i)) => Some((&self.kept[i].gz, true)),
            Some(Compressed::Out(n)) => Some((&self.out[..n], true)),
        }
    }

    /// `payload` gzipped at `level` into the start of `out`, bypassing the cache: for a batch
    /// compressed once for all its replicas as it is stored. `out` only grows (zeroing it for every
    /// batch would cost a memset of its size). The compressed length, or `None` if compression failed.
    pub fn gzip_into(&mut self, level: u32, payload: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        self.compressors.gzip(level, payload, out)
    }

    fn gzip_kept(&mut self, level: u32, payload: &[u8]) -> Option<Compressed> {
        // Lengths differ for almost every pair of different batches, so the comparison is mostly free.
        if let Some(i) =
            self.kept.iter().position(|k| !k.gz.is_empty() && k.level == level && k.plain.as_slice() == payload)
        {
            return Some(Compressed::Kept(i));
        }
        // `out` only grows (up to a bound): zeroing it for every batch would cost a memset of its size.
        let n = self.compressors.gzip(level, payload, &mut self.out)?;
        if self.out.len() > 2 * MAX_KEPT {
            self.out.truncate(n);
            self.out.shrink_to_fit();
        }
        if payload.len() > MAX_KEPT {
            return Some(Compressed::Out(n));
        }
        if self.kept.len() < KEPT {
            self.kept.push(Kept::default());
            self.next = self.kept.len() - 1;
        }
        let slot = self.next % self.kept.len();
        self.next = (slot + 1) % KEPT;
        let k = &mut self.kept[slot];
        k.level = level;
        k.plain.clear();
        k.plain.extend_from_slice(payload);
        k.gz = Arc::from(&self.out[..n]);
        Some(Compressed::Kept(slot))
    }
}

/// The compressors of one worker, each made when first needed: ISA-L for level 1 (twice as fast as
/// libdeflate there, for the same size; unless built without the `isal` feature), libdeflate for the
/// other levels.
#[derive(Default)]
struct Compressors {
    #[cfg(feature = "isal")]
    igzip: Option<Igzip>,
    libdeflate: Vec<(u32, Compressor)>,
}

impl Compressors {
    /// `payload` gzipped at `level` into the start of `out`, which grows to the bound the compressor
    /// needs and never shrinks here. The compressed length, or `None` if compression failed.
    fn gzip(&mut self, level: u32, payload: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        #[cfg(feature = "isal")]
        if level == 1 {
            let bound = Igzip::bound(payload.len());
            if out.len() < bound {
                out.resize(bound, 0);
            }
            let igzip = self.igzip.get_or_insert_with(Igzip::new);
            if let Some(n) = igzip.gzip(payload, &mut out[..bound]) {
                return Some(n);
            }
            // ISA-L refuses only what its 32-bit counts cannot describe: libdeflate then.
        }
        let compressor = match self.libdeflate.iter().position(|(l, _)| *l == level) {
            Some(c) => &mut self.libdeflate[c].1,
            None => {
                let lvl = CompressionLvl::new(level as i32).unwrap_or_default();
                self.libdeflate.push((level, Compressor::new(lvl)));
                &mut self.libdeflate.last_mut()?.1
            }
        };
        let bound = compressor.gzip_compress_bound(payload.len());
        if out.len() < bound {
            out.resize(bound, 0);
        }
        compressor.gzip_compress(payload, &mut out[..bound]).ok()
    }
}

/// Where [`Deflate::gzip_kept`] left a result: in `kept[i]`, or the first `n` bytes of `out`.
enum Compressed {
    Kept(usize),
    Out(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::gunzip::Gunzip::new().decompress(data, 1 << 24, &mut out).unwrap();
        out
    }

    #[test]
    fn identical_batches_reuse_the_result() {
        let mut d = Deflate::default();
        let a = b"cpu v=1 1\n".repeat(1000);
        let first = d.gzip(1, &a).unwrap().to_vec();
        let again = d.gzip(1, &a).unwrap().to_vec();
        assert_eq!(first, again);
        assert_eq!(gunzip(&again), a);
        let mut b = a.clone();
        b[5] = b'2';
        let other = d.gzip(1, &b).unwrap().to_vec();
        assert_eq!(gunzip(&other), b, "same length, other bytes: compressed anew");
        let level6 = d.gzip(6, &b).unwrap().to_vec();
        assert_eq!(gunzip(&level6), b);
        // Replicas out of step: `a` again after two others is still found.
        assert_eq!(d.gzip(1, &a).unwrap(), first.as_slice());
        for i in 0..10u8 {
            let mut c = a.clone();
            c[7] = b'0' + i;
            assert_eq!(gunzip(d.gzip(1, &c).unwrap()), c);
            assert_eq!(gunzip(d.gzip(1, &c).unwrap()), c);
        }
    }

    #[test]
    fn members_a_backend_could_not_read_are_recompressed_or_sent_plain() {
        let mut d = Deflate::default();
        let lines = b"cpu v=1 1\n".repeat(1000);
        // Two members at level 6: not what level 1 would make of the lines.
        let mut members = d.gzip(6, &lines[..5000]).unwrap().to_vec();
        members.extend_from_slice(d.gzip(6, &lines[5000..]).unwrap());
        let (gz, gzipped) = d.recompress(1, &members).unwrap();
        assert!(gzipped);
        assert_eq!(gunzip(gz), lines);
        assert_eq!(d.recompress(0, &members).unwrap(), (&lines[..], false));
        assert!(d.recompress(1, b"not gzip").is_none());
        let mut out = vec![1, 2, 3];
        let n = d.gzip_into(1, &lines, &mut out).unwrap();
        assert_eq!(gunzip(&out[..n]), lines);
        let n = d.gzip_into(1, b"m v=1 1\n", &mut out).unwrap();
        assert_eq!(gunzip(&out[..n]), b"m v=1 1\n", "a smaller batch into the grown buffer");
    }

    #[test]
    fn kept_batches_count_against_the_budget_while_they_live() {
        let mut d = Deflate::default();
        let a = b"cpu v=1 1\n".repeat(1000);
        let first = d.keep(1, &a).unwrap();
        let second = d.keep(1, &a).unwrap();
        assert!(Arc::ptr_eq(&first.bytes, &second.bytes), "an identical batch shares the compressed bytes");
        assert_eq!(gunzip(&first.bytes), a);
        assert_eq!(d.held.load(Relaxed), 2 * first.bytes.len());
        drop(first);
        drop(second);
        assert_eq!(d.held.load(Relaxed), 0);
        d.held.store(HELD_BYTES, Relaxed);
        assert!(d.keep(1, &a).is_none(), "over budget: compressed when sent instead");
        assert!(d.gzip(1, &a).is_some());
    }
}
