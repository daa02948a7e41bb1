//! The training step: one model, fold by fold. Each fold is claimed while it trains, so
//! several processes on one run (on one machine or several sharing the file system) train
//! different folds; the last to finish writes the model's out-of-fold and test predictions.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agc_data::{ImageCache, Split};
use burn::prelude::Device;

use super::{Run, lock};
use crate::artefacts::{FoldSummary, OofRow, SubmissionRow, TestRow, read_rows, write_rows};
use crate::error::{Result, TrainError, read_json};
use crate::layout::{Crops, FoldLayout, PredictionFiles};
use crate::model::ModelKind;
use crate::scores::ModelPredictions;
use crate::train::{FoldOutcome, FoldPredictions, FoldState, FoldTask, Images, train_fold};

impl Run {
    /// Trains `kind` on every fold (resuming where it stopped; folds that another process is
    /// training are left to it and waited for at the end) and writes its out-of-fold and test
    /// predictions. Several `devices` train each fold data-parallel ([`train_fold`]).
    ///
    /// # Errors
    /// A missing crop step (for CropNet), bad data, or a failed fold.
    pub fn train(&self, kind: ModelKind, devices: &[Device]) -> Result<ModelPredictions> {
        if let Some(p) = self.predictions(kind)? {
            return Ok(p);
        }
        let mut busy = Vec::new();
        for f in 0..self.folds.k {
            let what = format!("training {kind} fold {f}");
            if let Some(_claim) = lock::try_claim(&self.fold_lock(kind, f), &what)? {
                self.train_fold(kind, f, devices)?;
            } else {
                tracing::info!(
                    "{kind} fold {f} is being trained by {}; going on with the next fold",
                    lock::holder(&self.fold_lock(kind, f))
                );
                busy.push(f);
            }
        }
        for f in busy {
            let _claim = lock::claim(
                &self.fold_lock(kind, f),
                &format!("training {kind} fold {f}"),
            )?;
            // Finished by the other process: this only reads its predictions. Left unfinished
            // (the process was killed): this resumes it.
            self.train_fold(kind, f, devices)?;
        }
        self.collect(kind)?.ok_or_else(|| {
            TrainError::Undefined(format!("{kind}: a fold was not finished after training"))
        })
    }

    /// Trains fold `fold` of `kind` only (`agc train --fold K`), refusing if another process
    /// holds it; when it was the last fold left, also writes the model's predictions and
    /// returns them.
    ///
    /// # Errors
    /// A fold out of range, a fold claimed by another process (named), or as [`Run::train`].
    pub fn train_one_fold(
        &self,
        kind: ModelKind,
        fold: usize,
        devices: &[Device],
    ) -> Result<Option<ModelPredictions>> {
        if fold >= self.folds.k {
            return Err(TrainError::Setting {
                setting: "--fold".into(),
                value: fold.to_string(),
                message: format!(
                    "the run has {} folds (0 to {})",
                    self.folds.k,
                    self.folds.k - 1
                ),
            });
        }
        let what = format!("training {kind} fold {fold}");
        let claim = lock::claim_or_refuse(&self.fold_lock(kind, fold), &what)?;
        self.train_fold(kind, fold, devices)?;
        drop(claim);
        self.collect(kind)
    }

    /// The folds of `kind` that have not finished.
    pub fn unfinished_folds(&self, kind: ModelKind) -> Vec<usize> {
        (0..self.folds.k)
            .filter(|&f| finished_fold(&self.layout.fold(kind, f)).is_none())
            .collect()
    }

    fn fold_lock(&self, kind: ModelKind, f: usize) -> PathBuf {
        self.layout.lock(&format!("{}.fold{f}", kind.name()))
    }

    fn train_fold(&self, kind: ModelKind, f: usize, devices: &[Device]) -> Result<FoldOutcome> {
        let (images, test_images) = match kind {
            ModelKind::Cropnet => self.crop_images(Crops::Fold(f), "agc crop")?,
            ModelKind::OracleCropnet => {
                // The true-box crops need no model: cut here (a no-op once they are cut).
                self.oracle_crops()?;
                self.crop_images(Crops::Oracle, "agc crop --oracle")?
            }
            _ => {
                let (train, test) = self.images_of(kind);
                (train.clone(), test.cloned())
            }
        };
        let cache_rows = |rows: Vec<usize>| rows.into_iter().map(|i| self.train_rows[i]).collect();
        let task = FoldTask {
            kind,
            spec: &self.config.model,
            config: self.config.schedules.of(kind),
            meta_dim: self.meta_dim(),
            images: &images,
            train_rows: cache_rows(self.folds.train(f)),
            valid_rows: cache_rows(self.folds.valid(f)),
            test: test_images.as_ref(),
            dir: self.layout.fold(kind, f).dir().to_path_buf(),
            seed: fold_seed(self.config.seed, kind, f),
            progress: std::sync::Arc::clone(&self.progress),
        };
        train_fold(&task, devices)
    }

    /// When every fold of `kind` has finished: its out-of-fold and test predictions (written
    /// to `oof.csv`/`test.csv` by the first process to get here).
    fn collect(&self, kind: ModelKind) -> Result<Option<ModelPredictions>> {
        let mut outcomes = Vec::with_capacity(self.folds.k);
        for f in 0..self.folds.k {
            match finished_fold(&self.layout.fold(kind, f)) {
                Some(o) => outcomes.push(o?),
                None => return Ok(None),
            }
        }
        let _claim = lock::claim(
            &self.layout.lock(kind.name()),
            &format!("writing the predictions of {kind}"),
        )?;
        if let Some(p) = self.predictions(kind)? {
            return Ok(Some(p));
        }
        let mut oof = vec![f32::NAN; self.train.len()];
        let mut test = vec![0f32; self.test_rows.len()];
        let mut summary = Vec::new();
        let mut seconds = 0.0;
        for (f, outcome) in outcomes.iter().enumerate() {
            let valid = self.folds.valid(f);
            if outcome.predictions.valid.len() != valid.len() {
                return Err(TrainError::Parse {
                    path: self.layout.fold(kind, f).predictions(),
                    message: format!(
                        "{} validation predictions for {} validation images: was the run's data \
                         changed?",
                        outcome.predictions.valid.len(),
                        valid.len()
                    ),
                });
            }
            for (&row, &p) in valid.iter().zip(&outcome.predictions.valid) {
                oof[row] = p;
            }
            // The folds' models predict every test cache row; the records keep the readable.
            for (t, &row) in test.iter_mut().zip(&self.test_rows) {
                *t += outcome.predictions.test[row] / self.folds.k as f32;
            }
            let fold_seconds: f64 = outcome.state.history.iter().map(|h| h.seconds).sum();
            seconds += fold_seconds;
            summary.push(FoldSummary {
                fold: f,
                best_epoch: outcome.state.best_epoch.map(|e| e + 1),
                best_valid_auc: outcome.state.best_auc,
                epochs: outcome.state.history.len(),
                stop_reason: outcome.state.stop_reason.clone(),
                seconds: fold_seconds,
            });
        }
        agc_data::fsutil::write_json(&self.layout.fold_summary(kind), &summary)?;
        let predictions = ModelPredictions { oof, test };
        self.write_predictions(&self.layout.model_predictions(kind), &predictions, false)?;
        self.record_step(&format!("train {kind}"), seconds)?;
        Ok(Some(predictions))
    }

    /// Writes `files` (`oof.csv`, then `test.csv`), and `submission.csv` into the run when
    /// `submission` is set and there is a test set.
    pub(crate) fn write_predictions(
        &self,
        files: &PredictionFiles,
        predictions: &ModelPredictions,
        submission: bool,
    ) -> Result<()> {
        let oof: Vec<OofRow> = self
            .train
            .iter()
            .enumerate()
            .map(|(i, r)| OofRow {
                image_name: r.image_name.clone(),
                fold: self.folds.fold_of[i],
                target: self.labels[i],
                prediction: predictions.oof[i],
            })
            .collect();
        // test.csv last: its presence says the model is complete.
        write_rows(&files.oof, &oof)?;
        let test: Vec<TestRow> = self
            .test
            .iter()
            .zip(&predictions.test)
            .map(|(r, &prediction)| TestRow {
                image_name: r.image_name.clone(),
                prediction,
            })
            .collect();
        if submission && !self.test.is_empty() {
            let rows: Vec<SubmissionRow> = test
                .iter()
                .map(|t| SubmissionRow {
                    image_name: t.image_name.clone(),
                    target: t.prediction,
                })
                .collect();
            write_rows(&self.layout.submission(), &rows)?;
        }
        write_rows(&files.test, &test)
    }

    /// The saved predictions of `kind`, if it has been trained.
    ///
    /// # Errors
    /// A prediction file that does not match the run's images.
    pub fn predictions(&self, kind: ModelKind) -> Result<Option<ModelPredictions>> {
        self.read_predictions(&self.layout.model_predictions(kind))
    }

    fn read_predictions(&self, files: &PredictionFiles) -> Result<Option<ModelPredictions>> {
        let (oof_path, test_path) = (files.oof.as_path(), files.test.as_path());
        if !oof_path.is_file() || !test_path.is_file() {
            return Ok(None);
        }
        let changed = |path: &Path| TrainError::Parse {
            path: path.to_path_buf(),
            message: "its images are not the run's images: was the data changed?".into(),
        };
        let oof: Vec<OofRow> = read_rows(oof_path)?;
        if oof.len() != self.train.len()
            || oof
                .iter()
                .zip(&self.train)
                .any(|(o, r)| o.image_name != r.image_name)
        {
            return Err(changed(oof_path));
        }
        let test: Vec<TestRow> = read_rows(test_path)?;
        if test.len() != self.test.len()
            || test
                .iter()
                .zip(&self.test)
                .any(|(t, r)| t.image_name != r.image_name)
        {
            return Err(changed(test_path));
        }
        Ok(Some(ModelPredictions {
            oof: oof.into_iter().map(|o| o.prediction).collect(),
            test: test.into_iter().map(|t| t.prediction).collect(),
        }))
    }

    /// The crop cache `which` as training (and test) images.
    fn crop_images(&self, which: Crops, step: &str) -> Result<(Images, Option<Images>)> {
        let open = |split: Split, base: &Images| -> Result<Images> {
            let path = self.layout.crop_cache(which, split);
            if !path.is_file() {
                return Err(TrainError::MissingStep {
                    path,
                    step: step.to_string(),
                });
            }
            let cache = Arc::new(ImageCache::open(&path)?);
            Images::new(cache, base.meta.to_vec(), base.targets.to_vec())
        };
        let train = open(Split::Train, &self.train_images)?;
        let test = self
            .test_images
            .as_ref()
            .map(|t| open(Split::Test, t))
            .transpose()?;
        Ok((train, test))
    }
}

/// The outcome of the fold in `fold` if it has finished.
fn finished_fold(fold: &FoldLayout) -> Option<Result<FoldOutcome>> {
    let (state_path, predictions_path) = (fold.state(), fold.predictions());
    if !state_path.is_file() || !predictions_path.is_file() {
        return None;
    }
    let state: FoldState = match read_json(&state_path) {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    if !state.finished {
        return None;
    }
    Some(
        read_json::<FoldPredictions>(&predictions_path)
            .map(|predictions| FoldOutcome { state, predictions }),
    )
}

/// The seed of fold `f` of `kind` in a run seeded with `seed` (initialisation, sampling,
/// augmentation and test-time augmentation).
pub(crate) fn fold_seed(seed: u64, kind: ModelKind, f: usize) -> u64 {
    seed ^ ((f as u64 + 1) << 32) ^ kind_salt(kind)
}

fn kind_salt(kind: ModelKind) -> u64 {
    match kind {
        ModelKind::Resnet => 0x1000,
        ModelKind::Chipnet => 0x2000,
        ModelKind::Attnresnet => 0x3000,
        ModelKind::Cropnet => 0x4000,
        ModelKind::OracleCropnet => 0x5000,
    }
}
