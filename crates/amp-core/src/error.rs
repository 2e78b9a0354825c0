//! Errors that tell the user what is wrong, where, and how to fix it.

use std::fmt::Display;

/// The result of amp's fallible functions; errors are [`AmpError`].
pub type Result<T, E = AmpError> = std::result::Result<T, E>;

/// Everything that can go wrong in amp-core, each with where and how to fix it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AmpError {
    /// A file or string could not be parsed at all.
    #[error("{origin}: cannot parse: {message}")]
    Parse {
        /// The file or string that failed, as the caller named it.
        origin: String,
        /// The parser's message, trailing whitespace trimmed.
        message: String,
    },
    /// Parsed, but a value is not allowed.
    #[error("{location}: {message}")]
    Invalid {
        /// Where the value is: file, entry and field as far as known.
        location: String,
        /// What is wrong with it and how to fix it.
        message: String,
    },
    /// Profile data does not cover what a plan needs: GPU type `gpu` (when
    /// one is at fault) at tensor-parallel degree `tp` (when one is asked
    /// for); `detail` says what is there and how to fix it.
    #[error("missing profile data: {detail}")]
    MissingProfile {
        /// The GPU type lacking data, when one is at fault.
        gpu: Option<String>,
        /// The tensor-parallel degree asked for, when one is.
        tp: Option<usize>,
        /// What the profile holds and how to fill the gap.
        detail: String,
    },
    /// The search found nothing it may return.
    #[error("no valid plan: {0}")]
    NoPlan(String),
}

impl AmpError {
    /// A [`AmpError::Parse`] of `origin` with the parser's error `e`.
    pub fn parse(origin: impl Into<String>, e: impl Display) -> Self {
        AmpError::Parse {
            origin: origin.into(),
            message: e.to_string().trim_end().to_string(),
        }
    }

    /// Prefixes the location of an `Invalid` error with the file it came
    /// from (when it does not name it already).
    pub(crate) fn in_file(self, origin: &str) -> Self {
        match self {
            AmpError::Invalid { location, message } if !location.starts_with(origin) => {
                AmpError::Invalid {
                    location: format!("{origin}: {location}"),
                    message,
                }
            }
            other => other,
        }
    }

    /// Parses JSON text strictly: a repeated key is an error, like any
    /// other syntax error.
    pub fn json<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
        crate::strict::check_json(text).map_err(|e| AmpError::parse(origin, e))?;
        serde_json::from_str(text).map_err(|e| AmpError::parse(origin, e))
    }

    /// A [`AmpError::MissingProfile`].
    pub fn missing_profile(
        gpu: Option<&str>,
        tp: Option<usize>,
        detail: impl Into<String>,
    ) -> Self {
        AmpError::MissingProfile {
            gpu: gpu.map(str::to_string),
            tp,
            detail: detail.into(),
        }
    }

    /// A [`AmpError::Invalid`] at `location`.
    pub fn invalid(location: impl Into<String>, message: impl Into<String>) -> Self {
        AmpError::Invalid {
            location: location.into(),
            message: message.into(),
        }
    }
}

/// Levenshtein distance between two strings (by characters): how messages
/// tell a misspelt name from an unknown one.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
