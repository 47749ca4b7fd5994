//! The quickest path: a common good line of up to 127 bytes, accepted from bit masks of its bytes with
//! no loop over its parts.
//!
//! The 128 bytes from the line's start are classified at once (space, comma, `=`, newline, `"` or
//! `\`, digit, dot, `-`, `i`), one 128-bit mask per class, and the line's grammar is checked on the
//! masks as a whole:
//!
//! * **Parts.** The `,`, `=` and spaces cut the line into names and values. No two cuts may touch
//!   (every name and value is at least a byte long), there are one or two spaces, and the measurement
//!   holds no `=`.
//! * **Order of the cuts.** Counting the `,` and `=` from the line's start, the odd ones (first,
//!   third, ...) are the `,` before a tag key and, in the field set, the `=` after a field key; the
//!   even ones are the `=` after a tag key and the `,` between fields. The parity of that count at each
//!   byte (a prefix XOR) so checks the whole order at once, and also marks which bytes of the field
//!   set are values (after an `=`, before the next `,`).
//! * **Values.** Each field value is a number InfluxDB takes without a range check: digits with an
//!   optional leading `-`, at most one `.`, or an `i` at the end and then no `.`, at least one digit,
//!   at most 16 characters. Each of these is a mask test; the "at least one digit" and "at most one dot"
//!   ones let an addition's carry run along each value.
//! * **Timestamp.** After the second space, 1 to 19 digits that InfluxDB can store.
//!
//! Like `fast`, this path only ever says "good" or "not sure"; a line with a `"` or `\`, a boolean, a
//! repeated-looking tag key, a longer value or line, or any fault goes on to `fast` and the walks after
//! it. The tag keys are the only loop (one step per tag), for the repeated-key check.

use super::Line;
use super::validate::check_nanos;

/// The bytes judged at once; a longer line is left to the next path.
const WINDOW: usize = 128;
/// Longest field value this path accepts: no float or integer this short needs a range check.
const LONGEST_VALUE: u32 = 16;
/// A timestamp of this many digits may be past InfluxDB's largest time.
const LONGEST_TIMESTAMP: usize = 19;

/// A good line found by [`accept`]: its length (up to its `\n` or the end of the body), its
/// measurement's length and whether it has a timestamp. A few bytes, so it is returned in a register.
#[derive(Clone, Copy)]
pub(super) struct Short {
    pub len: u8,
    pub measurement_len: u8,
    pub has_timestamp: bool,
}

impl Short {
    /// The line this found at `start` of `buf`.
    #[inline(always)]
    pub(super) fn line(self, buf: &[u8], start: usize) -> Line<'_> {
        let end = start + usize::from(self.len);
        Line {
            text: &buf[start..end],
            measurement_len: usize::from(self.measurement_len),
            measurement_escaped: false,
            has_timestamp: self.has_timestamp,
            // The byte at `end` is the line's newline, if the body goes on.
            with_newline: buf.get(start..=end).filter(|_| self.has_timestamp),
        }
    }
}

/// Bit `k` of each mask stands for byte `k` of the window.
#[derive(Default)]
struct Classes {
    space: u128,
    comma: u128,
    equals: u128,
    newline: u128,
    /// `"` or `\`.
    special: u128,
    digit: u128,
    dot: u128,
    minus: u128,
    /// `i`, the integer suffix.
    int: u128,
}

/// Accepts the line starting at `start` (a non-blank byte) when it is a common good line no longer
/// than the window; `None` when not sure. Only a CPU with AVX-512 classifies a window cheaply enough
/// for this path to pay (known after the first call); on others every line goes on to `fast`.
#[inline(always)]
pub(super) fn accept(buf: &[u8], start: usize, multiplier: i64) -> Option<Short> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("pclmulqdq") {
        // SAFETY: the CPU has AVX-512BW and PCLMULQDQ (checked just above).
        return unsafe { accept_avx512(buf, start, multiplier) };
    }
    let _ = (buf, start, multiplier);
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw,pclmulqdq,bmi1,popcnt")]
fn accept_avx512(buf: &[u8], start: usize, multiplier: i64) -> Option<Short> {
    judge(buf, start, multiplier, |w| classify_avx512(w), |x| prefix_xor_clmul(x))
}

/// [`accept`] with a way to classify a window's bytes and a prefix XOR.
#[inline(always)]
fn judge(
    buf: &[u8],
    start: usize,
    multiplier: i64,
    classify: impl Fn(&[u8; WINDOW]) -> Classes,
    prefix_xor: impl Fn(u128) -> u128,
) -> Option<Short> {
    let rest = buf.get(start..)?;
    // The last bytes of the body are padded with zeros, which are in no class.
    let padded: [u8; WINDOW];
    let window: &[u8; WINDOW] = match rest.get(..WINDOW) {
        Some(window) => window.try_into().ok()?,
        None => {
            let mut bytes = [0u8; WINDOW];
            bytes[..rest.len()].copy_from_slice(rest);
            padded = bytes;
            &padded
        }
    };
    let c = classify(window);
    // The bit after the line: its newline, or the body's end within the window (a longer line is
    // left to the other paths).
    let end_bit = match c.newline {
        0 if rest.len() < WINDOW => 1 << rest.len(),
        newline => lowest(newline),
    };
    if end_bit == 0 {
        return None;
    }
    let line = end_bit - 1;
    let (space, comma, equals) = (c.space & line, c.comma & line, c.equals & line);
    let cuts = space | comma | equals | end_bit;
    if c.special & line != 0 || cuts & (cuts >> 1) != 0 || cuts & 1 != 0 {
        return None;
    }
    // The measurement runs to the first `,` or space; an `=` in it is left to the other paths. One
    // space ends the tags; a second, if any, starts the timestamp.
    let measurement_end = lowest(space | comma);
    let tags_end = lowest(space);
    let fields_end = lowest((space ^ tags_end) | end_bit);
    if tags_end == 0 || equals & (measurement_end - 1) != 0 || space & !(tags_end | fields_end) != 0 {
        return None;
    }
    let tags = (tags_end - 1) ^ (measurement_end - 1);
    let fields = (fields_end - 1) ^ ((tags_end << 1) - 1);
    // The order of the cuts: see the module comment. The tags end on an even count, the fields on an
    // odd one.
    let marks = comma | equals;
    let odd = prefix_xor(marks);
    if comma & tags != marks & tags & odd
        || equals & fields != marks & fields & odd
        || odd & tags_end != 0
        || odd & (fields_end >> 1) == 0
    {
        return None;
    }
    let values = odd & fields & !marks;
    if !common_numbers(&c, values, (equals & fields) << 1, cuts >> 1) {
        return None;
    }
    // After the fields, only the timestamp's digits.
    let after_fields = (fields_end << 1).wrapping_sub(1);
    if line & !after_fields & !c.digit != 0 {
        return None;
    }
    let at = |bit: u128| bit.trailing_zeros() as usize;
    let (len, timestamp) = (at(end_bit), at(fields_end) + 1);
    let has_timestamp = timestamp < len;
    if has_timestamp && !storable_timestamp(&rest[timestamp..len], multiplier) {
        return None;
    }
    if !distinct_tag_keys(window, comma & tags, equals & tags) {
        return None;
    }
    // Both fit a byte: the line is shorter than the window.
    Some(Short { len: len as u8, measurement_len: at(measurement_end) as u8, has_timestamp })
}

/// Every field value is a number InfluxDB takes as it is: `values` marks their bytes, `starts` the
/// first byte of each, `last_bytes` (at least) the last byte of each.
#[inline(always)]
fn common_numbers(c: &Classes, values: u128, starts: u128, last_bytes: u128) -> bool {
    // Besides digits, a value holds a `-` as its first byte, `.`s, and an `i` as its last byte.
    let non_digits = values & !c.digit;
    let ends = values & (c.dot | (c.int & last_bytes));
    if non_digits & !(ends | (c.minus & starts)) != 0 {
        return false;
    }
    // A carry started at each value's first byte runs over its non-digits up to its first digit: it
    // must stop on a digit, not on the byte after the value.
    if (non_digits + (starts & non_digits)) & !values != 0 {
        return false;
    }
    // At most one `.` or `i` in a value: a carry started after each runs to the next or to the
    // value's end, and must not stop on another.
    let others = values & !ends;
    if ends & (ends << 1) != 0 || (others + ((ends << 1) & others)) & ends != 0 {
        return false;
    }
    // No run of more than LONGEST_VALUE value bytes.
    let mut run = values;
    let mut width = 1;
    while width * 2 <= LONGEST_VALUE {
        run &= run >> width;
        width *= 2;
    }
    run & (run >> (LONGEST_VALUE + 1 - width)) == 0
}

/// The timestamp `ts` (digits only) is at most 19 digits, a time InfluxDB can store once scaled by
/// `multiplier`.
#[inline(always)]
fn storable_timestamp(ts: &[u8], multiplier: i64) -> bool {
    if ts.len() > LONGEST_TIMESTAMP {
        return false;
    }
    if multiplier == 1 && (ts.len() < LONGEST_TIMESTAMP || ts[0] < b'9') {
        return true;
    }
    // Up to 19 digits always fit a u64.
    let value = ts.iter().fold(0u64, |v, &d| v * 10 + u64::from(d.wrapping_sub(b'0')));
    i64::try_from(value).is_ok_and(|t| check_nanos(t, multiplier).is_ok())
}

/// No two tag keys are the same. Each key (after a bit of `commas`, up to the next bit of `equals`)
/// sets one bit picked by its length and its first and last bytes; equal keys set the same bit, so
/// keys with distinct bits are distinct. Two keys on one bit: not sure (the other paths compare them).
#[inline(always)]
fn distinct_tag_keys(window: &[u8; WINDOW], commas: u128, equals: u128) -> bool {
    // Most tag sets end within 64 bytes, where the walk is cheaper on 64-bit masks.
    if (commas | equals) >> 64 == 0 {
        distinct_keys(window, commas as u64, equals as u64)
    } else {
        distinct_keys(window, commas, equals)
    }
}

#[inline(always)]
fn distinct_keys<M: Mask>(window: &[u8; WINDOW], mut commas: M, mut equals: M) -> bool {
    let mut seen = 0u64;
    while !commas.is_empty() {
        let (start, end) = (commas.pop_lowest() + 1, equals.pop_lowest());
        let (first, last) = (window[start % WINDOW], window[end.wrapping_sub(1) % WINDOW]);
        let len = end.wrapping_sub(start) as u32;
        let bit = 1u64 << (len.wrapping_mul(7).wrapping_add(u32::from(first)).wrapping_add(u32::from(last) * 3) & 63);
        if seen & bit != 0 {
            return false;
        }
        seen |= bit;
    }
    true
}

/// A mask walked bit by bit.
trait Mask: Copy {
    fn is_empty(self) -> bool;
    /// The position of the lowest set bit, which is cleared.
    fn pop_lowest(&mut self) -> usize;
}

macro_rules! mask {
    ($t:ty) => {
        impl Mask for $t {
            #[inline(always)]
            fn is_empty(self) -> bool {
                self == 0
            }
            #[inline(always)]
            fn pop_lowest(&mut self) -> usize {
                let at = self.trailing_zeros() as usize;
                *self &= self.wrapping_sub(1);
                at
            }
        }
    };
}
mask!(u64);
mask!(u128);

/// The lowest set bit of `x` alone (0 for 0).
#[inline(always)]
fn lowest(x: u128) -> u128 {
    x & x.wrapping_neg()
}

/// Bit `k` is the parity of the bits of `x` at `0..=k`: what [`prefix_xor_clmul`] computes, written
/// out (the tests' reference).
#[cfg(test)]
fn prefix_xor(mut x: u128) -> u128 {
    let mut shift = 1;
    while shift < 128 {
        x ^= x << shift;
        shift *= 2;
    }
    x
}

/// [`prefix_xor`] as a carry-less multiplication by all ones, 64 bits at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq")]
fn prefix_xor_clmul(x: u128) -> u128 {
    use std::arch::x86_64::{_mm_clmulepi64_si128, _mm_cvtsi128_si64, _mm_set_epi64x};
    let half = |h: u64| {
        let product = _mm_clmulepi64_si128(_mm_set_epi64x(0, h as i64), _mm_set_epi64x(0, -1), 0);
        _mm_cvtsi128_si64(product) as u64
    };
    let (low, high) = (half(x as u64), half((x >> 64) as u64));
    // The high half continues from the parity of the whole low half (its top bit).
    let carry = 0u64.wrapping_sub(low >> 63);
    u128::from(low) | u128::from(high ^ carry) << 64
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw")]
fn classify_avx512(window: &[u8; WINDOW]) -> Classes {
    use std::arch::x86_64::{
        __m512i, _mm512_cmpeq_epi8_mask, _mm512_cmple_epu8_mask, _mm512_loadu_si512, _mm512_set1_epi8, _mm512_sub_epi8,
    };
    let mut c = Classes::default();
    for half in 0..2 {
        // SAFETY: reads bytes `64 * half..64 * half + 64` of the 128-byte window, with no alignment
        // requirement.
        let v = unsafe { _mm512_loadu_si512(window.as_ptr().add(64 * half).cast::<__m512i>()) };
        let is = |b: u8| u128::from(_mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b as i8))) << (64 * half);
        let digit = _mm512_cmple_epu8_mask(_mm512_sub_epi8(v, _mm512_set1_epi8(b'0' as i8)), _mm512_set1_epi8(9));
        c.space |= is(b' ');
        c.comma |= is(b',');
        c.equals |= is(b'=');
        c.newline |= is(b'\n');
        c.special |= is(b'"') | is(b'\\');
        c.digit |= u128::from(digit) << (64 * half);
        c.dot |= is(b'.');
        c.minus |= is(b'-');
        c.int |= is(b'i');
    }
    c
}

/// What [`classify_avx512`] computes, byte by byte (the tests' reference).
#[cfg(test)]
fn classify_portable(window: &[u8; WINDOW]) -> Classes {
    let mut c = Classes::default();
    for (k, &b) in window.iter().enumerate() {
        let bit = 1u128 << k;
        let mark = |yes: bool| if yes { bit } else { 0 };
        c.space |= mark(b == b' ');
        c.comma |= mark(b == b',');
        c.equals |= mark(b == b'=');
        c.newline |= mark(b == b'\n');
        c.special |= mark(b == b'"' || b == b'\\');
        c.digit |= mark(b.is_ascii_digit());
        c.dot |= mark(b == b'.');
        c.minus |= mark(b == b'-');
        c.int |= mark(b == b'i');
    }
    c
}

#[cfg(test)]
mod tests {
    use super::super::parse_point;
    use super::*;

    /// The window path's verdict with the written-out classification, on any CPU.
    fn portable(buf: &[u8], start: usize, multiplier: i64) -> Option<Short> {
        judge(buf, start, multiplier, classify_portable, prefix_xor)
    }

    /// Whatever the window path accepts, the careful path (InfluxDB's `parsePoint` step by step)
    /// accepts too, with the same measurement and timestamp; the line is taken as a body alone, ended
    /// by a newline, and followed by another line.
    fn agrees(line: &[u8], multiplier: i64) -> Option<Short> {
        let mut verdict = None;
        let mut bodies = vec![line.to_vec(), [line, b"\n"].concat(), [line, b"\nm v=1 1\n"].concat()];
        // Also where the window runs past the end of a longer body (no padding).
        bodies.push([line, b"\n", &[b'x'; WINDOW][..]].concat());
        for body in &bodies {
            let got = portable(body, 0, multiplier);
            if let Some(short) = got {
                let text = &body[..usize::from(short.len)];
                assert_eq!(text, line, "{:?}", String::from_utf8_lossy(body));
                let careful = parse_point(text, multiplier, &mut Vec::new());
                let careful = careful.map(|l| (l.measurement_len, l.has_timestamp));
                let window = (usize::from(short.measurement_len), short.has_timestamp);
                assert_eq!(careful, Ok(window), "{:?}", String::from_utf8_lossy(line));
            }
            assert_eq!(got.is_some(), verdict.unwrap_or(got.is_some()), "{:?}", String::from_utf8_lossy(body));
            verdict = Some(got.is_some());
        }
        portable(line, 0, multiplier)
    }

    #[test]
    fn accepts_common_lines() {
        for line in [
            "cpu,host=web-00012,region=eu-west-1,cpu=cpu3 usage_user=12.345,usage_system=3.210,usage_idle=56.789 1700000000000000123",
            "mem,host=web-00012,region=eu-west-1 used=1234567i,free=-12345i,used_percent=12.345 1700000000000000123",
            "disk,host=web-00012,path=/var/lib/d1,fstype=ext4 used=123456789012i,inodes_free=1234i",
            "cpu v=1",
            "cpu v=1 0",
            "c,a=b,b=a v=-.5,w=5.,x=0123456789012345 9223372036854775806",
        ] {
            let short = agrees(line.as_bytes(), 1);
            assert!(short.is_some_and(|s| usize::from(s.len) == line.len()), "{line}");
        }
    }

    #[test]
    fn is_not_sure_of_anything_else() {
        for line in [
            // Faults, each with InfluxDB's reason.
            "cpu value=",
            "cpu value=1 notatime",
            "cpu value=1i2",
            "cpu,host= value=1",
            "cpu value=1 123 456",
            "cpu value=1,",
            "cpu,=x value=1",
            ",cpu v=1",
            "cpu",
            "cpu ",
            "cpu v=1 ",
            "cpu  v=1",
            "cpu,a=b",
            "cpu v=-",
            "cpu v=.",
            "cpu v=-.",
            "cpu v=i",
            "cpu v=-i",
            "cpu v=1-",
            "cpu v=--1",
            "cpu v=1..2",
            "cpu v=1.2.3",
            "cpu v=1.5i",
            "cpu v=1.i",
            "cpu v=.5i",
            "cpu v=1ii",
            "cpu v=1i,w=2.0.",
            "cpu v==1",
            "cpu v=1=2",
            "cpu,a=b=c v=1",
            "cpu,a,b=c v=1",
            "cpu v=1,w",
            "cpu v=1,,w=2",
            "cpu ,v=1",
            "cpu,a=1,a=2 v=1",
            "cpu v=1 9223372036854775807",
            "cpu v=1 99999999999999999999",
            "cpu v=1 -1",
            "cpu v=1 1\r",
            "cpu v=1\r",
            // Good lines left to the other paths: booleans, strings, escapes, `=` in the measurement,
            // long values, tag keys that share a bit.
            "cpu v=t",
            "cpu v=true",
            "cpu v=\"x\"",
            "cpu\\ x v=1",
            "a=b v=1",
            "cpu v=01234567890123456",
            "cpu v=1234567890123456789i",
            "cpu,abc=1,axc=2 v=1",
        ] {
            assert!(agrees(line.as_bytes(), 1).is_none(), "{line}");
        }
        // Out of range once scaled.
        assert!(agrees(b"cpu v=1 9300000000", 1_000_000_000).is_none());
        assert!(agrees(b"cpu v=1 9200000000", 1_000_000_000).is_some());
    }

    #[test]
    fn takes_lines_up_to_the_window() {
        let line = |len: usize| format!("cpu v={}", "1".repeat(len - 6).chars().collect::<String>());
        // Values are at most 16 bytes: pad with fields instead.
        let line = |len: usize| {
            let mut l = String::from("cpu,t=");
            l.push_str(&"x".repeat(len - "cpu,t= v=1".len()));
            l.push_str(" v=1");
            let _ = line;
            l
        };
        assert!(agrees(line(127).as_bytes(), 1).is_some());
        assert!(agrees(line(128).as_bytes(), 1).is_none());
        assert!(agrees(line(200).as_bytes(), 1).is_none());
    }

    #[test]
    fn mutated_lines_are_accepted_only_when_influxdb_would() {
        // Lines near the common shape, with bytes changed to the ones the grammar turns on.
        let bytes = b" ,=\n\"\\.-i0123456789tTfFeE\r\tax";
        let seeds = [
            "cpu,host=web-1,region=eu usage_user=12.345,usage_idle=-3i,x=.5 1700000000000000123",
            "m,a=1 v=1,w=2 3",
            "m v=1",
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let mut accepted = 0;
        for round in 0..60_000 {
            let mut line = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                let at = next(line.len());
                match next(3) {
                    0 => line[at] = bytes[next(bytes.len())],
                    1 => line.insert(at, bytes[next(bytes.len())]),
                    _ => {
                        line.remove(at);
                    }
                }
                if line.is_empty() {
                    line.push(b'm');
                }
            }
            // A line as `Lines` hands it over: no leading blank, no `#`, up to its first newline.
            let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
            let line = &line[..end];
            if line.first().is_none_or(|&b| matches!(b, b' ' | b'\t' | 0 | b'#')) {
                continue;
            }
            accepted += usize::from(agrees(line, [1, 1_000_000_000][round % 2]).is_some());
        }
        // Many of them are still good and common.
        assert!(accepted > 5_000, "{accepted}");
    }

    #[test]
    fn every_way_of_classifying_agrees() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for round in 0..3000 {
            let window: [u8; WINDOW] = std::array::from_fn(|k| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if round < 256 { (round + k) as u8 } else { b" ,=\n\"\\.-i09/:a\x80\xff"[(x % 16) as usize] }
            });
            let want = classify_portable(&window);
            let marks = want.comma | want.equals | u128::from(x) << 64;
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("pclmulqdq") {
                // SAFETY: the CPU has AVX-512BW and PCLMULQDQ.
                let (got, odd) = unsafe { (classify_avx512(&window), prefix_xor_clmul(marks)) };
                let all =
                    |c: &Classes| [c.space, c.comma, c.equals, c.newline, c.special, c.digit, c.dot, c.minus, c.int];
                assert_eq!(all(&got), all(&want), "{window:?}");
                assert_eq!(odd, prefix_xor(marks));
            }
            assert_eq!(prefix_xor(marks) >> 127, u128::from(marks.count_ones() % 2));
        }
    }
}
