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
//! Speed: four paths, each taken only when the one before is not sure. Most lines are common good
//! lines (no `"` or `\`, short decimal or boolean values, one space between the parts). On a CPU with
//! AVX-512 or AVX2, `window` accepts those of up to 127 bytes with numbers for values from masks of
//! 64-byte blocks at the line's start and at its fields, checked all at once; `fast` accepts the
//! common lines it leaves (longer ones, booleans) by walking from stop byte to stop byte of the same
//! kind of masks. Neither says anything about any other line. The position of the next `"` or `\` in the
//! body is remembered, and a line that ends before it is otherwise checked by `plain` in a single
//! walk that also finds its end, its measurement and its timestamp and names the fault of a bad line.
//! Only a line holding `"` or `\` is first delimited by the `scanLine` walk and then checked
//! (`parse_point`).
//!
//! Layout: this file splits the body ([`Lines`]), delimits careful lines (`scan_line`) and holds the
//! careful check (`parse_point`); `window` and `fast` hold the two quick paths, `plain` the single
//! walk, `validate` the value, tag and timestamp checks both walks share, and `errors` the reasons
//! ([`LineError`]).

mod errors;
mod fast;
mod plain;
mod validate;
mod window;

use fast::StopMasks;
use memchr::{memchr, memchr2};
use plain::{Plain, check_plain};
use validate::{
    FIELD_KEY_SEPARATOR, check_time, has_duplicate_tag, is_blank, longest_series_key, scan_value, skip_blanks,
};

pub use errors::{LineError, MAX_KEY_LENGTH};

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
    /// For a line with a timestamp: the text and the `\n` right after it in the body, when the body
    /// has one there (most lines): what the line is stored as, in one copy.
    pub with_newline: Option<&'a [u8]>,
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
    /// Position of the next `"` or `\` at or after `pos` (`buf.len()` if none); looked for only when a
    /// line is not for `fast`, which sees those bytes itself.
    next_special: Option<usize>,
    /// Nanoseconds per timestamp unit ([`precision_multiplier`]).
    multiplier: i64,
    /// Tag key positions, only for the duplicate check of a large unsorted tag set (rare).
    tag_keys: Vec<(usize, usize)>,
    /// Where the stop bytes are around the walk, for the stop-walk path (`fast`).
    masks: StopMasks,
    /// How this CPU takes the window path, if it can ([`window::available`]).
    window: Option<window::Cpu>,
}

impl<'a> Lines<'a> {
    /// Lines whose timestamps are in nanoseconds.
    pub fn new(buf: &'a [u8]) -> Self {
        Lines::with_precision(buf, None)
    }

    /// Lines whose timestamps are in units of `precision` (the `/write` parameter).
    pub fn with_precision(buf: &'a [u8], precision: Option<&str>) -> Self {
        Lines {
            buf,
            pos: 0,
            next_special: None,
            multiplier: precision_multiplier(precision),
            tag_keys: Vec::new(),
            masks: StopMasks::new(buf),
            window: window::available(),
        }
    }

    /// Delimits and checks the line starting at `start` (a non-blank byte): returns its end (the index
    /// of its `\n`, or the end of the body) and the verdict.
    fn next_line(&mut self, line_start: usize, start: usize) -> (usize, Result<Line<'a>, LineError<'a>>) {
        let buf = self.buf;
        if let Some(good) = fast::accept(buf, start, self.multiplier, &mut self.masks) {
            let text = &buf[start..good.end];
            let line = Line {
                text,
                measurement_len: good.measurement_len,
                measurement_escaped: false,
                has_timestamp: good.has_timestamp,
                with_newline: None,
            };
            return (good.end, Ok(line));
        }
        // Otherwise one walk over the stretch up to the next `"`/`\`, if the line ends within it.
        let next_special = match self.next_special {
            Some(at) if at >= start => at,
            _ => {
                let at = memchr2(b'"', b'\\', &buf[start..]).map_or(buf.len(), |i| start + i);
                self.next_special = Some(at);
                at
            }
        };
        let stretch = &buf[start..next_special];
        let body_end = next_special == buf.len();
        match check_plain(stretch, body_end, self.multiplier) {
            Plain::Good { end, measurement_len, has_timestamp } => {
                let text = strip_cr(&stretch[..end]);
                (
                    start + end,
                    Ok(Line { text, measurement_len, measurement_escaped: false, has_timestamp, with_newline: None }),
                )
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
                    // Most lines: accepted by the window path, which knows the line's end.
                    if let Some(cpu) = self.window
                        && let Some(short) = window::accept(cpu, buf, start, self.multiplier)
                    {
                        let line = short.line(buf, start);
                        self.pos = start + line.text.len() + 1;
                        return Some(Ok(line));
                    }
                    let (end, verdict) = self.next_line(line_start, start);
                    self.pos = end + 1;
                    return Some(match verdict {
                        Ok(mut line) => {
                            if line.has_timestamp {
                                let whole = buf.get(start..=end).filter(|w| w.len() == line.text.len() + 1);
                                line.with_newline = whole.filter(|w| w.last() == Some(&b'\n'));
                            }
                            Ok(line)
                        }
                        Err(error) => Err(BadLine { text: line_text(&buf[start..end]), error }),
                    });
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
    Ok(Line { text, measurement_len, measurement_escaped, has_timestamp, with_newline: None })
}

#[cfg(test)]
mod tests;
