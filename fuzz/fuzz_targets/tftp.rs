//! cargo fuzz target `tftp`: see `fuzz_entries::tftp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::tftp::run(data));
