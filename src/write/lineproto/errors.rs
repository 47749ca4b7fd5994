//! Why a line is refused: [`LineError`], whose `Display` is InfluxDB 1.6's reason word for word, and
//! the limits those reasons quote (the longest key, the timestamps InfluxDB can store).

use std::fmt;

/// Longest measurement + tags, and measurement + tags + field key (InfluxDB's `MaxKeyLength`).
pub const MAX_KEY_LENGTH: usize = 65535;
/// Timestamps InfluxDB can store, in nanoseconds (`models.MinNanoTime` / `MaxNanoTime`).
pub(super) const MIN_NANO_TIME: i64 = i64::MIN + 2;
pub(super) const MAX_NANO_TIME: i64 = i64::MAX - 1;

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
