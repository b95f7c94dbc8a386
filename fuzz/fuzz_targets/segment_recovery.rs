//! cargo-fuzz target `segment_recovery`: see `ringbroker_fuzz` for the input layout and the properties
//! checked, and docs/fuzzing.md for how to run it.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringbroker_fuzz::run("segment_recovery", data));
