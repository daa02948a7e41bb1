//! Training for agc: losses, metrics, the training loop, cross-validation, the crop step,
//! ensembles and reports.
//!
//! So far: the losses ([`Loss`], focal and binary cross-entropy on one logit) and the metrics
//! ([`roc_auc`], [`bootstrap_auc`], [`accuracy`]). The training loop, the crop step and the
//! ensembles come with the agc-train issue.

pub mod loss;
pub mod metrics;

pub use loss::Loss;
pub use metrics::{AucInterval, accuracy, bootstrap_auc, roc_auc};
