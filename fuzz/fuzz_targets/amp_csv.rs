//! Fuzz target: the AMP artifact measured-runs CSV reader.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = amp_data::amp_artifact::parse_csv(text, "fuzz.csv");
});
