//! The metadata-only baseline: a logistic regression on the encoded sex, age and site alone,
//! trained in the run's folds. Shown beside every model, it says what the images add over what
//! the metadata already tells (in ISIC, age alone reaches an AUC near 0.74).

use agc_data::Folds;

use crate::scores::ModelPredictions;

/// L2 penalty of the regression (on the weights, not the intercept), per training image.
const L2: f64 = 1e-3;
/// Full-batch gradient steps; the problem is convex and small (a few dozen one-hot features).
const STEPS: usize = 2000;
/// Step size of the gradient descent.
const RATE: f64 = 0.5;

/// A fitted logistic regression.
#[derive(Debug, Clone, PartialEq)]
pub struct Logistic {
    /// One weight per feature.
    pub weights: Vec<f64>,
    /// The intercept.
    pub bias: f64,
}

impl Logistic {
    /// Fits `P(y = 1 | x)` on `rows` of `x` with labels `y` by gradient descent on the mean
    /// log-loss plus `L2`. Positives and negatives weigh alike (as the balanced sampling of the
    /// image models does), so a rare class is not ignored.
    ///
    /// # Panics
    /// If a row of `x` differs in length from the first.
    pub fn fit(x: &[Vec<f32>], y: &[u8], rows: &[usize]) -> Self {
        let dim = rows.first().map_or(0, |&r| x[r].len());
        let positives = rows.iter().filter(|&&r| y[r] == 1).count().max(1) as f64;
        let negatives = (rows.len() as f64 - positives).max(1.0);
        let weight =
            |label: u8| 0.5 * rows.len() as f64 / if label == 1 { positives } else { negatives };
        let mut model = Self {
            weights: vec![0.0; dim],
            bias: 0.0,
        };
        let n = rows.len().max(1) as f64;
        for _ in 0..STEPS {
            let mut grad = vec![0.0; dim];
            let mut grad_bias = 0.0;
            for &r in rows {
                assert_eq!(x[r].len(), dim, "metadata vectors of one length");
                let err = (model.probability(&x[r]) - f64::from(y[r])) * weight(y[r]);
                for (g, &v) in grad.iter_mut().zip(&x[r]) {
                    *g += err * f64::from(v);
                }
                grad_bias += err;
            }
            for (w, g) in model.weights.iter_mut().zip(&grad) {
                *w -= RATE * (g / n + L2 * *w);
            }
            model.bias -= RATE * grad_bias / n;
        }
        model
    }

    /// `P(y = 1 | x)`.
    pub fn probability(&self, x: &[f32]) -> f64 {
        let z: f64 = self.bias
            + self
                .weights
                .iter()
                .zip(x)
                .map(|(w, &v)| w * f64::from(v))
                .sum::<f64>();
        1.0 / (1.0 + (-z).exp())
    }
}

/// The baseline's out-of-fold predictions for `train` (each from the fold's model that did not
/// see it) and its test predictions (the folds' mean), from metadata vectors alone.
pub fn metadata_baseline(
    train: &[Vec<f32>],
    labels: &[u8],
    folds: &Folds,
    test: &[Vec<f32>],
) -> ModelPredictions {
    let mut oof = vec![f32::NAN; train.len()];
    let mut mean = vec![0f32; test.len()];
    for f in 0..folds.k {
        let model = Logistic::fit(train, labels, &folds.train(f));
        for r in folds.valid(f) {
            oof[r] = model.probability(&train[r]) as f32;
        }
        for (m, x) in mean.iter_mut().zip(test) {
            *m += model.probability(x) as f32 / folds.k as f32;
        }
    }
    ModelPredictions { oof, test: mean }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::roc_auc;

    #[test]
    fn the_baseline_learns_what_the_metadata_says_and_only_out_of_fold() {
        // Feature 0 marks most positives; feature 1 is noise.
        let n = 60;
        let labels: Vec<u8> = (0..n).map(|i| u8::from(i % 3 == 0)).collect();
        let x: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                let marked = labels[i] == 1 && i % 9 != 0;
                vec![f32::from(u8::from(marked)), f32::from(u8::from(i % 2 == 0))]
            })
            .collect();
        let folds = Folds::stratified(&labels, 3, 1).expect("folds");
        let p = metadata_baseline(&x, &labels, &folds, &x[..5]);
        assert!(
            p.oof.iter().all(|v| v.is_finite()),
            "every image predicted out of fold"
        );
        // The best any score can do here: the 13 marked positives above all 40 negatives, the
        // 7 unmarked ones tied with them: (13·40 + 7·40/2) / (20·40) = 0.825.
        let auc = roc_auc(&p.oof, &labels).expect("auc");
        assert!((0.7..=0.825).contains(&auc), "AUC {auc}");
        // The marked images score above the unmarked ones.
        let model = Logistic::fit(&x, &labels, &(0..n).collect::<Vec<_>>());
        assert!(model.probability(&[1.0, 0.0]) > 0.8 && model.probability(&[0.0, 0.0]) < 0.5);
        assert_eq!(p.test.len(), 5);
    }

    #[test]
    fn an_image_is_never_scored_by_a_model_that_saw_it() {
        // Each image has its own feature: fitted on itself it would be scored perfectly; out of
        // fold its feature was never seen, so every score is the same and the AUC is chance.
        let n = 30;
        let labels: Vec<u8> = (0..n).map(|i| u8::from(i % 2 == 0)).collect();
        let x: Vec<Vec<f32>> = (0..n)
            .map(|i| (0..n).map(|j| f32::from(u8::from(i == j))).collect())
            .collect();
        let everything: Vec<usize> = (0..n).collect();
        let seen = Logistic::fit(&x, &labels, &everything);
        let in_sample: Vec<f32> = x.iter().map(|v| seen.probability(v) as f32).collect();
        assert_eq!(roc_auc(&in_sample, &labels), Some(1.0));
        let folds = Folds::stratified(&labels, 3, 1).expect("folds");
        let p = metadata_baseline(&x, &labels, &folds, &[]);
        let auc = roc_auc(&p.oof, &labels).expect("auc");
        assert!((auc - 0.5).abs() < 0.15, "out-of-fold AUC {auc}");
    }

    #[test]
    fn features_that_say_nothing_give_chance() {
        let n = 40;
        let labels: Vec<u8> = (0..n).map(|i| u8::from(i % 2 == 0)).collect();
        let x: Vec<Vec<f32>> = (0..n).map(|_| vec![1.0, 0.0]).collect();
        let folds = Folds::stratified(&labels, 2, 1).expect("folds");
        let p = metadata_baseline(&x, &labels, &folds, &[]);
        assert_eq!(roc_auc(&p.oof, &labels), Some(0.5));
    }
}
