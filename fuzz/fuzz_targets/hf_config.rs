//! Fuzz target: the Hugging Face config.json import.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: (Option<u16>, &str)| {
    let (seq, text) = data;
    if let Ok(m) = amp_catalog::model_from_hf_config(text, "config.json", seq.map(u64::from)) {
        m.validate().expect("an imported model is valid");
        let _ = m.total_params();
    }
});
