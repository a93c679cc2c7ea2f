//! cargo fuzz target `json_patch`: see `fuzz_entries::json_patch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::json_patch::run(data));
