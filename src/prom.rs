//! The Prometheus remote storage wire format: snappy-framed protobuf messages, decoded and encoded by
//! hand.
//!
//! Only the few messages of `prompb` remote write and remote read are needed (`WriteRequest`,
//! `TimeSeries`, `Label`, `Sample`, `ReadRequest`, `Query`, `LabelMatcher`, `ReadResponse`,
//! `QueryResult`), and only a handful of their fields. A hand-written reader over the protobuf wire format
//! is a few dozen lines, borrows strings from the input instead of allocating them, and needs no build
//! script or generated code.
//!
//! Invariants: decoding never panics and never allocates more than a constant factor of its input
//! (every repeated element costs at least one input byte); fields the proxy does not know are skipped,
//! as protobuf requires; the snappy length header is checked against the caller's limit before any
//! buffer is allocated (a "snappy bomb" costs nothing).

use std::fmt;

/// Why a body is not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The snappy stream is damaged.
    Snappy,
    /// The snappy header announces more than the limit: the client gets a 413.
    TooLarge { len: u64, max: usize },
    /// A varint longer than 10 bytes, or a length running past the end of its message.
    Truncated,
    /// Wire types 3, 4 (groups), 6 and 7 do not occur in these messages.
    BadWireType(u8),
    /// Field number 0 is reserved.
    BadTag,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Snappy => f.write_str("snappy: corrupt input"),
            DecodeError::TooLarge { len, max } => {
                write!(f, "snappy: decoded body of {len} bytes is larger than the limit of {max} bytes")
            }
            DecodeError::Truncated => f.write_str("proto: unexpected end of message"),
            DecodeError::BadWireType(w) => write!(f, "proto: illegal wire type {w}"),
            DecodeError::BadTag => f.write_str("proto: illegal tag 0"),
        }
    }
}

/// Decompresses a snappy block (the "raw" format Prometheus uses) into `out`, refusing bodies whose
/// announced size is over `max` before allocating anything.
pub fn unsnappy(input: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let len = snap::raw::decompress_len(input).map_err(|_| DecodeError::Snappy)?;
    if len > max {
        return Err(DecodeError::TooLarge { len: len as u64, max });
    }
    out.clear();
    out.resize(len, 0);
    match snap::raw::Decoder::new().decompress(input, out) {
        Ok(n) if n == len => Ok(()),
        _ => {
            out.clear();
            Err(DecodeError::Snappy)
        }
    }
}

/// Compresses `input` as one snappy block.
pub fn snappy(input: &[u8]) -> Vec<u8> {
    // Compression only fails for inputs over ~4 GiB, which no answer reaches (answers are bounded).
    snap::raw::Encoder::new().compress_vec(input).unwrap_or_default()
}

/// One field of a message as it sits on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

/// Iterates over the fields of one message.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::Truncated)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        let end = usize::try_from(n).ok().and_then(|n| self.pos.checked_add(n)).ok_or(DecodeError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    /// The next `(field number, value)`, `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, DecodeError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(DecodeError::BadTag);
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                Value::Fixed64(u64::from_le_bytes(b.try_into().map_err(|_| DecodeError::Truncated)?))
            }
            2 => {
                let n = self.varint()?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            w => return Err(DecodeError::BadWireType(w as u8)),
        };
        Ok(Some((field, value)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub value: f64,
    pub timestamp_ms: i64,
}

/// A `TimeSeries` as decoded: its labels in wire order and its samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series<'a> {
    pub labels: Vec<Label<'a>>,
    pub samples: Vec<Sample>,
}

fn decode_label(buf: &[u8]) -> Result<Label<'_>, DecodeError> {
    let mut label = Label { name: b"", value: b"" };
    let mut f = Fields::new(buf);
    while let Some((field, v)) = f.next_field()? {
        match (field, v) {
            (1, Value::Bytes(b)) => label.name = b,
            (2, Value::Bytes(b)) => label.value = b,
            _ => {}
        }
    }
    Ok(label)
}

fn decode_sample(buf: &[u8]) -> Result<Sample, DecodeError> {
    let mut s = Sample { value: 0.0, timestamp_ms: 0 };
    let mut f = Fields::new(buf);
    while let Some((field, v)) = f.next_field()? {
        match (field, v) {
            (1, Value::Fixed64(bits)) => s.value = f64::from_bits(bits),
            (2, Value::Varint(t)) => s.timestamp_ms = t as i64,
            _ => {}
        }
    }
    Ok(s)
}

/// Decodes a `TimeSeries` into `into` (cleared first; its vectors are reused).
pub fn decode_series<'a>(buf: &'a [u8], into: &mut Series<'a>) -> Result<(), DecodeError> {
    into.labels.clear();
    into.samples.clear();
    let mut f = Fields::new(buf);
    while let Some((field, v)) = f.next_field()? {
        match (field, v) {
            (1, Value::Bytes(b)) => into.labels.push(decode_label(b)?),
            (2, Value::Bytes(b)) => into.samples.push(decode_sample(b)?),
            _ => {}
        }
    }
    Ok(())
}

/// Calls `each` with every `TimeSeries` of a `WriteRequest` (or of a `QueryResult`: both keep their
/// series in field 1), reusing one `Series`.
pub fn for_each_series<'a, E: From<DecodeError>>(
    buf: &'a [u8],
    mut each: impl FnMut(&Series<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let mut series = Series::default();
    let mut f = Fields::new(buf);
    while let Some((field, v)) = f.next_field()? {
        if let (1, Value::Bytes(b)) = (field, v) {
            decode_series(b, &mut series)?;
            each(&series)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    Eq,
    Neq,
    Re,
    Nre,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matcher<'a> {
    pub kind: MatchType,
    pub name: &'a [u8],
    pub value: &'a [u8],
}

/// One `Query` of a `ReadRequest`: what routing needs, and its bytes to forward unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query<'a> {
    pub raw: &'a [u8],
    pub start_ms: i64,
    pub end_ms: i64,
    pub matchers: Vec<Matcher<'a>>,
}

fn decode_matcher(buf: &[u8]) -> Result<Option<Matcher<'_>>, DecodeError> {
    let mut m = Matcher { kind: MatchType::Eq, name: b"", value: b"" };
    let mut f = Fields::new(buf);
    while let Some((field, v)) = f.next_field()? {
        match (field, v) {
            (1, Value::Varint(0)) => m.kind = MatchType::Eq,
            (1, Value::Varint(1)) => m.kind = MatchType::Neq,
            (1, Value::Varint(2)) => m.kind = MatchType::Re,
            (1, Value::Varint(3)) => m.kind = MatchType::Nre,
            // An enum value this proxy does not know: the matcher cannot be understood.
            (1, Value::Varint(_)) => return Ok(None),
            (2, Value::Bytes(b)) => m.name = b,
            (3, Value::Bytes(b)) => m.value = b,
            _ => {}
        }
    }
    Ok(Some(m))
}

/// The queries of a `ReadRequest`. A matcher of an unknown type is left out of `matchers` (routing then
/// treats the query as naming no metric, which asks every backend).
pub fn decode_read_request(buf: &[u8]) -> Result<Vec<Query<'_>>, DecodeError> {
    let mut queries = Vec::new();
    let mut f = Fields::new(buf);
    while let Some((field, v)) = f.next_field()? {
        if let (1, Value::Bytes(raw)) = (field, v) {
            let mut q = Query { raw, start_ms: 0, end_ms: 0, matchers: Vec::new() };
            let mut qf = Fields::new(raw);
            while let Some((field, v)) = qf.next_field()? {
                match (field, v) {
                    (1, Value::Varint(t)) => q.start_ms = t as i64,
                    (2, Value::Varint(t)) => q.end_ms = t as i64,
                    (3, Value::Bytes(b)) => q.matchers.extend(decode_matcher(b)?),
                    _ => {}
                }
            }
            queries.push(q);
        }
    }
    Ok(queries)
}

/// A `ReadResponse`: per query, its series. Owned, for merging answers of several backends.
pub type Results = Vec<Vec<OwnedSeries>>;

/// Owned `(name, value)` labels.
pub type LabelSet = Vec<(Vec<u8>, Vec<u8>)>;

/// A series with owned labels, in the order they came.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OwnedSeries {
    pub labels: LabelSet,
    pub samples: Vec<Sample>,
}

/// Decodes a `ReadResponse` (not snappy-compressed).
pub fn decode_read_response(buf: &[u8]) -> Result<Results, DecodeError> {
    let mut results = Vec::new();
    let mut f = Fields::new(buf);
    while let Some((field, v)) = f.next_field()? {
        if let (1, Value::Bytes(b)) = (field, v) {
            let mut list = Vec::new();
            for_each_series(b, |s: &Series| -> Result<(), DecodeError> {
                let labels = s.labels.iter().map(|l| (l.name.to_vec(), l.value.to_vec())).collect();
                list.push(OwnedSeries { labels, samples: s.samples.clone() });
                Ok(())
            })?;
            results.push(list);
        }
    }
    Ok(results)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, field << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends field `field` holding the message `body()` writes (length-prefixed).
fn put_message(out: &mut Vec<u8>, field: u64, body: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    body(&mut inner);
    put_bytes(out, field, &inner);
}

fn put_series(out: &mut Vec<u8>, s: &OwnedSeries) {
    put_message(out, 1, |ts| {
        for (name, value) in &s.labels {
            put_message(ts, 1, |l| {
                put_bytes(l, 1, name);
                put_bytes(l, 2, value);
            });
        }
        for sample in &s.samples {
            put_message(ts, 2, |b| {
                put_varint(b, 1 << 3 | 1);
                b.extend_from_slice(&sample.value.to_bits().to_le_bytes());
                put_varint(b, 2 << 3);
                put_varint(b, sample.timestamp_ms as u64);
            });
        }
    });
}

/// Encodes a `ReadResponse`.
pub fn encode_read_response(results: &Results) -> Vec<u8> {
    let mut out = Vec::new();
    for list in results {
        put_message(&mut out, 1, |qr| {
            for s in list {
                put_series(qr, s);
            }
        });
    }
    out
}

/// A `ReadRequest` holding the one query whose encoded bytes are `raw`.
pub fn read_request_of(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 8);
    put_bytes(&mut out, 1, raw);
    out
}

/// Encodes a `WriteRequest` (for tests and benches).
pub fn encode_write_request(series: &[OwnedSeries]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in series {
        put_series(&mut out, s);
    }
    out
}

/// Encodes a `Query` (for tests).
pub fn encode_query(start_ms: i64, end_ms: i64, matchers: &[Matcher]) -> Vec<u8> {
    let mut q = Vec::new();
    put_varint(&mut q, 1 << 3);
    put_varint(&mut q, start_ms as u64);
    put_varint(&mut q, 2 << 3);
    put_varint(&mut q, end_ms as u64);
    for m in matchers {
        put_message(&mut q, 3, |b| {
            let kind = match m.kind {
                MatchType::Eq => 0,
                MatchType::Neq => 1,
                MatchType::Re => 2,
                MatchType::Nre => 3,
            };
            put_varint(b, 1 << 3);
            put_varint(b, kind);
            put_bytes(b, 2, m.name);
            put_bytes(b, 3, m.value);
        });
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> OwnedSeries {
        OwnedSeries {
            labels: labels.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect(),
            samples: samples.iter().map(|&(value, timestamp_ms)| Sample { value, timestamp_ms }).collect(),
        }
    }

    #[test]
    fn write_request_round_trip() {
        let input = vec![
            series(&[("__name__", "up"), ("job", "a b")], &[(1.5, 1_700_000_000_000), (-2.0, -5)]),
            series(&[("__name__", "x")], &[]),
        ];
        let bytes = encode_write_request(&input);
        let mut seen = Vec::new();
        for_each_series(&bytes, |s: &Series| -> Result<(), DecodeError> {
            seen.push(OwnedSeries {
                labels: s.labels.iter().map(|l| (l.name.to_vec(), l.value.to_vec())).collect(),
                samples: s.samples.clone(),
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, input);
    }

    #[test]
    fn read_response_round_trip() {
        let results = vec![vec![series(&[("job", "j"), ("__name__", "up")], &[(1.0, 10)])], vec![]];
        let decoded = decode_read_response(&encode_read_response(&results)).unwrap();
        assert_eq!(decoded, results);
    }

    #[test]
    fn read_request_queries_and_matchers() {
        let m = [
            Matcher { kind: MatchType::Eq, name: b"__name__", value: b"up" },
            Matcher { kind: MatchType::Nre, name: b"job", value: b"x.*" },
        ];
        let q = encode_query(100, 200, &m);
        let mut req = read_request_of(&q);
        req.extend_from_slice(&read_request_of(&encode_query(1, 2, &[])));
        // accepted_response_types (field 2, packed varints) is skipped.
        req.extend_from_slice(&[0x12, 0x01, 0x00]);
        let queries = decode_read_request(&req).unwrap();
        assert_eq!(queries.len(), 2);
        assert_eq!(queries[0].raw, &q[..]);
        assert_eq!((queries[0].start_ms, queries[0].end_ms), (100, 200));
        assert_eq!(queries[0].matchers, m.to_vec());
        assert!(queries[1].matchers.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(decode_read_request(&[0x0a, 0x05, 0x01]), Err(DecodeError::Truncated));
        assert_eq!(decode_read_request(&[0x0b]), Err(DecodeError::BadWireType(3)));
        assert_eq!(decode_read_request(&[0x00]), Err(DecodeError::BadTag));
        assert_eq!(decode_read_request(&[0xff; 11]), Err(DecodeError::Truncated));
        let huge_len = [0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(decode_read_request(&huge_len), Err(DecodeError::Truncated));
    }

    #[test]
    fn snappy_bomb_is_refused_before_allocating() {
        // A header announcing 4 GiB - 1 and nothing behind it.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f];
        let mut out = Vec::new();
        assert!(matches!(unsnappy(&bomb, 1 << 20, &mut out), Err(DecodeError::TooLarge { .. })));
        assert_eq!(out.capacity(), 0);
        assert_eq!(unsnappy(b"not snappy at all", 1 << 20, &mut out), Err(DecodeError::Snappy));
        let packed = snappy(b"hello hello hello hello");
        unsnappy(&packed, 1 << 20, &mut out).unwrap();
        assert_eq!(out, b"hello hello hello hello");
        assert!(matches!(unsnappy(&packed, 5, &mut out), Err(DecodeError::TooLarge { len: 23, max: 5 })));
    }
}
