//! cargo fuzz target `md_superblock`: see `fuzz_entries::md_superblock`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::md_superblock::run(data));
