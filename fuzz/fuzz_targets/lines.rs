//! cargo-fuzz target `lines`: the checks live in `checks/lines.rs`, shared with `tests/fuzz_regressions.rs`.
#![no_main]

#[path = "../checks/lines.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
