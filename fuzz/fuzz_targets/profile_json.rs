//! Fuzz target: the profile reader, JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(p) = amp_core::Profile::from_json_str(text, "fuzz.json") {
        p.validate("fuzz.json").expect("a profile read is valid");
        for e in &p.entries {
            let n = e.forward_s.len();
            if n > 0 && p.check_layers(n, "fuzz.json").is_ok() {
                let _ = p.layer_time(&e.gpu, e.tp, 3, n - 1);
            }
        }
    }
});
