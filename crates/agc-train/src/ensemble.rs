//! Ensembles: weighted averages of model predictions, with weights given or fitted on the
//! out-of-fold predictions (never on test labels).

use crate::metrics::roc_auc;

/// The weighted average of several models' predictions for the same images; weights are
/// normalised to sum to 1.
///
/// # Panics
/// If there are no models, the weights do not match the models, a weight is negative or all
/// are zero, or the models predict different numbers of images.
pub fn weighted_average(predictions: &[&[f32]], weights: &[f64]) -> Vec<f32> {
    assert!(
        !predictions.is_empty(),
        "an ensemble needs at least one model"
    );
    assert_eq!(predictions.len(), weights.len(), "one weight per model");
    assert!(
        weights.iter().all(|&w| w >= 0.0),
        "weights must be non-negative: {weights:?}"
    );
    let total: f64 = weights.iter().sum();
    assert!(total > 0.0, "weights must not all be zero");
    let n = predictions[0].len();
    assert!(
        predictions.iter().all(|p| p.len() == n),
        "every model must predict the same images"
    );
    (0..n)
        .map(|i| {
            predictions
                .iter()
                .zip(weights)
                .map(|(p, w)| f64::from(p[i]) * w / total)
                .sum::<f64>() as f32
        })
        .collect()
}

/// The weights, on a grid of step `1 / steps` over the simplex, whose average of the
/// out-of-fold predictions has the highest AUC; ties go to the most even weights. `None` when
/// the AUC is undefined (one class) or there is no model.
///
/// The grid has `C(steps + models − 1, models − 1)` points: 21 for two models at `steps = 20`,
/// 231 for three.
pub fn fit_weights(oof: &[&[f32]], labels: &[u8], steps: usize) -> Option<(Vec<f64>, f64)> {
    if oof.is_empty() || steps == 0 {
        return None;
    }
    let mut best: Option<(Vec<f64>, f64, f64)> = None;
    for counts in compositions(steps, oof.len()) {
        let weights: Vec<f64> = counts.iter().map(|&c| c as f64 / steps as f64).collect();
        let auc = roc_auc(&weighted_average(oof, &weights), labels)?;
        let spread: f64 = weights
            .iter()
            .map(|w| (w - 1.0 / weights.len() as f64).powi(2))
            .sum();
        let better = best
            .as_ref()
            .is_none_or(|(_, a, s)| auc > *a + 1e-12 || ((auc - a).abs() <= 1e-12 && spread < *s));
        if better {
            best = Some((weights, auc, spread));
        }
    }
    best.map(|(w, auc, _)| (w, auc))
}

/// Every way of writing `total` as an ordered sum of `parts` non-negative integers.
fn compositions(total: usize, parts: usize) -> Vec<Vec<usize>> {
    if parts == 1 {
        return vec![vec![total]];
    }
    (0..=total)
        .flat_map(|first| {
            compositions(total - first, parts - 1)
                .into_iter()
                .map(move |mut rest| {
                    rest.insert(0, first);
                    rest
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_average_normalises_the_weights() {
        let a = [0.2f32, 0.8];
        let b = [0.6f32, 0.4];
        let avg = weighted_average(&[&a, &b], &[1.0, 3.0]);
        assert!(
            (avg[0] - 0.5).abs() < 1e-6 && (avg[1] - 0.5).abs() < 1e-6,
            "{avg:?}"
        );
    }

    #[test]
    fn fitted_weights_prefer_the_informative_model() {
        // Model a ranks the positives perfectly, model b is noise.
        let labels = [0u8, 0, 0, 1, 1, 0, 1, 0];
        let a = [0.1f32, 0.2, 0.3, 0.9, 0.8, 0.25, 0.7, 0.15];
        let b = [0.9f32, 0.1, 0.8, 0.2, 0.3, 0.7, 0.1, 0.6];
        let (w, auc) = fit_weights(&[&a, &b], &labels, 20).expect("both classes");
        assert!((auc - 1.0).abs() < 1e-12);
        assert!(w[0] > w[1], "{w:?}");
        // Two equally good copies: the even split wins the tie.
        let (w, _) = fit_weights(&[&a, &a], &labels, 20).expect("both classes");
        assert_eq!(w, [0.5, 0.5]);
    }

    #[test]
    fn the_grid_covers_the_simplex() {
        assert_eq!(compositions(20, 2).len(), 21);
        assert_eq!(compositions(20, 3).len(), 231);
        assert!(
            compositions(4, 3)
                .iter()
                .all(|c| c.iter().sum::<usize>() == 4)
        );
        assert!(fit_weights(&[&[0.1f32, 0.2][..]], &[1, 1], 10).is_none());
    }
}
