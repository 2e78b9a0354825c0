//! Fuzz target: the cluster reader, JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(c) = amp_core::Cluster::from_json_str(text, "fuzz.json") {
        c.validate().expect("a cluster read is valid");
        let _ = c.summary();
        let d = c.devices();
        let (a, b) = (d[0], d[d.len() - 1]);
        let _ = c.link_bytes_per_s(a, b);
        let _ = amp_core::search::node_orders(&c);
    }
});
