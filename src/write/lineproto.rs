//! Splitting a line-protocol body into lines, and reading each line's measurement, without copying.
//!
//! The rules are InfluxDB 1.x's own (`scanLine` / `scanKey` / `scanFields` in its `models` package):
//! only `\n` ends a line; a backslash escapes the byte after it (so `\` + newline does not end a line);
//! inside the field set a `"` opens or closes a string value when it stands where a value can start
//! (more `=` than `,` seen outside quotes), and a newline inside such a string does not end the line.
//! Blank lines and lines whose first non-blank byte is `#` are skipped; a `\r` before the `\n` is dropped.
//!
//! Most lines hold neither `"` nor `\`; for them a few `memchr` calls find everything. The position of the
//! next `"` or `\` in the body is remembered, so the byte-by-byte scanner only runs on lines that need it.

use memchr::{memchr, memchr2};
use std::fmt;

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

/// Why a line cannot be a point; InfluxDB's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    MissingMeasurement,
    MissingFields,
    UnbalancedQuotes,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LineError::MissingMeasurement => "missing measurement",
            LineError::MissingFields => "missing fields",
            LineError::UnbalancedQuotes => "unbalanced quotes",
        })
    }
}

/// A line the splitter could not read as a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLine<'a> {
    pub text: &'a [u8],
    pub error: LineError,
}

/// Iterator over the lines of a body.
pub struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Position of the next `"` or `\` at or after `pos` (`buf.len()` if none).
    next_special: usize,
}

impl<'a> Lines<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        let next_special = memchr2(b'"', b'\\', buf).unwrap_or(buf.len());
        Lines { buf, pos: 0, next_special }
    }

    /// Where the line starting at `start` ends (index of its `\n`, or the end of the body), and
    /// whether it holds a `"` or `\` (and so needs the careful scanner for its fields).
    fn line_end(&mut self, start: usize) -> (usize, bool) {
        let buf = self.buf;
        let newline = memchr(b'\n', &buf[start..]).map_or(buf.len(), |i| start + i);
        if self.next_special < start {
            self.next_special = memchr2(b'"', b'\\', &buf[start..]).map_or(buf.len(), |i| start + i);
        }
        if self.next_special >= newline {
            return (newline, false);
        }
        (scan_line(buf, start), true)
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Result<Line<'a>, BadLine<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.pos >= self.buf.len() {
                return None;
            }
            let start = self.pos;
            let (end, special) = self.line_end(start);
            self.pos = end + 1;
            let mut text = &self.buf[start..end];
            if let [rest @ .., b'\r'] = text {
                text = rest;
            }
            let blank = text.iter().position(|&b| !matches!(b, b' ' | b'\t' | 0));
            let Some(first) = blank else { continue };
            let text = &text[first..];
            if text[0] == b'#' {
                continue;
            }
            let parsed = if special { analyze_escaped(text) } else { analyze_plain(text) };
            return Some(parsed.map_err(|error| BadLine { text, error }));
        }
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

/// Reads a line that holds no `"` and no `\`.
fn analyze_plain(text: &[u8]) -> Result<Line<'_>, LineError> {
    let measurement_len = memchr2(b',', b' ', text).ok_or(LineError::MissingFields)?;
    if measurement_len == 0 {
        return Err(LineError::MissingMeasurement);
    }
    let key_end = measurement_len + memchr(b' ', &text[measurement_len..]).ok_or(LineError::MissingFields)?;
    let fields = skip_blanks(text, key_end);
    if fields == text.len() {
        return Err(LineError::MissingFields);
    }
    let has_timestamp = match memchr(b' ', &text[fields..]) {
        Some(n) => skip_blanks(text, fields + n) < text.len(),
        None => false,
    };
    Ok(Line { text, measurement_len, measurement_escaped: false, has_timestamp })
}

/// Reads a line with escapes or quotes, following InfluxDB's `scanKey`/`scanFields`.
fn analyze_escaped(text: &[u8]) -> Result<Line<'_>, LineError> {
    let mut i = 0;
    let mut measurement_len = None;
    let mut measurement_escaped = false;
    // key: measurement and tags, up to the first unescaped space
    while i < text.len() {
        match text[i] {
            b'\\' => {
                if measurement_len.is_none() {
                    measurement_escaped = true;
                }
                i += 2;
                continue;
            }
            b',' if measurement_len.is_none() => measurement_len = Some(i),
            b' ' => break,
            _ => {}
        }
        i += 1;
    }
    let key_end = i.min(text.len());
    let measurement_len = measurement_len.unwrap_or(key_end);
    if measurement_len == 0 {
        return Err(LineError::MissingMeasurement);
    }
    let fields = skip_blanks(text, key_end);
    if fields >= text.len() {
        return Err(LineError::MissingFields);
    }
    // fields: up to the first space outside a quoted string value
    let (mut quoted, mut equals, mut commas) = (false, 0usize, 0usize);
    let mut i = fields;
    while i < text.len() {
        match text[i] {
            b'\\' => {
                i += 2;
                continue;
            }
            b'"' if equals > commas => quoted = !quoted,
            b'=' if !quoted => equals += 1,
            b',' if !quoted => commas += 1,
            b' ' if !quoted => break,
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return Err(LineError::UnbalancedQuotes);
    }
    let has_timestamp = i < text.len() && skip_blanks(text, i) < text.len();
    Ok(Line { text, measurement_len, measurement_escaped, has_timestamp })
}

fn skip_blanks(text: &[u8], mut i: usize) -> usize {
    while i < text.len() && matches!(text[i], b' ' | b'\t' | 0) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = Result<(String, String, bool), (String, LineError)>;

    fn lines(body: &str) -> Vec<Parsed> {
        let mut scratch = Vec::new();
        Lines::new(body.as_bytes())
            .map(|r| match r {
                Ok(l) => Ok((
                    String::from_utf8_lossy(l.text).into_owned(),
                    String::from_utf8_lossy(l.measurement(&mut scratch)).into_owned(),
                    l.has_timestamp,
                )),
                Err(b) => Err((String::from_utf8_lossy(b.text).into_owned(), b.error)),
            })
            .collect()
    }

    fn ok(text: &str, m: &str, ts: bool) -> Parsed {
        Ok((text.into(), m.into(), ts))
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
        let body = "\n   \n# comment\n  # indented comment\r\ncpu v=1 10\r\n\t disk v=2\r\n\r\n";
        assert_eq!(lines(body), vec![ok("cpu v=1 10", "cpu", true), ok("disk v=2", "disk", false)]);
    }

    #[test]
    fn trailing_blanks_are_not_a_timestamp() {
        assert_eq!(lines("cpu v=1   \n"), vec![ok("cpu v=1   ", "cpu", false)]);
        assert_eq!(lines("cpu  v=1   5\n"), vec![ok("cpu  v=1   5", "cpu", true)]);
    }

    #[test]
    fn newline_inside_a_quoted_string_field() {
        let body = "log,host=a msg=\"line one\nline two\" 5\nnext v=1\n";
        assert_eq!(
            lines(body),
            vec![ok("log,host=a msg=\"line one\nline two\" 5", "log", true), ok("next v=1", "next", false)]
        );
        // A space inside the string is not the end of the field set either.
        assert_eq!(lines("log msg=\"a b\"\n"), vec![ok("log msg=\"a b\"", "log", false)]);
        assert_eq!(lines("log msg=\"a b\" 7"), vec![ok("log msg=\"a b\" 7", "log", true)]);
    }

    #[test]
    fn quotes_in_keys_are_literal() {
        // A quote in the measurement or a tag is an ordinary byte; only field values are quoted.
        assert_eq!(
            lines("c\"pu,t=\"x v=1\nm v=2\n"),
            vec![ok("c\"pu,t=\"x v=1", "c\"pu", false), ok("m v=2", "m", false)]
        );
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
        // Other escapes stay as written, like InfluxDB's unescapeMeasurement.
        assert_eq!(lines("a\\\"b v=1\n"), vec![ok("a\\\"b v=1", "a\\\"b", false)]);
    }

    #[test]
    fn escaped_quote_in_string_value() {
        assert_eq!(lines("m s=\"say \\\"hi\\\"\" 1\n"), vec![ok("m s=\"say \\\"hi\\\"\" 1", "m", true)]);
    }

    #[test]
    fn bad_lines_are_reported() {
        assert_eq!(lines("cpu\n"), vec![Err(("cpu".into(), LineError::MissingFields))]);
        assert_eq!(lines("cpu,host=a\n"), vec![Err(("cpu,host=a".into(), LineError::MissingFields))]);
        assert_eq!(lines("cpu   \n"), vec![Err(("cpu   ".into(), LineError::MissingFields))]);
        assert_eq!(lines(",t=1 v=1\n"), vec![Err((",t=1 v=1".into(), LineError::MissingMeasurement))]);
        assert_eq!(lines("m s=\"open"), vec![Err(("m s=\"open".into(), LineError::UnbalancedQuotes))]);
        assert_eq!(lines("m\\ x\n"), vec![Err(("m\\ x".into(), LineError::MissingFields))]);
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
    fn odd_bytes_never_panic() {
        for body in ["\\", "\"", "m \"", "m v=\"\\", "\\\n\\\n", "m v=1 \\", "\0\0\n", "m,\\"] {
            let _ = lines(body);
        }
    }
}
