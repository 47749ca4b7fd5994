//! cargo-fuzz target `tls_accept`: the checks live in `checks/tls_accept.rs`.
#![no_main]

#[path = "../checks/tls_accept.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
