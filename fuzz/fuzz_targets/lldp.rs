//! cargo fuzz target `lldp`: see `fuzz_entries::lldp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::lldp::run(data));
