//! Gzip of outgoing batches, one instance per worker.
//!
//! The replicas of a measurement get the same lines in the same order from the same worker, so their
//! outboxes seal byte-identical batches, one right after the other. Compressing is most of what sending
//! costs; the last batch compressed (and its plain bytes, to compare against) is kept, and an identical
//! batch for the next replica reuses the result instead of compressing again.

use libdeflater::{CompressionLvl, Compressor};

#[derive(Default)]
pub struct Deflate {
    compressors: Vec<(u32, Compressor)>,
    /// The last batch compressed: level, plain bytes, compressed bytes (`out[..out_len]`).
    last_level: u32,
    last_plain: Vec<u8>,
    out: Vec<u8>,
    out_len: usize,
}

/// Batches larger than this are compressed but not kept for reuse.
const MAX_KEPT: usize = 8 << 20;

impl Deflate {
    /// `payload` gzipped at `level` (1..=12), or `None` if compression failed (send it plain then).
    pub fn gzip(&mut self, level: u32, payload: &[u8]) -> Option<&[u8]> {
        if self.out_len > 0 && self.last_level == level && self.last_plain == payload {
            return Some(&self.out[..self.out_len]);
        }
        self.out_len = 0;
        let i = match self.compressors.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                let lvl = CompressionLvl::new(level as i32).unwrap_or_default();
                self.compressors.push((level, Compressor::new(lvl)));
                self.compressors.len() - 1
            }
        };
        let compressor = &mut self.compressors[i].1;
        let bound = compressor.gzip_compress_bound(payload.len());
        // `out` only grows (up to a bound): zeroing it for every batch would cost a memset of its size.
        if self.out.len() < bound {
            self.out.resize(bound, 0);
        }
        let n = compressor.gzip_compress(payload, &mut self.out[..bound]).ok()?;
        if payload.len() <= MAX_KEPT {
            self.last_level = level;
            self.last_plain.clear();
            self.last_plain.extend_from_slice(payload);
            self.out_len = n;
        } else {
            self.last_plain = Vec::new();
        }
        if self.out.len() > 2 * MAX_KEPT {
            let compressed = self.out[..n].to_vec();
            self.out = compressed;
            return Some(&self.out[..n]);
        }
        Some(&self.out[..n])
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
    }
}
