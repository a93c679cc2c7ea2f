//! cargo fuzz target `image_range`: see `fuzz_entries::image_range`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::image_range::run(data));
