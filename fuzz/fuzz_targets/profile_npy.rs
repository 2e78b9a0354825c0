//! Fuzz target: the AMP .npy profile reader.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = amp_data::npy::read_npy(bytes, "fuzz.npy");
    let files: [(&str, &[u8]); 1] = [("gpt2_P3_1.npy", bytes)];
    if let Ok(p) = amp_data::amp_artifact::profile_from_npy(&files, "gpt2") {
        p.validate("fuzz").expect("a profile read is valid");
    }
});
