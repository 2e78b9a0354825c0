//! The measured data amp validates against, read from the formats its peers
//! publish: the AMP artifact (NeurIPS 2022: candidate CSVs, `.npy`
//! per-layer profiles, its three experiments as built-in data) and the
//! Sailor artifact (SOSP 2025: profiles, model sizes, network curves, plan
//! files with measured times, memory and gradient-reduction phases).
//!
//! Everything is a pure function over bytes or text: [`datasets`] turns a
//! folder's files, read by the caller, into [`amp_core::validate::Dataset`]s.

pub mod amp_artifact;
pub mod datasets;
pub mod npy;
pub mod runs_file;
pub mod sailor;

pub use amp_artifact::Experiment;
pub use datasets::{
    find_datasets, holds_layouts, DatasetFiles, LoadedDataset, SailorFolder, SailorModel,
};
