//! `ChipNet`: one shared ResNet over a grid of chips, attention-pooled.

use burn::prelude::*;

use super::{AttentionOutput, PooledHead, attention_pool, check_dropout};
use crate::attention::{AttentionPool, AttentionReduce};
use crate::chips::ChipGrid;
use crate::resnet::{ResNet, ResNetConfig};

/// Configuration of a [`ChipNet`].
#[derive(Config, Debug)]
pub struct ChipNetConfig {
    /// The ResNet every chip goes through; its `num_classes` is ignored.
    pub backbone: ResNetConfig,
    /// The chip grid; 32-pixel chips give the 7×7 grid of a 224×224 image.
    #[config(default = "ChipGrid { chip: 32, stride: None }")]
    pub grid: ChipGrid,
    /// Hidden channels of the attention scoring convolutions.
    #[config(default = 512)]
    pub attention_hidden: usize,
    /// Channel dropout on the chip-embedding map before attention scoring (seed: 0.7).
    #[config(default = 0.7)]
    pub attention_dropout: f64,
    /// Dropout on the pooled embedding before the classifier (seed: 0.5–0.7).
    #[config(default = 0.5)]
    pub dropout: f64,
    /// Reduction of the attention-weighted map.
    #[config(default = "AttentionReduce::Sum")]
    pub reduce: AttentionReduce,
}

impl ChipNetConfig {
    /// # Panics
    /// If a width is zero or a dropout probability is not in `[0, 1)`.
    pub fn init(&self, device: &Device) -> ChipNet {
        check_dropout("ChipNet dropout", self.dropout);
        let backbone = self.backbone.clone().with_num_classes(None).init(device);
        let dim = backbone.embed_dim();
        ChipNet {
            backbone,
            grid: self.grid,
            attention: attention_pool(
                dim,
                self.attention_hidden,
                self.attention_dropout,
                self.reduce,
                device,
            ),
            head: PooledHead::new(dim, self.dropout, device),
        }
    }
}

/// ChipNet: the image is cut into a grid of chips, every chip goes alone through the same
/// ResNet, the chip embeddings are laid back out as a `[batch, dim, rows, cols]` map, attention
/// pools them, and a head classifies the pooled embedding.
///
/// Because each chip sees only its own pixels, attention weight `(i, j)` depends on chip `(i, j)`
/// alone, which is what lets the attention map point at the object.
#[derive(Module, Debug)]
pub struct ChipNet {
    /// The ResNet shared by all chips (no head).
    pub backbone: ResNet,
    /// The chip grid.
    #[module(skip)]
    pub grid: ChipGrid,
    /// Attention pooling over the chip-embedding map.
    pub attention: AttentionPool,
    /// ReLU → BN → dropout → linear.
    pub head: PooledHead,
}

impl ChipNet {
    /// The chip-embedding map.
    ///
    /// # Shapes
    /// - `images`: `[batch, channels, height, width]`
    /// - output: `[batch, embed_dim, rows, cols]`
    ///
    /// # Panics
    /// If the chip grid does not cover the image exactly.
    pub fn chip_map(&self, images: Tensor<4>) -> Tensor<4> {
        let [batch, _, height, width] = images.dims();
        let dims = self.grid.dims(height, width);
        // Every chip through the same backbone: [batch · rows · cols, dim].
        let embeddings = self.backbone.embed(self.grid.tile(images));
        // Back onto the grid.
        ChipGrid::untile(embeddings, batch, dims)
    }

    /// # Shapes
    /// - `images`: `[batch, channels, height, width]`
    /// - output `logit`: `[batch, 1]`, `attention`: `[batch, rows, cols]`
    ///
    /// # Panics
    /// If the chip grid does not cover the image exactly.
    pub fn forward(&self, images: Tensor<4>) -> AttentionOutput {
        let pooled = self.attention.forward(self.chip_map(images));
        AttentionOutput {
            logit: self.head.forward(pooled.pooled),
            attention: pooled.weights,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{autodiff_device, device};
    use burn::optim::GradientsParams;
    use burn::tensor::Distribution;

    fn tiny() -> ChipNetConfig {
        ChipNetConfig::new(ResNetConfig::tiny()).with_attention_hidden(16)
    }

    #[test]
    fn outputs_one_logit_and_a_seven_by_seven_attention_map() {
        let dev = device();
        let model = tiny().init(&dev);
        let images = Tensor::<4>::random([2, 3, 224, 224], Distribution::Default, &dev);
        let out = model.forward(images);
        assert_eq!(out.logit.dims(), [2, 1]);
        assert_eq!(out.attention.dims(), [2, 7, 7]);
        let sums = out
            .attention
            .sum_dim(2)
            .sum_dim(1)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
    }

    #[test]
    fn a_chip_embedding_depends_on_its_own_chip_only() {
        let dev = device();
        let model = tiny().init(&dev);
        let images = Tensor::<4>::random([1, 3, 96, 96], Distribution::Default, &dev);
        let before = model.chip_map(images.clone());
        // Change chip (1, 2) only.
        let patch = Tensor::<4>::random([1, 3, 32, 32], Distribution::Default, &dev);
        let changed = images.slice_assign(s![.., .., 32..64, 64..96], patch);
        let after = model.chip_map(changed);
        let diff = (after - before).abs().sum_dim(1).squeeze_dim::<3>(1);
        let diff = diff.into_data().try_to_vec::<f32>().expect("f32");
        for (k, d) in diff.iter().enumerate() {
            if k == 5 {
                assert!(*d > 1e-4, "the changed chip's embedding must change");
            } else {
                assert!(*d < 1e-6, "chip {k} changed by {d}");
            }
        }
    }

    #[test]
    fn trains_under_autodiff_and_evaluates_deterministically() {
        let dev = autodiff_device();
        let model = tiny().init(&dev);
        let images = Tensor::<4>::random([2, 3, 64, 64], Distribution::Default, &dev);
        let out = model.forward(images.clone());
        let loss = out.logit.powf_scalar(2.0).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        // Gradients reach the shared backbone through every chip, and the attention head.
        assert!(
            grads.len() > 10,
            "only {} parameters got gradients",
            grads.len()
        );

        let eval = model.valid();
        let a = eval.forward(images.clone().inner()).logit.into_data();
        let b = eval.forward(images.inner()).logit.into_data();
        assert_eq!(a, b);
    }
}
