//! Checks for the `line_verdict` fuzz target: the proxy's verdict on every line of a body (`Lines`)
//! against a reference written here as a plain port of InfluxDB 1.6's parser (`models/points.go`:
//! `ParsePointsWithPrecision`, `scanLine`, `parsePoint`, `scanKey`, `scanMeasurement`, `scanTags`,
//! `scanFields`, `scanNumber`, `scanBoolean`, `scanTime`, `walkFields`). The reference favours being
//! obviously right over being fast: it follows the Go functions one by one, copies freely, sorts tag
//! keys to find duplicates and lets the standard library parse numbers.
//!
//! For each body the lines must match one to one: the same text; for a good line the same measurement
//! (unescaped) and whether it has a timestamp; for a bad line the same reason, word for word. The body
//! is checked with nanosecond timestamps and with a precision picked from its length.
//!
//! The one deliberate difference from influxd, modelled here too: one `\r` before a line's end is
//! dropped (influxd refuses such lines), and a line that is only blanks and a `\r` is skipped.
//!
//! Shared by `fuzz/fuzz_targets/line_verdict.rs` and `tests/fuzz_regressions.rs`: public API only.

use influx_proxy::write::lineproto::Lines;

const PRECISIONS: [Option<&str>; 7] = [None, Some("n"), Some("u"), Some("ms"), Some("s"), Some("m"), Some("h")];

pub fn run(data: &[u8]) {
    check(data, None);
    check(data, PRECISIONS[data.len() % PRECISIONS.len()]);
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Good { measurement: Vec<u8>, has_timestamp: bool },
    Bad(String),
}

fn check(data: &[u8], precision: Option<&str>) {
    let want = reference::parse_points(data, precision);
    let mut scratch = Vec::new();
    // What storing a line in one copy, and a body as a batch as it stands, rely on: a line's
    // `with_newline` is its text and a newline, and lines that all have one and add up to the whole
    // body are the body.
    let (mut whole, mut covered) = (Vec::new(), 0);
    for line in Lines::with_precision(data, precision).flatten() {
        if let Some(w) = line.with_newline {
            assert_eq!(w, [line.text, b"\n"].concat(), "with_newline of {:?}", String::from_utf8_lossy(line.text));
            covered += w.len();
            whole.extend_from_slice(w);
        }
    }
    if covered == data.len() {
        assert_eq!(whole, data, "lines that cover the body are the body");
    }
    let got: Vec<(Vec<u8>, Verdict)> = Lines::with_precision(data, precision)
        .map(|item| match item {
            Ok(line) => (
                line.text.to_vec(),
                Verdict::Good {
                    measurement: line.measurement(&mut scratch).to_vec(),
                    has_timestamp: line.has_timestamp,
                },
            ),
            Err(bad) => (bad.text.to_vec(), Verdict::Bad(bad.error.to_string())),
        })
        .collect();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g,
            w,
            "line {i} (precision {precision:?}): proxy {:?} {:?}, reference {:?} {:?}",
            String::from_utf8_lossy(&g.0),
            g.1,
            String::from_utf8_lossy(&w.0),
            w.1
        );
    }
    assert_eq!(got.len(), want.len(), "number of lines (precision {precision:?})");
}

/// InfluxDB 1.6's parser, function by function. Errors are the reason strings influxd prints.
mod reference {
    use super::Verdict;

    const MAX_KEY_LENGTH: usize = 65535;

    pub fn parse_points(buf: &[u8], precision: Option<&str>) -> Vec<(Vec<u8>, Verdict)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let (end, block) = scan_line(buf, pos);
            pos = end + 1;
            // A string that runs to the end of the body takes the last `\n` in: InfluxDB drops it.
            let block = block.strip_suffix(b"\n").unwrap_or(block);
            // The proxy's deviation: one trailing `\r` goes.
            let block = block.strip_suffix(b"\r").unwrap_or(block);
            if block.is_empty() {
                continue;
            }
            let start = skip_whitespace(block, 0);
            if start >= block.len() || block[start] == b'#' {
                continue;
            }
            let line = &block[start..];
            let verdict = match parse_point(line, precision) {
                Ok((measurement, has_timestamp)) => Verdict::Good { measurement, has_timestamp },
                Err(e) => Verdict::Bad(e),
            };
            out.push((line.to_vec(), verdict));
        }
        out
    }

    fn scan_line(buf: &[u8], mut i: usize) -> (usize, &[u8]) {
        let start = i;
        let (mut quoted, mut fields) = (false, false);
        let (mut equals, mut commas) = (0, 0);
        loop {
            if i >= buf.len() {
                break;
            }
            if buf[i] == b'\\' && i + 2 < buf.len() {
                i += 2;
                continue;
            }
            if buf[i] == b' ' {
                fields = true;
            }
            if fields {
                if !quoted && buf[i] == b'=' {
                    i += 1;
                    equals += 1;
                    continue;
                } else if !quoted && buf[i] == b',' {
                    i += 1;
                    commas += 1;
                    continue;
                } else if buf[i] == b'"' && equals > commas {
                    i += 1;
                    quoted = !quoted;
                    continue;
                }
            }
            if buf[i] == b'\n' && !quoted {
                break;
            }
            i += 1;
        }
        (i, &buf[start..i])
    }

    fn skip_whitespace(buf: &[u8], mut i: usize) -> usize {
        while i < buf.len() && matches!(buf[i], b' ' | b'\t' | 0) {
            i += 1;
        }
        i
    }

    fn err<T>(s: &str) -> Result<T, String> {
        Err(s.to_string())
    }

    /// Ok: the unescaped measurement and whether a timestamp was given.
    fn parse_point(buf: &[u8], precision: Option<&str>) -> Result<(Vec<u8>, bool), String> {
        let (pos, key, measurement) = scan_key(buf)?;
        if key.is_empty() {
            return err("missing measurement");
        }
        if key.len() > MAX_KEY_LENGTH {
            return Err(format!("max key length exceeded: {} > {MAX_KEY_LENGTH}", key.len()));
        }
        let (pos, fields) = scan_fields(buf, pos)?;
        if fields.is_empty() {
            return err("missing fields");
        }
        for field_key in walk_field_keys(fields) {
            let size = key.len() + 4 + field_key.len();
            if size > MAX_KEY_LENGTH {
                return Err(format!("max key length exceeded: {size} > {MAX_KEY_LENGTH}"));
            }
        }
        let (mut pos, ts) = scan_time(buf, pos)?;
        if ts.is_empty() {
            return Ok((unescape_measurement(measurement), false));
        }
        let text = String::from_utf8_lossy(ts).into_owned();
        let t: i64 = match text.parse() {
            Ok(t) => t,
            Err(_) if text == "-" => return Err(format!("strconv.ParseInt: parsing \"{text}\": invalid syntax")),
            Err(_) => return Err(format!("strconv.ParseInt: parsing \"{text}\": value out of range")),
        };
        let multiplier: i64 = match precision {
            Some("u") => 1_000,
            Some("ms") => 1_000_000,
            Some("s") => 1_000_000_000,
            Some("m") => 60_000_000_000,
            Some("h") => 3_600_000_000_000,
            _ => 1,
        };
        let ns = i128::from(t) * i128::from(multiplier);
        if ns < i128::from(i64::MIN) + 2 || ns > i128::from(i64::MAX) - 1 {
            return Err(format!("time outside range {} - {}", i64::MIN + 2, i64::MAX - 1));
        }
        while pos < buf.len() {
            if buf[pos] != b' ' {
                return err("point is invalid");
            }
            pos += 1;
        }
        Ok((unescape_measurement(measurement), true))
    }

    /// `scanKey`: (end, key, measurement as written).
    fn scan_key(buf: &[u8]) -> Result<(usize, &[u8], &[u8]), String> {
        let (in_tags, mut i) = scan_measurement(buf)?;
        let measurement = if in_tags { &buf[..i - 1] } else { &buf[..i] };
        let mut tag_keys: Vec<&[u8]> = Vec::new();
        if in_tags {
            loop {
                let key_start = i;
                i = scan_tags_key(buf, i)?;
                tag_keys.push(&buf[key_start..i - 1]);
                let (next_is_key, next) = scan_tags_value(buf, i)?;
                i = next;
                if !next_is_key {
                    break;
                }
            }
        }
        tag_keys.sort();
        if tag_keys.windows(2).any(|w| w[0] == w[1]) {
            return err("duplicate tags");
        }
        Ok((i, &buf[..i], measurement))
    }

    /// `scanMeasurement`: (tags follow, position after the `,` or at the space).
    fn scan_measurement(buf: &[u8]) -> Result<(bool, usize), String> {
        if buf.is_empty() || buf[0] == b',' {
            return err("missing measurement");
        }
        let mut i = 0;
        loop {
            i += 1;
            if i >= buf.len() {
                return err("missing fields");
            }
            if buf[i - 1] == b'\\' {
                continue;
            }
            if buf[i] == b',' {
                return Ok((true, i + 1));
            }
            if buf[i] == b' ' {
                return Ok((false, i));
            }
        }
    }

    /// `scanTagsKey`: the position after the key's `=`.
    fn scan_tags_key(buf: &[u8], mut i: usize) -> Result<usize, String> {
        if i >= buf.len() || matches!(buf[i], b' ' | b',' | b'=') {
            return err("missing tag key");
        }
        loop {
            i += 1;
            if i >= buf.len() || (matches!(buf[i], b' ' | b',') && buf[i - 1] != b'\\') {
                return err("missing tag value");
            }
            if buf[i] == b'=' && buf[i - 1] != b'\\' {
                return Ok(i + 1);
            }
        }
    }

    /// `scanTagsValue`: (another tag follows, position of the next key or of the space).
    fn scan_tags_value(buf: &[u8], mut i: usize) -> Result<(bool, usize), String> {
        if i >= buf.len() || buf[i] == b',' || buf[i] == b' ' {
            return err("missing tag value");
        }
        loop {
            i += 1;
            if i >= buf.len() {
                return err("missing fields");
            }
            if buf[i] == b'=' && buf[i - 1] != b'\\' {
                return err("invalid tag format");
            }
            if buf[i] == b',' && buf[i - 1] != b'\\' {
                return Ok((true, i + 1));
            }
            if buf[i] == b' ' && buf[i - 1] != b'\\' {
                return Ok((false, i));
            }
        }
    }

    fn scan_fields(buf: &[u8], i: usize) -> Result<(usize, &[u8]), String> {
        let start = skip_whitespace(buf, i);
        let mut i = start;
        let mut quoted = false;
        let (mut equals, mut commas) = (0, 0);
        loop {
            if i >= buf.len() {
                break;
            }
            if buf[i] == b'\\' && i + 1 < buf.len() {
                i += 2;
                continue;
            }
            if buf[i] == b'"' && equals > commas {
                quoted = !quoted;
                i += 1;
                continue;
            }
            if buf[i] == b'=' && !quoted {
                equals += 1;
                if buf[i - 1] == b' ' && buf[i - 2] != b'\\' {
                    return err("missing field key");
                }
                if buf[i - 1] == b',' && buf[i - 2] != b'\\' {
                    return err("missing field key");
                }
                if i + 1 >= buf.len() {
                    return err("missing field value");
                }
                if buf[i + 1] == b',' || buf[i + 1] == b' ' {
                    return err("missing field value");
                }
                let next = buf[i + 1];
                if next.is_ascii_digit() || next == b'.' || next == b'-' || next == b'N' || next == b'n' {
                    i = scan_number(buf, i + 1)?;
                    continue;
                }
                if next != b'"' {
                    i = scan_boolean(buf, i + 1)?;
                    continue;
                }
            }
            if buf[i] == b',' && !quoted {
                commas += 1;
            }
            if buf[i] == b' ' && !quoted {
                break;
            }
            i += 1;
        }
        if quoted {
            return err("unbalanced quotes");
        }
        if equals == 0 || commas != equals - 1 {
            return err("invalid field format");
        }
        Ok((i, &buf[start..i]))
    }

    fn is_numeric(b: u8) -> bool {
        b.is_ascii_digit() || b == b'.'
    }

    fn scan_number(buf: &[u8], mut i: usize) -> Result<usize, String> {
        let start = i;
        let (mut is_int, mut is_unsigned) = (false, false);
        if i < buf.len() && buf[i] == b'-' {
            i += 1;
            if i == buf.len() {
                return err("invalid number");
            }
        }
        let (mut decimal, mut scientific) = (false, false);
        loop {
            if i >= buf.len() {
                break;
            }
            if buf[i] == b',' || buf[i] == b' ' {
                break;
            }
            if buf[i] == b'i' && i > start && !(is_int || is_unsigned) {
                is_int = true;
                i += 1;
                continue;
            } else if buf[i] == b'u' && i > start && !(is_int || is_unsigned) {
                is_unsigned = true;
                i += 1;
                continue;
            }
            if buf[i] == b'.' {
                if decimal {
                    return err("invalid number");
                }
                decimal = true;
            }
            if i > start && (buf[i] == b'e' || buf[i] == b'E') {
                scientific = true;
                i += 1;
                continue;
            }
            if (buf[i] == b'+' || buf[i] == b'-') && (buf[i - 1] == b'e' || buf[i - 1] == b'E') {
                i += 1;
                continue;
            }
            if i + 2 < buf.len() && (buf[i] == b'N' || buf[i] == b'n') {
                return err("invalid number");
            }
            if !is_numeric(buf[i]) {
                return err("invalid number");
            }
            i += 1;
        }
        if (is_int || is_unsigned) && (decimal || scientific) {
            return err("invalid number");
        }
        let mut numeric_digits = (i - start) as i64;
        if is_int {
            numeric_digits -= 1;
        }
        if decimal {
            numeric_digits -= 1;
        }
        if buf[start] == b'-' {
            numeric_digits -= 1;
        }
        if numeric_digits == 0 {
            return err("invalid number");
        }
        if is_int {
            if buf[i - 1] != b'i' {
                return err("invalid number");
            }
            let digits = String::from_utf8_lossy(&buf[start..i - 1]).into_owned();
            if digits.len() >= 19 && digits.parse::<i64>().is_err() {
                return Err(format!(
                    "unable to parse integer {digits}: strconv.ParseInt: parsing \"{digits}\": value out of range"
                ));
            }
        } else if is_unsigned {
            // uint64 support is off in influxd 1.x.
            return err("invalid number");
        } else if scientific || i - start >= 25 {
            let text = String::from_utf8_lossy(&buf[start..i]).into_owned();
            if !text.parse::<f64>().is_ok_and(f64::is_finite) {
                return err("invalid float");
            }
        }
        Ok(i)
    }

    fn scan_boolean(buf: &[u8], mut i: usize) -> Result<usize, String> {
        let start = i;
        if i < buf.len() && !matches!(buf[i], b't' | b'f' | b'T' | b'F') {
            return err("invalid boolean");
        }
        i += 1;
        while i < buf.len() && buf[i] != b',' && buf[i] != b' ' {
            i += 1;
        }
        let word = &buf[start..i];
        let valid = match word.len() {
            1 => true,
            _ => matches!(word, b"true" | b"false" | b"TRUE" | b"True" | b"FALSE" | b"False"),
        };
        if valid { Ok(i) } else { err("invalid boolean") }
    }

    fn scan_time(buf: &[u8], i: usize) -> Result<(usize, &[u8]), String> {
        let start = skip_whitespace(buf, i);
        let mut i = start;
        loop {
            if i >= buf.len() || buf[i] == b'\n' || buf[i] == b' ' {
                break;
            }
            if i == start && buf[i] == b'-' {
                i += 1;
                continue;
            }
            if !buf[i].is_ascii_digit() {
                return err("bad timestamp");
            }
            i += 1;
        }
        Ok((i, &buf[start..i]))
    }

    /// The field keys as `walkFields` cuts them (`scanTo` '=' then `scanFieldValue`).
    fn walk_field_keys(mut buf: &[u8]) -> Vec<&[u8]> {
        let mut keys = Vec::new();
        while !buf.is_empty() {
            let mut i = 0;
            while i < buf.len() && !(buf[i] == b'=' && (i == 0 || buf[i - 1] != b'\\')) {
                i += 1;
            }
            keys.push(&buf[..i]);
            buf = buf.get(i + 1..).unwrap_or_default();
            let mut j = 0;
            let mut quoted = false;
            while j < buf.len() {
                if buf[j] == b'\\' && j + 1 < buf.len() && (buf[j + 1] == b'"' || buf[j + 1] == b'\\') {
                    j += 2;
                    continue;
                }
                if buf[j] == b'"' {
                    j += 1;
                    quoted = !quoted;
                    continue;
                }
                if buf[j] == b',' && !quoted {
                    break;
                }
                j += 1;
            }
            buf = &buf[j..];
            if !buf.is_empty() {
                buf = &buf[1..];
            }
        }
        keys
    }

    /// `unescapeMeasurement`: `\,` and `\ ` lose their backslash.
    fn unescape_measurement(m: &[u8]) -> Vec<u8> {
        let text: Vec<u8> = m.to_vec();
        let mut out = Vec::new();
        let mut i = 0;
        while i < text.len() {
            if text[i] == b'\\' && i + 1 < text.len() && (text[i + 1] == b',' || text[i + 1] == b' ') {
                out.push(text[i + 1]);
                i += 2;
            } else {
                out.push(text[i]);
                i += 1;
            }
        }
        out
    }
}
