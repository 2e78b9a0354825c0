//! Fuzz target: the cluster shorthand (4xp3.8xlarge+2x8xH100@100Gbps).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(c) = amp_catalog::parse_cluster(text) {
        c.validate().expect("a cluster read is valid");
        let _ = c.summary();
    }
});
