//! Fuzz target: the Sailor artifact readers (profiles, llm_info, training, cluster config, network, plan configs).
#![no_main]

use libfuzzer_sys::fuzz_target;

use std::collections::BTreeMap;

use amp_data::sailor;

fuzz_target!(|data: (u8, &str)| {
    let (which, text) = data;
    let o = "fuzz.json";
    match which % 7 {
        0 => {
            if let Ok(names) = sailor::profile_models(text, o) {
                for n in names.iter().take(4) {
                    let _ = sailor::parse_profiles(text, o, n);
                }
            }
        }
        1 => {
            let _ = sailor::training_precision(text, o, "OPT-350");
        }
        2 => {
            if let Ok(t) = sailor::parse_training(text, o) {
                let _ = sailor::parse_model(LLM_INFO, "llm_info.json", &t);
            }
        }
        3 => {
            let t = sailor::parse_training(TRAINING, "t.json").expect("seed training parses");
            if let Ok(m) = sailor::parse_model(text, o, &t) {
                m.validate().expect("a model read is valid");
            }
        }
        4 => {
            let _ = sailor::parse_cluster_config(text, o);
        }
        5 => {
            // The intra-node file, a blank line, the inter-node file.
            let (a, b) = text.split_once("\n\n").unwrap_or((text, "{}"));
            let _ = sailor::Network::parse(a, "intra.json", b, "inter.json");
        }
        _ => {
            let t = sailor::parse_training(TRAINING, "t.json").expect("seed training parses");
            let model = sailor::parse_model(LLM_INFO, "llm_info.json", &t).expect("seed model");
            let gpus: BTreeMap<String, sailor::GpuSpec> = BTreeMap::new();
            let net = sailor::Network::default();
            let _ = sailor::parse_plan_config(text, o, &model, &gpus, &net);
        }
    }
});

const TRAINING: &str = include_str!("../seeds/sailor_training.json");
const LLM_INFO: &str = include_str!("../seeds/sailor_llm_info.json");
