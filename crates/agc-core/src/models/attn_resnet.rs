//! `AttnResNet`: attention pooling over a whole-image ResNet's last feature map.

use burn::prelude::*;

use super::{AttentionOutput, PooledHead, attention_pool, check_dropout};
use crate::attention::{AttentionPool, AttentionReduce};
use crate::resnet::{ResNet, ResNetConfig};

/// Configuration of an [`AttnResNet`].
#[derive(Config, Debug)]
pub struct AttnResNetConfig {
    /// The whole-image backbone; its `num_classes` is ignored.
    pub backbone: ResNetConfig,
    /// Hidden channels of the attention scoring convolutions.
    #[config(default = 512)]
    pub attention_hidden: usize,
    /// Channel dropout on the feature map before attention scoring.
    #[config(default = 0.7)]
    pub attention_dropout: f64,
    /// Dropout on the pooled embedding before the classifier.
    #[config(default = 0.5)]
    pub dropout: f64,
    /// Reduction of the attention-weighted map.
    #[config(default = "AttentionReduce::Sum")]
    pub reduce: AttentionReduce,
}

impl AttnResNetConfig {
    /// # Panics
    /// If a width is zero or a dropout probability is not in `[0, 1)`.
    pub fn init(&self, device: &Device) -> AttnResNet {
        check_dropout("AttnResNet dropout", self.dropout);
        let backbone = self.backbone.clone().with_num_classes(None).init(device);
        let dim = backbone.embed_dim();
        AttnResNet {
            backbone,
            attention: attention_pool(
                dim,
                self.attention_hidden,
                self.attention_dropout,
                self.reduce,
                3,
                device,
            ),
            head: PooledHead::new(dim, self.dropout, device),
        }
    }
}

/// The first attempt of the SIIM-ISIC study: a whole-image ResNet whose global average pool is
/// replaced by attention pooling over its last feature map (7×7 for a 224×224 image). Its
/// receptive field covers the whole image, so its attention map localises less sharply than
/// [`crate::ChipNet`]'s.
#[derive(Module, Debug)]
pub struct AttnResNet {
    /// Whole-image backbone (no head).
    pub backbone: ResNet,
    /// Attention pooling over the last feature map.
    pub attention: AttentionPool,
    /// ReLU → BN → dropout → linear.
    pub head: PooledHead,
}

impl AttnResNet {
    /// # Shapes
    /// - `images`: `[batch, channels, height, width]`
    /// - output `logit`: `[batch, 1]`, `attention`: `[batch, ⌈height/32⌉, ⌈width/32⌉]`
    pub fn forward(&self, images: Tensor<4>) -> AttentionOutput {
        let pooled = self.attention.forward(self.backbone.features(images));
        AttentionOutput {
            logit: self.head.forward(pooled.pooled),
            attention: pooled.weights,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::device;
    use burn::tensor::Distribution;

    #[test]
    fn attention_covers_the_last_feature_map() {
        let dev = device();
        let model = AttnResNetConfig::new(ResNetConfig::tiny())
            .with_attention_hidden(8)
            .init(&dev);
        let images = Tensor::<4>::random([2, 3, 224, 224], Distribution::Default, &dev);
        let out = model.forward(images);
        assert_eq!(out.logit.dims(), [2, 1]);
        assert_eq!(out.attention.dims(), [2, 7, 7]);
    }
}
