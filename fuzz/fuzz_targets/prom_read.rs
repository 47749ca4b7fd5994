//! cargo-fuzz target `prom_read`: the checks live in `checks/prom_read.rs`, shared with `tests/fuzz_regressions.rs`.
#![no_main]

#[path = "../checks/prom_read.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
