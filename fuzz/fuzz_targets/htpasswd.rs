//! cargo fuzz target `htpasswd`: see `fuzz_entries::htpasswd`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::htpasswd::run(data));
