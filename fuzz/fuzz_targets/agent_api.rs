//! cargo fuzz target `agent_api`: see `fuzz_entries::agent_api`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::agent_api::run(data));
