//! Gzip of outgoing batches, one instance per worker.
//!
//! The replicas of a measurement get the same lines in the same order from the same worker, so their
//! outboxes seal byte-identical batches. Compressing is most of what sending costs; the last few batches
//! compressed (and their plain bytes, to compare against) are kept, and an identical batch for another
//! replica reuses the result instead of compressing again. A few, not one: replicas do not send in
//! lockstep (one may be waiting for an answer while the other already sends its next batch). A replica
//! lagging further behind than that compresses again: on the load bench, where one sink often lags by
//! many batches, this saves about a quarter of the compressions (1.45–1.6 per batch instead of 2); more
//! entries did not help there. Compressing once per batch whatever the lag would take keeping the
//! compressed batch with the records, which this cache does not attempt.
//!
//! Memory: one output buffer, and at most `KEPT` entries of at most `MAX_KEPT` plain bytes each (plus
//! their compressed bytes).

use libdeflater::{CompressionLvl, Compressor};

/// A batch compressed recently.
#[derive(Default)]
struct Kept {
    level: u32,
    plain: Vec<u8>,
    gz: Vec<u8>,
}

#[derive(Default)]
pub struct Deflate {
    compressors: Vec<(u32, Compressor)>,
    /// Compression output, sized for the largest batch so far (bounded, see `gzip`).
    out: Vec<u8>,
    /// Recently compressed batches; the next one to overwrite is `kept[next]`.
    kept: Vec<Kept>,
    next: usize,
}

/// Batches larger than this are compressed but not kept for reuse.
const MAX_KEPT: usize = 8 << 20;
/// Batches kept for reuse.
const KEPT: usize = 4;

impl Deflate {
    /// `payload` gzipped at `level` (1..=12), or `None` if compression failed (send it plain then).
    pub fn gzip(&mut self, level: u32, payload: &[u8]) -> Option<&[u8]> {
        // Lengths differ for almost every pair of different batches, so the comparison is mostly free.
        if let Some(i) =
            self.kept.iter().position(|k| !k.gz.is_empty() && k.level == level && k.plain.as_slice() == payload)
        {
            return Some(&self.kept[i].gz);
        }
        let c = match self.compressors.iter().position(|(l, _)| *l == level) {
            Some(c) => c,
            None => {
                let lvl = CompressionLvl::new(level as i32).unwrap_or_default();
                self.compressors.push((level, Compressor::new(lvl)));
                self.compressors.len() - 1
            }
        };
        let compressor = &mut self.compressors[c].1;
        let bound = compressor.gzip_compress_bound(payload.len());
        // `out` only grows (up to a bound): zeroing it for every batch would cost a memset of its size.
        if self.out.len() < bound {
            self.out.resize(bound, 0);
        }
        let n = compressor.gzip_compress(payload, &mut self.out[..bound]).ok()?;
        if self.out.len() > 2 * MAX_KEPT {
            self.out.truncate(n);
            self.out.shrink_to_fit();
        }
        if payload.len() > MAX_KEPT {
            return Some(&self.out[..n]);
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
        k.gz.clear();
        k.gz.extend_from_slice(&self.out[..n]);
        Some(&k.gz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::write::gunzip::Gunzip::new().decompress(data, 1 << 24, &mut out).unwrap();
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
}
