//! cargo fuzz target `inspection_rule`: see `fuzz_entries::inspection_rule`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::inspection_rule::run(data));
