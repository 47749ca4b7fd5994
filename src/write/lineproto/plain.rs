//! The fast path: checking a line that holds neither `"` nor `\` in a single walk that also finds its
//! end, its measurement and its timestamp, with the same verdict as the careful path (`parse_point`).

use super::errors::{LineError, MAX_KEY_LENGTH};
use super::validate::{
    FIELD_KEY_SEPARATOR, INT_RANGE_CHECK_LEN, check_nanos, check_time, has_repeated_key, scan_value, skip_blanks,
    sorts_after,
};

/// Up to this many tags, the fast walk checks an unsorted tag set itself (places kept on the stack).
const PLAIN_TAGS: usize = 16;

/// What the single walk over a stretch without `"` and `\` found.
pub(super) enum Plain<'a> {
    /// A good line; `end` is the offset of its `\n` (or of the end of the body).
    Good { end: usize, measurement_len: usize, has_timestamp: bool },
    /// A bad line, found bad at this offset; its end is not looked for yet.
    Bad(usize, LineError<'a>),
    /// The stretch ends (at a `"` or `\`) before the line does, or the line needs a rare check:
    /// leave it to `parse_point`.
    Careful,
}

/// Whether the line in `s` ends at offset `i`: at a `\n`, at the end of the body, or at a `\r` right
/// before either (dropped, see the module comment). `s` is a stretch without `"` or `\`, so nothing
/// can hide a newline. Past the end of a stretch that is not the body's end, the line goes on (the
/// caller notices and takes the careful path).
#[inline(always)]
fn plain_end(s: &[u8], i: usize, body_end: bool) -> bool {
    match s.get(i) {
        None | Some(b'\n') => true,
        Some(b'\r') => s.get(i + 1).map_or(body_end, |&b| b == b'\n'),
        Some(_) => false,
    }
}

/// Bytes where a run inside a plain line stops: what ends a name, a value or the line (`\r` may).
static STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 5 {
        t[[b'\n', b'\r', b' ', b',', b'='][i] as usize] = true;
        i += 1;
    }
    t
};

/// The first byte at or after `i` that is in [`STOP`] and not a `\r` inside the line (or `s.len()`).
#[inline(always)]
fn next_stop(s: &[u8], mut i: usize, body_end: bool) -> usize {
    loop {
        i = find_stop(s, i);
        if i < s.len() && s[i] == b'\r' && !plain_end(s, i, body_end) {
            i += 1;
            continue;
        }
        return i;
    }
}

/// The first byte at or after `i` that is in [`STOP`] (or `s.len()`): 16 bytes at a time where the
/// stretch is long enough (SSE2 is part of every x86_64), then byte by byte.
#[inline(always)]
fn find_stop(s: &[u8], mut i: usize) -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    while let Some(block) = s.get(i..i + 16) {
        let mask = stop_mask(block);
        if mask != 0 {
            return i + mask.trailing_zeros() as usize;
        }
        i += 16;
    }
    while i < s.len() && !STOP[usize::from(s[i])] {
        i += 1;
    }
    i
}

/// Bit `k` set when `block[k]` (16 bytes) is in [`STOP`].
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn stop_mask(block: &[u8]) -> u32 {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};
    debug_assert_eq!(block.len(), 16);
    // SAFETY: the intrinsics need SSE2, which this function is only compiled with (cfg above; every
    // x86_64 target has it). `_mm_loadu_si128` reads 16 bytes with no alignment requirement, and
    // `block` is 16 readable bytes: the only caller passes a 16-byte subslice.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        let is = |b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
        let any =
            _mm_or_si128(_mm_or_si128(is(b' '), is(b',')), _mm_or_si128(_mm_or_si128(is(b'='), is(b'\n')), is(b'\r')));
        _mm_movemask_epi8(any) as u32
    }
}

/// Checks the line at the start of `s` (a non-blank byte) in one walk that also finds its end: the
/// same verdict as `parse_point` gives on the line, when the line ends within `s`.
///
/// `s` holds no `"` and no `\`: no escapes and no strings, so the measurement ends at the first `,`
/// or space and the line at the first `\n`. `body_end`: `s` runs to the end of the body. The walk
/// jumps from one [`STOP`] byte to the next; common values (short decimal numbers, timestamps) are
/// read on the way, anything else goes to the scanners shared with `parse_point`.
pub(super) fn check_plain(s: &[u8], body_end: bool, multiplier: i64) -> Plain<'_> {
    let at_end = |i: usize| plain_end(s, i, body_end);
    let stop = |i: usize| next_stop(s, i, body_end);
    let Some(&first) = s.first() else { return Plain::Careful };
    // Measurement: up to the first `,` or space (`=` is an ordinary byte in it).
    if first == b',' {
        return Plain::Bad(0, LineError::MissingMeasurement);
    }
    let mut i = 1;
    loop {
        i = stop(i);
        if at_end(i) {
            return Plain::Bad(i, LineError::MissingFields);
        }
        if s[i] != b'=' {
            break;
        }
        i += 1;
    }
    let measurement_len = i;
    // Tags. Keys in increasing order cannot repeat; otherwise every pair is compared, for up to
    // `PLAIN_TAGS` tags (their places are kept on the stack); more go to the careful path.
    let mut prev_key: &[u8] = &[];
    let mut increasing = true;
    let mut keys = [(0u16, 0u16); PLAIN_TAGS];
    let mut tags = 0usize;
    while s[i] == b',' {
        i += 1;
        let key_start = i;
        if at_end(i) || matches!(s[i], b' ' | b',' | b'=') {
            return Plain::Bad(i, LineError::MissingTagKey);
        }
        i = stop(i + 1);
        if at_end(i) || s[i] != b'=' {
            return Plain::Bad(i, LineError::MissingTagValue);
        }
        let key = &s[key_start..i];
        increasing &= tags == 0 || sorts_after(key, prev_key);
        prev_key = key;
        if let Some(slot) = keys.get_mut(tags) {
            // Truncated places are never read: a key set that long goes to the careful path below.
            *slot = (key_start as u16, i as u16);
        }
        tags += 1;
        i += 1;
        if at_end(i) || s[i] == b',' || s[i] == b' ' {
            return Plain::Bad(i, LineError::MissingTagValue);
        }
        i = stop(i + 1);
        if at_end(i) {
            return Plain::Bad(i, LineError::MissingFields);
        }
        if s[i] == b'=' {
            return Plain::Bad(i, LineError::InvalidTagFormat);
        }
    }
    let key_len = i;
    if !increasing {
        if tags > PLAIN_TAGS || key_len > usize::from(u16::MAX) {
            return Plain::Careful;
        }
        if has_repeated_key(s, &keys[..tags]) {
            return Plain::Bad(i, LineError::DuplicateTags);
        }
    }
    if key_len > MAX_KEY_LENGTH {
        return Plain::Bad(i, LineError::MaxKeyLength(key_len));
    }
    // Fields: `key=value` pairs separated by `,`, up to a space. Counting `=` and `,` as InfluxDB does
    // decides "invalid field format" once the values are read.
    i = skip_blanks(s, i);
    let (mut equals, mut commas) = (0usize, 0usize);
    let (mut field_key_start, mut longest_field_key) = (i, 0usize);
    loop {
        i = stop(i);
        if at_end(i) {
            break;
        }
        match s[i] {
            b'=' => {
                equals += 1;
                if matches!(s[i - 1], b' ' | b',') {
                    return Plain::Bad(i, LineError::MissingFieldKey);
                }
                longest_field_key = longest_field_key.max(i - field_key_start);
                i += 1;
                if at_end(i) || s[i] == b',' || s[i] == b' ' {
                    return Plain::Bad(i, LineError::MissingFieldValue);
                }
                match short_number(s, i, &at_end) {
                    Some(next) => i = next,
                    None => match scan_value(s, i, &at_end) {
                        Ok(next) => i = next,
                        Err(e) => return Plain::Bad(i, e),
                    },
                }
            }
            b',' => {
                commas += 1;
                i += 1;
                field_key_start = i;
            }
            _ => break,
        }
    }
    if equals == 0 || commas != equals - 1 {
        return Plain::Bad(i, LineError::InvalidFieldFormat);
    }
    // A good field set has one `=` per field: the keys measured above are InfluxDB's.
    let series_key = key_len + FIELD_KEY_SEPARATOR + longest_field_key;
    if series_key > MAX_KEY_LENGTH {
        return Plain::Bad(i, LineError::MaxKeyLength(series_key));
    }
    // Timestamp: optional; digits with an optional leading `-`, then only spaces.
    let ts_start = skip_blanks(s, i);
    i = ts_start;
    if s.get(i) == Some(&b'-') {
        i += 1;
    }
    // Up to 19 digits always fit a u64: read them on the way.
    let mut value: u64 = 0;
    while let Some(&d) = s.get(i).filter(|d| d.is_ascii_digit()) {
        value = value.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        i += 1;
    }
    if !at_end(i) && s[i] != b' ' {
        return Plain::Bad(i, LineError::BadTimestamp);
    }
    let has_timestamp = i > ts_start;
    if has_timestamp {
        let ts = &s[ts_start..i];
        let digits = ts.len() - usize::from(ts[0] == b'-');
        let negative = ts[0] == b'-';
        let t = if negative { 0i64.checked_sub_unsigned(value) } else { i64::try_from(value).ok() };
        let checked =
            if let (1..=19, Some(t)) = (digits, t) { check_nanos(t, multiplier) } else { check_time(ts, multiplier) };
        if let Err(e) = checked {
            return Plain::Bad(i, e);
        }
        while !at_end(i) {
            if s[i] != b' ' {
                return Plain::Bad(i, LineError::PointInvalid);
            }
            i += 1;
        }
    }
    if i >= s.len() && !body_end {
        return Plain::Careful;
    }
    let end = if s.get(i) == Some(&b'\r') { i + 1 } else { i };
    Plain::Good { end, measurement_len, has_timestamp }
}

/// The common field values, read quickly: `-?digits[.digits]` or `-?digits` + `i`, shorter than any
/// range check, ending at a `,`, space or the line's end. Where it stopped, or `None` for anything
/// else (left to [`scan_value`], which gives the same verdict on these).
#[inline(always)]
fn short_number(s: &[u8], start: usize, at_end: &impl Fn(usize) -> bool) -> Option<usize> {
    let mut i = start + usize::from(s[start] == b'-');
    let digits_start = i;
    while s.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let mut digits = i - digits_start;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let fraction = i;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        digits += i - fraction;
    } else if digits > 0 && s.get(i) == Some(&b'i') {
        i += 1;
    }
    let ends = at_end(i) || s[i] == b',' || s[i] == b' ';
    (digits > 0 && ends && i - start < INT_RANGE_CHECK_LEN).then_some(i)
}
