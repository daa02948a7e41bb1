//! The ensemble step: a weighted average of trained models' predictions, with given weights
//! or weights fitted on the out-of-fold predictions (never on test labels).

use std::time::Instant;

use super::{Run, lock};
use crate::ensemble::{fit_weights, weighted_average};
use crate::error::{Result, TrainError};
use crate::model::ModelKind;
use crate::scores::ModelPredictions;

impl Run {
    /// The ensemble of the configured members: weights as given, or fitted on the out-of-fold
    /// predictions. Writes `ensemble/{oof,test}.csv` and `submission.csv`; returns the
    /// members with their normalised weights, and the combined predictions.
    ///
    /// # Errors
    /// A member that has not been trained (with the command that trains it), or weights that
    /// cannot be used.
    pub fn ensemble(&self) -> Result<(Vec<(ModelKind, f64)>, ModelPredictions)> {
        let started = Instant::now();
        let mut members = Vec::new();
        let mut missing = Vec::new();
        for &(kind, w) in &self.config.ensemble {
            match self.predictions(kind)? {
                Some(p) => members.push((kind, w, p)),
                None => missing.push(kind),
            }
        }
        if let Some(&kind) = missing.first() {
            return Err(TrainError::MissingStep {
                path: self.model_dir(kind).join("oof.csv"),
                step: format!("agc train --model {kind}"),
            });
        }
        if members.is_empty() {
            return Err(TrainError::Config("the ensemble has no members".into()));
        }
        let oofs: Vec<&[f32]> = members.iter().map(|m| m.2.oof.as_slice()).collect();
        let weights: Vec<f64> = if self.config.fit_ensemble {
            fit_weights(&oofs, &self.labels, 20)
                .ok_or_else(|| {
                    TrainError::Undefined("ensemble weights: the OOF AUC is undefined".into())
                })?
                .0
        } else {
            members.iter().map(|m| m.1).collect()
        };
        if weights.iter().any(|&w| w.is_nan() || w < 0.0) || weights.iter().sum::<f64>() <= 0.0 {
            return Err(TrainError::Config(format!(
                "ensemble weights must be non-negative and not all zero, got {weights:?}"
            )));
        }
        let tests: Vec<&[f32]> = members.iter().map(|m| m.2.test.as_slice()).collect();
        let combined = ModelPredictions {
            oof: weighted_average(&oofs, &weights),
            test: if self.test.is_empty() {
                Vec::new()
            } else {
                weighted_average(&tests, &weights)
            },
        };
        {
            let _claim = lock::claim(&self.lock_path("ensemble"), "writing the ensemble")?;
            self.write_predictions(&self.dir.join("ensemble"), &combined, true)?;
        }
        self.record_step("ensemble", started.elapsed().as_secs_f64())?;
        let total: f64 = weights.iter().sum();
        Ok((
            members
                .iter()
                .zip(&weights)
                .map(|(m, w)| (m.0, w / total))
                .collect(),
            combined,
        ))
    }
}
