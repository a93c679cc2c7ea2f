//! cargo fuzz target `ipmi_inband`: see `fuzz_entries::ipmi_inband`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::ipmi_inband::run(data));
