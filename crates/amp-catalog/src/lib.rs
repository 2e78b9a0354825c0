//! Hardware catalog, model zoo, Hugging Face import and the analytic compute
//! model of amp: what lets `amp plan` run without any profiling.
//!
//! - [`hardware`]: GPUs, links and cloud instances from the TOML files under
//!   `data/` (each entry cites its datasheet), looked up by name or alias.
//! - [`cluster`]: the cluster shorthand `4xp3.8xlarge+1xg4dn.12xlarge` or
//!   `2x8xH100+4x8xA100-80GB@100Gbps`.
//! - [`zoo`] and [`hf`]: transformer layer lists built from an architecture
//!   description, for built-in models and for Hugging Face `config.json`.
//! - [`analytic`]: per-layer forward/backward/optimizer times from FLOPs and
//!   bytes against the GPU's peaks, synthesised as profile entries.
//!
//! No I/O: everything takes strings; the data files are compiled in.

pub mod analytic;
pub mod cluster;
pub mod hardware;
pub mod hf;
pub mod zoo;

pub use analytic::{
    analytic_profile, analytic_profile_with, describe_sources, fill_missing, unsupported_precision,
    AnalyticOptions, Precision,
};
pub use cluster::parse_cluster;
pub use hardware::{catalog, Catalog, Gpu, Instance, Link};
pub use hf::{model_from_hf_config, model_from_hf_config_with};
pub use zoo::{zoo_arch, zoo_model, ZOO_NAMES};

/// Kernels a zoo model or Hugging Face config can be built to train with,
/// where they differ from what its family's code runs by default (`None`:
/// the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kernels {
    /// Fused (flash) attention, or scores materialised.
    pub fused_attention: Option<bool>,
    /// Hugging Face's composite `gelu_new`, or one fused GeLU kernel (GeLU
    /// MLPs only).
    pub gelu_new: Option<bool>,
}

/// Errors of the catalog: every one says what was wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    /// A name that is not in the catalog, with the nearest known names.
    #[error("unknown {what} `{name}`{}", suggestion_text(.suggestions, .known))]
    Unknown {
        what: &'static str,
        name: String,
        suggestions: Vec<String>,
        known: Vec<String>,
    },
    /// Text that cannot be parsed.
    #[error("{origin}: cannot parse: {message}")]
    Parse { origin: String, message: String },
    /// Parsed, but a value is not allowed.
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
}

fn suggestion_text(suggestions: &[String], known: &[String]) -> String {
    let mut s = String::new();
    if !suggestions.is_empty() {
        s.push_str(&format!("; did you mean {}?", quoted(suggestions)));
    }
    if !known.is_empty() {
        // After a question mark the list starts a sentence; without one, a
        // clause of its own.
        let lead = if suggestions.is_empty() {
            "; known:"
        } else {
            " Known:"
        };
        s.push_str(&format!("{lead} {}", known.join(", ")));
    }
    s
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(" or ")
}

impl CatalogError {
    pub(crate) fn invalid(location: impl Into<String>, message: impl Into<String>) -> Self {
        CatalogError::Invalid {
            location: location.into(),
            message: message.into(),
        }
    }

    pub(crate) fn parse(origin: impl Into<String>, e: impl std::fmt::Display) -> Self {
        CatalogError::Parse {
            origin: origin.into(),
            message: e.to_string().trim_end().to_string(),
        }
    }
}

impl From<CatalogError> for amp_core::AmpError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Parse { origin, message } => {
                amp_core::AmpError::Parse { origin, message }
            }
            CatalogError::Invalid { location, message } => {
                amp_core::AmpError::Invalid { location, message }
            }
            other => amp_core::AmpError::Invalid {
                location: "catalog".to_string(),
                message: other.to_string(),
            },
        }
    }
}

/// Lower-case, with spaces, hyphens, underscores and dots removed: the form
/// names and aliases are compared in.
pub(crate) fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_' | '.'))
        .flat_map(|c| c.to_lowercase())
        .collect()
}

/// Levenshtein distance between two strings (by characters).
pub(crate) use amp_core::error::edit_distance;

/// The canonical names nearest to `name` (by edit distance between
/// normalized forms over every name and alias), at most three, closest
/// first; names further than half the query's length are left out.
pub(crate) fn nearest<'a>(
    name: &str,
    candidates: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<String> {
    let q = normalize(name);
    let mut best: Vec<(usize, String)> = Vec::new();
    for (alias, canonical) in candidates {
        let d = edit_distance(&q, &normalize(alias));
        match best.iter_mut().find(|(_, c)| c == canonical) {
            Some(entry) => entry.0 = entry.0.min(d),
            None => best.push((d, canonical.to_string())),
        }
    }
    best.sort();
    let limit = (q.chars().count() / 2).max(2);
    best.into_iter()
        .filter(|(d, _)| *d <= limit)
        .take(3)
        .map(|(_, n)| n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("h100", "h100"), 0);
    }

    #[test]
    fn normalize_ignores_separators_and_case() {
        assert_eq!(normalize("A100-80GB"), normalize("a100_80 gb"));
        assert_eq!(normalize("p3.8xlarge"), "p38xlarge");
    }
}
