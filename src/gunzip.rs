//! Gzip request bodies, decompressed in one shot by libdeflate with a hard bound on the output size, so
//! a gzip bomb costs at most the bound (answered 413), never the machine's memory.
//!
//! Bodies made of several gzip members (concatenated files, as `gzip -c a b` makes, and as Go's reader
//! accepts) are decompressed member after member; the safe `libdeflater` wrapper would silently stop after
//! the first one, which is why this module calls libdeflate's `_ex` entry point directly.

use std::fmt;

use libdeflate_sys::{
    libdeflate_alloc_decompressor, libdeflate_decompressor, libdeflate_free_decompressor,
    libdeflate_gzip_decompress_ex, libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE,
    libdeflate_result_LIBDEFLATE_SUCCESS,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GunzipError {
    /// Not gzip, or corrupt: 400.
    Invalid,
    /// The decompressed body passes the limit: 413.
    TooLarge,
}

impl fmt::Display for GunzipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GunzipError::Invalid => "gzip: invalid header or corrupt data",
            GunzipError::TooLarge => "request entity too large",
        })
    }
}

impl GunzipError {
    /// The answer to a client whose body failed to decompress.
    pub fn status(self) -> u16 {
        match self {
            GunzipError::Invalid => 400,
            GunzipError::TooLarge => 413,
        }
    }
}

/// Gzip member header flags (RFC 1952): a CRC-16 of the header follows, and the bits no writer may set.
const FHCRC: u8 = 0x02;
const FRESERVED: u8 = 0xe0;

/// One libdeflate decompressor (about 30 KB of tables); a worker keeps one and reuses it.
pub struct Gunzip {
    raw: *mut libdeflate_decompressor,
    /// No member of the last body decompressed had a header InfluxDB's reader (Go's) might read
    /// differently from libdeflate (see [`Gunzip::forwardable`]).
    plain_headers: bool,
}

// SAFETY: the decompressor is plain memory owned by this value; libdeflate keeps no thread-local state.
unsafe impl Send for Gunzip {}

impl Default for Gunzip {
    fn default() -> Self {
        Self::new()
    }
}

impl Gunzip {
    pub fn new() -> Self {
        // SAFETY: no preconditions; a null result (out of memory) is checked where it is used.
        Gunzip { raw: unsafe { libdeflate_alloc_decompressor() }, plain_headers: false }
    }

    /// The body last decompressed may be sent on as it came: InfluxDB will read exactly the bytes
    /// this decompressor produced. libdeflate skips a member's header checksum (FHCRC) without
    /// checking it, which Go's reader does check, so a body with one is not forwardable; neither is
    /// one with reserved flag bits set.
    pub fn forwardable(&self) -> bool {
        self.plain_headers
    }

    /// Decompresses every gzip member of `input` into `out` (cleared first), never letting `out` grow
    /// past `limit` bytes.
    pub fn decompress(&mut self, input: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), GunzipError> {
        out.clear();
        self.plain_headers = false;
        if self.raw.is_null() {
            return Err(GunzipError::Invalid);
        }
        let mut plain_headers = true;
        let mut consumed = 0;
        while consumed < input.len() {
            let member = &input[consumed..];
            plain_headers &= member.get(3).is_some_and(|flags| flags & (FHCRC | FRESERVED) == 0);
            // The trailer of the last member holds its size mod 2^32: a good first guess.
            let hint = member
                .len()
                .checked_sub(4)
                .and_then(|i| member.get(i..))
                .and_then(|t| t.try_into().ok())
                .map_or(0, |t: [u8; 4]| u32::from_le_bytes(t) as usize);
            let mut room = hint.max(member.len() * 4).max(4096).min(limit - out.len());
            loop {
                let start = out.len();
                // Decompressed into spare capacity: zeroing it first would cost a memset of every byte.
                out.reserve(room);
                let (mut used_in, mut used_out) = (0usize, 0usize);
                // SAFETY: `self.raw` is non-null (checked at the top of `decompress`) and `&mut self`
                // gives this call sole use of the decompressor; `member` is a live slice of
                // `member.len()` bytes; `out` has room for `room` more bytes after its length `start`
                // (reserved just above), which is all libdeflate writes (it only writes there, never
                // reads); it reports how many bytes it read and wrote through the two live locals.
                let result = unsafe {
                    libdeflate_gzip_decompress_ex(
                        self.raw,
                        member.as_ptr().cast(),
                        member.len(),
                        out.spare_capacity_mut().as_mut_ptr().cast(),
                        room,
                        &mut used_in,
                        &mut used_out,
                    )
                };
                if result == libdeflate_result_LIBDEFLATE_SUCCESS {
                    // SAFETY: on success libdeflate wrote `used_out` (at most `room`) bytes right
                    // after the first `start`, so they are initialized and within the capacity.
                    unsafe { out.set_len(start + used_out.min(room)) };
                    consumed += used_in.max(1);
                    break;
                }
                if result != libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE {
                    return Err(GunzipError::Invalid);
                }
                let max_room = limit - start;
                if room >= max_room {
                    return Err(GunzipError::TooLarge);
                }
                room = room.saturating_mul(4).min(max_room);
            }
        }
        self.plain_headers = plain_headers;
        Ok(())
    }
}

impl Drop for Gunzip {
    fn drop(&mut self) {
        if !self.raw.is_null() {
            // SAFETY: allocated by libdeflate_alloc_decompressor and freed exactly once.
            unsafe { libdeflate_free_decompressor(self.raw) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libdeflater::{CompressionLvl, Compressor};

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut c = Compressor::new(CompressionLvl::new(6).unwrap());
        let mut out = vec![0; c.gzip_compress_bound(data.len())];
        let n = c.gzip_compress(data, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn round_trip() {
        let data = b"cpu v=1 1\n".repeat(1000);
        let mut out = Vec::new();
        Gunzip::new().decompress(&gzip(&data), 1 << 20, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn a_reused_buffer_holds_only_the_last_body() {
        let mut g = Gunzip::new();
        let mut out = Vec::new();
        g.decompress(&gzip(&b"long line v=1 1\n".repeat(5000)), 1 << 20, &mut out).unwrap();
        g.decompress(&gzip(b"short v=1 1\n"), 1 << 20, &mut out).unwrap();
        assert_eq!(out, b"short v=1 1\n");
        assert!(g.decompress(b"\x1f\x8b garbage", 1 << 20, &mut out).is_err());
        assert!(out.is_empty(), "nothing of a failed body is left");
    }

    #[test]
    fn several_members_are_all_read() {
        let mut body = gzip(b"a v=1\n");
        body.extend(gzip(b"b v=2\n"));
        body.extend(gzip(&b"c v=3\n".repeat(5000)));
        let mut out = Vec::new();
        Gunzip::new().decompress(&body, 1 << 20, &mut out).unwrap();
        let mut want = b"a v=1\nb v=2\n".to_vec();
        want.extend(b"c v=3\n".repeat(5000));
        assert_eq!(out, want);
    }

    #[test]
    fn only_bodies_with_plain_headers_are_forwardable() {
        let mut g = Gunzip::new();
        let mut out = Vec::new();
        let mut body = gzip(b"a v=1 1\n");
        body.extend(gzip(b"b v=1 1\n"));
        g.decompress(&body, 1 << 20, &mut out).unwrap();
        assert!(g.forwardable());
        // A header CRC in the second member: libdeflate does not check it, InfluxDB would.
        let second = gzip(b"b v=1 1\n").len();
        let at = body.len() - second;
        let mut with_hcrc = body[..at].to_vec();
        with_hcrc.extend_from_slice(&body[at..at + 3]);
        with_hcrc.push(FHCRC);
        with_hcrc.extend_from_slice(&body[at + 4..at + 10]);
        with_hcrc.extend_from_slice(&[0xde, 0xad]);
        with_hcrc.extend_from_slice(&body[at + 10..]);
        g.decompress(&with_hcrc, 1 << 20, &mut out).unwrap();
        assert_eq!(out, b"a v=1 1\nb v=1 1\n", "libdeflate skips the wrong header CRC");
        assert!(!g.forwardable());
        assert!(g.decompress(b"not gzip", 1 << 20, &mut out).is_err());
        assert!(!g.forwardable());
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 50 << 20]);
        assert!(bomb.len() < 100 << 10);
        let mut out = Vec::new();
        assert_eq!(Gunzip::new().decompress(&bomb, 1 << 20, &mut out), Err(GunzipError::TooLarge));
        assert!(out.capacity() <= 2 << 20, "allocated {}", out.capacity());
    }

    #[test]
    fn a_lying_trailer_still_works() {
        let data = b"x v=1\n".repeat(20_000);
        let mut body = gzip(&data);
        let n = body.len();
        body[n - 4..].copy_from_slice(&1u32.to_le_bytes());
        let mut out = Vec::new();
        // The size in the trailer is checked by libdeflate: a wrong one is corrupt data.
        assert_eq!(Gunzip::new().decompress(&body, 1 << 20, &mut out), Err(GunzipError::Invalid));
    }

    #[test]
    fn garbage_is_invalid() {
        let mut out = Vec::new();
        for bad in [&b""[..], b"not gzip at all", &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]] {
            let r = Gunzip::new().decompress(bad, 1 << 20, &mut out);
            assert!(bad.is_empty() && r.is_ok() || r == Err(GunzipError::Invalid), "{bad:?}");
        }
        let mut truncated = gzip(b"hello world");
        truncated.truncate(truncated.len() - 3);
        assert_eq!(Gunzip::new().decompress(&truncated, 1 << 20, &mut out), Err(GunzipError::Invalid));
    }
}
