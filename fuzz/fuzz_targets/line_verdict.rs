//! cargo-fuzz target `line_verdict`: the checks live in `checks/line_verdict.rs`, shared with
//! `tests/fuzz_regressions.rs`.
#![no_main]

#[path = "../checks/line_verdict.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
