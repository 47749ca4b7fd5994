//! cargo-fuzz target `gunzip`: the checks live in `checks/gunzip.rs`, shared with `tests/fuzz_regressions.rs`.
#![no_main]

#[path = "../checks/gunzip.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
