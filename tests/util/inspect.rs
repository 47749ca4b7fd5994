//! Looking at the proxy from outside: `/metrics` values, `/health` entries, and its outbox files on
//! disk (`<data-dir>/backends/<name>@<hash>/w<worker>/<seq:016x>.log`, parked logs in `parked-*`
//! subdirectories), parsed with the segment format of `src/outbox/segment.rs`:
//!
//! ```text
//! segment: [header 64 B][record][record]...[zeros]
//! header:  magic "IFXPSEG1" | seq u64 | acked u64 | created unix ms u64 | reserved
//! record:  magic "RECD" | target_len u16 | flags u8 | 0 u8 | commit u64 | target | payload | zero pad to 8
//!          commit = crc32(seq ++ flags if not 0 ++ target ++ payload) << 32 | payload_len   (seq: header bytes 8..16)
//! flags 1: the payload is a line count (u64) and gzip members (a body stored whole)
//! ```

use std::path::{Path, PathBuf};

use super::http;

/// The value of the first sample of metric `name` whose labels include every pair of `labels`.
pub fn metric(addr: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let r = http::get(addr, "/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    metric_in(&r.text(), name, labels)
}

/// Like [`metric`], on a `/metrics` text already fetched.
pub fn metric_in(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (label_text, value) = if let Some(inner) = rest.strip_prefix('{') {
            let Some((l, v)) = inner.split_once('}') else { continue };
            (l, v)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue;
        };
        let all = labels.iter().all(|(k, v)| label_text.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        if all {
            return value.trim().parse().ok();
        }
    }
    None
}

/// The `/health` document, asserting 200.
pub fn health(addr: &str) -> serde_json::Value {
    let r = http::get(addr, "/health");
    assert_eq!(r.status, 200, "/health answered {}: {}", r.status, r.text());
    r.json()
}

/// The `/health` entry of backend `name`.
pub fn backend_health(addr: &str, name: &str) -> serde_json::Value {
    let r = http::get(addr, "/health");
    assert_eq!(r.status, 200, "GET /health: {}", r.text());
    let json = r.json();
    let backends = json["backends"].as_array().cloned().unwrap_or_default();
    backends
        .into_iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("backend {name} not in /health: {}", r.text()))
}

/// Like [`backend_health`], but None where that panics: no answer, not 200, backend not listed.
pub fn try_backend_health(addr: &str, name: &str) -> Option<serde_json::Value> {
    let r = http::try_request(addr, "GET", "/health", &[], b"", http::DEFAULT_TIMEOUT).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&r.body).ok().filter(|_| r.status == 200)?;
    json["backends"].as_array()?.iter().find(|b| b["name"] == name).cloned()
}

/// Directories `<data_dir>/backends/<name>@<hash>` of backend `name` (one per url it had).
pub fn backend_dirs(data_dir: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}@");
    let Ok(entries) = std::fs::read_dir(data_dir.join("backends")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Every file under `dir` (recursively) whose name ends with `suffix`, sorted.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix)) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Segment files (`*.log`) of backend `name`, parked logs included.
pub fn segment_files(data_dir: &Path, name: &str) -> Vec<PathBuf> {
    backend_dirs(data_dir, name).iter().flat_map(|d| files_ending(d, ".log")).collect()
}

/// Sum of the sizes of backend `name`'s segment files.
pub fn segment_bytes_on_disk(data_dir: &Path, name: &str) -> u64 {
    segment_files(data_dir, name).iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

pub const SEGMENT_HEADER: usize = 64;
const RECORD_HEADER: usize = 16;

/// One valid record of a segment file.
#[derive(Clone, Debug)]
pub struct RecordInfo {
    /// Offset of the record header in the file.
    pub offset: usize,
    /// Offset of the first payload byte.
    pub payload_offset: usize,
    pub payload_len: usize,
    /// Bytes the record occupies, padding included.
    pub len: usize,
    pub target: String,
    pub payload: Vec<u8>,
    /// A gzip record: `payload` is a line count and gzip members.
    pub gzip: bool,
}

impl RecordInfo {
    pub fn lines(&self) -> Vec<String> {
        let text = if self.gzip { http::gunzip(&self.payload[8..]) } else { self.payload.clone() };
        String::from_utf8_lossy(&text).lines().filter(|l| !l.is_empty()).map(String::from).collect()
    }

    pub fn end(&self) -> usize {
        self.offset + self.len
    }
}

/// The segment's acknowledged position (header bytes 16..24).
pub fn acked_offset(bytes: &[u8]) -> usize {
    bytes.get(16..24).map_or(SEGMENT_HEADER, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
}

/// The valid records of a segment from its acknowledged position on, stopping at the first slot
/// that is not a valid record.
pub fn parse_records(bytes: &[u8]) -> Vec<RecordInfo> {
    assert!(bytes.len() >= SEGMENT_HEADER && &bytes[..8] == b"IFXPSEG1", "not a segment file");
    let mut out = Vec::new();
    let mut off = acked_offset(bytes);
    let seq = &bytes[8..16];
    while let Some(h) = bytes.get(off..off + RECORD_HEADER) {
        if &h[..4] != b"RECD" {
            break;
        }
        let target_len = usize::from(u16::from_le_bytes([h[4], h[5]]));
        let commit = u64::from_le_bytes(h[8..16].try_into().unwrap_or([0; 8]));
        let payload_len = (commit & 0xffff_ffff) as usize;
        let t = off + RECORD_HEADER;
        let p = t + target_len;
        let Some(covered) = bytes.get(t..p + payload_len) else { break };
        let flags: &[u8] = if h[6] == 0 { &[] } else { &h[6..7] };
        if payload_len == 0 || h[6] > 1 || crc32(&[seq, flags, covered].concat()) != (commit >> 32) as u32 {
            break;
        }
        let len = (RECORD_HEADER + target_len + payload_len + 7) & !7;
        out.push(RecordInfo {
            offset: off,
            payload_offset: p,
            payload_len,
            len,
            target: String::from_utf8_lossy(&bytes[t..p]).into_owned(),
            payload: bytes[p..p + payload_len].to_vec(),
            gzip: h[6] == 1,
        });
        off += len;
    }
    out
}

/// CRC-32 (IEEE), as `crc32fast` computes it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
