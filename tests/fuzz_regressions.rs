//! Replays every input kept under `fuzz/regressions/<target>/` (crashes the fuzzers found, and the
//! seed inputs) through the very checks the cargo-fuzz target runs: the checks live in
//! `fuzz/checks/<target>.rs` and are compiled here too, so no fuzzing toolchain is needed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../fuzz/checks/gunzip.rs"]
mod gunzip;
#[path = "../fuzz/checks/http_head.rs"]
mod http_head;
#[path = "../fuzz/checks/influxql.rs"]
mod influxql;
#[path = "../fuzz/checks/line_verdict.rs"]
mod line_verdict;
#[path = "../fuzz/checks/lines.rs"]
mod lines;
#[path = "../fuzz/checks/prom_read.rs"]
mod prom_read;
#[path = "../fuzz/checks/prom_write.rs"]
mod prom_write;
#[path = "../fuzz/checks/tls_accept.rs"]
mod tls_accept;

const TARGETS: [&str; 8] =
    ["http_head", "gunzip", "lines", "influxql", "line_verdict", "prom_write", "prom_read", "tls_accept"];

fn regressions() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("regressions")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn hex(data: &[u8]) -> String {
    let shown: String = data.iter().take(64).map(|b| format!("{b:02x}")).collect();
    if data.len() > 64 { format!("{shown}... ({} bytes)", data.len()) } else { shown }
}

/// Runs `check` on every file of `fuzz/regressions/<target>/`, then fails listing every file that panicked.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = regressions().join(target);
    let files = files(&dir);
    assert!(!files.is_empty(), "no inputs under {}", dir.display());
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{}: {msg}\n    input: {}", path.display(), hex(&data)));
        }
    }
    assert!(failed.is_empty(), "{target}: {} of {} inputs fail:\n{}", failed.len(), files.len(), failed.join("\n"));
}

#[test]
fn every_regression_directory_is_a_target() {
    for entry in std::fs::read_dir(regressions()).expect("fuzz/regressions") {
        let name = entry.expect("directory entry").file_name();
        let name = name.to_string_lossy();
        assert!(TARGETS.contains(&name.as_ref()), "fuzz/regressions/{name} is replayed by no test");
    }
}

#[test]
fn http_head_regressions() {
    replay("http_head", http_head::run);
}

#[test]
fn gunzip_regressions() {
    replay("gunzip", gunzip::run);
}

#[test]
fn lines_regressions() {
    replay("lines", lines::run);
}

#[test]
fn line_verdict_regressions() {
    replay("line_verdict", line_verdict::run);
}

#[test]
fn influxql_regressions() {
    replay("influxql", influxql::run);
}

#[test]
fn prom_write_regressions() {
    replay("prom_write", prom_write::run);
}

#[test]
fn prom_read_regressions() {
    replay("prom_read", prom_read::run);
}

#[test]
fn tls_accept_regressions() {
    replay("tls_accept", tls_accept::run);
}
