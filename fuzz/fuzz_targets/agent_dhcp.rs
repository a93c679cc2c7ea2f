//! cargo fuzz target `agent_dhcp`: see `fuzz_entries::agent_dhcp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::agent_dhcp::run(data));
