//! Fuzz target: the AMP .npy profile reader.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = amp_core::profile::amp_artifact::read_npy(bytes, "fuzz.npy");
    let files: [(&str, &[u8]); 1] = [("gpt2_P3_1.npy", bytes)];
    if let Ok(p) = amp_core::artifact::profile_from_npy(&files, "gpt2") {
        p.validate("fuzz").expect("a profile read is valid");
    }
});
