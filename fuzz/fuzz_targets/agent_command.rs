//! cargo fuzz target `agent_command`: see `fuzz_entries::agent_command`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::agent_command::run(data));
