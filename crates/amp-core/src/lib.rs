//! amp: find fast model-parallel training plans for a model on a cluster.
//!
//! Data flows one way: inputs ([`model::Model`], [`cluster::Cluster`],
//! [`profile::Profile`]) -> candidate plans ([`search`]) -> cost
//! ([`cost`]) -> ranked plans ([`plan::Plan`]). No I/O happens here: parsing
//! functions take strings or bytes, and the CLI reads files.

pub mod artifact;
pub mod cluster;
pub mod error;
pub mod model;
pub mod partition;
pub mod plan;
pub mod profile;

pub use error::{AmpError, Result};
pub mod cost;
pub mod memory;
pub mod placement;
pub mod sailor;
pub mod schedule;
pub mod search;
pub mod validate;
