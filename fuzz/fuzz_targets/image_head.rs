//! cargo fuzz target `image_head`: see `fuzz_entries::image_head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::image_head::run(data));
