//! The whole pipeline in order, and what the report is built from: every step that is not
//! complete yet, then `metrics.json` and `report.md`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use agc_data::Split;
use burn::prelude::Device;

use super::{Run, true_square};
use crate::artefacts::read_attention;
use crate::error::{Result, TrainError};
use crate::model::ModelKind;
use crate::report::{Overlay, ReportInput, SignFlags, write_html, write_report};
use crate::scores::{ImageCounts, Metrics, ModelPredictions, Scored};

/// Runs every step that is not complete yet: the configured models (ChipNet before CropNet,
/// the oracle CropNet too when the data has true boxes), the crop step before CropNet, the
/// ensemble, `metrics.json` and the report. Models train on every device in `devices`
/// (data-parallel when there are several); the crop step runs on the first.
///
/// # Errors
/// The first step that fails.
pub fn run_all(run: &Run, devices: &[Device]) -> Result<Metrics> {
    let Some(device) = devices.first() else {
        return Err(TrainError::NoDevice);
    };
    // What the metadata alone gives, beside every model (fast: a logistic regression per fold).
    let mut predictions = vec![(Scored::Baseline, run.metadata_baseline()?)];
    for kind in run.config.pipeline_models(run.has_true_boxes()) {
        if kind == ModelKind::Cropnet {
            run.crop(device)?;
        }
        tracing::info!("training {kind}");
        predictions.push((Scored::Model(kind), run.train(kind, devices)?));
    }
    let ensemble = if run.config.ensemble.is_empty() {
        None
    } else {
        let ensemble = run.ensemble()?;
        predictions.push((Scored::Ensemble, ensemble.predictions.clone()));
        Some(ensemble)
    };
    let _claim = super::lock::claim(&run.layout.lock("report"), "writing the metrics and report")?;
    let metrics = run.write_metrics(&predictions, ensemble.as_ref())?;
    run.write_report(&metrics, &predictions)?;
    Ok(metrics)
}

impl Run {
    /// The metadata-only baseline ([`crate::baseline`]) in the run's folds, written to
    /// `baselines/metadata/{oof,test}.csv`.
    ///
    /// # Errors
    /// An unwritable file.
    pub fn metadata_baseline(&self) -> Result<ModelPredictions> {
        let encode = |records: &[agc_data::Record]| -> Vec<Vec<f32>> {
            records.iter().map(|r| self.encoder.encode(r)).collect()
        };
        let p = crate::baseline::metadata_baseline(
            &encode(&self.train),
            &self.labels,
            &self.folds,
            &encode(&self.test),
        );
        let _claim = super::lock::claim(&self.layout.lock("baseline"), "the metadata baseline")?;
        self.write_predictions(&self.layout.baseline_predictions(), &p, false)?;
        Ok(p)
    }

    /// Scores every model in `predictions` and writes `metrics.json`.
    ///
    /// # Errors
    /// A malformed `boxes.csv` or `steps.json`, or an unwritable file.
    pub fn write_metrics(
        &self,
        predictions: &[(Scored, ModelPredictions)],
        ensemble: Option<&super::Ensemble>,
    ) -> Result<Metrics> {
        let metrics = Metrics {
            models: predictions
                .iter()
                .map(|(scored, p)| (*scored, self.score(p)))
                .collect(),
            ensemble_weights: ensemble
                .map(|e| e.weights.iter().map(|m| (m.model, m.weight)).collect())
                .unwrap_or_default(),
            ensemble_choice: ensemble.map(|e| e.choice.clone()),
            ensemble_note: ensemble.map(super::Ensemble::note).unwrap_or_default(),
            attention: self.attention_stats()?,
            wall_seconds: self.step_seconds()?,
            images: ImageCounts {
                train: self.train.len(),
                train_positives: self.labels.iter().filter(|&&y| y == 1).count(),
                test: self.test.len(),
                test_labelled: self.test_labels.is_some(),
                skipped: self.skipped,
            },
        };
        agc_data::fsutil::write_json(&self.layout.metrics(), &metrics)?;
        Ok(metrics)
    }

    /// Writes `report.md` with its figures, and the self-contained `report.html`.
    ///
    /// # Errors
    /// Unreadable artefacts or originals, unwritable files.
    pub fn write_report(
        &self,
        metrics: &Metrics,
        predictions: &[(Scored, ModelPredictions)],
    ) -> Result<std::path::PathBuf> {
        let overlays = if self.layout.boxes().is_file() {
            self.overlays(0, 16)?
        } else {
            Vec::new()
        };
        let input = ReportInput {
            dir: &self.dir,
            metrics,
            predictions,
            labels: &self.labels,
            test_labels: self.test_labels.as_deref(),
            folds: self.folds.k,
            backbone: &self.config.model.backbone,
            signs: self.sign_flags(),
            overlays,
        };
        let path = write_report(&input)?;
        let config = serde_json::to_string_pretty(&self.config).unwrap_or_default();
        write_html(&input, &config)?;
        Ok(path)
    }

    /// The attention overlays of fold `fold`'s ChipNet: up to `count` images, test images
    /// first.
    ///
    /// # Errors
    /// A fold out of range, the crop step not run, or malformed artefacts.
    pub fn overlays(&self, fold: usize, count: usize) -> Result<Vec<Overlay>> {
        if fold >= self.folds.k {
            return Err(TrainError::Setting {
                setting: "fold".into(),
                value: fold.to_string(),
                message: format!(
                    "the run has {} folds (0 to {})",
                    self.folds.k,
                    self.folds.k - 1
                ),
            });
        }
        let att_path = self.layout.attention(fold);
        let Some(boxes) = self.boxes()? else {
            return Err(TrainError::MissingStep {
                path: self.layout.boxes(),
                step: "agc crop".into(),
            });
        };
        if !att_path.is_file() {
            return Err(TrainError::MissingStep {
                path: att_path,
                step: "agc crop".into(),
            });
        }
        let by_key: HashMap<(Split, &str), _> = boxes
            .iter()
            .filter(|b| b.fold == fold)
            .map(|b| ((b.split, b.image_name.as_str()), b))
            .collect();
        let entries = |split: Split| {
            let images = if split == Split::Train {
                Some(&self.train_images)
            } else {
                self.test_images.as_ref()
            };
            images.map(|i| {
                i.cache
                    .index()
                    .iter()
                    .map(|e| (e.image_name.as_str(), e))
                    .collect::<HashMap<_, _>>()
            })
        };
        let (train_index, test_index) = (entries(Split::Train), entries(Split::Test));
        let mut overlays = Vec::new();
        let mut rows = read_attention(&att_path)?;
        // Test images first.
        rows.sort_by_key(|r| r.split != Split::Test);
        for row in rows.into_iter().take(count) {
            let key = (row.split, row.image_name.as_str());
            let index = if row.split == Split::Train {
                &train_index
            } else {
                &test_index
            };
            let (Some(b), Some(entry)) = (
                by_key.get(&key),
                index.as_ref().and_then(|i| i.get(row.image_name.as_str())),
            ) else {
                continue;
            };
            let centre = entry.geometry();
            overlays.push(Overlay {
                path: agc_data::DataDir::image_path(self.images_folder(row.split), &row.image_name),
                map: row.map,
                centre,
                crop: agc_core::Rect::square(b.orig_x, b.orig_y, b.orig_side),
                truth: b
                    .truth()
                    .map(|t| true_square(t, centre.width, centre.height, self.config.boxes.margin)),
                name: row.image_name,
            });
        }
        Ok(overlays)
    }

    /// Which class signs each scored image shows, from the data's `signs.csv` (synthetic data):
    /// the test images when their labels are known, else the training images.
    fn sign_flags(&self) -> Option<SignFlags> {
        let path = self.config.data.join("signs.csv");
        if !path.is_file() {
            return None;
        }
        let table = match agc_data::SignsTable::read(&path) {
            Ok(table) => table,
            Err(e) => {
                tracing::warn!("{e}; the report goes without the signs table");
                return None;
            }
        };
        let by_name: BTreeMap<&str, &Vec<bool>> = table
            .rows
            .iter()
            .map(|r| (r.image_name.as_str(), &r.flags))
            .collect();
        let on_test = self.test_labels.is_some();
        let records = if on_test { &self.test } else { &self.train };
        let flags = records
            .iter()
            .map(|r| by_name.get(r.image_name.as_str()).map(|f| (*f).clone()))
            .collect::<Option<Vec<_>>>();
        flags.map(|flags| SignFlags {
            on_test,
            names: table.names,
            flags,
        })
    }
}

/// Draws the overlays of fold `fold` into `path` (`agc attention`).
///
/// # Errors
/// As [`Run::overlays`] and [`crate::report::draw_overlays`].
pub fn write_overlays(run: &Run, fold: usize, count: usize, path: &Path) -> Result<usize> {
    crate::report::draw_overlays(&run.overlays(fold, count)?, path)
}
