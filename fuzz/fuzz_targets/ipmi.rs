//! cargo fuzz target `ipmi`: see `fuzz_entries::ipmi`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::ipmi::run(data));
