//! Validation metrics (in progress).
