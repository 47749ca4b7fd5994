//! Checks for the `gunzip` fuzz target: `Gunzip::decompress` with a bound on the output.
//!
//! Input layout: `[mode, p1, p2, payload...]` (shorter inputs are padded with zeros).
//! - `mode & 1 == 0` ("raw"): the payload is decompressed as it is (seed gzip files go here).
//! - `mode & 1 == 1` ("built"): the payload, repeated `REPEAT[p1 >> 4]` times, is gzipped with
//!   `libdeflater` at level `(p1 & 15) % 13` in `((mode >> 1) & 3) + 1` members, then
//!   `(mode >> 3) & 3 == 1` cuts 1..=8 bytes off the end, `== 2` appends one byte that cannot
//!   start a gzip member. Intact, it must decompress to exactly the original when the original fits
//!   the limit, and fail with `TooLarge` when it does not; cut or extended, it must fail (`Invalid`
//!   for the extra byte when the original fits; a cut may also give `TooLarge`, see below).
//! - `mode >> 5`: 0..=5 limit `LIMIT` (1 MiB); 6: `p2 * 64`; 7: built: the original length (or one
//!   less when `p2` is odd), raw: `p2`.
//!
//! Whatever the input, `decompress` never panics and never leaves more than the limit in `out`; the
//! same decompressor used again, into a vector that is not empty, gives the same answer.
//!
//! Shared by `fuzz/fuzz_targets/gunzip.rs` and `tests/fuzz_regressions.rs`: public API only (and
//! `libdeflater`, a dependency of the proxy itself, to build valid gzip).

use influx_proxy::gunzip::{Gunzip, GunzipError};
use libdeflater::{CompressionLvl, Compressor};

pub const LIMIT: usize = 1 << 20;

const REPEAT: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 4, 16, 64, 256, 512];

pub fn run(data: &[u8]) {
    let mut header = [0u8; 3];
    let n = data.len().min(3);
    header[..n].copy_from_slice(&data[..n]);
    let [mode, p1, p2] = header;
    let payload = &data[n..];

    if mode & 1 == 0 {
        let limit = match mode >> 5 {
            6 => usize::from(p2) * 64,
            7 => usize::from(p2),
            _ => LIMIT,
        };
        let _ = decompress(payload, limit);
        return;
    }

    let original = payload.repeat(REPEAT[usize::from(p1 >> 4)]);
    let mut level = i32::from(p1 & 15) % 13;
    if original.len() > 256 << 10 {
        level = level.min(6);
    }
    let members = usize::from((mode >> 1) & 3) + 1;
    let mut gz = Vec::new();
    let mut from = 0;
    for i in 1..=members {
        let to = original.len() * i / members;
        gzip_into(&original[from..to], level, &mut gz);
        from = to;
    }
    let tail = (mode >> 3) & 3;
    match tail {
        1 => {
            let cut = usize::from(p2 % 8) + 1;
            gz.truncate(gz.len() - cut);
        }
        2 => gz.push(if p2 == 0x1f { 0x20 } else { p2 }),
        _ => {}
    }
    let limit = match mode >> 5 {
        6 => usize::from(p2) * 64,
        7 => original.len().saturating_sub(usize::from(p2 & 1)),
        _ => LIMIT,
    };

    let (result, out) = decompress(&gz, limit);
    let fits = original.len() <= limit;
    match tail {
        // A byte after the last member cannot start another one: corrupt, once everything fitted.
        2 if fits => assert_eq!(result, Err(GunzipError::Invalid), "gzip of {} bytes + 1 byte", original.len()),
        // A cut trailer also cuts the deflate stream (libdeflate reads the last 8 bytes as the
        // trailer), whose garbage end may decode past the limit: TooLarge is as right as Invalid.
        1 | 2 => assert!(result.is_err(), "damaged gzip of {} bytes accepted", original.len()),
        _ if fits => {
            assert_eq!(result, Ok(()), "valid gzip of {} bytes ({members} members, limit {limit})", original.len());
            assert!(out == original, "decompressed {} bytes, want the original {} bytes", out.len(), original.len());
        }
        _ => assert_eq!(result, Err(GunzipError::TooLarge), "{} bytes past the limit {limit}", original.len()),
    }
}

fn gzip_into(data: &[u8], level: i32, out: &mut Vec<u8>) {
    let level = CompressionLvl::new(level).unwrap_or_default();
    let mut c = Compressor::new(level);
    let start = out.len();
    out.resize(start + c.gzip_compress_bound(data.len()), 0);
    let n = c.gzip_compress(data, &mut out[start..]).expect("gzip_compress_bound is enough");
    out.truncate(start + n);
}

/// Decompresses `input` twice with one decompressor, the second time into a dirty vector.
fn decompress(input: &[u8], limit: usize) -> (Result<(), GunzipError>, Vec<u8>) {
    let mut gunzip = Gunzip::new();
    let mut out = Vec::new();
    let result = gunzip.decompress(input, limit, &mut out);
    assert!(out.len() <= limit, "{} bytes out, limit {limit}, result {result:?}", out.len());
    if let Err(e) = result {
        assert!(!e.to_string().is_empty());
    }

    let mut again = b"left over from the previous request".to_vec();
    let second = gunzip.decompress(input, limit, &mut again);
    assert_eq!(result, second, "the same input, decompressed again, gives another result");
    if result.is_ok() {
        assert!(again == out, "the same input, decompressed again, gives other bytes");
    }
    (result, out)
}
