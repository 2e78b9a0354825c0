//! Fuzz target: the model layer list reader, JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(m) = amp_core::Model::from_json_str(text, "fuzz.json") {
        m.validate().expect("a model read is valid");
        let _ = m.total_params();
        let t = m.param_table();
        let _ = t.stage_params(0, m.num_layers());
    }
});
