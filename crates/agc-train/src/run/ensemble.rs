//! The ensemble step: a weighted average of trained models' predictions, with given weights
//! or weights fitted on the out-of-fold predictions (never on test labels).

use std::time::Instant;

use super::{Run, lock};
use crate::ensemble::{EnsembleChoice, EnsembleMember, choose_weights, weighted_average};
use crate::error::{Result, TrainError};
use crate::layout::RunLayout;
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
        for &EnsembleMember { model, weight } in &self.config.ensemble {
            match self.predictions(model)? {
                Some(p) => members.push((model, weight, p)),
                None => missing.push(model),
            }
        }
        if let Some(&kind) = missing.first() {
            return Err(TrainError::MissingStep {
                path: self.layout.model_predictions(kind).oof,
                step: format!("agc train --model {kind}"),
            });
        }
        if members.is_empty() {
            return Err(TrainError::Setting {
                setting: "ensemble".into(),
                value: "[]".into(),
                message: "has no members".into(),
            });
        }
        let oofs: Vec<&[f32]> = members.iter().map(|m| m.2.oof.as_slice()).collect();
        let given: Vec<f64> = members.iter().map(|m| m.1).collect();
        if given.iter().any(|&w| !(w.is_finite() && w >= 0.0)) {
            return Err(TrainError::Setting {
                setting: "ensemble weights".into(),
                value: format!("{given:?}"),
                message: "must be non-negative".into(),
            });
        }
        if !self.config.fit_ensemble && given.iter().sum::<f64>() <= 0.0 {
            return Err(TrainError::Setting {
                setting: "ensemble weights".into(),
                value: format!("{given:?}"),
                message: "must not all be zero".into(),
            });
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
            let _claim = lock::claim(&self.layout.lock("ensemble"), "writing the ensemble")?;
            self.write_predictions(&self.layout.ensemble_predictions(), &combined, true)?;
        }
        self.record_step("ensemble", started.elapsed().as_secs_f64())?;
        let ensemble = Ensemble {
            weights: members
                .iter()
                .zip(&weights)
                .map(|(m, &w)| EnsembleMember::new(m.0, w))
                .collect(),
            choice,
            predictions: combined,
        };
        tracing::info!("{}", ensemble.note());
        Ok(ensemble)
    }
}

impl Run {
    /// Why this run writes no `submission.csv`, or `None` when its ensemble writes one. Only
    /// the ensemble writes it, and only for test images: a data directory without `test.csv`,
    /// a test set whose every image was left out, or an ensemble without members (`--models`
    /// without two of its members) each leave it out, and a command that ends without one
    /// says which.
    pub fn no_submission(&self) -> Option<String> {
        let test_csv = self.config.data.join("test.csv");
        why_no_submission(&SubmissionInputs {
            test_csv: test_csv.is_file().then_some(test_csv.as_path()),
            listed: self.data.test.len(),
            kept: self.test.len(),
            ensemble: &self.config.ensemble,
            models: &self.config.models,
            layout: &self.layout,
        })
    }
}

/// What decides whether a run has a `submission.csv`.
struct SubmissionInputs<'a> {
    /// The data's `test.csv`, when there is one.
    test_csv: Option<&'a std::path::Path>,
    /// Test images it lists.
    listed: usize,
    /// Test images left after the unreadable ones were left out.
    kept: usize,
    ensemble: &'a [EnsembleMember],
    models: &'a [ModelKind],
    layout: &'a RunLayout,
}

fn why_no_submission(s: &SubmissionInputs) -> Option<String> {
    let Some(test_csv) = s.test_csv else {
        return Some("the data directory has no test.csv, so there is nothing to submit".into());
    };
    if s.listed == 0 {
        return Some(format!("{} lists no images", test_csv.display()));
    }
    if s.kept == 0 {
        return Some(format!(
            "every one of the {} test images was left out as unreadable (--skip-bad-images; \
             listed in {})",
            s.listed,
            s.layout.skipped().display()
        ));
    }
    if s.ensemble.is_empty() {
        return Some(format!(
            "the ensemble writes it, and this run has none (--models {} keeps fewer than two \
             of its members, or the configuration names none); each model's test predictions \
             are in {}",
            super::config::names(s.models),
            s.layout.root().join("models/MODEL/test.csv").display()
        ));
    }
    None
}

/// What [`Run::ensemble`] gives.
#[derive(Debug, Clone)]
pub struct Ensemble {
    /// The members and the weights used (summing to 1).
    pub weights: Vec<EnsembleMember>,
    /// How the weights were chosen, with the out-of-fold AUCs that decided it.
    pub choice: EnsembleChoice,
    /// The combined out-of-fold and test predictions.
    pub predictions: ModelPredictions,
}

impl Ensemble {
    /// [`EnsembleChoice::describe`] with the members' names: which weights were used and why.
    pub fn note(&self) -> String {
        let names: Vec<&str> = self.weights.iter().map(|m| m.model.name()).collect();
        self.choice.describe(&names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn each_reason_for_no_submission_is_named() {
        let test_csv = Path::new("data/test.csv");
        let layout = RunLayout::new("runs/r");
        let both = [
            EnsembleMember::new(ModelKind::Resnet, 0.5),
            EnsembleMember::new(ModelKind::Cropnet, 0.5),
        ];
        let models = [ModelKind::Resnet];
        let inputs = SubmissionInputs {
            test_csv: Some(test_csv),
            listed: 8,
            kept: 8,
            ensemble: &both,
            models: &models,
            layout: &layout,
        };
        assert_eq!(why_no_submission(&inputs), None, "the ensemble writes one");
        let why = |changed: SubmissionInputs| why_no_submission(&changed).expect("a reason");
        let no_test = why(SubmissionInputs {
            test_csv: None,
            ..inputs
        });
        assert!(no_test.contains("no test.csv"), "{no_test}");
        let empty = why(SubmissionInputs {
            listed: 0,
            kept: 0,
            ..inputs
        });
        assert!(empty.contains("data/test.csv lists no images"), "{empty}");
        let all_bad = why(SubmissionInputs { kept: 0, ..inputs });
        assert!(
            all_bad.contains("every one of the 8 test images was left out")
                && all_bad.contains("runs/r/skipped.csv"),
            "{all_bad}"
        );
        let one_model = why(SubmissionInputs {
            ensemble: &[],
            ..inputs
        });
        assert!(
            one_model.contains("--models resnet keeps fewer than two of its members")
                && one_model.contains("runs/r/models/MODEL/test.csv"),
            "{one_model}"
        );
    }
}
