//! Softmax attention pooling over a grid of embeddings.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{relu, softmax};

use crate::conv::conv2d;
use crate::dropout2d::{Dropout2d, Dropout2dConfig};
use crate::norm::batch_norm;

/// How the attention-weighted embeddings are reduced to one vector.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum AttentionReduce {
    /// `Σ_p a_p · x_p`: a weighted average, since the weights sum to 1. The default.
    Sum,
    /// `(1/P) Σ_p a_p · x_p`: average-pools the weighted map, as the SIIM-ISIC seed did. It is the
    /// weighted sum scaled by `1/P` (P = grid positions); the batch norm that follows in every agc
    /// model undoes that scale, up to its epsilon.
    Mean,
}

/// Configuration of [`AttentionPool`].
#[derive(Config, Debug)]
pub struct AttentionPoolConfig {
    /// Channels of the incoming embedding map.
    pub channels: usize,
    /// Hidden channels of the scoring convolutions.
    #[config(default = 512)]
    pub hidden: usize,
    /// Channel dropout (`Dropout2d`) on the incoming map before scoring; the seed used 0.7.
    #[config(default = 0.7)]
    pub dropout: f64,
    /// Reduction of the weighted map.
    #[config(default = "AttentionReduce::Sum")]
    pub reduce: AttentionReduce,
    /// Side of the two scoring convolutions' kernels: 3 (the seed's: a position's score also
    /// sees its neighbours) or 1 (a position's score depends on its own embedding alone).
    #[config(default = 3)]
    pub kernel: usize,
}

impl AttentionPoolConfig {
    /// # Panics
    /// If `channels` or `hidden` is zero, `kernel` is even, or `dropout` is not in `[0, 1)`.
    pub fn init(&self, device: &Device) -> AttentionPool {
        assert!(
            self.channels > 0,
            "attention pooling needs at least one channel"
        );
        assert!(
            self.hidden > 0,
            "attention pooling needs at least one hidden channel"
        );
        assert!(
            !self.kernel.is_multiple_of(2),
            "attention kernels must be odd (1 or 3), got {}",
            self.kernel
        );
        let pad = self.kernel / 2;
        let conv = |c_in, c_out| {
            Conv2dConfig::new([c_in, c_out], [self.kernel, self.kernel])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(device)
        };
        AttentionPool {
            dropout: Dropout2dConfig::new(self.dropout).init(),
            conv1: conv(self.channels, self.hidden),
            bn: BatchNormConfig::new(self.hidden).init(device),
            conv2: conv(self.hidden, 1),
            reduce: self.reduce,
        }
    }
}

/// Attention pooling: channel dropout → conv k×k → ReLU → BN → conv k×k → softmax over the grid
/// positions → attention-weighted pooling of the (undropped) map (k = 3 as in the seed, or 1).
#[derive(Module, Debug)]
pub struct AttentionPool {
    /// Channel dropout on the map that is scored.
    pub dropout: Dropout2d,
    /// First scoring convolution.
    pub conv1: Conv2d,
    /// Batch norm after the ReLU.
    pub bn: BatchNorm,
    /// Second scoring convolution, to one score per position.
    pub conv2: Conv2d,
    /// Reduction of the weighted map.
    #[module(skip)]
    pub reduce: AttentionReduce,
}

/// What [`AttentionPool::forward`] returns.
#[derive(Debug, Clone)]
pub struct AttentionPoolOutput {
    /// The pooled embedding, `[batch, channels]`.
    pub pooled: Tensor<2>,
    /// The attention weights, `[batch, grid_h, grid_w]`; each map sums to 1.
    pub weights: Tensor<3>,
}

impl AttentionPool {
    /// # Shapes
    /// - `maps`: `[batch, channels, grid_h, grid_w]`
    /// - output `pooled`: `[batch, channels]`, `weights`: `[batch, grid_h, grid_w]`
    pub fn forward(&self, maps: Tensor<4>) -> AttentionPoolOutput {
        self.forward_masked(maps, None)
    }

    /// [`Self::forward`] with a bias added to every position's score before the softmax: a
    /// large negative bias (see [`crate::FieldMask`]) takes a position out of the pooling.
    ///
    /// # Shapes
    /// - `maps`: `[batch, channels, grid_h, grid_w]`; `bias`: `[batch, grid_h · grid_w]`
    pub fn forward_masked(&self, maps: Tensor<4>, bias: Option<Tensor<2>>) -> AttentionPoolOutput {
        let [batch, channels, grid_h, grid_w] = maps.dims();
        let positions = grid_h * grid_w;
        // Score every position from a channel-dropped copy of the map.
        let scores = self.dropout.forward(maps.clone());
        let scores = batch_norm(&self.bn, relu(conv2d(&self.conv1, scores)));
        let scores = conv2d(&self.conv2, scores).reshape([batch, positions]);
        let scores = match bias {
            Some(bias) => scores + bias,
            None => scores,
        };
        // Softmax over all positions of each map.
        let weights = softmax(scores, 1);
        // Weighted pooling of the embeddings.
        let pooled = (maps.reshape([batch, channels, positions])
            * weights.clone().unsqueeze_dim::<3>(1))
        .sum_dim(2)
        .squeeze_dim::<2>(2);
        let pooled = match self.reduce {
            AttentionReduce::Sum => pooled,
            AttentionReduce::Mean => pooled / positions as f64,
        };
        AttentionPoolOutput {
            pooled,
            weights: weights.reshape([batch, grid_h, grid_w]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::device;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn weights_sum_to_one_and_pooling_is_their_weighted_sum() {
        let dev = device();
        let pool = AttentionPoolConfig::new(16).with_hidden(8).init(&dev);
        let maps = Tensor::<4>::random([3, 16, 7, 7], Distribution::Default, &dev);
        let out = pool.forward(maps.clone());
        assert_eq!(out.pooled.dims(), [3, 16]);
        assert_eq!(out.weights.dims(), [3, 7, 7]);
        let sums = out
            .weights
            .clone()
            .flatten::<2>(1, 2)
            .sum_dim(1)
            .squeeze_dim::<1>(1);
        sums.into_data()
            .assert_approx_eq::<f32>(&TensorData::from([1.0f32, 1.0, 1.0]), Tolerance::default());
        // Recompute the pooling naively for one image and one channel.
        let w = out
            .weights
            .slice(s![1..2, .., ..])
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let x = maps
            .slice(s![1..2, 5..6, .., ..])
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let expected: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
        let got = out.pooled.slice(s![1..2, 5..6]).into_scalar::<f32>();
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    }

    #[test]
    fn mean_reduction_divides_the_weighted_sum_by_the_positions() {
        let dev = device();
        let config = AttentionPoolConfig::new(4).with_hidden(4);
        let sum = config.init(&dev);
        let maps = Tensor::<4>::random([2, 4, 7, 7], Distribution::Default, &dev);
        // The first forward initialises Burn's lazy parameters, so the clone shares them.
        let a = sum.forward(maps.clone()).pooled / 49.0;
        let mean = AttentionPool {
            reduce: AttentionReduce::Mean,
            ..sum.clone()
        };
        let b = mean.forward(maps).pooled;
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::default());
    }

    #[test]
    fn a_position_with_a_dominant_score_gets_almost_all_the_weight() {
        let dev = device();
        let mut pool = AttentionPoolConfig::new(1).with_hidden(1).init(&dev);
        // Identity scoring: 1×1-like kernels (centre tap 1), no bias, so score = BN(relu(x)).
        let centre = |c: Conv2d| {
            let mut w = [[[[0.0f32; 3]; 3]; 1]; 1];
            w[0][0][1][1] = 1.0;
            Conv2d {
                weight: burn::module::Param::from_tensor(Tensor::from_data(w, &dev)),
                bias: None,
                ..c
            }
        };
        pool.conv1 = centre(pool.conv1);
        pool.conv2 = centre(pool.conv2);
        let mut values = vec![0.0f32; 49];
        values[17] = 30.0;
        let maps = Tensor::<1>::from_floats(values.as_slice(), &dev).reshape([1, 1, 7, 7]);
        let weights = pool
            .forward(maps)
            .weights
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!(
            weights[17] > 0.99,
            "weight of the hot position: {}",
            weights[17]
        );
    }
}
