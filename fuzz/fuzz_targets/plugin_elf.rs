//! The ELF check spf runs on a plugin file before the dynamic linker may see it:
//! arbitrary bytes, and the same bytes behind a valid-looking ELF identification
//! of this machine, so that the fuzzer reaches past the magic number quickly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spf_pipeline::plugin::check_elf_data;

fuzz_target!(|input: &[u8]| {
    let _ = check_elf_data(input);
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
    elf.extend_from_slice(input);
    let _ = check_elf_data(&elf);
});
