//! Checks for the `prom_write` fuzz target: `prom::unsnappy`, the `WriteRequest` decoder and
//! `write::prom`'s conversion to line protocol.
//!
//! Input layout: `[mode, payload...]`. The payload is taken as a protobuf `WriteRequest`; with
//! `mode & 1` it is also taken as a snappy body (limit 64 bytes when `mode & 2`, else 1 MiB), and its
//! snappy compression must convert exactly like the payload itself.
//!
//! Whatever the input: no panic; conversion fails exactly when the series decoder fails; the
//! decompressed body never passes its limit. On success every line is one line-protocol point (as
//! `write::lineproto` splits it) and, read back by an independent line-protocol reader, is the metric
//! name (or `prom_metric_not_specified`), the labels (last one of a name wins, empty names and values
//! left out) and one sample, in input order; every sample is either such a line or counted as skipped,
//! and a series is left out only for what line protocol cannot carry (a NaN/±Inf value, a time out of
//! range, a newline or backslash in a label, an empty name or one starting with `#`, a tab or NUL).
//!
//! Shared by `fuzz/fuzz_targets/prom_write.rs` and `tests/fuzz_regressions.rs`: public API only.

use std::collections::BTreeMap;

use influx_proxy::prom::{self, DecodeError, Series};
use influx_proxy::write::lineproto::Lines;
use influx_proxy::write::prom::{NO_NAME, PromWriteError, convert, to_line_protocol};

const MAX_OUT: usize = 1 << 20;

pub fn run(data: &[u8]) {
    let (mode, payload) = match data.split_first() {
        Some((m, p)) => (*m, p),
        None => (0, data),
    };
    if mode & 1 == 1 {
        let limit = if mode & 2 == 2 { 64 } else { 1 << 20 };
        let (mut proto, mut out) = (Vec::new(), Vec::new());
        let result = convert(payload, limit, &mut proto, &mut out);
        assert!(proto.len() <= limit, "{} bytes decompressed, limit {limit}", proto.len());
        if let Err(PromWriteError::Decode(DecodeError::TooLarge { len, max })) = result {
            assert!(len > max as u64);
        }
        let packed = prom::snappy(payload);
        let (mut proto, mut via_snappy) = (Vec::new(), Vec::new());
        let a = convert(&packed, 1 << 20, &mut proto, &mut via_snappy);
        assert_eq!(proto, payload, "snappy round trip");
        let mut direct = Vec::new();
        let b = to_line_protocol(payload, 4 << 20, &mut direct);
        assert_eq!(a, b);
        assert!(via_snappy == direct, "snappy body converts differently");
    }
    check_lines(payload);
}

/// What a series should become: measurement, tags, and whether line protocol can carry it at all.
struct Expected {
    measurement: Vec<u8>,
    tags: Vec<(Vec<u8>, Vec<u8>)>,
    suspicious: bool,
    samples: Vec<(u64, i64)>,
    all_samples: usize,
}

fn expected(s: &Series) -> Expected {
    let mut map: BTreeMap<&[u8], &[u8]> = BTreeMap::new();
    for l in &s.labels {
        map.insert(l.name, l.value);
    }
    let measurement = map.get(&b"__name__"[..]).copied().unwrap_or(NO_NAME).to_vec();
    let odd = |b: &[u8]| b.contains(&b'\n') || b.contains(&b'\\');
    let suspicious =
        measurement.first().is_none_or(|b| matches!(b, b'#' | b'\t' | 0)) || map.iter().any(|(n, v)| odd(n) || odd(v));
    let tags = map
        .into_iter()
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    let samples = s
        .samples
        .iter()
        .filter(|x| {
            x.value.is_finite()
                && x.timestamp_ms.checked_mul(1_000_000).is_some_and(|ns| ns > i64::MIN + 1 && ns < i64::MAX)
        })
        .map(|x| (x.value.to_bits(), x.timestamp_ms))
        .collect();
    Expected { measurement, tags, suspicious, samples, all_samples: s.samples.len() }
}

/// One point read back: measurement, tags, value bits, timestamp.
type Point = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>, u64, i64);

fn check_lines(proto: &[u8]) {
    let mut series = Vec::new();
    let decoded = prom::for_each_series(proto, |s: &Series| -> Result<(), DecodeError> {
        series.push(expected(s));
        Ok(())
    });
    let mut out = Vec::new();
    let result = to_line_protocol(proto, MAX_OUT, &mut out);
    let c = match (result, decoded) {
        (Ok(c), Ok(())) => c,
        (Err(PromWriteError::Decode(a)), Err(b)) => return assert_eq!(a, b),
        (Err(PromWriteError::TooLarge { max }), Ok(())) => {
            assert!(out.len() > max);
            return;
        }
        (r, d) => panic!("conversion {r:?} but decoding {d:?}"),
    };
    let total: usize = series.iter().map(|s| s.all_samples).sum();
    assert_eq!(c.lines + c.skipped, total as u64, "{c:?}");

    let mut points = Vec::new();
    for line in Lines::new(&out) {
        let line = line.unwrap_or_else(|e| panic!("not line protocol: {e:?}"));
        assert!(line.has_timestamp);
        let p = read_point(line.text);
        let mut scratch = Vec::new();
        assert_eq!(line.measurement(&mut scratch), &p.0[..], "routing reads another measurement");
        points.push(p);
    }
    assert_eq!(points.len() as u64, c.lines, "{}", String::from_utf8_lossy(&out));

    let mut next = 0;
    for s in &series {
        let first = points.get(next);
        let present = !s.samples.is_empty() && first.is_some_and(|p| p.0 == s.measurement && p.1 == s.tags);
        if !present {
            assert!(s.samples.is_empty() || s.suspicious, "series {:?} {:?} left out", s.measurement, s.tags);
            continue;
        }
        for &(bits, ts) in &s.samples {
            let p = points.get(next).unwrap_or_else(|| panic!("sample missing"));
            assert_eq!((&p.0, &p.1), (&s.measurement, &s.tags));
            assert_eq!((p.2, p.3), (bits, ts), "value or time changed");
            next += 1;
        }
    }
    assert_eq!(next, points.len(), "lines that belong to no sample");
}

/// Reads a point the way InfluxDB's scanner does: `\` and the byte after it are a pair; the measurement
/// unescapes `\,` and `\ `, tag keys and values also `\=`.
fn read_point(text: &[u8]) -> Point {
    let key_end = unescaped(text, b' ').unwrap_or_else(|| panic!("no space in {:?}", String::from_utf8_lossy(text)));
    let key = &text[..key_end];
    let mut parts = split(key, b',');
    let measurement = unescape(parts.remove(0), b", ");
    let tags = parts
        .into_iter()
        .map(|t| {
            let eq =
                unescaped(t, b'=').unwrap_or_else(|| panic!("tag without = in {:?}", String::from_utf8_lossy(text)));
            (unescape(&t[..eq], b", ="), unescape(&t[eq + 1..], b", ="))
        })
        .collect();
    let rest = std::str::from_utf8(&text[key_end + 1..]).expect("fields are ASCII");
    let (field, ts) = rest.split_once(' ').expect("a timestamp");
    let value: f64 = field.strip_prefix("value=").expect("field value").parse().expect("a float");
    (measurement, tags, value.to_bits(), ts.parse().expect("an integer time"))
}

fn unescaped(s: &[u8], sep: u8) -> Option<usize> {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b if b == sep => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn split(mut s: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(i) = unescaped(s, sep) {
        out.push(&s[..i]);
        s = &s[i + 1..];
    }
    out.push(s);
    out
}

fn unescape(s: &[u8], special: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && s.get(i + 1).is_some_and(|b| special.contains(b)) {
            i += 1;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}
