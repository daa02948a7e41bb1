//! The three agc models and the pieces they share.
//!
//! | model | input | output |
//! |---|---|---|
//! | [`MetaResNet`] (also CropNet, on crops) | image, metadata | logit |
//! | [`ChipNet`] | image | logit, attention over the chip grid |
//! | [`AttnResNet`] | image | logit, attention over the last feature map |

mod attn_resnet;
mod chipnet;
mod meta_resnet;

pub use attn_resnet::{AttnResNet, AttnResNetConfig};
pub use chipnet::{ChipNet, ChipNetConfig, FieldMask, contrast_prior};
pub use meta_resnet::{MetaMlp, MetaResNet, MetaResNetConfig, MetaResNetOutput};

use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::attention::{AttentionPool, AttentionPoolConfig, AttentionReduce};

/// What the attention models return.
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// One logit per image (`sigmoid` gives the positive-class probability), `[batch, 1]`.
    pub logit: Tensor<2>,
    /// The attention weights over the grid, `[batch, grid_h, grid_w]`; each map sums to 1.
    pub attention: Tensor<3>,
}

/// The classifier after attention pooling: ReLU → BN → dropout → linear to one logit.
#[derive(Module, Debug)]
pub struct PooledHead {
    /// Batch norm over the pooled embedding.
    pub bn: BatchNorm,
    /// Dropout before the linear layer.
    pub dropout: Dropout,
    /// Linear layer to one logit.
    pub fc: Linear,
}

impl PooledHead {
    fn new(dim: usize, dropout: f64, device: &Device) -> Self {
        Self {
            bn: BatchNormConfig::new(dim).init(device),
            dropout: DropoutConfig::new(dropout).init(),
            fc: LinearConfig::new(dim, 1).init(device),
        }
    }

    /// # Shapes
    /// - `pooled`: `[batch, dim]`
    /// - output: `[batch, 1]`
    pub fn forward(&self, pooled: Tensor<2>) -> Tensor<2> {
        let x = crate::norm::batch_norm(&self.bn, relu(pooled));
        self.fc.forward(self.dropout.forward(x))
    }
}

/// The attention settings shared by [`ChipNetConfig`] and [`AttnResNetConfig`].
fn attention_pool(
    channels: usize,
    hidden: usize,
    dropout: f64,
    reduce: AttentionReduce,
    kernel: usize,
    device: &Device,
) -> AttentionPool {
    AttentionPoolConfig::new(channels)
        .with_hidden(hidden)
        .with_dropout(dropout)
        .with_reduce(reduce)
        .with_kernel(kernel)
        .init(device)
}

/// Checks a dropout probability from a model configuration.
fn check_dropout(name: &str, p: f64) {
    assert!((0.0..1.0).contains(&p), "{name} must be in [0, 1), got {p}");
}
