//! Channel-wise dropout (PyTorch's `Dropout2d`).

use burn::module::{Flag, Param};
use burn::prelude::*;
use burn::tensor::Distribution;

/// Configuration of [`Dropout2d`].
#[derive(Config, Debug)]
pub struct Dropout2dConfig {
    /// Probability that a whole channel is zeroed.
    pub prob: f64,
}

impl Dropout2dConfig {
    /// # Panics
    /// If `prob` is not in `[0, 1)`.
    pub fn init(&self) -> Dropout2d {
        assert!(
            (0.0..1.0).contains(&self.prob),
            "dropout probability must be in [0, 1), got {}",
            self.prob
        );
        Dropout2d {
            prob: self.prob,
            training: Param::from_bool(true),
        }
    }
}

/// Zeroes whole channels of a feature map at random and rescales the rest by `1 / (1 − prob)`.
///
/// Like Burn's `Dropout`, it is active only on an autodiff device and in training mode, and is
/// the identity otherwise (inference, after `.valid()` or `.freeze()`).
#[derive(Module, Debug)]
pub struct Dropout2d {
    /// Probability that a whole channel is zeroed.
    pub prob: f64,
    /// Whether to behave as during training; cleared by `valid()` and `freeze()`.
    pub training: Param<Flag>,
}

impl Dropout2d {
    /// # Shapes
    /// - `x`: `[batch, channels, h, w]`
    /// - output: the same
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        if self.prob == 0.0 || !self.training.is_enabled() || !device.is_autodiff() {
            return x;
        }
        let [batch, channels, _, _] = x.dims();
        let keep = 1.0 - self.prob;
        let mask = Tensor::<4>::random(
            [batch, channels, 1, 1],
            Distribution::Bernoulli(keep),
            &device,
        );
        x * (mask / keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{autodiff_device, device};

    #[test]
    fn training_zeroes_whole_channels_and_rescales_the_rest() {
        let dev = autodiff_device();
        let drop = Dropout2dConfig::new(0.5).init();
        let x = Tensor::<4>::ones([4, 64, 3, 3], &dev);
        let y = drop
            .forward(x)
            .inner()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let mut zeroed = 0;
        for channel in y.chunks(9) {
            // Every channel is all 0 or all 2.
            let first = channel[0];
            assert!(
                channel.iter().all(|&v| (v - first).abs() < 1e-6),
                "{channel:?}"
            );
            let is_zero = first.abs() < 1e-6;
            assert!(is_zero || (first - 2.0).abs() < 1e-6, "{first}");
            zeroed += usize::from(is_zero);
        }
        // 256 channels at p = 0.5: far from none and far from all.
        assert!(
            (64..192).contains(&zeroed),
            "{zeroed} of 256 channels zeroed"
        );
    }

    #[test]
    fn inference_is_the_identity() {
        let dev = device();
        let drop = Dropout2dConfig::new(0.7).init();
        let x = Tensor::<4>::ones([2, 8, 3, 3], &dev);
        drop.forward(x.clone())
            .into_data()
            .assert_eq(&x.into_data(), true);
    }
}
