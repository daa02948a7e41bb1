//! Training for agc: losses, metrics, the training loop, cross-validation, the crop step,
//! ensembles and reports.
//!
//! - [`Loss`] (focal and binary cross-entropy on one logit); [`roc_auc`], [`bootstrap_auc`],
//!   [`accuracy`];
//! - [`Net`] and [`ModelSpec`]: the models a run trains; [`train_fold`]: one model on one fold,
//!   resumable; [`predict()`] with test-time augmentation;
//! - [`weighted_average`] and [`fit_weights`] for ensembles; atomic [`checkpoint`]s;
//! - [`run`]: a run directory and its steps (prepare, train, crop, ensemble, report), with
//!   [`artefacts`] for its CSV files and [`scores`] for what it measures;
//! - [`plot`]: ROC curves (PNG and SVG) and attention overlays.

pub mod artefacts;
pub mod baseline;
pub mod checkpoint;
pub mod ensemble;
pub mod error;
pub mod export;
pub mod layout;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod predictor;
pub mod report;
pub mod run;
pub mod scores;
pub mod train;

pub use ensemble::{EnsembleChoice, WeightRule, choose_weights, fit_weights, weighted_average};
pub use error::{Result, TrainError};
pub use loss::Loss;
pub use metrics::{AucInterval, accuracy, bootstrap_auc, roc_auc};
pub use model::{ModelKind, ModelSpec, Net, NetOutput};
pub use train::{
    EpochRecord, FoldOutcome, FoldPredictions, FoldState, FoldTask, Images, Predictions, TestFrom,
    TrainConfig, predict, train_fold,
};
