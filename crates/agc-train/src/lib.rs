//! Training for agc: losses, metrics, the training loop, cross-validation, the crop step,
//! ensembles and reports.
//!
//! So far: the losses ([`Loss`], focal and binary cross-entropy on one logit), the metrics
//! ([`roc_auc`], [`bootstrap_auc`], [`accuracy`]), ensembles ([`weighted_average`],
//! [`fit_weights`] on out-of-fold predictions) and atomic checkpoints ([`checkpoint`]). The
//! training loop and the crop step come with the agc-train issue.

pub mod checkpoint;
pub mod ensemble;
pub mod loss;
pub mod metrics;

pub use ensemble::{fit_weights, weighted_average};
pub use loss::Loss;
pub use metrics::{AucInterval, accuracy, bootstrap_auc, roc_auc};
