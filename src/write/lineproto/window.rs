//! The quickest path: a common good line accepted from bit masks of its bytes, checked all at once,
//! with no loop over its fields.
//!
//! Blocks of 64 bytes are classified at once (space, comma, `=`, newline, `"` or `\`, digit, dot,
//! `-`, `i`: one 64-bit mask per class): the block at the line's start holds the measurement and tags
//! up to the first space, and the block after that space the field set up to the next space or
//! newline. The line's end, the first newline in the 128 bytes from its start, is found from the
//! first block and the one after it, apart from the checks: the next line need not wait for them.
//! On each part's masks:
//!
//! * **Parts.** The `,`, `=` and the space or newline that ends the block's part cut it into names
//!   and values. No two cuts may touch (every name and value is at least a byte long), nothing in it
//!   is a `"` or `\`, and the measurement holds no `=`.
//! * **Order of the cuts.** Counting the `,` and `=` of the part, the odd ones (first, third, ...)
//!   must be the `,` before each tag key, or in the field set the `=` after each field key; the parity
//!   of that count at each byte (a prefix XOR) checks the whole order at once. It also marks which
//!   bytes of the field set are values (after an `=`, before the next `,`).
//! * **Values.** Each field value is a number InfluxDB takes without a range check: digits with an
//!   optional leading `-`, at most one `.` or else an `i` at the end, at least one digit, at most 16
//!   characters. Each of these is a mask test; "at least one digit" and "at most one `.` or `i`" let
//!   an addition's carry run along each value.
//! * **Timestamp.** The fields end the line, or after the second space 1 to 19 digits InfluxDB can
//!   store run to its end.
//!
//! Like `fast`, this path only ever says "good" or "not sure". A line with a `"` or `\`, a boolean,
//! tag keys that may repeat, a long value, tags or fields longer than a block, a line over 127 bytes,
//! or any fault goes on to `fast` and the walks after it. The tag keys are the only loop (a step per
//! tag), for the repeated-key check.

use super::Line;
use super::fast::{LONGEST_VALUE, key_bit, storable_digits};

/// The bytes classified at once.
const BLOCK: usize = 64;
/// The most digits a timestamp has; one this long may be past InfluxDB's largest time.
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

/// Bit `k` of each mask stands for byte `k` of a block.
#[derive(Default)]
struct Classes {
    space: u64,
    comma: u64,
    equals: u64,
    /// `\n`, and the end of the body when it falls within the block.
    newline: u64,
    /// `"` or `\`.
    special: u64,
    digit: u64,
    dot: u64,
    minus: u64,
    /// `i`, the integer suffix.
    int: u64,
}

/// Proof that this CPU can take the window path, and with which instructions: made only by
/// [`available`].
#[derive(Clone, Copy)]
pub(super) struct Cpu(Simd);

#[derive(Clone, Copy)]
enum Simd {
    /// A block in one compare per class.
    Avx512,
    /// A block in two halves.
    Avx2,
}

/// Whether this CPU can take the window path: one with AVX-512 or AVX2 (and carry-less multiply and
/// BMI1) classifies a block cheaply enough for this path to pay; on others every line goes on to
/// `fast`.
pub(super) fn available() -> Option<Cpu> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if !(has!("pclmulqdq") && has!("bmi1") && has!("popcnt")) {
            return None;
        }
        if has!("avx512bw") {
            return Some(Cpu(Simd::Avx512));
        }
        if has!("avx2") {
            return Some(Cpu(Simd::Avx2));
        }
    }
    None
}

/// Accepts the line starting at `start` (a non-blank byte) when it is a common good line; `None`
/// when not sure.
#[inline(always)]
pub(super) fn accept(cpu: Cpu, buf: &[u8], start: usize, multiplier: i64) -> Option<Short> {
    match cpu.0 {
        // SAFETY: `available` made `cpu` only after finding the features these functions enable.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { accept_avx512(buf, start, multiplier) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { accept_avx2(buf, start, multiplier) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => {
            let _ = (buf, start, multiplier);
            None
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw,pclmulqdq,bmi1,popcnt")]
fn accept_avx512(buf: &[u8], start: usize, multiplier: i64) -> Option<Short> {
    judge(buf, start, multiplier, |block| classify_avx512(block), |x| prefix_xor_clmul(x))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,pclmulqdq,bmi1,popcnt")]
fn accept_avx2(buf: &[u8], start: usize, multiplier: i64) -> Option<Short> {
    judge(buf, start, multiplier, |block| classify_avx2(block), |x| prefix_xor_clmul(x))
}

/// [`accept`] with a way to classify a block and a prefix XOR.
#[inline(always)]
fn judge(
    buf: &[u8],
    start: usize,
    multiplier: i64,
    classify: impl Fn(&[u8; BLOCK]) -> Classes,
    prefix_xor: impl Fn(u64) -> u64,
) -> Option<Short> {
    // Measurement and tags, up to the first space.
    let key = buf.get(start..)?;
    let k = classes(key, &classify);
    // The line's end (its first newline, within the 128 bytes from its start) is found apart from
    // its parts, which must end there too: where the next line starts then waits on two loads only,
    // not on the parts' checks. The digits of those bytes are the timestamp's.
    let (line_len, digits) = match k.newline {
        0 => {
            let next = classes(key.get(BLOCK..)?, &classify);
            if next.newline == 0 {
                return None;
            }
            (BLOCK + position(next.newline), u128::from(k.digit) | u128::from(next.digit) << BLOCK)
        }
        newline => (position(newline), u128::from(k.digit)),
    };
    let key_end = lowest(k.space);
    let before = key_end.wrapping_sub(1);
    let marks = (k.comma | k.equals) & before;
    let cuts = marks | key_end;
    let measurement_end = lowest(k.comma & before | key_end);
    if key_end == 0
        || (k.special | k.newline) & before != 0
        || cuts & (cuts >> 1 | 1) != 0
        || k.equals & (measurement_end - 1) != 0
    {
        return None;
    }
    // The commas are the odd marks, and the count is even: each tag is `,key=value`.
    let odd = prefix_xor(marks);
    if k.comma & before != marks & odd || odd & key_end != 0 {
        return None;
    }
    let key_len = position(key_end);
    if !distinct_tag_keys(key, k.comma & before, k.equals & before) {
        return None;
    }
    // The field set, up to the next space or newline.
    let fields = key.get(key_len + 1..)?;
    let f = classes(fields, &classify);
    let fields_end = lowest(f.space | f.newline);
    let before = fields_end.wrapping_sub(1);
    let marks = (f.comma | f.equals) & before;
    let cuts = marks | fields_end;
    if fields_end == 0 || f.special & before != 0 || cuts & (cuts >> 1 | 1) != 0 {
        return None;
    }
    // The `=` are the odd marks, and the count is odd: `key=value` joined by commas.
    let odd = prefix_xor(marks);
    if f.equals & before != marks & odd || odd & (fields_end >> 1) == 0 {
        return None;
    }
    let values = odd & before & !marks;
    if !common_numbers(&f, values, (f.equals & before) << 1, cuts >> 1) {
        return None;
    }
    // Then the line ends, or a timestamp runs to its end: 1 to 19 digits InfluxDB can store.
    let fields_len = position(fields_end);
    let has_timestamp = f.space & fields_end != 0;
    if has_timestamp {
        let timestamp = key_len + 1 + fields_len + 1;
        let n = line_len.checked_sub(timestamp).filter(|n| (1..=LONGEST_TIMESTAMP).contains(n))?;
        let all = (1 << n) - 1;
        if (digits >> timestamp) as u64 & all != all || !storable_digits(&key[timestamp..line_len], multiplier) {
            return None;
        }
    } else if key_len + 1 + fields_len != line_len {
        return None;
    }
    // At most 127 bytes: they fit a byte.
    Some(Short { len: line_len as u8, measurement_len: position(measurement_end) as u8, has_timestamp })
}

/// The classes of the block at the start of `rest`; past the end of the body, a newline and then
/// zeros, which are in no class.
#[inline(always)]
fn classes(rest: &[u8], classify: &impl Fn(&[u8; BLOCK]) -> Classes) -> Classes {
    match rest.first_chunk::<BLOCK>() {
        Some(block) => classify(block),
        None => classes_of_tail(rest, classify),
    }
}

#[cold]
fn classes_of_tail(rest: &[u8], classify: &impl Fn(&[u8; BLOCK]) -> Classes) -> Classes {
    let mut block = [0u8; BLOCK];
    block[..rest.len()].copy_from_slice(rest);
    let mut c = classify(&block);
    c.newline |= 1 << rest.len();
    c
}

/// Every field value is a number InfluxDB takes as it is: `values` marks their bytes, `starts` the
/// first byte of each, `last_bytes` (at least) the last byte of each.
#[inline(always)]
fn common_numbers(c: &Classes, values: u64, starts: u64, last_bytes: u64) -> bool {
    // Besides digits, a value holds a `-` as its first byte, `.`s, and an `i` as its last byte.
    let non_digits = values & !c.digit;
    let ends = values & (c.dot | (c.int & last_bytes));
    if non_digits & !(ends | (c.minus & starts)) != 0 {
        return false;
    }
    // A carry started at each value's first byte runs over its non-digits up to its first digit: it
    // must stop on a digit, not on the byte after the value. (Values end before bit 63: no carry out.)
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

/// No two tag keys are the same. Each key (after a bit of `commas`, up to the next bit of `equals`,
/// in `key`) sets its bit ([`key_bit`]: from its length and first and last bytes); equal keys set
/// the same bit, so keys with distinct bits are distinct. Two keys on one bit: not sure (the other
/// paths compare them).
#[inline(always)]
fn distinct_tag_keys(key: &[u8], mut commas: u64, mut equals: u64) -> bool {
    let mut seen = 0u64;
    while commas != 0 {
        let (start, end) = (position(commas) + 1, position(equals));
        commas &= commas - 1;
        equals &= equals.wrapping_sub(1);
        let (Some(&first), Some(&last)) = (key.get(start), key.get(end.wrapping_sub(1))) else {
            return false;
        };
        let bit = key_bit(end.wrapping_sub(start), first, last);
        if seen & bit != 0 {
            return false;
        }
        seen |= bit;
    }
    true
}

/// The lowest set bit of `x` alone (0 for 0).
#[inline(always)]
fn lowest(x: u64) -> u64 {
    x & x.wrapping_neg()
}

/// The position of the lowest set bit of `x` (64 for 0).
#[inline(always)]
fn position(x: u64) -> usize {
    x.trailing_zeros() as usize
}

/// Bit `k` is the parity of the bits of `x` at `0..=k`: what [`prefix_xor_clmul`] computes, written
/// out (the tests' reference).
#[cfg(test)]
fn prefix_xor(mut x: u64) -> u64 {
    let mut shift = 1;
    while shift < 64 {
        x ^= x << shift;
        shift *= 2;
    }
    x
}

/// [`prefix_xor`] as a carry-less multiplication by all ones.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq")]
fn prefix_xor_clmul(x: u64) -> u64 {
    use std::arch::x86_64::{_mm_clmulepi64_si128, _mm_cvtsi128_si64, _mm_set_epi64x};
    let product = _mm_clmulepi64_si128(_mm_set_epi64x(0, x as i64), _mm_set_epi64x(0, -1), 0);
    _mm_cvtsi128_si64(product) as u64
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw")]
fn classify_avx512(block: &[u8; BLOCK]) -> Classes {
    use std::arch::x86_64::{
        __m512i, _mm512_cmpeq_epi8_mask, _mm512_cmple_epu8_mask, _mm512_loadu_si512, _mm512_set1_epi8, _mm512_sub_epi8,
    };
    // SAFETY: reads the 64 bytes of `block`, with no alignment requirement.
    let v = unsafe { _mm512_loadu_si512(block.as_ptr().cast::<__m512i>()) };
    let is = |b: u8| _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b as i8));
    Classes {
        space: is(b' '),
        comma: is(b','),
        equals: is(b'='),
        newline: is(b'\n'),
        special: is(b'"') | is(b'\\'),
        digit: _mm512_cmple_epu8_mask(_mm512_sub_epi8(v, _mm512_set1_epi8(b'0' as i8)), _mm512_set1_epi8(9)),
        dot: is(b'.'),
        minus: is(b'-'),
        int: is(b'i'),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn classify_avx2(block: &[u8; BLOCK]) -> Classes {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_min_epu8, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8, _mm256_sub_epi8,
    };
    // SAFETY: reads bytes 0..32 and 32..64 of `block`, with no alignment requirement.
    let (low, high) = unsafe {
        let at = |k: usize| _mm256_loadu_si256(block.as_ptr().add(k).cast::<__m256i>());
        (at(0), at(32))
    };
    let join = |l: __m256i, h: __m256i| {
        u64::from(_mm256_movemask_epi8(l) as u32) | u64::from(_mm256_movemask_epi8(h) as u32) << 32
    };
    let eq = |v: __m256i, b: u8| _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b as i8));
    let is = |b: u8| join(eq(low, b), eq(high, b));
    // A digit is a byte whose distance above `0`, taken unsigned, is at most 9.
    let digit = |v: __m256i| {
        let from_zero = _mm256_sub_epi8(v, _mm256_set1_epi8(b'0' as i8));
        _mm256_cmpeq_epi8(_mm256_min_epu8(from_zero, _mm256_set1_epi8(9)), from_zero)
    };
    let special = |v: __m256i| _mm256_or_si256(eq(v, b'"'), eq(v, b'\\'));
    Classes {
        space: is(b' '),
        comma: is(b','),
        equals: is(b'='),
        newline: is(b'\n'),
        special: join(special(low), special(high)),
        digit: join(digit(low), digit(high)),
        dot: is(b'.'),
        minus: is(b'-'),
        int: is(b'i'),
    }
}

/// What [`classify_avx512`] and [`classify_avx2`] compute, byte by byte (the tests' reference).
#[cfg(test)]
fn classify_portable(block: &[u8; BLOCK]) -> Classes {
    let mut c = Classes::default();
    for (k, &b) in block.iter().enumerate() {
        let bit = 1u64 << k;
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
        // Also where the blocks run past the end of a longer body (no padding).
        bodies.push([line, b"\n", &[b'x'; 3 * BLOCK][..]].concat());
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
    fn takes_tags_and_fields_up_to_a_block_each_and_lines_up_to_two() {
        // Tags: the first space at byte 63 is within the first block; at 64 it is not.
        let tags = |n: usize| format!("cpu,t={}", "x".repeat(n - "cpu,t=".len()));
        // Fields: `vNN=1,` repeated, then `w=` and 1 to 6 digits.
        let fields = |n: usize| {
            let k = (n - 3) / 6;
            let f: String = (0..k).map(|i| format!("v{i:02}=1,")).collect();
            format!("{f}w={}", "1".repeat(n - f.len() - 2))
        };
        // With a 19-digit timestamp: lines of 127 bytes are taken (the newline is the 128th byte), of
        // 128 not.
        for (key, fields_len, ok) in
            [(63, 20, true), (64, 20, false), (20, 63, true), (20, 64, false), (63, 43, true), (63, 44, false)]
        {
            let line = format!("{} {} 1700000000000000000", tags(key), fields(fields_len));
            assert_eq!(line.find(' '), Some(key));
            assert_eq!(line.rfind(' '), Some(key + 1 + fields_len));
            assert_eq!(agrees(line.as_bytes(), 1).is_some(), ok, "{line}");
        }
        // Without one, the fields run to the end of the line.
        assert!(agrees(format!("{} {}", tags(63), fields(63)).as_bytes(), 1).is_some());
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
            let block: [u8; BLOCK] = std::array::from_fn(|k| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if round < 256 { (round + k) as u8 } else { b" ,=\n\"\\.-i09/:a\x80\xff"[(x % 16) as usize] }
            });
            let want = classify_portable(&block);
            let marks = want.comma | want.equals;
            let all = |c: &Classes| [c.space, c.comma, c.equals, c.newline, c.special, c.digit, c.dot, c.minus, c.int];
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx512bw") {
                    // SAFETY: the CPU has AVX-512BW.
                    assert_eq!(all(&unsafe { classify_avx512(&block) }), all(&want), "{block:?}");
                }
                if has!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    assert_eq!(all(&unsafe { classify_avx2(&block) }), all(&want), "{block:?}");
                }
                if has!("pclmulqdq") {
                    // SAFETY: the CPU has PCLMULQDQ.
                    assert_eq!(unsafe { prefix_xor_clmul(marks) }, prefix_xor(marks));
                }
            }
            assert_eq!(prefix_xor(marks) >> 63, u64::from(marks.count_ones() % 2));
        }
    }
}
