//! The models a pipeline trains, behind one type: [`Net`] wraps a `MetaResNet` (the whole-image
//! ResNet and CropNet), a `ChipNet` or an `AttnResNet`, and [`ModelSpec`] says how to build one.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use agc_core::{
    AttnResNet, AttnResNetConfig, ChipGrid, ChipNet, ChipNetConfig, FieldMask, LoadOptions,
    MetaResNet, MetaResNetConfig, ResNet, ResNetConfig,
};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// Which model of the method a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// `MetaResNet` on the whole (preprocessed) image.
    Resnet,
    /// `ChipNet`: the attention model whose maps choose the crops.
    Chipnet,
    /// `AttnResNet`: the whole-image attention baseline.
    Attnresnet,
    /// `MetaResNet` on the crops chosen by ChipNet's attention.
    Cropnet,
    /// `MetaResNet` on crops by the true lesion boxes (synthetic data only): the upper bound
    /// of what a crop can give.
    OracleCropnet,
}

impl ModelKind {
    /// Every kind, in report order.
    pub const ALL: [Self; 5] = [
        Self::Resnet,
        Self::Chipnet,
        Self::Attnresnet,
        Self::Cropnet,
        Self::OracleCropnet,
    ];

    /// The name used on the command line, in file names and in `metrics.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Resnet => "resnet",
            Self::Chipnet => "chipnet",
            Self::Attnresnet => "attnresnet",
            Self::Cropnet => "cropnet",
            Self::OracleCropnet => "oracle_cropnet",
        }
    }

    /// Whether the model produces an attention map.
    pub fn has_attention(self) -> bool {
        matches!(self, Self::Chipnet | Self::Attnresnet)
    }

    /// Whether the model is a `MetaResNet` (and so takes the metadata vector).
    pub fn is_meta_resnet(self) -> bool {
        matches!(self, Self::Resnet | Self::Cropnet | Self::OracleCropnet)
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown model {s:?} (expected one of: {})",
                    Self::ALL.map(ModelKind::name).join(", ")
                )
            })
    }
}

/// How to build a [`Net`]: everything but the learning schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// ResNet preset of the backbone: `tiny`, `small`, `resnet18`, `resnet34`, `resnet50`,
    /// `resnet101`, `resnet152`; `wN` (one basic block per stage at width N, e.g. `w64`) or
    /// `NAME-wN` (a preset at width N): [`agc_core::ResNetConfig::preset`].
    pub backbone: String,
    /// ImageNet weights for the backbone (a torchvision `.pth` or `.safetensors`), or none to
    /// start from random weights.
    pub weights: Option<PathBuf>,
    /// Load `weights` even if the file holds tensors the backbone has no place for.
    #[serde(default)]
    pub allow_unused_weights: bool,
    /// Chip side of ChipNet, in pixels (32 gives 7×7 chips of a 224 image).
    pub chip: usize,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Channel dropout on ChipNet's and AttnResNet's embedding map before attention scoring.
    pub attention_dropout: f64,
    /// Hidden channels of the attention scoring convolutions.
    pub attention_hidden: usize,
    /// Widths of the metadata MLP.
    pub meta_hidden: [usize; 2],
    /// Side of ChipNet's attention scoring kernels: 3 (the seed's: a chip's weight also sees
    /// its neighbours) or 1 (a chip's weight from its own embedding alone).
    #[serde(default = "seed_attention_kernel")]
    pub attention_kernel: usize,
    /// Keep ChipNet's attention off chips of a black field (outside a dermoscope's circle,
    /// black corners and borders): [`agc_core::FieldMask`].
    #[serde(default)]
    pub field_mask: bool,
    /// Weight of ChipNet's contrast prior on the attention scores (0: none):
    /// [`agc_core::contrast_prior`].
    #[serde(default)]
    pub contrast_prior: f32,
}

/// The seed's attention kernel side (3×3), also what configurations written before the
/// setting existed used.
fn seed_attention_kernel() -> usize {
    3
}

impl Default for ModelSpec {
    /// The seed's models on a ResNet-18 backbone.
    fn default() -> Self {
        Self {
            backbone: "resnet18".into(),
            weights: None,
            allow_unused_weights: false,
            chip: 32,
            dropout: 0.5,
            attention_dropout: 0.7,
            attention_hidden: 512,
            meta_hidden: [512, 128],
            attention_kernel: seed_attention_kernel(),
            field_mask: false,
            contrast_prior: 0.0,
        }
    }
}

impl ModelSpec {
    /// ChipNet's field mask, for inputs normalised as agc normalises them (ImageNet
    /// statistics), when `field_mask` is set.
    #[must_use]
    pub fn chip_field_mask(&self) -> Option<FieldMask> {
        self.field_mask
            .then(|| FieldMask::new(agc_data::IMAGENET_MEAN, agc_data::IMAGENET_STD))
    }

    /// The backbone configuration.
    ///
    /// # Errors
    /// If the preset name is unknown.
    pub fn backbone_config(&self) -> Result<ResNetConfig, TrainError> {
        ResNetConfig::preset(&self.backbone).ok_or_else(|| TrainError::Setting {
            setting: "backbone".into(),
            value: format!("{:?}", self.backbone),
            message: "unknown (expected tiny, small, resnet18, resnet34, resnet50, resnet101 \
                          or resnet152; wN for one basic block per stage at width N ≥ 1, e.g. \
                          w64; NAME-wN for a preset at width N, e.g. resnet18-w32)"
                .into(),
        })
    }

    /// Builds a `kind` model (with `meta_dim` metadata inputs for the MetaResNets), loading the
    /// ImageNet weights into its backbone when `weights` is set.
    ///
    /// # Errors
    /// An unknown backbone, or weights that cannot be loaded.
    pub fn init(
        &self,
        kind: ModelKind,
        meta_dim: usize,
        device: &Device,
    ) -> Result<Net, TrainError> {
        let backbone = self.backbone_config()?;
        let mut net = match kind {
            ModelKind::Resnet | ModelKind::Cropnet | ModelKind::OracleCropnet => Net::Meta(
                MetaResNetConfig::new(backbone)
                    .with_meta_dim(meta_dim)
                    .with_meta_hidden(self.meta_hidden)
                    .with_dropout(self.dropout)
                    .init(device),
            ),
            ModelKind::Chipnet => Net::Chip(
                ChipNetConfig::new(backbone)
                    .with_grid(ChipGrid {
                        chip: self.chip,
                        stride: None,
                    })
                    .with_attention_hidden(self.attention_hidden)
                    .with_attention_dropout(self.attention_dropout)
                    .with_dropout(self.dropout)
                    .with_attention_kernel(self.attention_kernel)
                    .with_field_mask(self.chip_field_mask())
                    .with_contrast_prior(self.contrast_prior)
                    .init(device),
            ),
            ModelKind::Attnresnet => Net::Attn(
                AttnResNetConfig::new(backbone)
                    .with_attention_hidden(self.attention_hidden)
                    .with_attention_dropout(self.attention_dropout)
                    .with_dropout(self.dropout)
                    .init(device),
            ),
        };
        if let Some(path) = &self.weights {
            let options = LoadOptions {
                allow_unused: self.allow_unused_weights,
                ..LoadOptions::default()
            };
            net.backbone_mut().load_torchvision(path, &options)?;
        }
        Ok(net)
    }
}

/// One of the method's models.
#[derive(Module, Debug)]
pub enum Net {
    /// The whole-image ResNet and CropNet.
    Meta(MetaResNet),
    /// ChipNet.
    Chip(ChipNet),
    /// AttnResNet.
    Attn(AttnResNet),
}

/// What a [`Net`] predicts for a batch.
#[derive(Debug, Clone)]
pub struct NetOutput {
    /// `[batch, 1]`.
    pub logit: Tensor<2>,
    /// `[batch, grid_h, grid_w]`, each map summing to 1; `None` for a MetaResNet.
    pub attention: Option<Tensor<3>>,
}

impl Net {
    /// # Shapes
    /// - `images`: `[batch, 3, S, S]`
    /// - `meta`: `[batch, meta_dim]` for a MetaResNet with a metadata branch (ignored by the
    ///   attention models)
    pub fn forward(&self, images: Tensor<4>, meta: Option<Tensor<2>>) -> NetOutput {
        match self {
            Self::Meta(m) => {
                let meta = if m.meta.is_some() { meta } else { None };
                NetOutput {
                    logit: m.forward(images, meta).logit,
                    attention: None,
                }
            }
            Self::Chip(m) => {
                let out = m.forward(images);
                NetOutput {
                    logit: out.logit,
                    attention: Some(out.attention),
                }
            }
            Self::Attn(m) => {
                let out = m.forward(images);
                NetOutput {
                    logit: out.logit,
                    attention: Some(out.attention),
                }
            }
        }
    }

    /// The ResNet backbone (the parameter group with the lower learning rate).
    pub fn backbone(&self) -> &ResNet {
        match self {
            Self::Meta(m) => &m.backbone,
            Self::Chip(m) => &m.backbone,
            Self::Attn(m) => &m.backbone,
        }
    }

    fn backbone_mut(&mut self) -> &mut ResNet {
        match self {
            Self::Meta(m) => &mut m.backbone,
            Self::Chip(m) => &mut m.backbone,
            Self::Attn(m) => &mut m.backbone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_round_trip_and_unknown_names_are_listed() {
        for kind in ModelKind::ALL {
            assert_eq!(kind.name().parse::<ModelKind>(), Ok(kind));
        }
        let err = "vit".parse::<ModelKind>().expect_err("unknown");
        assert!(err.contains("chipnet"), "{err}");
    }

    #[test]
    fn every_kind_builds_and_predicts_one_logit_per_image() {
        let dev = Device::flex();
        let spec = ModelSpec {
            backbone: "tiny".into(),
            attention_hidden: 8,
            meta_hidden: [8, 4],
            ..ModelSpec::default()
        };
        let images = Tensor::<4>::ones([2, 3, 64, 64], &dev);
        let meta = Tensor::<2>::ones([2, 5], &dev);
        for kind in ModelKind::ALL {
            let net: Net = spec.init(kind, 5, &dev).expect("init");
            let out = net.forward(images.clone(), Some(meta.clone()));
            assert_eq!(out.logit.dims(), [2, 1], "{kind}");
            assert_eq!(out.attention.is_some(), kind.has_attention(), "{kind}");
        }
        let err = ModelSpec {
            backbone: "vgg".into(),
            ..ModelSpec::default()
        }
        .init(ModelKind::Resnet, 0, &dev)
        .expect_err("unknown backbone");
        assert!(err.to_string().contains("vgg"), "{err}");
    }
}
