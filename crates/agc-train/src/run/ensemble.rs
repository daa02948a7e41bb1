//! The ensemble step: a weighted average of trained models' predictions, with given weights
//! or weights fitted on the out-of-fold predictions (never on test labels).

use std::time::Instant;

use super::{Run, lock};
use crate::ensemble::{EnsembleChoice, choose_weights, weighted_average};
use crate::error::{Result, TrainError};
use crate::model::ModelKind;
use crate::scores::ModelPredictions;

impl Run {
    /// The ensemble of the configured members: the given weights where, out of fold, they are
    /// not below any member alone, else weights fitted on the out-of-fold predictions
    /// ([`choose_weights`]); fitted always when the configuration asks. Writes
    /// `ensemble/{oof,test}.csv` and `submission.csv`; returns the weights, how they were
    /// chosen, and the combined predictions.
    ///
    /// # Errors
    /// A member that has not been trained (with the command that trains it), or weights that
    /// cannot be used.
    pub fn ensemble(&self) -> Result<Ensemble> {
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
        let given: Vec<f64> = members.iter().map(|m| m.1).collect();
        if given.iter().any(|&w| !(w.is_finite() && w >= 0.0)) {
            return Err(TrainError::Config(format!(
                "ensemble weights must be non-negative, got {given:?}"
            )));
        }
        if !self.config.fit_ensemble && given.iter().sum::<f64>() <= 0.0 {
            return Err(TrainError::Config(format!(
                "ensemble weights must not all be zero, got {given:?}"
            )));
        }
        let choice = choose_weights(&oofs, &self.labels, &given, self.config.fit_ensemble)
            .ok_or_else(|| {
                TrainError::Undefined("ensemble weights: the OOF AUC is undefined".into())
            })?;
        let weights = choice.weights().to_vec();
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
        let ensemble = Ensemble {
            weights: members
                .iter()
                .zip(&weights)
                .map(|(m, &w)| (m.0, w))
                .collect(),
            choice,
            predictions: combined,
        };
        tracing::info!("{}", ensemble.note());
        Ok(ensemble)
    }
}

/// What [`Run::ensemble`] gives.
#[derive(Debug, Clone)]
pub struct Ensemble {
    /// The members and the weights used (summing to 1).
    pub weights: Vec<(ModelKind, f64)>,
    /// How the weights were chosen, with the out-of-fold AUCs that decided it.
    pub choice: EnsembleChoice,
    /// The combined out-of-fold and test predictions.
    pub predictions: ModelPredictions,
}

impl Ensemble {
    /// [`EnsembleChoice::describe`] with the members' names: which weights were used and why.
    pub fn note(&self) -> String {
        let names: Vec<&str> = self.weights.iter().map(|(k, _)| k.name()).collect();
        self.choice.describe(&names)
    }
}
