//! Prometheus remote write (`/api/v1/prom/write`): a snappy protobuf `WriteRequest` becomes line
//! protocol, which then takes the ordinary `/write` path (routing by measurement, outboxes, answers).
//!
//! The points are the ones InfluxDB 1.x itself makes of a remote write: the metric name (label
//! `__name__`, `prom_metric_not_specified` without one) is the measurement, every label (`__name__`
//! included) is a tag, the sample is the float field `value`, the timestamp is in milliseconds (the
//! batch travels with `precision=ms`). NaN samples are skipped, as InfluxDB skips them; so are ±Inf
//! samples, which influxd 1.6 answers with a 400 for the whole request (one odd value would lose a
//! whole Prometheus batch).
//!
//! Line protocol cannot say everything a label can: a tag with an empty value does not exist in it (such
//! labels are left out, as InfluxDB leaves them out of the series key); a name or value holding a
//! newline, or a backslash before a byte that needs escaping, cannot be written; nor can a metric name
//! that starts with `#` (a comment), a tab or a NUL (skipped as blanks). Series with such labels, and
//! samples whose time InfluxDB cannot store, are skipped and counted instead of sent as lines a backend
//! would refuse.
//!
//! Bounds: the decompressed body is bounded by the caller (`--max-body-bytes`, checked on the snappy
//! header), and the line protocol made from it by `max_out`; past that the request is refused (413).

use std::fmt;
use std::io::Write as _;

use crate::http::params::Params;
use crate::http::request::Head;
use crate::prom::{self, DecodeError, Label, Series};
use crate::upstream::BackendState;
use crate::write::handler::{WriteContext, respond, serve_with};
use crate::write::{WriteResult, params};

/// Handles one `/api/v1/prom/write`: the request's points, as line protocol in milliseconds, take the
/// `/write` path.
pub fn serve(mut cx: WriteContext, head: &Head, raw: &[u8], close: bool, out: &mut Vec<u8>) {
    let query = Params::parse(&head.query);
    // The database is checked first, as InfluxDB does.
    if let Err(r) = params(cx.config, &query) {
        BackendState::add(&cx.stats.write_requests, 1);
        return respond(out, &r, close, cx.stats);
    }
    let (mut proto, mut lines) =
        (std::mem::take(&mut cx.scratch.prom_proto), std::mem::take(&mut cx.scratch.prom_lines));
    lines.clear();
    match convert(raw, cx.max_body, &mut proto, &mut lines) {
        Ok(c) => {
            BackendState::add(&cx.stats.prom_samples_skipped, c.skipped);
            let mut v1 = query;
            v1.0.retain(|(k, _)| k != "precision");
            v1.0.push(("precision".into(), "ms".into()));
            // The body is snappy whatever Content-Encoding says; the lines made of it are plain.
            let head = Head { gzip_body: false, ..head.clone() };
            serve_with(&mut cx, &head, &v1, &lines, close, out);
        }
        Err(e) => {
            BackendState::add(&cx.stats.write_requests, 1);
            respond(out, &WriteResult::error(e.status(), e.to_string()), close, cx.stats);
        }
    }
    for buf in [&mut proto, &mut lines] {
        if buf.capacity() > 4 << 20 {
            *buf = Vec::new();
        }
    }
    (cx.scratch.prom_proto, cx.scratch.prom_lines) = (proto, lines);
}

/// The measurement of series without a `__name__` label (InfluxDB's name for it).
pub const NO_NAME: &[u8] = b"prom_metric_not_specified";
const NAME_LABEL: &[u8] = b"__name__";

/// InfluxDB's time range, in nanoseconds (`models.MinNanoTime` / `MaxNanoTime`).
const MIN_NS: i128 = i64::MIN as i128 + 2;
const MAX_NS: i128 = i64::MAX as i128 - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromWriteError {
    Decode(DecodeError),
    /// The line protocol made of the request would pass `max` bytes.
    TooLarge {
        max: usize,
    },
}

impl From<DecodeError> for PromWriteError {
    fn from(e: DecodeError) -> Self {
        PromWriteError::Decode(e)
    }
}

impl fmt::Display for PromWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromWriteError::Decode(e) => e.fmt(f),
            PromWriteError::TooLarge { max } => {
                write!(f, "the points of this remote write take more than {max} bytes as line protocol")
            }
        }
    }
}

impl PromWriteError {
    pub fn status(self) -> u16 {
        match self {
            PromWriteError::Decode(DecodeError::TooLarge { .. }) | PromWriteError::TooLarge { .. } => 413,
            PromWriteError::Decode(_) => 400,
        }
    }
}

/// What a conversion made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Converted {
    pub lines: u64,
    /// Samples left out: NaN/±Inf values, times out of range, labels line protocol cannot express.
    pub skipped: u64,
}

/// Decompresses `body` (at most `max_body` bytes) into `proto` and appends its points to `out` as line
/// protocol with millisecond timestamps.
pub fn convert(
    body: &[u8],
    max_body: usize,
    proto: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<Converted, PromWriteError> {
    prom::unsnappy(body, max_body, proto)?;
    to_line_protocol(proto, max_body.saturating_mul(4), out)
}

/// Appends the points of a `WriteRequest` to `out`; `out` may not grow past `max_out` bytes.
pub fn to_line_protocol(proto: &[u8], max_out: usize, out: &mut Vec<u8>) -> Result<Converted, PromWriteError> {
    let mut done = Converted::default();
    let mut labels: Vec<Label> = Vec::new();
    let mut prefix: Vec<u8> = Vec::new();
    prom::for_each_series(proto, |s: &Series| {
        if !series_prefix(s, &mut labels, &mut prefix) {
            done.skipped += s.samples.len() as u64;
            return Ok(());
        }
        for sample in &s.samples {
            let ns = i128::from(sample.timestamp_ms) * 1_000_000;
            if !sample.value.is_finite() || !(MIN_NS..=MAX_NS).contains(&ns) {
                done.skipped += 1;
                continue;
            }
            out.extend_from_slice(&prefix);
            // `{:?}` is the shortest text that reads back as the same f64, with an exponent for very
            // large or small values: InfluxDB parses both forms as a float.
            let _ = writeln!(out, " value={:?} {}", sample.value, sample.timestamp_ms);
            done.lines += 1;
            if out.len() > max_out {
                return Err(PromWriteError::TooLarge { max: max_out });
            }
        }
        Ok(())
    })?;
    Ok(done)
}

/// Writes `measurement,tag=value,...` of a series into `prefix`; false when line protocol cannot
/// express the series.
fn series_prefix<'a>(s: &Series<'a>, labels: &mut Vec<Label<'a>>, prefix: &mut Vec<u8>) -> bool {
    labels.clear();
    labels.extend_from_slice(&s.labels);
    // Labels are a map: the last of several with one name wins. A stable sort keeps wire order among
    // equal names; reversed, the winner leads its run, and `dedup_by` keeps the first of a run.
    labels.sort_by(|a, b| a.name.cmp(b.name));
    labels.reverse();
    labels.dedup_by(|later, first| later.name == first.name);
    labels.reverse();
    let name = labels.iter().find(|l| l.name == NAME_LABEL).map_or(NO_NAME, |l| l.value);
    // A line starting with `#` is a comment; leading tabs and NULs are skipped as blanks.
    if name.first().is_none_or(|b| matches!(b, b'#' | b'\t' | 0)) || !expressible(name, MEASUREMENT_SPECIAL) {
        return false;
    }
    prefix.clear();
    escape(prefix, name, MEASUREMENT_SPECIAL);
    for l in labels.iter().filter(|l| !l.name.is_empty() && !l.value.is_empty()) {
        if !expressible(l.name, TAG_SPECIAL) || !expressible(l.value, TAG_SPECIAL) {
            return false;
        }
        prefix.push(b',');
        escape(prefix, l.name, TAG_SPECIAL);
        prefix.push(b'=');
        escape(prefix, l.value, TAG_SPECIAL);
    }
    true
}

/// Bytes escaped with a backslash in a measurement, and in tag keys and values.
const MEASUREMENT_SPECIAL: &[u8] = b", ";
const TAG_SPECIAL: &[u8] = b", =";

/// Whether line protocol can carry `s`. It has no escape for a newline, and none for a backslash
/// either: InfluxDB's scanner takes `\` + any byte as a pair, so a backslash that ends the text or
/// stands before a byte that gets escaped would swallow the separator or the escape.
fn expressible(s: &[u8], special: &[u8]) -> bool {
    !s.contains(&b'\n')
        && s.iter().enumerate().all(|(i, &b)| b != b'\\' || s.get(i + 1).is_some_and(|n| !special.contains(n)))
}

fn escape(out: &mut Vec<u8>, s: &[u8], special: &[u8]) {
    for &b in s {
        if special.contains(&b) {
            out.push(b'\\');
        }
        out.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prom::{OwnedSeries, Sample, encode_write_request};
    use crate::write::lineproto::Lines;

    fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> OwnedSeries {
        OwnedSeries {
            labels: labels.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect(),
            samples: samples.iter().map(|&(value, timestamp_ms)| Sample { value, timestamp_ms }).collect(),
        }
    }

    fn lines(input: &[OwnedSeries]) -> (String, Converted) {
        let mut out = Vec::new();
        let c = to_line_protocol(&encode_write_request(input), 1 << 20, &mut out).unwrap();
        (String::from_utf8(out).unwrap(), c)
    }

    #[test]
    fn metric_name_is_measurement_and_tag() {
        let (text, c) =
            lines(&[series(&[("job", "api"), ("__name__", "http_requests"), ("code", "200")], &[(3.0, 1000)])]);
        assert_eq!(text, "http_requests,__name__=http_requests,code=200,job=api value=3.0 1000\n");
        assert_eq!(c, Converted { lines: 1, skipped: 0 });
    }

    #[test]
    fn escapes_and_routing_measurement_agree() {
        let (text, _) = lines(&[series(&[("__name__", "a b,c=d"), ("k k", "v,=w")], &[(0.5, 1)])]);
        assert_eq!(text, "a\\ b\\,c=d,__name__=a\\ b\\,c\\=d,k\\ k=v\\,\\=w value=0.5 1\n");
        let line = Lines::new(text.as_bytes()).next().unwrap().unwrap();
        let mut scratch = Vec::new();
        assert_eq!(line.measurement(&mut scratch), b"a b,c=d");
    }

    #[test]
    fn no_name_empty_values_duplicates() {
        let (text, _) = lines(&[series(&[("a", "1"), ("e", ""), ("a", "2"), ("", "x")], &[(1e300, -1), (1e-7, 0)])]);
        assert_eq!(text, "prom_metric_not_specified,a=2 value=1e300 -1\nprom_metric_not_specified,a=2 value=1e-7 0\n");
    }

    #[test]
    fn skipped_samples_are_counted() {
        let input = [
            series(&[("__name__", "m")], &[(f64::NAN, 1), (f64::INFINITY, 2), (f64::NEG_INFINITY, 3), (1.0, 4)]),
            series(&[("__name__", "m")], &[(1.0, i64::MAX), (1.0, i64::MIN)]),
            series(&[("__name__", "m"), ("t", "a\nb")], &[(1.0, 5), (2.0, 6)]),
            series(&[("__name__", "m\\")], &[(1.0, 5)]),
            series(&[("__name__", "#m")], &[(1.0, 5)]),
            series(&[("__name__", "m"), ("t", "a\\,b")], &[(1.0, 5)]),
            series(&[("__name__", "m"), ("t\\=", "x")], &[(1.0, 5)]),
        ];
        let (text, c) = lines(&input);
        assert_eq!(text, "m,__name__=m value=1.0 4\n");
        assert_eq!(c, Converted { lines: 1, skipped: 11 });
        // A backslash before a byte that needs no escape is carried as it is.
        let (text, _) = lines(&[series(&[("__name__", "m\\x"), ("t", "a\\b")], &[(1.0, 5)])]);
        assert_eq!(text, "m\\x,__name__=m\\x,t=a\\b value=1.0 5\n");
    }

    #[test]
    fn output_is_bounded() {
        let big = series(&[("__name__", "m"), ("t", &"x".repeat(1000))], &[(1.0, 1); 100]);
        let mut out = Vec::new();
        let r = to_line_protocol(&encode_write_request(&[big]), 10_000, &mut out);
        assert_eq!(r, Err(PromWriteError::TooLarge { max: 10_000 }));
        assert!(out.len() < 12_000);
    }

    #[test]
    fn statuses() {
        let mut proto = Vec::new();
        let mut out = Vec::new();
        let e = convert(b"garbage", 1 << 20, &mut proto, &mut out).unwrap_err();
        assert_eq!(e.status(), 400);
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(convert(&bomb, 1 << 20, &mut proto, &mut out).unwrap_err().status(), 413);
    }
}
