//! Fuzz target: the cluster shorthand (4xp3.8xlarge+2x8xH100@100Gbps).
#![no_main]

use std::sync::OnceLock;

use amp_catalog::Catalog;
use libfuzzer_sys::fuzz_target;

/// The compiled-in catalog, parsed once (parsing it per input would make
/// the target a catalog-parsing benchmark).
fn catalog() -> &'static Catalog {
    static C: OnceLock<Catalog> = OnceLock::new();
    C.get_or_init(Catalog::builtin)
}

fuzz_target!(|text: &str| {
    if let Ok(c) = amp_catalog::cluster::parse_cluster_with(catalog(), text) {
        c.validate().expect("a cluster read is valid");
        let _ = c.summary();
    }
});
