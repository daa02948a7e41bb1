//! What a run measures, as plain data: each model's predictions and AUCs, the attention boxes'
//! statistics, `metrics.json`; and the check of a predictions file against labels
//! (`agc evaluate`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use agc_data::{Folds, read_labels};
use serde::{Deserialize, Serialize};

use crate::artefacts::{BoxRow, read_csv_rows};
use crate::ensemble::EnsembleMember;
use crate::error::{Result, TrainError};
use crate::metrics::{bootstrap_auc, roc_auc};
use crate::model::ModelKind;

/// What a row of a run's results scores: the metadata-only baseline, one model, or the
/// ensemble; in report order (the baseline first, the ensemble last). Written as its name
/// (`metadata`, a model's name, `ensemble`) in `metrics.json` and the reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Scored {
    /// The logistic regression on the metadata alone ([`crate::baseline`]).
    Baseline,
    /// One model, its folds averaged.
    Model(ModelKind),
    /// The run's ensemble.
    Ensemble,
}

impl Scored {
    /// Its name in `metrics.json` and the reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Baseline => "metadata",
            Self::Model(kind) => kind.name(),
            Self::Ensemble => "ensemble",
        }
    }
}

impl std::fmt::Display for Scored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Scored {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "metadata" => Ok(Self::Baseline),
            "ensemble" => Ok(Self::Ensemble),
            model => model.parse().map(Self::Model),
        }
    }
}

impl From<Scored> for String {
    fn from(s: Scored) -> Self {
        s.name().to_string()
    }
}

impl TryFrom<String> for Scored {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// A model's out-of-fold and test predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPredictions {
    /// One per training image, in `train.csv` order.
    pub oof: Vec<f32>,
    /// One per test image, in `test.csv` order (mean over the folds' models).
    pub test: Vec<f32>,
}

/// AUCs of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelScore {
    /// AUC of all out-of-fold predictions together.
    pub oof_auc: Option<f64>,
    /// Mean of the per-fold validation AUCs (the seed's figure).
    pub oof_auc_fold_mean: Option<f64>,
    /// Each fold's validation AUC, in fold order (`None` for a fold with one class).
    #[serde(default)]
    pub fold_aucs: Vec<Option<f64>>,
    /// AUC on the test labels, where known.
    pub test_auc: Option<f64>,
    /// Bootstrap 95 % interval of the test AUC.
    pub test_auc_ci95: Option<[f64; 2]>,
}

impl ModelScore {
    /// Scores `p` against the training `labels` in `folds`, and against `test_labels` where
    /// known (the bootstrap seeded with `seed`).
    pub fn of(
        p: &ModelPredictions,
        folds: &Folds,
        labels: &[u8],
        test_labels: Option<&[u8]>,
        seed: u64,
    ) -> Self {
        let fold_aucs: Vec<Option<f64>> = (0..folds.k)
            .map(|f| {
                let rows = folds.valid(f);
                let s: Vec<f32> = rows.iter().map(|&r| p.oof[r]).collect();
                let y: Vec<u8> = rows.iter().map(|&r| labels[r]).collect();
                roc_auc(&s, &y)
            })
            .collect();
        let defined: Vec<f64> = fold_aucs.iter().flatten().copied().collect();
        let (test_auc, test_auc_ci95) = match test_labels {
            Some(y) if p.test.len() == y.len() => (
                roc_auc(&p.test, y),
                bootstrap_auc(&p.test, y, 1000, 0.95, seed).map(|c| [c.low, c.high]),
            ),
            _ => (None, None),
        };
        Self {
            oof_auc: roc_auc(&p.oof, labels),
            oof_auc_fold_mean: (!defined.is_empty())
                .then(|| defined.iter().sum::<f64>() / defined.len() as f64),
            fold_aucs,
            test_auc,
            test_auc_ci95,
        }
    }
}

/// How well the attention boxes found the lesions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AttentionStats {
    /// Rows of `boxes.csv` (images × folds).
    pub boxes: usize,
    /// Median IoU of the attention box with the true box (both squared), over every row.
    pub iou_median: Option<f64>,
    /// The same over the test images only.
    pub iou_median_test: Option<f64>,
    /// Share of maps that fell back to the whole image.
    pub fallback_rate: f64,
}

impl AttentionStats {
    /// The statistics of the rows of `boxes.csv`.
    pub fn of(rows: &[BoxRow]) -> Self {
        let median = |pick: &dyn Fn(&BoxRow) -> bool| -> Option<f64> {
            let mut v: Vec<f64> = rows
                .iter()
                .filter(|r| pick(r))
                .filter_map(|r| r.iou)
                .collect();
            if v.is_empty() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            let n = v.len();
            Some(if n % 2 == 1 {
                v[n / 2]
            } else {
                f64::midpoint(v[n / 2 - 1], v[n / 2])
            })
        };
        let fallbacks = rows.iter().filter(|r| r.fallback.is_some()).count();
        Self {
            boxes: rows.len(),
            iou_median: median(&|_| true),
            iou_median_test: median(&|r| r.split == agc_data::Split::Test),
            fallback_rate: if rows.is_empty() {
                0.0
            } else {
                fallbacks as f64 / rows.len() as f64
            },
        }
    }
}

/// `RUN/metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Scores of the baseline, each model and the ensemble (keyed `metadata`, `resnet`,
    /// `chipnet`, `cropnet`, `oracle_cropnet`, `ensemble`, ...).
    pub models: BTreeMap<Scored, ModelScore>,
    /// The ensemble's members and normalised weights (`{"resnet": 0.5, ...}`).
    pub ensemble_weights: BTreeMap<ModelKind, f64>,
    /// How the ensemble's weights were chosen, with the out-of-fold AUCs that decided it
    /// (members in the order of the configuration's `ensemble`).
    #[serde(default)]
    pub ensemble_choice: Option<crate::ensemble::EnsembleChoice>,
    /// The same as a sentence, for the report.
    #[serde(default)]
    pub ensemble_note: String,
    /// How well the attention boxes found the lesions.
    pub attention: Option<AttentionStats>,
    /// Seconds of work that made the run, summed over every command that worked on it (the
    /// steps' own timings, so a resumed run counts what each part took when it was done).
    pub wall_seconds: f64,
    /// Training images, positives among them, test images.
    pub images: ImageCounts,
}

impl Metrics {
    /// The ensemble's members with their normalised weights, in report order.
    pub fn ensemble_members(&self) -> Vec<EnsembleMember> {
        self.ensemble_weights
            .iter()
            .map(|(&model, &weight)| EnsembleMember { model, weight })
            .collect()
    }

    /// The test AUC of `scored`, where known.
    pub fn test_auc(&self, scored: Scored) -> Option<f64> {
        self.models.get(&scored).and_then(|s| s.test_auc)
    }
}

/// Sizes of the data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageCounts {
    /// Training images.
    pub train: usize,
    /// Positives among them.
    pub train_positives: usize,
    /// Test images.
    pub test: usize,
    /// Whether test labels were known (synthetic data).
    pub test_labelled: bool,
    /// Images left out because they could not be read (`--skip-bad-images`).
    #[serde(default)]
    pub skipped: usize,
}

/// Reads predictions (`image_name` plus a `prediction` or `target` column, as a model's
/// `oof.csv`/`test.csv` or a `submission.csv`) and scores them against `labels`
/// (`image_name,target`): for `agc evaluate`. Every labelled image must be predicted exactly
/// once, with a finite probability.
///
/// # Errors
/// Unreadable files; an image without a label; labelled images without a prediction; an image
/// predicted twice; a prediction that is not a finite number (each named); an undefined AUC.
pub fn evaluate_file(predictions: &Path, labels: &Path) -> Result<(usize, f64)> {
    let labelled = read_labels(labels)?;
    let by_name: HashMap<&str, u8> = labelled.iter().map(|(n, y)| (n.as_str(), *y)).collect();
    let (header, rows) = read_csv_rows(predictions)?;
    let bad = |message: String| TrainError::Parse {
        path: predictions.to_path_buf(),
        message,
    };
    let name_col = header
        .iter()
        .position(|h| h == "image_name")
        .ok_or_else(|| bad("no image_name column".into()))?;
    let col = header
        .iter()
        .position(|h| h == "prediction")
        .or_else(|| header.iter().position(|h| h == "target"))
        .ok_or_else(|| bad("no prediction (or target) column".into()))?;
    let mut seen = HashSet::new();
    let mut scores = Vec::with_capacity(rows.len());
    let mut ys = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let line = i + 2;
        let name = r[name_col].as_str();
        let y = by_name.get(name).ok_or_else(|| {
            bad(format!(
                "line {line}: image {name:?} has no label in {}",
                labels.display()
            ))
        })?;
        if !seen.insert(name) {
            return Err(bad(format!(
                "line {line}: image {name:?} is predicted twice"
            )));
        }
        let s: f32 = r[col]
            .trim()
            .parse()
            .map_err(|e| bad(format!("line {line}: {:?} is not a number: {e}", r[col])))?;
        if !s.is_finite() {
            return Err(bad(format!(
                "line {line}: the prediction of {name:?} is {s}"
            )));
        }
        scores.push(s);
        ys.push(*y);
    }
    let missing: Vec<&str> = labelled
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !seen.contains(n))
        .collect();
    if let Some(first) = missing.first() {
        return Err(bad(format!(
            "{} of {} labelled images have no prediction (the first: {first:?}); scoring a \
             subset would give another AUC",
            missing.len(),
            labelled.len()
        )));
    }
    let auc = roc_auc(&scores, &ys).ok_or_else(|| {
        TrainError::Undefined(format!(
            "{}: the labels hold one class only, so the AUC is undefined",
            labels.display()
        ))
    })?;
    Ok((rows.len(), auc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_keyed_by_what_they_score_in_the_format_runs_have_written() {
        // metrics.json as runs before these types wrote it: string keys, no fold AUCs.
        let score = r#"{"oof_auc": 0.8, "oof_auc_fold_mean": 0.81, "test_auc": null, "test_auc_ci95": null}"#;
        let text = format!(
            r#"{{"models": {{"metadata": {score}, "resnet": {score}, "oracle_cropnet": {score},
              "ensemble": {score}}}, "ensemble_weights": {{"resnet": 0.25, "cropnet": 0.75}},
              "attention": null, "wall_seconds": 1.0, "images": {{"train": 4,
              "train_positives": 2, "test": 0, "test_labelled": false}}}}"#
        );
        let metrics: Metrics = serde_json::from_str(&text).expect("an old metrics.json");
        let keys: Vec<Scored> = metrics.models.keys().copied().collect();
        assert_eq!(
            keys,
            [
                Scored::Baseline,
                Scored::Model(ModelKind::Resnet),
                Scored::Model(ModelKind::OracleCropnet),
                Scored::Ensemble
            ],
            "report order: the baseline first, the ensemble last"
        );
        assert_eq!(
            metrics.ensemble_members(),
            [
                EnsembleMember::new(ModelKind::Resnet, 0.25),
                EnsembleMember::new(ModelKind::Cropnet, 0.75)
            ]
        );
        let again = serde_json::to_value(&metrics).expect("json");
        assert!(again["models"]["oracle_cropnet"].is_object());
        assert_eq!(again["ensemble_weights"]["cropnet"], 0.75);
        // A key that names nothing is an error, not a silent fallback.
        let unknown = text.replace(r#""cropnet": 0.75"#, r#""vgg": 0.75"#);
        assert!(serde_json::from_str::<Metrics>(&unknown).is_err());
        let unknown = text.replace(r#""resnet": {"#, r#""vgg": {"#);
        let err = serde_json::from_str::<Metrics>(&unknown).expect_err("vgg");
        assert!(err.to_string().contains("vgg"), "{err}");
    }

    #[test]
    fn each_folds_auc_is_kept_and_a_one_class_fold_is_none() {
        let folds = Folds {
            k: 2,
            fold_of: vec![0, 0, 0, 0, 1, 1, 1, 1],
        };
        let labels = [0, 1, 0, 1, 0, 0, 0, 0];
        let p = ModelPredictions {
            oof: vec![0.1, 0.9, 0.2, 0.15, 0.5, 0.6, 0.7, 0.8],
            test: Vec::new(),
        };
        let s = ModelScore::of(&p, &folds, &labels, None, 0);
        assert_eq!(s.fold_aucs, [Some(0.75), None]);
        assert_eq!(s.oof_auc_fold_mean, Some(0.75));
    }

    #[test]
    fn evaluate_refuses_missing_repeated_and_nan_predictions() {
        let dir = tempfile::tempdir().expect("tmp");
        let labels = dir.path().join("labels.csv");
        std::fs::write(&labels, "image_name,target\na,0\nb,1\nc,0\nd,1\n").expect("write");
        let p = dir.path().join("p.csv");
        let check = |text: &str| {
            std::fs::write(&p, text).expect("write");
            evaluate_file(&p, &labels)
        };
        let (n, auc) = check("image_name,prediction\na,0.1\nb,0.9\nc,0.2\nd,0.8\n").expect("ok");
        assert_eq!((n, auc), (4, 1.0));
        let err = check("image_name,prediction\na,0.1\nb,0.9\nc,0.2\n").expect_err("missing");
        assert!(err.to_string().contains("1 of 4 labelled") && err.to_string().contains("\"d\""));
        let err =
            check("image_name,prediction\na,0.1\nb,0.9\nc,0.2\nd,0.8\nd,0.8\n").expect_err("twice");
        assert!(err.to_string().contains("line 6") && err.to_string().contains("twice"));
        let err = check("image_name,prediction\na,NaN\nb,0.9\nc,0.2\nd,0.8\n").expect_err("nan");
        assert!(err.to_string().contains("line 2") && err.to_string().contains("NaN"));
        let err = check("image_name,prediction\na,0.1\nb,0.9\nc,0.2\nd,0.8\ne,0.5\n")
            .expect_err("unlabelled");
        assert!(err.to_string().contains("\"e\" has no label"));
    }
}
