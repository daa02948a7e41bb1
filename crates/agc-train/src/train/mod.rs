//! Training one model on one fold: class-balanced epochs, Adam with a learning rate for the
//! backbone and one for the rest, a per-epoch decay, validation AUC every epoch, early stopping,
//! best and last checkpoints, resumption, and out-of-fold and test predictions with test-time
//! augmentation.
//!
//! The loop is written out rather than run through Burn's `Learner`: it was written on Burn 0.21,
//! which had no parameter groups, stepped its learning-rate schedulers per iteration, computed
//! AUC per batch and did not checkpoint its early-stopping state; Burn 0.22 adds parameter
//! groups, but the resumable state and its tests stay agc's (docs/architecture.md). Every epoch
//! is a pure function of the state saved after the previous one (weights, both optimizers'
//! moments, the history) and of seeds derived from the run seed, the fold and the epoch, so a run
//! killed at any point resumes from its last finished epoch and ends with the same predictions
//! as one that was never stopped.
//!
//! The module is split by concern: `fold` (the epoch loop of one fold as a `FoldRun`:
//! resumption, each epoch's training, validation, checkpoints and early stop, the fold's
//! predictions), `optim` (the two Adam optimizers, one per learning-rate group), `parallel`
//! (data-parallel steps and the gradient exchange between devices), [`predict`](mod@predict) (inference
//! with test-time augmentation).

mod first_use;
mod fold;
mod optim;
mod parallel;
pub mod predict;

pub use fold::train_fold;
pub(crate) use predict::predict_reporting;
pub use predict::{Predictions, predict};

use std::path::PathBuf;
use std::sync::Arc;

use agc_data::{AugmentConfig, CacheDataset, ImageCache};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::loss::Loss;
use crate::model::{ModelKind, ModelSpec};

/// Which weights make the test (and out-of-fold) predictions of a fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TestFrom {
    /// The checkpoint with the best validation AUC.
    #[default]
    Best,
    /// The average of the predictions after each of the last `patience` epochs (the seed's
    /// choice).
    LastEpochs,
}

/// The learning schedule of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Most epochs per fold.
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation AUC.
    pub patience: usize,
    /// Images per training batch.
    pub batch_size: usize,
    /// Images per inference batch.
    pub eval_batch_size: usize,
    /// Adam learning rate of the ResNet backbone.
    pub lr_backbone: f64,
    /// Adam learning rate of everything else (metadata branch, attention head, classifier).
    pub lr_head: f64,
    /// Both learning rates are multiplied by this after every epoch.
    pub lr_decay: f64,
    /// Adam's epsilon (PyTorch's default 1e-8; Burn's is 1e-5).
    pub adam_epsilon: f32,
    /// The training loss.
    pub loss: Loss,
    /// Class-balanced oversampling of the positives in every training epoch.
    pub balanced: bool,
    /// Training augmentation (hair, flips, rotation, colour jitter); `None` trains on the
    /// images as they are.
    pub augment: Option<AugmentConfig>,
    /// Rounds of test-time augmentation (flips and jitter) averaged for the out-of-fold and
    /// test predictions; 0 predicts on the plain images.
    pub tta: usize,
    /// Which weights predict the test set.
    pub test_from: TestFrom,
}

impl TrainConfig {
    /// The seed's schedule for `kind`: MetaResNet/CropNet backbone 1e-5 and head 5e-5,
    /// ChipNet/AttnResNet backbone 5e-5 and head 1e-4, ×0.95 per epoch, focal loss, up to 20
    /// epochs with patience 3, 3 rounds of TTA.
    pub fn seed_defaults(kind: ModelKind) -> Self {
        let (lr_backbone, lr_head) = if kind.has_attention() {
            (5e-5, 1e-4)
        } else {
            (1e-5, 5e-5)
        };
        Self {
            max_epochs: 20,
            patience: 3,
            batch_size: 32,
            eval_batch_size: 64,
            lr_backbone,
            lr_head,
            lr_decay: 0.95,
            adam_epsilon: 1e-8,
            loss: Loss::default(),
            balanced: true,
            augment: Some(AugmentConfig::train()),
            tta: 3,
            test_from: TestFrom::Best,
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        let bad = |setting: &str, value: String, message: &str| {
            Err(TrainError::Setting {
                setting: setting.into(),
                value,
                message: message.into(),
            })
        };
        if self.max_epochs == 0 {
            return bad("max_epochs", "0".into(), "must be at least 1");
        }
        if self.batch_size < 2 {
            return bad(
                "batch_size",
                self.batch_size.to_string(),
                "must be at least 2 (batch norm)",
            );
        }
        if self.eval_batch_size == 0 {
            return bad("eval_batch_size", "0".into(), "must be at least 1");
        }
        for (name, value) in [
            ("lr_backbone", self.lr_backbone),
            ("lr_head", self.lr_head),
            ("lr_decay", self.lr_decay),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return bad(name, value.to_string(), "must be a finite number above 0");
            }
        }
        if !(self.adam_epsilon.is_finite() && self.adam_epsilon > 0.0) {
            return bad(
                "adam_epsilon",
                self.adam_epsilon.to_string(),
                "must be a finite number above 0",
            );
        }
        if self.test_from == TestFrom::LastEpochs && self.patience == 0 {
            return bad(
                "patience",
                "0".into(),
                "test_from = last_epochs averages the last `patience` epochs: set patience",
            );
        }
        Ok(())
    }
}

/// A set of cached images with their metadata vectors and labels, indexed by cache row.
#[derive(Debug, Clone)]
pub struct Images {
    /// The image cache.
    pub cache: Arc<ImageCache>,
    /// One metadata vector per cache row (empty vectors for no metadata).
    pub meta: Arc<Vec<Vec<f32>>>,
    /// One label per cache row (0 where unknown).
    pub targets: Arc<Vec<f32>>,
}

impl Images {
    /// # Errors
    /// If `meta` or `targets` do not have one entry per cache row.
    pub fn new(cache: Arc<ImageCache>, meta: Vec<Vec<f32>>, targets: Vec<f32>) -> Result<Self> {
        if meta.len() != cache.len() || targets.len() != cache.len() {
            return Err(TrainError::Dataset(format!(
                "{} metadata rows and {} labels for a cache of {} images",
                meta.len(),
                targets.len(),
                cache.len()
            )));
        }
        Ok(Self {
            cache,
            meta: Arc::new(meta),
            targets: Arc::new(targets),
        })
    }

    pub(crate) fn labels(&self) -> Vec<u8> {
        self.targets.iter().map(|&t| u8::from(t > 0.5)).collect()
    }

    pub(crate) fn dataset(&self, rows: Vec<usize>) -> CacheDataset {
        CacheDataset::new(
            Arc::clone(&self.cache),
            rows,
            Arc::clone(&self.meta),
            Arc::clone(&self.targets),
        )
    }
}

/// One epoch's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 0-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation loss (on the plain images): the training loss on the predicted probabilities
    /// ([`Loss::mean_of_probabilities`]).
    pub valid_loss: f64,
    /// Validation ROC AUC (on the plain images).
    pub valid_auc: f64,
    /// Backbone learning rate of the epoch.
    pub lr_backbone: f64,
    /// Seconds the epoch took.
    pub seconds: f64,
    /// Out-of-fold and test predictions after this epoch (`test_from = last_epochs` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<FoldPredictions>,
}

/// Out-of-fold and test predictions of a fold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldPredictions {
    /// Probabilities of the fold's validation rows, in the order of [`FoldTask::valid_rows`].
    pub valid: Vec<f32>,
    /// Probabilities of the test rows (empty without a test set).
    pub test: Vec<f32>,
}

/// The saved progress of a fold (`state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FoldState {
    /// Finished epochs, in order.
    pub history: Vec<EpochRecord>,
    /// The epoch of `best.bpk`.
    pub best_epoch: Option<usize>,
    /// Its validation AUC.
    pub best_auc: Option<f64>,
    /// Set when training ended (early stop or the last epoch); predictions are in
    /// `predictions.json`.
    pub finished: bool,
    /// Why training ended.
    #[serde(default)]
    pub stop_reason: String,
}

impl FoldState {
    /// The state saved at `path`, or the state of a fold not started when there is none.
    ///
    /// # Errors
    /// An unreadable or malformed `state.json`.
    pub fn read_or_new(path: &std::path::Path) -> Result<Self> {
        if path.is_file() {
            crate::error::read_json(path)
        } else {
            Ok(Self::default())
        }
    }
}

/// Everything [`train_fold`] needs.
#[derive(Debug, Clone)]
pub struct FoldTask<'a> {
    /// The model to train.
    pub kind: ModelKind,
    /// How to build it.
    pub spec: &'a ModelSpec,
    /// How to train it.
    pub config: &'a TrainConfig,
    /// Length of the metadata vectors.
    pub meta_dim: usize,
    /// The training images (all folds).
    pub images: &'a Images,
    /// Rows of `images` to train on.
    pub train_rows: Vec<usize>,
    /// Rows of `images` to validate on (the out-of-fold rows).
    pub valid_rows: Vec<usize>,
    /// The test images, if any.
    pub test: Option<&'a Images>,
    /// Where the fold's checkpoints and state go.
    pub dir: PathBuf,
    /// Seed of the fold (initialisation, sampling, augmentation, dropout).
    pub seed: u64,
    /// Where epochs report their progress (one step per batch).
    pub progress: agc_data::Reporter,
}

/// What a finished fold gives.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldOutcome {
    /// The saved state, history included.
    pub state: FoldState,
    /// Out-of-fold and test predictions.
    pub predictions: FoldPredictions,
}

#[cfg(test)]
mod tests;
