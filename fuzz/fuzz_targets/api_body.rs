//! cargo fuzz target `api_body`: see `fuzz_entries::api_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::api_body::run(data));
