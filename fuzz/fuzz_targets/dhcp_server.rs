//! cargo fuzz target `dhcp_server`: see `fuzz_entries::dhcp_server`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::dhcp_server::run(data));
