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
    /// Side of the attention scoring kernels: 3 (the seed's) or 1 (each chip's weight from its
    /// own embedding alone).
    #[config(default = 3)]
    pub attention_kernel: usize,
    /// Keep attention off chips of a black field (outside a dermoscope's circle, black lens
    /// corners, black borders).
    #[config(default = "None")]
    pub field_mask: Option<FieldMask>,
    /// Weight of the contrast prior on the attention scores (0: none): see
    /// [`contrast_prior`].
    #[config(default = 0.0)]
    pub contrast_prior: f32,
}

/// The contrast prior: how much each chip stands out from the rest of its image, as a score
/// bias for the attention, `[batch, rows · cols]`.
///
/// Every chip is described by the mean and the standard deviation of each channel (6 numbers);
/// each number is standardised over the image's chips (those `inside` the field when a mask is
/// given, 1 inside and 0 outside), a chip's distance from the typical chip is the length of
/// its standardised vector, and these distances are standardised in turn, so the prior is about
/// 0 for a typical chip and a few units for one that stands out. Multiplied by the ChipNet's
/// `contrast_prior` weight and added to the learned scores, it starts the attention on what
/// differs from the background (a lesion on skin) before training has found any class evidence,
/// and the learned scores can still override it. Chips outside the field get 0.
///
/// # Shapes
/// - `images`: `[batch, channels, height, width]`; `inside`: `[batch, rows · cols]`
pub fn contrast_prior(images: Tensor<4>, grid: &ChipGrid, inside: Option<Tensor<2>>) -> Tensor<2> {
    let [batch, channels, _, _] = images.dims();
    let chips = grid.tile(images);
    let [n, _, c, _] = chips.dims();
    let positions = n / batch;
    let pixels = chips.reshape([batch, positions, channels, c * c]);
    let mean = pixels.clone().mean_dim(3);
    let std = (pixels - mean.clone()).powi_scalar(2).mean_dim(3).sqrt();
    let features = Tensor::cat(vec![mean, std], 2).reshape([batch, positions, 2 * channels]);
    let weight =
        inside.unwrap_or_else(|| Tensor::<2>::ones([batch, positions], &features.device()));
    let standardise = |x: Tensor<3>, w: Tensor<3>| {
        let count = w.clone().sum_dim(1).clamp_min(1.0);
        let centre = (x.clone() * w.clone()).sum_dim(1) / count.clone();
        let spread = ((x.clone() - centre.clone()).powi_scalar(2) * w).sum_dim(1) / count;
        (x - centre) / spread.sqrt().add_scalar(1e-4)
    };
    let w = weight.reshape([batch, positions, 1]);
    let z = standardise(features, w.clone());
    let distance = z.powi_scalar(2).sum_dim(2).sqrt();
    // Chips outside the field are left at 0 (the field mask takes them out anyway).
    (standardise(distance, w.clone()) * w).reshape([batch, positions])
}

/// Which chips lie outside the imaged field: those mostly made of near-black pixels. They get
/// no attention, so that the black surround of a dermoscope's circle, or black corners and
/// borders, cannot draw the crop box. An image that is black all over is left as it is.
#[derive(Debug, Clone, Copy, PartialEq, burn::serde::Serialize, burn::serde::Deserialize)]
#[serde(crate = "burn::serde")]
pub struct FieldMask {
    /// Per-channel mean the inputs were normalised with (`x = (raw − mean) / std`, raw in
    /// `[0, 1]`).
    pub mean: [f32; 3],
    /// Per-channel standard deviation the inputs were normalised with.
    pub std: [f32; 3],
    /// A pixel is black when the mean of its raw channels is below this (0–1).
    pub level: f32,
    /// A chip is outside the field when at least this share of its pixels is black.
    pub share: f32,
    /// A chip is wholly inside the field when at most this share of its pixels is black; the
    /// contrast prior compares such chips only.
    pub clean: f32,
}

impl FieldMask {
    /// The score bias that takes a chip out of the softmax (`exp(−10⁴)` is 0 in f32).
    pub const BIAS: f32 = -1.0e4;

    /// A mask for inputs normalised with `mean` and `std`: black below 10 % raw intensity (25
    /// of 255, darker than any skin under the dermoscope's vignette), outside when 75 % of a
    /// chip is black, wholly inside when at most 2 % is.
    #[must_use]
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Self {
        Self {
            mean,
            std,
            level: 0.1,
            share: 0.75,
            clean: 0.02,
        }
    }

    /// The share of black pixels in every chip.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, height, width]` (normalised)
    /// - output: `[batch, rows · cols]`
    ///
    /// # Panics
    /// If the images do not have three channels, or the chips do not cover them exactly.
    pub fn black_share(&self, images: Tensor<4>, grid: &ChipGrid) -> Tensor<2> {
        let [batch, channels, _, _] = images.dims();
        assert_eq!(channels, 3, "the field mask reads RGB images");
        let device = images.device();
        let column = |v: [f32; 3]| Tensor::<1>::from_floats(v, &device).reshape([1, 3, 1, 1]);
        let raw = (images * column(self.std) + column(self.mean)).mean_dim(1);
        // 1 where the pixel is black, 0 elsewhere (a step made of a steep clamp).
        let black = (raw.neg().add_scalar(self.level) * 1.0e6).clamp(0.0, 1.0);
        let chips = grid.tile(black);
        let [n, _, c, _] = chips.dims();
        chips
            .reshape([n, c * c])
            .mean_dim(1)
            .reshape([batch, n / batch])
    }

    /// 1 for every chip outside the field, 0 inside; all 0 for an image with no chip inside.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, height, width]` (normalised)
    /// - output: `[batch, rows · cols]`
    ///
    /// # Panics
    /// As [`Self::black_share`].
    pub fn outside(&self, images: Tensor<4>, grid: &ChipGrid) -> Tensor<2> {
        self.outside_of(self.black_share(images, grid))
    }

    /// [`Self::outside`] from the chips' black shares.
    fn outside_of(&self, share: Tensor<2>) -> Tensor<2> {
        at_least_one_left(step_at_least(share, self.share))
    }

    /// 1 for every chip wholly inside the field (at most `clean` of it black), 0 elsewhere; all 1
    /// for an image with no such chip. The contrast prior compares these chips only: a chip the
    /// field's edge crosses stands out for the edge, not for what lies on the skin.
    fn clean_of(&self, share: Tensor<2>) -> Tensor<2> {
        let touched = step_at_least(share, self.clean + 1e-6);
        at_least_one_left(touched).neg().add_scalar(1.0)
    }
}

/// 1 where `x ≥ level`, 0 below (a step made of a steep clamp, exact to 10⁻⁶).
fn step_at_least(x: Tensor<2>, level: f32) -> Tensor<2> {
    (x.sub_scalar(level) * 1.0e6)
        .add_scalar(1.0)
        .clamp(0.0, 1.0)
}

/// `flags` (1 = excluded) with every row that excludes all its positions cleared: an image
/// with nothing left is taken whole.
fn at_least_one_left(flags: Tensor<2>) -> Tensor<2> {
    let [_, positions] = flags.dims();
    let all = (flags.clone().sum_dim(1).sub_scalar(positions as f32 - 0.5) * 1.0e6).clamp(0.0, 1.0);
    flags.clone() - flags * all
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
                self.attention_kernel,
                device,
            ),
            head: PooledHead::new(dim, self.dropout, device),
            field_mask: self.field_mask,
            contrast_prior: self.contrast_prior,
        }
    }
}

/// ChipNet: the image is cut into a grid of chips, every chip goes alone through the same
/// ResNet, the chip embeddings are laid back out as a `[batch, dim, rows, cols]` map, attention
/// pools them, and a head classifies the pooled embedding.
///
/// Each chip sees only its own pixels, so chip `(i, j)`'s embedding depends on chip `(i, j)`
/// alone, which is what lets the attention map point at the object. With the seed's 3×3
/// scoring kernels a chip's weight also sees its neighbours' embeddings (two 3×3 convolutions:
/// a 5×5 neighbourhood of chips), so the weight can land beside the chip that carries the
/// evidence; `attention_kernel: 1` scores every chip from its own embedding alone.
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
    /// Chips of a black field get no attention, if set.
    #[module(skip)]
    pub field_mask: Option<FieldMask>,
    /// Weight of the [`contrast_prior`] on the attention scores.
    #[module(skip)]
    pub contrast_prior: f32,
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
        let share = self
            .field_mask
            .map(|mask| (mask, mask.black_share(images.clone().detach(), &self.grid)));
        let outside = share.clone().map(|(mask, s)| mask.outside_of(s));
        let prior = (self.contrast_prior != 0.0).then(|| {
            let clean = share.map(|(mask, s)| mask.clean_of(s));
            contrast_prior(images.clone().detach(), &self.grid, clean)
                .mul_scalar(self.contrast_prior)
        });
        let bias = match (outside.map(|o| o.mul_scalar(FieldMask::BIAS)), prior) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        let pooled = self.attention.forward_masked(self.chip_map(images), bias);
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

    /// Weights of an eval-mode model (no dropout; batch norm from running statistics).
    fn weights(model: &ChipNet, images: Tensor<4>) -> Vec<f32> {
        model
            .forward(images)
            .attention
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32")
    }

    #[test]
    fn with_one_by_one_kernels_a_chips_weight_depends_on_its_own_chip_only() {
        let dev = device();
        let images = Tensor::<4>::random([1, 3, 96, 96], Distribution::Default, &dev);
        let patch = Tensor::<4>::random([1, 3, 32, 32], Distribution::Default, &dev);
        // Change chip (1, 1), the centre; compare the scores of two other chips through the
        // ratio of their weights (the softmax's normaliser cancels).
        let changed = images
            .clone()
            .slice_assign(s![.., .., 32..64, 32..64], patch);
        let ratio = |w: &[f32], a: usize, b: usize| (w[a] / w[b]).ln();
        for (kernel, neighbour_moves) in [(1, false), (3, true)] {
            let model = tiny().with_attention_kernel(kernel).init(&dev);
            let (before, after) = (
                weights(&model, images.clone()),
                weights(&model, changed.clone()),
            );
            // Chip (0, 1) neighbours the changed chip; chip (2, 2) too, diagonally. With 1×1
            // kernels their log-weight difference cannot move; with 3×3 ones it does.
            let moved = (ratio(&after, 1, 8) - ratio(&before, 1, 8)).abs();
            assert_eq!(
                moved > 1e-5,
                neighbour_moves,
                "kernel {kernel}: the log-ratio moved by {moved}"
            );
        }
    }

    /// Normalised images (ImageNet statistics) whose raw pixels are `raw(x, y)` in every channel.
    fn normalised(raw: impl Fn(usize, usize) -> f32, side: usize, dev: &Device) -> Tensor<4> {
        let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
        let raw = &raw;
        let values: Vec<f32> = (0..3)
            .flat_map(|c| {
                (0..side * side).map(move |i| (raw(i % side, i / side) - mean[c]) / std[c])
            })
            .collect();
        Tensor::<1>::from_floats(values.as_slice(), dev).reshape([1, 3, side, side])
    }

    #[test]
    fn the_field_mask_takes_black_chips_out_of_the_attention() {
        let dev = device();
        let mask = FieldMask::new([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        let grid = ChipGrid {
            chip: 16,
            stride: None,
        };
        // A 64-pixel image: black left of x = 20 (chip column 0 wholly, column 1 a quarter),
        // skin elsewhere; the bottom-right chip is black over 80 % of it.
        let image = normalised(
            |x, y| {
                if x < 20 || (x >= 48 && y >= 48 && (x - 48) * 16 + (y - 48) < 205) {
                    0.03
                } else {
                    0.7
                }
            },
            64,
            &dev,
        );
        let outside = mask
            .outside(image.clone(), &grid)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let mut expected = vec![0.0f32; 16];
        for row in 0..4 {
            expected[row * 4] = 1.0;
        }
        expected[15] = 1.0;
        assert_eq!(outside, expected);
        // An image black all over: nothing inside, so nothing masked.
        let black = normalised(|_, _| 0.0, 64, &dev);
        let none = mask.outside(black, &grid).into_data().try_to_vec::<f32>();
        assert_eq!(none.expect("f32"), vec![0.0f32; 16]);

        // In the model: black chips get no weight, the rest still sums to one.
        let model = tiny()
            .with_grid(grid)
            .with_field_mask(Some(mask))
            .init(&dev);
        let w = weights(&model, image);
        for (k, (w, out)) in w.iter().zip(&expected).enumerate() {
            if *out > 0.5 {
                assert!(*w < 1e-30, "chip {k} outside the field has weight {w}");
            } else {
                assert!(*w > 1e-6, "chip {k} inside the field has weight {w}");
            }
        }
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn the_contrast_prior_is_highest_on_the_chip_that_stands_out() {
        let dev = device();
        let grid = ChipGrid {
            chip: 16,
            stride: None,
        };
        // Skin with a faint ramp; a dark lesion over chip (2, 1) (index 9); black field over
        // the first column.
        let image = normalised(
            |x, y| {
                if x < 16 {
                    0.02
                } else if (16..32).contains(&x) && (32..48).contains(&y) {
                    0.3
                } else {
                    0.7 + 0.001 * (x + y) as f32
                }
            },
            64,
            &dev,
        );
        let mask = FieldMask::new([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        let inside = mask.outside(image.clone(), &grid).neg().add_scalar(1.0);
        let prior = contrast_prior(image.clone(), &grid, Some(inside))
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let best = (0..16).max_by(|&a, &b| prior[a].total_cmp(&prior[b]));
        assert_eq!(best, Some(9), "{prior:?}");
        assert!(prior[9] > 2.0, "{prior:?}");
        // Without the mask the black column stands out more than the lesion.
        let unmasked = contrast_prior(image, &grid, None)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!(unmasked[0] > unmasked[9], "{unmasked:?}");
    }
}
