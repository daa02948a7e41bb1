//! What a run measures, as plain data: each model's predictions and AUCs, the attention boxes'
//! statistics, `metrics.json`; and the check of a predictions file against labels
//! (`agc evaluate`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use agc_data::{Folds, read_labels};
use serde::{Deserialize, Serialize};

use crate::artefacts::{BoxRow, read_csv_rows};
use crate::error::{Result, TrainError};
use crate::metrics::{bootstrap_auc, roc_auc};

/// A model's out-of-fold and test predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPredictions {
    /// One per training image, in `train.csv` order.
    pub oof: Vec<f32>,
    /// One per test image, in `test.csv` order (mean over the folds' models).
    pub test: Vec<f32>,
}

/// AUCs of one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelScore {
    /// AUC of all out-of-fold predictions together.
    pub oof_auc: Option<f64>,
    /// Mean of the per-fold validation AUCs (the seed's figure).
    pub oof_auc_fold_mean: Option<f64>,
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
        let fold_aucs: Vec<f64> = (0..folds.k)
            .filter_map(|f| {
                let rows = folds.valid(f);
                let s: Vec<f32> = rows.iter().map(|&r| p.oof[r]).collect();
                let y: Vec<u8> = rows.iter().map(|&r| labels[r]).collect();
                roc_auc(&s, &y)
            })
            .collect();
        let (test_auc, test_auc_ci95) = match test_labels {
            Some(y) if p.test.len() == y.len() => (
                roc_auc(&p.test, y),
                bootstrap_auc(&p.test, y, 1000, 0.95, seed).map(|c| [c.low, c.high]),
            ),
            _ => (None, None),
        };
        Self {
            oof_auc: roc_auc(&p.oof, labels),
            oof_auc_fold_mean: (!fold_aucs.is_empty())
                .then(|| fold_aucs.iter().sum::<f64>() / fold_aucs.len() as f64),
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
        let fallbacks = rows.iter().filter(|r| !r.fallback.is_empty()).count();
        Self {
            boxes: rows.len(),
            iou_median: median(&|_| true),
            iou_median_test: median(&|r| r.split == "test"),
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
    /// Scores per model (`resnet`, `chipnet`, `cropnet`, `oracle_cropnet`, `ensemble`, ...).
    pub models: BTreeMap<String, ModelScore>,
    /// The ensemble's members and normalised weights.
    pub ensemble_weights: BTreeMap<String, f64>,
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
