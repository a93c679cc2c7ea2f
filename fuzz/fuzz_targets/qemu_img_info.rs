//! cargo fuzz target `qemu_img_info`: see `fuzz_entries::qemu_img_info`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::qemu_img_info::run(data));
