//! The checks of one field value, tag set and timestamp as InfluxDB 1.6's `parsePoint` makes them
//! (`scanNumber`, `scanBoolean`, the duplicate-tag and key-length checks, `ParseInt` + `SafeCalcTime`),
//! shared by the single walk over plain lines (`plain`) and the careful path (`parse_point`).

use super::errors::{LineError, MAX_KEY_LENGTH, MAX_NANO_TIME, MIN_NANO_TIME};

/// Bytes InfluxDB puts between a series key and a field key (`#!~#`), counted in the key length.
pub(super) const FIELD_KEY_SEPARATOR: usize = 4;
/// A float with at least this many characters is parsed to check its range, as InfluxDB does.
const FLOAT_RANGE_CHECK_LEN: usize = 25;
/// An integer with at least this many characters (sign included, `i` excluded) is range-checked.
pub(super) const INT_RANGE_CHECK_LEN: usize = 19;
/// Up to this many tags, duplicate keys of an unsorted tag set are found by comparing every pair.
const PAIRWISE_TAGS: usize = 32;

pub(super) fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | 0)
}

pub(super) fn skip_blanks(text: &[u8], mut i: usize) -> usize {
    while i < text.len() && is_blank(text[i]) {
        i += 1;
    }
    i
}

/// Tag key `key` sorts after `prev` (keys in increasing order cannot repeat). Most keys differ in
/// their first byte: that is compared before calling memcmp.
#[inline(always)]
pub(super) fn sorts_after(key: &[u8], prev: &[u8]) -> bool {
    match (key.first(), prev.first()) {
        (Some(k), Some(p)) if k != p => k > p,
        _ => key > prev,
    }
}

/// Two of the tag keys at `keys` (start and end offsets in `line`) are the same: every pair is
/// compared, for the few tags of a line the walks keep places for.
#[inline(always)]
pub(super) fn has_repeated_key(line: &[u8], keys: &[(u16, u16)]) -> bool {
    let key = |(a, b): (u16, u16)| &line[usize::from(a)..usize::from(b)];
    for (n, &b) in keys.iter().enumerate().skip(1) {
        for &a in &keys[..n] {
            // Keys of different lengths differ: most pairs are told apart without looking at bytes.
            if a.1 - a.0 == b.1 - b.0 && key(a) == key(b) {
                return true;
            }
        }
    }
    false
}

/// Whether two of the `count` tags in `tags` (`,k=v,k=v...` as written) have the same key. Keys end
/// at the first `=` not right after a backslash, as in InfluxDB's `scanTo`.
pub(super) fn has_duplicate_tag(tags: &[u8], count: usize, scratch: &mut Vec<(usize, usize)>) -> bool {
    let keys = TagKeys { tags, pos: 0 };
    if count <= PAIRWISE_TAGS {
        let mut pairs = keys.clone();
        while let Some(a) = pairs.next() {
            if pairs.clone().any(|b| b == a) {
                return true;
            }
        }
        return false;
    }
    scratch.clear();
    for k in keys {
        let start = k.as_ptr() as usize - tags.as_ptr() as usize;
        scratch.push((start, start + k.len()));
    }
    scratch.sort_unstable_by(|a, b| tags[a.0..a.1].cmp(&tags[b.0..b.1]));
    scratch.windows(2).any(|w| tags[w[0].0..w[0].1] == tags[w[1].0..w[1].1])
}

/// The keys of a tag set already found well-formed: `,key=value` repeated.
#[derive(Clone)]
struct TagKeys<'a> {
    tags: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for TagKeys<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let t = self.tags;
        if self.pos >= t.len() {
            return None;
        }
        // Skip the `,`, read the key up to its `=`, then the value up to the next `,` (not escaped).
        let key_start = self.pos + 1;
        let mut i = key_start + 1;
        while i < t.len() && !(t[i] == b'=' && t[i - 1] != b'\\') {
            i += 1;
        }
        let key = &t[key_start..i.min(t.len())];
        i += 1;
        while i < t.len() && !(t[i] == b',' && t[i - 1] != b'\\') {
            i += 1;
        }
        self.pos = i;
        Some(key)
    }
}

/// The first series key (key + separator + field key) longer than InfluxDB allows, with the field keys
/// cut as InfluxDB's `walkFields` cuts them. Only called when the field set alone could make one.
pub(super) fn longest_series_key(key_len: usize, fields: &[u8]) -> Option<usize> {
    let mut rest = fields;
    while !rest.is_empty() {
        // `scanTo(buf, 0, '=')`: the key ends at an `=` that is first or not after a backslash.
        let mut k = 0;
        while k < rest.len() && !(rest[k] == b'=' && (k == 0 || rest[k - 1] != b'\\')) {
            k += 1;
        }
        let size = key_len + FIELD_KEY_SEPARATOR + k;
        if size > MAX_KEY_LENGTH {
            return Some(size);
        }
        rest = rest.get(k + 1..).unwrap_or_default();
        // `scanFieldValue`: up to a `,` outside quotes; `\"` and `\\` are escapes.
        let (mut v, mut quoted) = (0, false);
        while v < rest.len() {
            match rest[v] {
                b'\\' if v + 1 < rest.len() && matches!(rest[v + 1], b'"' | b'\\') => {
                    v += 2;
                    continue;
                }
                b'"' => quoted = !quoted,
                b',' if !quoted => break,
                _ => {}
            }
            v += 1;
        }
        rest = rest.get(v + 1..).unwrap_or_default();
    }
    None
}

/// Reads the value starting at `i` (not `"`: strings are read by the caller) up to the `,` or space
/// after it, or the end of the line (`at_end`); returns where it stopped.
#[inline(always)]
pub(super) fn scan_value<'a>(s: &'a [u8], i: usize, at_end: &impl Fn(usize) -> bool) -> Result<usize, LineError<'a>> {
    let v = s[i];
    if v.is_ascii_digit() || matches!(v, b'.' | b'-' | b'N' | b'n') {
        scan_number(s, i, at_end)
    } else {
        scan_boolean(s, i, at_end)
    }
}

/// InfluxDB's `scanNumber`: a float (`1`, `-1.5`, `.5`, `1.`, `1e-3`), or an integer ending in `i`.
/// Only long or scientific floats and long integers are parsed to check their range, as InfluxDB does.
#[inline(always)]
fn scan_number<'a>(s: &'a [u8], start: usize, at_end: &impl Fn(usize) -> bool) -> Result<usize, LineError<'a>> {
    let mut i = start;
    if s[i] == b'-' {
        i += 1;
        if at_end(i) {
            return Err(LineError::InvalidNumber);
        }
    }
    let (mut int, mut unsigned, mut decimal, mut scientific) = (false, false, false, false);
    while !at_end(i) {
        let c = s[i];
        match c {
            b',' | b' ' => break,
            b'0'..=b'9' => {}
            b'i' | b'u' if i > start && !(int || unsigned) => {
                int |= c == b'i';
                unsigned |= c == b'u';
            }
            b'.' if !decimal => decimal = true,
            b'e' | b'E' if i > start => scientific = true,
            b'+' | b'-' if matches!(s[i - 1], b'e' | b'E') => {}
            _ => return Err(LineError::InvalidNumber),
        }
        i += 1;
    }
    // 1.x has no unsigned integers (influxd's uint64 support is off): `1u` is not a number.
    if unsigned || (int && (decimal || scientific)) {
        return Err(LineError::InvalidNumber);
    }
    let digits = i - start - usize::from(int) - usize::from(decimal) - usize::from(s[start] == b'-');
    if digits == 0 {
        return Err(LineError::InvalidNumber);
    }
    if int {
        if s[i - 1] != b'i' {
            return Err(LineError::InvalidNumber);
        }
        let number = &s[start..i - 1];
        if number.len() >= INT_RANGE_CHECK_LEN && parse_i64(number).is_none() {
            return Err(LineError::IntegerOutOfRange(number));
        }
    } else if (scientific || i - start >= FLOAT_RANGE_CHECK_LEN) && !is_finite_float(&s[start..i]) {
        return Err(LineError::InvalidFloat);
    }
    Ok(i)
}

/// Go's `strconv.ParseFloat` succeeds on these bytes (digits, `.`, `e`, signs): the syntax is the same
/// as Rust's, and Go fails exactly where Rust gives an infinity (underflow to 0 is no error in either).
fn is_finite_float(text: &[u8]) -> bool {
    std::str::from_utf8(text).ok().and_then(|t| t.parse::<f64>().ok()).is_some_and(f64::is_finite)
}

/// InfluxDB's `scanBoolean`: `t`, `T`, `true`, `True`, `TRUE`, and the same for false; the value runs to
/// the next `,` or space whatever it holds.
#[inline(always)]
fn scan_boolean<'a>(s: &'a [u8], start: usize, at_end: &impl Fn(usize) -> bool) -> Result<usize, LineError<'a>> {
    let mut i = start + 1;
    while !at_end(i) && s[i] != b',' && s[i] != b' ' {
        i += 1;
    }
    match &s[start..i] {
        b"t" | b"T" | b"f" | b"F" | b"true" | b"True" | b"TRUE" | b"false" | b"False" | b"FALSE" => Ok(i),
        _ => Err(LineError::InvalidBoolean),
    }
}

/// An optional `-` and decimal digits, as a value of `i64` (`None` when out of range or not digits).
fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        let d = i64::from(d.wrapping_sub(b'0'));
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?;
        v = if negative { v.checked_sub(d)? } else { v.checked_add(d)? };
    }
    Some(v)
}

/// A timestamp of digits with an optional leading `-` (already checked), as InfluxDB judges it:
/// `strconv.ParseInt`, then in range once scaled by the precision (`SafeCalcTime`).
pub(super) fn check_time(ts: &[u8], multiplier: i64) -> Result<(), LineError<'_>> {
    match parse_i64(ts) {
        Some(t) => check_nanos(t, multiplier),
        None if ts == b"-" => Err(LineError::TimestampSyntax(ts)),
        None => Err(LineError::TimestampOutOfRange(ts)),
    }
}

/// A timestamp `t` in units of `multiplier` nanoseconds is one InfluxDB can store.
#[inline(always)]
pub(super) fn check_nanos(t: i64, multiplier: i64) -> Result<(), LineError<'static>> {
    match t.checked_mul(multiplier) {
        Some(ns) if (MIN_NANO_TIME..=MAX_NANO_TIME).contains(&ns) => Ok(()),
        _ => Err(LineError::TimeOutsideRange),
    }
}
