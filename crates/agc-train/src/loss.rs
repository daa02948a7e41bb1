//! Losses on one logit per image.

use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;

/// A binary classification loss on logits.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum Loss {
    /// Focal loss (Lin et al., 2017) as the SIIM-ISIC seed wrote it: `alpha · (1 − p_t)^gamma ·
    /// BCE`, with `p_t = exp(−BCE)` the probability given to the true class. `alpha` scales the
    /// whole loss (it is not a class weight); the seed used `alpha = 1`, `gamma = 2`.
    Focal {
        /// Overall scale.
        alpha: f64,
        /// Focusing exponent; 0 gives `alpha · BCE`.
        gamma: f64,
    },
    /// Binary cross-entropy.
    Bce,
}

impl Default for Loss {
    fn default() -> Self {
        Self::Focal {
            alpha: 1.0,
            gamma: 2.0,
        }
    }
}

impl Loss {
    /// The mean loss over a batch.
    ///
    /// # Shapes
    /// - `logits`: `[batch, 1]`
    /// - `targets`: `[batch]`, 0 or 1
    /// - output: `[1]`
    ///
    /// # Panics
    /// If the shapes disagree.
    pub fn forward(&self, logits: Tensor<2>, targets: Tensor<1>) -> Tensor<1> {
        let [batch, one] = logits.dims();
        assert_eq!(one, 1, "one logit per image, got {one}");
        assert_eq!(targets.dims(), [batch], "one target per logit");
        let z = logits.squeeze_dim::<1>(1);
        // Numerically stable BCE from logits.
        let bce = (targets.clone() * log_sigmoid(z.clone())
            + (targets.neg() + 1.0) * log_sigmoid(z.neg()))
        .neg();
        match *self {
            Self::Bce => bce.mean(),
            Self::Focal { alpha, gamma } => {
                let p_t = bce.clone().neg().exp();
                ((p_t.neg() + 1.0).powf_scalar(gamma) * bce * alpha).mean()
            }
        }
    }

    /// The mean loss of predicted probabilities: [`Self::forward`] on their logits, in `f64`
    /// on the host, for predictions that come back as probabilities (the validation loss of
    /// every epoch). Each probability is clamped to `[1e-7, 1 − 1e-7]`, so a saturated one costs
    /// at most `−ln 1e-7 ≈ 16.1` where the logits would give more; elsewhere the two agree to
    /// float rounding (tested). `NaN` for no probabilities.
    ///
    /// # Panics
    /// If there is not one target per probability.
    pub fn mean_of_probabilities(&self, probabilities: &[f32], targets: &[u8]) -> f64 {
        assert_eq!(
            probabilities.len(),
            targets.len(),
            "one target per probability"
        );
        if probabilities.is_empty() {
            return f64::NAN;
        }
        let total: f64 = probabilities
            .iter()
            .zip(targets)
            .map(|(&p, &y)| {
                let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
                // p_t: the probability given to the true class.
                let (p_t, bce) = if y == 1 {
                    (p, -p.ln())
                } else {
                    (1.0 - p, -(1.0 - p).ln())
                };
                match *self {
                    Self::Focal { alpha, gamma } => alpha * (1.0 - p_t).powf(gamma) * bce,
                    Self::Bce => bce,
                }
            })
            .sum();
        total / probabilities.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn loss(l: Loss, logits: &[f32], targets: &[f32]) -> f32 {
        let dev = Device::flex();
        let z = Tensor::<1>::from_floats(logits, &dev).unsqueeze_dim::<2>(1);
        let y = Tensor::<1>::from_floats(targets, &dev);
        l.forward(z, y).into_scalar::<f32>()
    }

    #[test]
    fn bce_at_zero_logit_is_ln_two_and_grows_with_confident_mistakes() {
        let ln2 = std::f32::consts::LN_2;
        assert!((loss(Loss::Bce, &[0.0, 0.0], &[0.0, 1.0]) - ln2).abs() < 1e-6);
        // z = 3, y = 0: log(1 + e^3).
        let expected = (1.0f32 + 3.0f32.exp()).ln();
        assert!((loss(Loss::Bce, &[3.0], &[0.0]) - expected).abs() < 1e-5);
        // Stable far out: z = −100, y = 1 is 100, not infinity.
        assert!((loss(Loss::Bce, &[-100.0], &[1.0]) - 100.0).abs() < 1e-3);
    }

    #[test]
    fn focal_with_gamma_zero_is_alpha_times_bce_and_gamma_two_down_weights_easy_cases() {
        let (z, y) = ([0.3f32, -1.2, 2.0, -0.5], [1.0f32, 0.0, 1.0, 1.0]);
        let bce = loss(Loss::Bce, &z, &y);
        let focal0 = loss(
            Loss::Focal {
                alpha: 0.5,
                gamma: 0.0,
            },
            &z,
            &y,
        );
        assert!((focal0 - 0.5 * bce).abs() < 1e-6);
        // At z = 0, p_t = 0.5: (1 − 0.5)² · ln 2.
        let f = loss(Loss::default(), &[0.0], &[1.0]);
        assert!((f - 0.25 * std::f32::consts::LN_2).abs() < 1e-6, "{f}");
        // An easy example (z = 4, y = 1) loses far more weight than a hard one (z = −4, y = 1).
        let easy = loss(Loss::default(), &[4.0], &[1.0]) / loss(Loss::Bce, &[4.0], &[1.0]);
        let hard = loss(Loss::default(), &[-4.0], &[1.0]) / loss(Loss::Bce, &[-4.0], &[1.0]);
        assert!(easy < 1e-3 && hard > 0.9, "easy {easy}, hard {hard}");
    }

    /// The validation loss (of probabilities) is the training loss (of logits): for every loss,
    /// on each example alone (so that no mistake hides in a mean) and on the batch.
    #[test]
    fn the_loss_of_probabilities_is_the_loss_of_their_logits() {
        let dev = Device::flex();
        let logits: Vec<f32> = (0..12).map(|i| (i as f32 * 0.77).sin() * 2.0).collect();
        let targets: Vec<u8> = (0..12).map(|i| u8::from(i % 3 != 1)).collect();
        // Probabilities as the validation gets them: the sigmoid of the logits, in f32.
        let probabilities =
            burn::tensor::activation::sigmoid(Tensor::<1>::from_floats(logits.as_slice(), &dev))
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32");
        let labels: Vec<f32> = targets.iter().map(|&y| f32::from(y)).collect();
        for l in [
            Loss::Bce,
            Loss::default(),
            Loss::Focal {
                alpha: 0.25,
                gamma: 1.5,
            },
            Loss::Focal {
                alpha: 3.0,
                gamma: 0.0,
            },
        ] {
            let mut cases: Vec<std::ops::Range<usize>> =
                (0..logits.len()).map(|i| i..i + 1).collect();
            cases.push(0..logits.len());
            for range in cases {
                let training = f64::from(loss(l, &logits[range.clone()], &labels[range.clone()]));
                let validation =
                    l.mean_of_probabilities(&probabilities[range.clone()], &targets[range.clone()]);
                assert!(
                    (training - validation).abs() < 1e-6,
                    "{l:?} on {range:?}: training {training}, validation {validation}"
                );
            }
        }
        assert!(Loss::Bce.mean_of_probabilities(&[], &[]).is_nan());
    }

    #[test]
    fn gradients_push_logits_towards_the_targets() {
        let dev = Device::flex().autodiff();
        let z = Tensor::<1>::from_floats([0.0, 0.0], &dev).require_grad();
        let y = Tensor::<1>::from_floats([1.0, 0.0], &dev);
        let grads = Loss::default()
            .forward(z.clone().unsqueeze_dim::<2>(1), y)
            .backward();
        let g = z
            .grad(&grads)
            .expect("gradient")
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!(g[0] < 0.0 && g[1] > 0.0, "{g:?}");
    }
}
