//! The original proxy's self-statistics: every node `interval` seconds, one point of measurement
//! `influxdb.cluster` (tags `host`, `addr`; the proxy's counters as integer fields), written through the
//! proxy's own routing like any client line. It goes to the node's `db`, or to `_internal` when the
//! node has none (a backend's own `db` field still wins, as for every write).

use super::metrics::stats_fields;
use crate::shared::Shared;

pub const MEASUREMENT: &str = "influxdb.cluster";
pub const FALLBACK_DB: &str = "_internal";

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn escape_tag(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, ',' | ' ' | '=' | '\\') {
            s.push('\\');
        }
        s.push(if c == '\n' { ' ' } else { c });
    }
    s
}

/// The line protocol of the point (without timestamp: the write path stamps it).
pub fn line(shared: &Shared, host: &str, addr: &str) -> String {
    let fields: Vec<String> = stats_fields(shared).into_iter().map(|(k, v)| format!("{k}={v}i")).collect();
    format!("{MEASUREMENT},host={},addr={} {}\n", escape_tag(host), escape_tag(addr), fields.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_escaped() {
        assert_eq!(escape_tag("a b,c=d"), "a\\ b\\,c\\=d");
        assert!(!hostname().is_empty());
    }
}
