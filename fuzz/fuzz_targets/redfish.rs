//! cargo fuzz target `redfish`: see `fuzz_entries::redfish`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::redfish::run(data));
