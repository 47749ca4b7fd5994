//! cargo-fuzz target `http_head`: the checks live in `checks/http_head.rs`, shared with `tests/fuzz_regressions.rs`.
#![no_main]

#[path = "../checks/http_head.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
