//! Training for agc: losses, metrics, the training loop, cross-validation, the crop step,
//! ensembles and reports.
//!
//! Not written yet: this crate is laid down with the workspace and filled by the agc-train issue.
