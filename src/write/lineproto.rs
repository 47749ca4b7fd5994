//! Splitting a line-protocol body into lines and checking each line the way InfluxDB 1.6 does, without
//! copying or allocating.
//!
//! A line is accepted here exactly when InfluxDB 1.6's parser (`ParsePointsWithPrecision` → `parsePoint`
//! in its `models` package) accepts it, and a refused line carries InfluxDB's own reason words, so the
//! proxy can answer 204 only for what the backends will take, and 400 with the text influxd would give.
//! What only a backend can know (field types already stored, a missing database) is not judged here.
//!
//! Splitting follows InfluxDB's `scanLine`: only `\n` ends a line; a backslash escapes the byte after it
//! (so `\` + newline does not end a line); after the first unescaped space a `"` opens or closes a string
//! value when it stands where a value can start (more `=` than `,` seen outside quotes), and a newline
//! inside such a string does not end the line. Blank lines and lines whose first non-blank byte is `#`
//! are skipped. One deliberate difference: a `\r` before the `\n` is dropped (influxd 1.6 refuses such a
//! line with "invalid number"; the proxy forwards it without the `\r`, which influxd takes).
//!
//! Checking follows `parsePoint` step by step, in its order, so that a line with several faults gets the
//! reason influxd names first: measurement, tags (keys, values, duplicates), key length, fields (keys,
//! values: floats, `i` integers in int64 range, strings, booleans; `u` unsigned is "invalid number" in
//! 1.x), the optional timestamp (integer, in range once scaled by the precision) and nothing after it.
//! InfluxDB mixes two escape rules and so does this module: in the measurement and tags a byte is
//! escaped when the byte before it is a backslash; in the field set a backslash skips the byte after it.
//!
//! Speed: most lines hold neither `"` nor `\`. The position of the next such byte in the body is
//! remembered, and a line that ends before it is checked in a single walk that also finds its end, its
//! measurement and its timestamp. Only a line holding `"` or `\` is first delimited by the `scanLine`
//! walk and then checked.

use memchr::{memchr, memchr2};
use std::fmt;

/// Longest measurement + tags, and measurement + tags + field key (InfluxDB's `MaxKeyLength`).
pub const MAX_KEY_LENGTH: usize = 65535;
/// Bytes InfluxDB puts between a series key and a field key (`#!~#`), counted in the key length.
const FIELD_KEY_SEPARATOR: usize = 4;
/// Timestamps InfluxDB can store, in nanoseconds (`models.MinNanoTime` / `MaxNanoTime`).
const MIN_NANO_TIME: i64 = i64::MIN + 2;
const MAX_NANO_TIME: i64 = i64::MAX - 1;
/// A float with at least this many characters is parsed to check its range, as InfluxDB does.
const FLOAT_RANGE_CHECK_LEN: usize = 25;
/// An integer with at least this many characters (sign included, `i` excluded) is range-checked.
const INT_RANGE_CHECK_LEN: usize = 19;
/// Up to this many tags, duplicate keys of an unsorted tag set are found by comparing every pair.
const PAIRWISE_TAGS: usize = 32;
/// Up to this many tags, the fast walk checks an unsorted tag set itself (places kept on the stack).
const PLAIN_TAGS: usize = 16;

/// Nanoseconds per unit of the `precision` parameter, as InfluxDB 1.6's parser reads it: only `u`,
/// `ms`, `s`, `m` and `h` scale; anything else (`n`, `ns`, `us`, empty, unknown) means nanoseconds.
pub fn precision_multiplier(precision: Option<&str>) -> i64 {
    match precision.unwrap_or("") {
        "u" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => 1,
    }
}

/// One point's text and what routing needs to know about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line without leading blanks and without the trailing `\r`/`\n`.
    pub text: &'a [u8],
    /// Length of the measurement as written (up to the first unescaped `,` or space).
    pub measurement_len: usize,
    /// The measurement contains a backslash, so [`Line::measurement`] must unescape it.
    pub measurement_escaped: bool,
    /// A timestamp follows the field set.
    pub has_timestamp: bool,
}

impl<'a> Line<'a> {
    /// The measurement name, unescaped (`\,` and `\ ` become `,` and space). Borrows the line unless an
    /// escape must be removed, in which case `scratch` holds the name.
    pub fn measurement<'s>(&self, scratch: &'s mut Vec<u8>) -> &'s [u8]
    where
        'a: 's,
    {
        let raw = &self.text[..self.measurement_len];
        if !self.measurement_escaped {
            return raw;
        }
        scratch.clear();
        let mut i = 0;
        while i < raw.len() {
            match (raw[i], raw.get(i + 1)) {
                (b'\\', Some(&next @ (b',' | b' '))) => {
                    scratch.push(next);
                    i += 2;
                }
                (b, _) => {
                    scratch.push(b);
                    i += 1;
                }
            }
        }
        scratch
    }
}

/// Why a line cannot be a point. `Display` gives InfluxDB 1.6's reason, word for word; the variants
/// holding bytes quote part of the line as Go's `strconv` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError<'a> {
    MissingMeasurement,
    MissingFields,
    MissingTagKey,
    MissingTagValue,
    InvalidTagFormat,
    DuplicateTags,
    /// The key (or key + field key) length.
    MaxKeyLength(usize),
    MissingFieldKey,
    MissingFieldValue,
    InvalidNumber,
    InvalidFloat,
    InvalidBoolean,
    UnbalancedQuotes,
    InvalidFieldFormat,
    /// An `i` integer outside int64; the digits.
    IntegerOutOfRange(&'a [u8]),
    BadTimestamp,
    /// A timestamp outside int64; the digits.
    TimestampOutOfRange(&'a [u8]),
    /// A timestamp that is only `-`.
    TimestampSyntax(&'a [u8]),
    /// A timestamp outside what InfluxDB stores once scaled by the precision.
    TimeOutsideRange,
    /// Something other than spaces after the timestamp.
    PointInvalid,
}

impl fmt::Display for LineError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fixed = match self {
            LineError::MissingMeasurement => "missing measurement",
            LineError::MissingFields => "missing fields",
            LineError::MissingTagKey => "missing tag key",
            LineError::MissingTagValue => "missing tag value",
            LineError::InvalidTagFormat => "invalid tag format",
            LineError::DuplicateTags => "duplicate tags",
            LineError::MissingFieldKey => "missing field key",
            LineError::MissingFieldValue => "missing field value",
            LineError::InvalidNumber => "invalid number",
            LineError::InvalidFloat => "invalid float",
            LineError::InvalidBoolean => "invalid boolean",
            LineError::UnbalancedQuotes => "unbalanced quotes",
            LineError::InvalidFieldFormat => "invalid field format",
            LineError::BadTimestamp => "bad timestamp",
            LineError::PointInvalid => "point is invalid",
            LineError::MaxKeyLength(n) => return write!(f, "max key length exceeded: {n} > {MAX_KEY_LENGTH}"),
            LineError::IntegerOutOfRange(digits) => {
                let d = String::from_utf8_lossy(digits);
                return write!(f, "unable to parse integer {d}: strconv.ParseInt: parsing \"{d}\": value out of range");
            }
            LineError::TimestampOutOfRange(digits) => {
                let d = String::from_utf8_lossy(digits);
                return write!(f, "strconv.ParseInt: parsing \"{d}\": value out of range");
            }
            LineError::TimestampSyntax(digits) => {
                let d = String::from_utf8_lossy(digits);
                return write!(f, "strconv.ParseInt: parsing \"{d}\": invalid syntax");
            }
            LineError::TimeOutsideRange => {
                return write!(f, "time outside range {MIN_NANO_TIME} - {MAX_NANO_TIME}");
            }
        };
        f.write_str(fixed)
    }
}

/// A line InfluxDB would refuse, with its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLine<'a> {
    pub text: &'a [u8],
    pub error: LineError<'a>,
}

/// Iterator over the lines of a body: each is a checked [`Line`] or a [`BadLine`].
pub struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Position of the next `"` or `\` at or after `pos` (`buf.len()` if none).
    next_special: usize,
    /// Nanoseconds per timestamp unit ([`precision_multiplier`]).
    multiplier: i64,
    /// Tag key positions, only for the duplicate check of a large unsorted tag set (rare).
    tag_keys: Vec<(usize, usize)>,
}

impl<'a> Lines<'a> {
    /// Lines whose timestamps are in nanoseconds.
    pub fn new(buf: &'a [u8]) -> Self {
        Lines::with_precision(buf, None)
    }

    /// Lines whose timestamps are in units of `precision` (the `/write` parameter).
    pub fn with_precision(buf: &'a [u8], precision: Option<&str>) -> Self {
        let next_special = memchr2(b'"', b'\\', buf).unwrap_or(buf.len());
        Lines { buf, pos: 0, next_special, multiplier: precision_multiplier(precision), tag_keys: Vec::new() }
    }

    /// Delimits and checks the line starting at `start` (a non-blank byte): returns its end (the index
    /// of its `\n`, or the end of the body) and the verdict.
    fn next_line(&mut self, line_start: usize, start: usize) -> (usize, Result<Line<'a>, LineError<'a>>) {
        let buf = self.buf;
        if self.next_special < start {
            self.next_special = memchr2(b'"', b'\\', &buf[start..]).map_or(buf.len(), |i| start + i);
        }
        // Fast path: one walk over the stretch up to the next `"`/`\`, if the line ends within it.
        let stretch = &buf[start..self.next_special];
        let body_end = self.next_special == buf.len();
        match check_plain(stretch, body_end, self.multiplier) {
            Plain::Good { end, measurement_len, has_timestamp } => {
                let text = strip_cr(&stretch[..end]);
                (start + end, Ok(Line { text, measurement_len, measurement_escaped: false, has_timestamp }))
            }
            Plain::Bad(at, error) => match memchr(b'\n', &stretch[at..]) {
                Some(n) => (start + at + n, Err(error)),
                None if body_end => (buf.len(), Err(error)),
                None => self.careful(line_start, start),
            },
            Plain::Careful => self.careful(line_start, start),
        }
    }

    /// The line at `start` holds a `"` or `\` (or needs a rare check): delimit it with InfluxDB's
    /// `scanLine`, then check it.
    /// `scanLine` starts at `line_start`, before the line's leading blanks: a space there counts.
    fn careful(&mut self, line_start: usize, start: usize) -> (usize, Result<Line<'a>, LineError<'a>>) {
        let end = scan_line(self.buf, line_start);
        let text = line_text(&self.buf[start..end]);
        (end, parse_point(text, self.multiplier, &mut self.tag_keys))
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Result<Line<'a>, BadLine<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.buf;
        loop {
            let line_start = self.pos;
            let mut start = line_start;
            while start < buf.len() && is_blank(buf[start]) {
                start += 1;
            }
            if start >= buf.len() {
                self.pos = buf.len();
                return None;
            }
            match buf[start] {
                // A blank line (a lone `\r` too: see the module comment).
                b'\n' => self.pos = start + 1,
                b'\r' if matches!(buf.get(start + 1), None | Some(b'\n')) => self.pos = start + 2,
                // A comment ends where `scanLine` says: a quote in it can make it span lines.
                b'#' => self.pos = scan_line(buf, line_start) + 1,
                _ => {
                    let (end, verdict) = self.next_line(line_start, start);
                    self.pos = end + 1;
                    return Some(verdict.map_err(|error| BadLine { text: line_text(&buf[start..end]), error }));
                }
            }
        }
    }
}

/// A line as `scanLine` delimited it, without the `\n` it ends with when a string ran to the end of the
/// body (InfluxDB drops that one) and without a last `\r` (see the module comment).
fn line_text(block: &[u8]) -> &[u8] {
    strip_cr(block.strip_suffix(b"\n").unwrap_or(block))
}

fn strip_cr(text: &[u8]) -> &[u8] {
    match text {
        [rest @ .., b'\r'] => rest,
        _ => text,
    }
}

/// InfluxDB's `scanLine`: the end of the line starting at `i`, honouring escapes and quoted strings.
fn scan_line(buf: &[u8], mut i: usize) -> usize {
    let mut quoted = false;
    let mut in_fields = false;
    let (mut equals, mut commas) = (0usize, 0usize);
    while i < buf.len() {
        let b = buf[i];
        if b == b'\\' && i + 2 < buf.len() {
            i += 2;
            continue;
        }
        if b == b' ' {
            in_fields = true;
        }
        if in_fields {
            match b {
                b'=' if !quoted => equals += 1,
                b',' if !quoted => commas += 1,
                b'"' if equals > commas => quoted = !quoted,
                b'\n' if !quoted => return i,
                _ => {}
            }
        } else if b == b'\n' {
            return i;
        }
        i += 1;
    }
    buf.len()
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | 0)
}

fn skip_blanks(text: &[u8], mut i: usize) -> usize {
    while i < text.len() && is_blank(text[i]) {
        i += 1;
    }
    i
}

/// What the single walk over a stretch without `"` and `\` found.
enum Plain<'a> {
    /// A good line; `end` is the offset of its `\n` (or of the end of the body).
    Good { end: usize, measurement_len: usize, has_timestamp: bool },
    /// A bad line, found bad at this offset; its end is not looked for yet.
    Bad(usize, LineError<'a>),
    /// The stretch ends (at a `"` or `\`) before the line does, or the line needs a rare check:
    /// leave it to [`parse_point`].
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
/// same verdict as [`parse_point`] gives on the line, when the line ends within `s`.
///
/// `s` holds no `"` and no `\`: no escapes and no strings, so the measurement ends at the first `,`
/// or space and the line at the first `\n`. `body_end`: `s` runs to the end of the body. The walk
/// jumps from one [`STOP`] byte to the next; common values (short decimal numbers, timestamps) are
/// read on the way, anything else goes to the scanners shared with [`parse_point`].
fn check_plain(s: &[u8], body_end: bool, multiplier: i64) -> Plain<'_> {
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
    let mut keys = [(0u32, 0u32); PLAIN_TAGS];
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
        // Most keys differ in their first byte: compare that before calling memcmp.
        increasing &= match key[0].cmp(prev_key.first().unwrap_or(&0)) {
            std::cmp::Ordering::Equal => key > prev_key,
            order => order.is_gt(),
        };
        prev_key = key;
        if let Some(slot) = keys.get_mut(tags) {
            *slot = (key_start as u32, i as u32);
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
        if tags > PLAIN_TAGS || key_len > u32::MAX as usize {
            return Plain::Careful;
        }
        let key = |k: usize| &s[keys[k].0 as usize..keys[k].1 as usize];
        if (1..tags).any(|b| (0..b).any(|a| key(a) == key(b))) {
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

/// Checks one line (no leading blank, no `\n` of its own, `\r` dropped) as InfluxDB's `parsePoint`
/// does, in its order. `tag_keys` is scratch space for the duplicate check of large unsorted tag sets.
fn parse_point<'a>(
    text: &'a [u8],
    multiplier: i64,
    tag_keys: &mut Vec<(usize, usize)>,
) -> Result<Line<'a>, LineError<'a>> {
    let len = text.len();
    // Measurement (`scanMeasurement`): a byte right after a backslash never ends it.
    if text.first().is_none_or(|&b| b == b',') {
        return Err(LineError::MissingMeasurement);
    }
    let mut i = 1;
    loop {
        if i >= len {
            return Err(LineError::MissingFields);
        }
        if text[i - 1] != b'\\' && (text[i] == b',' || text[i] == b' ') {
            break;
        }
        i += 1;
    }
    let measurement_len = i;
    let measurement_escaped = memchr(b'\\', &text[..i]).is_some();
    // Tags (`scanTags`): the same escape rule; each key is remembered for the duplicate check.
    let escaped = |i: usize| text[i - 1] == b'\\';
    let mut prev_key: (usize, usize) = (0, 0);
    let mut increasing = true;
    let mut tags = 0usize;
    while text[i] == b',' {
        i += 1;
        let key_start = i;
        if i >= len || matches!(text[i], b' ' | b',' | b'=') {
            return Err(LineError::MissingTagKey);
        }
        loop {
            i += 1;
            if i >= len || (matches!(text[i], b' ' | b',') && !escaped(i)) {
                return Err(LineError::MissingTagValue);
            }
            if text[i] == b'=' && !escaped(i) {
                break;
            }
        }
        let key = (key_start, i);
        increasing &= tags == 0 || text[key.0..key.1] > text[prev_key.0..prev_key.1];
        prev_key = key;
        tags += 1;
        i += 1;
        if i >= len || text[i] == b',' || text[i] == b' ' {
            return Err(LineError::MissingTagValue);
        }
        loop {
            i += 1;
            if i >= len {
                return Err(LineError::MissingFields);
            }
            if escaped(i) {
                continue;
            }
            match text[i] {
                b'=' => return Err(LineError::InvalidTagFormat),
                b',' | b' ' => break,
                _ => {}
            }
        }
    }
    let key_len = i;
    if !increasing && has_duplicate_tag(&text[measurement_len..key_len], tags, tag_keys) {
        return Err(LineError::DuplicateTags);
    }
    if key_len > MAX_KEY_LENGTH {
        return Err(LineError::MaxKeyLength(key_len));
    }
    // Fields (`scanFields`): here a backslash skips the byte after it, and a `"` where a value starts
    // opens a string that runs to the next unescaped `"`.
    let fields_start = skip_blanks(text, i);
    i = fields_start;
    let at_end = |i: usize| i >= len;
    let (mut equals, mut commas, mut quoted) = (0usize, 0usize, false);
    while i < len {
        let b = text[i];
        if b == b'\\' && i + 1 < len {
            i += 2;
            continue;
        }
        if b == b'"' && equals > commas {
            quoted = !quoted;
            i += 1;
            continue;
        }
        if b == b'=' && !quoted {
            equals += 1;
            if matches!(text[i - 1], b' ' | b',') && text[i - 2] != b'\\' {
                return Err(LineError::MissingFieldKey);
            }
            if i + 1 >= len || matches!(text[i + 1], b',' | b' ') {
                return Err(LineError::MissingFieldValue);
            }
            if text[i + 1] != b'"' {
                i = scan_value(text, i + 1, &at_end)?;
                continue;
            }
        }
        if !quoted {
            match b {
                b',' => commas += 1,
                b' ' => break,
                _ => {}
            }
        }
        i += 1;
    }
    if quoted {
        return Err(LineError::UnbalancedQuotes);
    }
    if equals == 0 || commas != equals - 1 {
        return Err(LineError::InvalidFieldFormat);
    }
    if key_len + FIELD_KEY_SEPARATOR + (i - fields_start) > MAX_KEY_LENGTH
        && let Some(n) = longest_series_key(key_len, &text[fields_start..i])
    {
        return Err(LineError::MaxKeyLength(n));
    }
    // Timestamp (`scanTime`, then `ParseInt` and `SafeCalcTime`), then only spaces.
    let ts_start = skip_blanks(text, i);
    i = ts_start;
    while i < len && text[i] != b'\n' && text[i] != b' ' {
        if !(text[i].is_ascii_digit() || (i == ts_start && text[i] == b'-')) {
            return Err(LineError::BadTimestamp);
        }
        i += 1;
    }
    let has_timestamp = i > ts_start;
    if has_timestamp {
        check_time(&text[ts_start..i], multiplier)?;
        if text[i..].iter().any(|&b| b != b' ') {
            return Err(LineError::PointInvalid);
        }
    }
    Ok(Line { text, measurement_len, measurement_escaped, has_timestamp })
}

/// Whether two of the `count` tags in `tags` (`,k=v,k=v...` as written) have the same key. Keys end
/// at the first `=` not right after a backslash, as in InfluxDB's `scanTo`.
fn has_duplicate_tag(tags: &[u8], count: usize, scratch: &mut Vec<(usize, usize)>) -> bool {
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
fn longest_series_key(key_len: usize, fields: &[u8]) -> Option<usize> {
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
fn scan_value<'a>(s: &'a [u8], i: usize, at_end: &impl Fn(usize) -> bool) -> Result<usize, LineError<'a>> {
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
fn check_time(ts: &[u8], multiplier: i64) -> Result<(), LineError<'_>> {
    match parse_i64(ts) {
        Some(t) => check_nanos(t, multiplier),
        None if ts == b"-" => Err(LineError::TimestampSyntax(ts)),
        None => Err(LineError::TimestampOutOfRange(ts)),
    }
}

/// A timestamp `t` in units of `multiplier` nanoseconds is one InfluxDB can store.
#[inline(always)]
fn check_nanos(t: i64, multiplier: i64) -> Result<(), LineError<'static>> {
    match t.checked_mul(multiplier) {
        Some(ns) if (MIN_NANO_TIME..=MAX_NANO_TIME).contains(&ns) => Ok(()),
        _ => Err(LineError::TimeOutsideRange),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = Result<(String, String, bool), (String, String)>;

    fn lines_in(body: &str, precision: Option<&str>) -> Vec<Parsed> {
        let mut scratch = Vec::new();
        Lines::with_precision(body.as_bytes(), precision)
            .map(|r| match r {
                Ok(l) => Ok((
                    String::from_utf8_lossy(l.text).into_owned(),
                    String::from_utf8_lossy(l.measurement(&mut scratch)).into_owned(),
                    l.has_timestamp,
                )),
                Err(b) => Err((String::from_utf8_lossy(b.text).into_owned(), b.error.to_string())),
            })
            .collect()
    }

    fn lines(body: &str) -> Vec<Parsed> {
        lines_in(body, None)
    }

    fn ok(text: &str, m: &str, ts: bool) -> Parsed {
        Ok((text.into(), m.into(), ts))
    }

    /// The reason InfluxDB gives for a one-line body, or "" when it takes the line.
    fn reason(line: &str) -> String {
        match lines(line).as_slice() {
            [Ok(_)] => String::new(),
            [Err((_, e))] => e.clone(),
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn plain_lines() {
        assert_eq!(
            lines("cpu,host=a value=1 1700000000\nmem free=2i\n"),
            vec![ok("cpu,host=a value=1 1700000000", "cpu", true), ok("mem free=2i", "mem", false)]
        );
    }

    #[test]
    fn blank_comment_crlf_and_leading_space() {
        let body = "\n   \n# comment\n  # indented comment\r\ncpu v=1 10\r\n\t disk v=2\r\n\r\n  \r\n";
        assert_eq!(lines(body), vec![ok("cpu v=1 10", "cpu", true), ok("disk v=2", "disk", false)]);
        assert_eq!(lines("cpu v=1\r"), vec![ok("cpu v=1", "cpu", false)]);
    }

    #[test]
    fn trailing_blanks_are_not_a_timestamp() {
        assert_eq!(lines("cpu v=1   \n"), vec![ok("cpu v=1   ", "cpu", false)]);
        assert_eq!(lines("cpu  v=1   5\n"), vec![ok("cpu  v=1   5", "cpu", true)]);
        assert_eq!(lines("cpu v=1 5   \n"), vec![ok("cpu v=1 5   ", "cpu", true)]);
    }

    #[test]
    fn newline_inside_a_quoted_string_field() {
        let body = "log,host=a msg=\"line one\nline two\" 5\nnext v=1\n";
        assert_eq!(
            lines(body),
            vec![ok("log,host=a msg=\"line one\nline two\" 5", "log", true), ok("next v=1", "next", false)]
        );
        assert_eq!(lines("log msg=\"a b\"\n"), vec![ok("log msg=\"a b\"", "log", false)]);
        assert_eq!(lines("log msg=\"a b\" 7"), vec![ok("log msg=\"a b\" 7", "log", true)]);
    }

    #[test]
    fn quotes_in_keys_are_literal() {
        assert_eq!(
            lines("c\"pu,t=\"x v=1\nm v=2\n"),
            vec![ok("c\"pu,t=\"x v=1", "c\"pu", false), ok("m v=2", "m", false)]
        );
        assert_eq!(reason("cpu \"v\"=1"), "");
    }

    #[test]
    fn escaped_newline_continues_the_line() {
        assert_eq!(
            lines("cpu,t=a\\\nb v=1\nm v=1"),
            vec![ok("cpu,t=a\\\nb v=1", "cpu", false), ok("m v=1", "m", false)]
        );
    }

    #[test]
    fn escaped_measurement_names() {
        assert_eq!(lines("my\\ m\\,x,t=1 v=1\n"), vec![ok("my\\ m\\,x,t=1 v=1", "my m,x", false)]);
        assert_eq!(lines("a=b v=1\n"), vec![ok("a=b v=1", "a=b", false)]);
        assert_eq!(lines("a\\\"b v=1\n"), vec![ok("a\\\"b v=1", "a\\\"b", false)]);
        // A byte after a backslash never ends the measurement, even after `\\`: InfluxDB's rule.
        assert_eq!(lines("a\\\\,b=c v=1\n"), vec![ok("a\\\\,b=c v=1", "a\\,b=c", false)]);
    }

    #[test]
    fn escaped_quote_in_string_value() {
        assert_eq!(lines("m s=\"say \\\"hi\\\"\" 1\n"), vec![ok("m s=\"say \\\"hi\\\"\" 1", "m", true)]);
    }

    #[test]
    fn the_reasons_influxd_gives() {
        // Each case was sent to influxd 1.6.7; tests/line_validation.rs asks a live one for many more.
        for (line, want) in [
            ("cpu", "missing fields"),
            ("cpu,host=a", "missing fields"),
            ("cpu ", "invalid field format"),
            (",t=1 v=1", "missing measurement"),
            ("m s=\"open", "unbalanced quotes"),
            ("cpu value=", "missing field value"),
            ("cpu value=1 notatime", "bad timestamp"),
            ("cpu value=1i2", "invalid number"),
            ("cpu value=tru", "invalid boolean"),
            ("cpu,host= value=1", "missing tag value"),
            ("cpu value=1 123 456", "point is invalid"),
            ("cpu value=1,", "invalid field format"),
            ("cpu,=x value=1", "missing tag key"),
            ("cpu, v=1", "missing tag key"),
            ("cpu,a v=1", "missing tag value"),
            ("cpu,a=b=c v=1", "invalid tag format"),
            ("cpu,a=1,a=2 v=1", "duplicate tags"),
            ("cpu,b=1,a=2,b=3 v=1", "duplicate tags"),
            ("cpu =1", "missing field key"),
            ("cpu v=1,=2", "missing field key"),
            ("cpu v", "invalid field format"),
            ("cpu v=1u", "invalid number"),
            ("cpu v=NaN", "invalid number"),
            ("cpu v=-Inf", "invalid number"),
            ("cpu v=Inf", "invalid boolean"),
            ("cpu v=+1", "invalid boolean"),
            ("cpu v=tRUE", "invalid boolean"),
            ("cpu v=1e400", "invalid float"),
            ("cpu v=.e5", "invalid float"),
            ("cpu v=1ee5", "invalid float"),
            ("cpu v=1e+-5", "invalid number"),
            ("cpu v=.", "invalid number"),
            ("cpu v=-i", "invalid number"),
            ("cpu v=1.2.3,w=t", "invalid number"),
            ("cpu v=\"x\"y=1", "invalid field format"),
            ("cpu v=1 5-", "bad timestamp"),
            ("cpu v=1 123\t", "bad timestamp"),
            ("cpu,a=b\\ v=1", "invalid tag format"),
            ("cpu v=1\\", "invalid number"),
            ("cpu v=\"a\\", "unbalanced quotes"),
            (
                "cpu value=99999999999999999999i",
                "unable to parse integer 99999999999999999999: strconv.ParseInt: parsing \"99999999999999999999\": value out of range",
            ),
            (
                "cpu v=-9223372036854775809i",
                "unable to parse integer -9223372036854775809: strconv.ParseInt: parsing \"-9223372036854775809\": value out of range",
            ),
            (
                "cpu value=1 99999999999999999999",
                "strconv.ParseInt: parsing \"99999999999999999999\": value out of range",
            ),
            ("cpu value=1 -", "strconv.ParseInt: parsing \"-\": invalid syntax"),
            ("cpu v=1 9223372036854775807", "time outside range -9223372036854775806 - 9223372036854775806"),
            ("cpu v=1 -9223372036854775807", "time outside range -9223372036854775806 - 9223372036854775806"),
        ] {
            assert_eq!(reason(line), want, "{line:?}");
        }
    }

    #[test]
    fn what_influxd_takes() {
        for line in [
            "cpu value=1,value=2",
            "cpu  value=2",
            "cpu \t=1",
            "cpu,a==b v=1",
            "cpu v=1e-400",
            "cpu v=1.",
            "cpu v=-.5",
            "cpu v=1.e5",
            "cpu v=1E+5",
            "cpu v=\"x\"y",
            "cpu v=t,w=T,x=true,y=True,z=TRUE",
            "cpu v=f,w=F,x=false,y=False,z=FALSE",
            "cpu v=1 123 ",
            "cpu v=1 \t123",
            "cpu  v=1  1  ",
            "cpu v=1 -5",
            "cpu v=00000000000000000000000000001i",
            "cpu v=-9223372036854775808i",
            "cpu v=9223372036854775807i",
            "cpu v=1 9223372036854775806",
            "cpu v=1 -9223372036854775806",
            "a\\\\,b=c v=1",
            "cpu\\ x v=1",
            "cpu,b=1,a=2 v=1",
        ] {
            assert_eq!(reason(line), "", "{line:?}");
        }
    }

    #[test]
    fn precision_scales_the_time_range() {
        let r = |line: &str, p: &str| match lines_in(line, Some(p)).as_slice() {
            [Ok(_)] => String::new(),
            [Err((_, e))] => e.clone(),
            other => panic!("{other:?}"),
        };
        let outside = "time outside range -9223372036854775806 - 9223372036854775806";
        assert_eq!(r("cpu v=1 9223372036854", "ms"), "");
        assert_eq!(r("cpu v=1 9223372036855", "ms"), outside);
        assert_eq!(r("cpu v=1 9223372036855", "us"), "", "influxd reads `us` as nanoseconds");
        assert_eq!(r("cpu v=1 9223372036854776", "u"), outside);
        assert_eq!(r("cpu v=1 2562047", "h"), "");
        assert_eq!(r("cpu v=1 2562048", "h"), outside);
    }

    #[test]
    fn key_length_limits() {
        let key = format!("m,t={}", "a".repeat(65520));
        assert_eq!(key.len(), 65524);
        assert_eq!(reason(&format!("{key} vv=1")), "");
        let long = format!("{key}aaaaaaaa v=1 x");
        assert_eq!(reason(&long), "max key length exceeded: 65537 > 65535");
        let longer = format!("{key}aaaaaaaaaaaa v=1");
        assert_eq!(reason(&longer), "max key length exceeded: 65536 > 65535");
        // The same with an escape, through the careful path.
        assert_eq!(reason(&format!("{key}\\ aaaaaa v=1 x")), "max key length exceeded: 65537 > 65535");
        assert_eq!(reason(&format!("{key} {}=1", "f".repeat(8))), "max key length exceeded: 65536 > 65535");
    }

    #[test]
    fn many_unsorted_tags_find_duplicates() {
        let mut tags: Vec<String> = (0..100).rev().map(|i| format!("k{i}=v")).collect();
        let good = format!("m,{} v=1", tags.join(","));
        assert_eq!(reason(&good), "");
        tags.push("k42=w".into());
        assert_eq!(reason(&format!("m,{} v=1", tags.join(","))), "duplicate tags");
    }

    #[test]
    fn a_string_open_to_the_end_of_the_body_is_quoted_without_its_last_newline() {
        // The unclosed quote takes the newlines in; influxd quotes the block without the last one.
        assert_eq!(lines("m v=\"open\nm v=1\n"), vec![Err(("m v=\"open\nm v=1".into(), "unbalanced quotes".into()))]);
    }

    #[test]
    fn several_lines_and_errors_keep_their_text() {
        let got = lines("cpu v=1\n cpu v=\ncpu v=2 x\r\nmem v=3");
        assert_eq!(
            got,
            vec![
                ok("cpu v=1", "cpu", false),
                Err(("cpu v=".into(), "missing field value".into())),
                Err(("cpu v=2 x".into(), "bad timestamp".into())),
                ok("mem v=3", "mem", false),
            ]
        );
    }

    #[test]
    fn a_special_byte_far_ahead_keeps_fast_lines_fast() {
        let mut body = String::new();
        for i in 0..100 {
            body.push_str(&format!("m{i} v={i} {i}\n"));
        }
        body.push_str("q s=\"x\ny\"\n");
        let got = lines(&body);
        assert_eq!(got.len(), 101);
        assert_eq!(got[100], ok("q s=\"x\ny\"", "q", false));
    }

    #[test]
    fn fast_and_careful_paths_agree() {
        // Each line alone, and followed by a line with a quote (which changes how far the fast walk sees).
        let samples = [
            "cpu,host=a,region=b usage=1.5,idle=2i,ok=t 1700000000000000000",
            "cpu,b=1,a=2 v=1",
            "cpu v=1 123 456",
            "cpu,a=b v=1e5,w=-3 -5",
            "cpu v=tru",
            "cpu,a=1 v=1\r",
            "cpu v=1 1\r",
            "cpu,a v=1",
            "cpu v=1,",
            "x",
        ];
        for line in samples {
            let mut tag_keys = Vec::new();
            let text = line.strip_suffix('\r').unwrap_or(line).as_bytes();
            let want = parse_point(text, 1, &mut tag_keys).map(|l| l.measurement_len).map_err(|e| e.to_string());
            for body in [line.to_string(), format!("{line}\n"), format!("{line}\nq s=\"x\"\n")] {
                let got = Lines::new(body.as_bytes())
                    .next()
                    .map(|r| r.map(|l| l.measurement_len).map_err(|b| b.error.to_string()));
                assert_eq!(got, Some(want.clone()), "{body:?}");
            }
        }
    }

    #[test]
    fn odd_bytes_never_panic() {
        for body in [
            "\\",
            "\"",
            "m \"",
            "m v=\"\\",
            "\\\n\\\n",
            "m v=1 \\",
            "\0\0\n",
            "m,\\",
            "m,a=\\",
            "m,a=b \\",
            "m v=-",
            "m v=1e",
            "\r",
            "\r\r",
            "m v=1\r\r",
            ",",
            "m,",
            "m v=\"",
            "m v=\"\\\"",
            " m=\"x\ny\"",
        ] {
            let _ = lines(body);
        }
    }
}
