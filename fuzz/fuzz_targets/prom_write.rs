//! cargo-fuzz target `prom_write`: the checks live in `checks/prom_write.rs`, shared with `tests/fuzz_regressions.rs`.
#![no_main]

#[path = "../checks/prom_write.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
