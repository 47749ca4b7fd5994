//! cargo-fuzz target `influxql`: the checks live in `checks/influxql.rs`, shared with `tests/fuzz_regressions.rs`.
#![no_main]

#[path = "../checks/influxql.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
