//! `MetaResNet`: a ResNet embedding joined with a metadata MLP. CropNet is this model trained on
//! crops.

use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::check_dropout;
use crate::norm::batch_norm;
use crate::resnet::{ResNet, ResNetConfig};

/// Configuration of a [`MetaResNet`].
#[derive(Config, Debug)]
pub struct MetaResNetConfig {
    /// The image backbone; its `num_classes` is ignored (the backbone is built without a head).
    pub backbone: ResNetConfig,
    /// Length of the metadata vector; 0 builds the model without a metadata branch.
    #[config(default = 0)]
    pub meta_dim: usize,
    /// Widths of the metadata MLP's two layers.
    #[config(default = "[512, 128]")]
    pub meta_hidden: [usize; 2],
    /// Dropout on the joined embedding before the classifier.
    #[config(default = 0.5)]
    pub dropout: f64,
}

impl MetaResNetConfig {
    /// # Panics
    /// If a width is zero or `dropout` is not in `[0, 1)`.
    pub fn init(&self, device: &Device) -> MetaResNet {
        check_dropout("MetaResNet dropout", self.dropout);
        let backbone = self.backbone.clone().with_num_classes(None).init(device);
        let meta =
            (self.meta_dim > 0).then(|| MetaMlp::new(self.meta_dim, self.meta_hidden, device));
        let joined = backbone.embed_dim() + meta.as_ref().map_or(0, |_| self.meta_hidden[1]);
        MetaResNet {
            backbone,
            meta,
            dropout: DropoutConfig::new(self.dropout).init(),
            fc: LinearConfig::new(joined, 1).init(device),
        }
    }
}

/// The metadata branch: `Linear → ReLU → BN → Linear → ReLU → BN`.
#[derive(Module, Debug)]
pub struct MetaMlp {
    /// First linear layer.
    pub fc1: Linear,
    /// Batch norm after the first ReLU.
    pub bn1: BatchNorm,
    /// Second linear layer.
    pub fc2: Linear,
    /// Batch norm after the second ReLU.
    pub bn2: BatchNorm,
}

impl MetaMlp {
    fn new(meta_dim: usize, [h1, h2]: [usize; 2], device: &Device) -> Self {
        assert!(
            h1 > 0 && h2 > 0,
            "metadata MLP widths must be positive, got [{h1}, {h2}]"
        );
        Self {
            fc1: LinearConfig::new(meta_dim, h1).init(device),
            bn1: BatchNormConfig::new(h1).init(device),
            fc2: LinearConfig::new(h1, h2).init(device),
            bn2: BatchNormConfig::new(h2).init(device),
        }
    }

    /// # Shapes
    /// - `meta`: `[batch, meta_dim]`
    /// - output: `[batch, meta_hidden[1]]`
    pub fn forward(&self, meta: Tensor<2>) -> Tensor<2> {
        let x = batch_norm(&self.bn1, relu(self.fc1.forward(meta)));
        batch_norm(&self.bn2, relu(self.fc2.forward(x)))
    }
}

/// A ResNet image embedding ⊕ a metadata MLP → dropout → linear to one logit.
#[derive(Module, Debug)]
pub struct MetaResNet {
    /// Image backbone (no head).
    pub backbone: ResNet,
    /// Metadata branch, where the model has one.
    pub meta: Option<MetaMlp>,
    /// Dropout on the joined embedding.
    pub dropout: Dropout,
    /// Classifier.
    pub fc: Linear,
}

/// What [`MetaResNet::forward`] returns.
#[derive(Debug, Clone)]
pub struct MetaResNetOutput {
    /// One logit per image, `[batch, 1]`.
    pub logit: Tensor<2>,
    /// The joined image and metadata embedding the classifier saw, `[batch, joined_dim]`.
    pub embedding: Tensor<2>,
}

impl MetaResNet {
    /// # Shapes
    /// - `images`: `[batch, channels, height, width]`
    /// - `meta`: `[batch, meta_dim]`, required exactly when the model has a metadata branch
    /// - output `logit`: `[batch, 1]`
    ///
    /// # Panics
    /// If `meta` is given to a model without a metadata branch, or missing for one with it.
    pub fn forward(&self, images: Tensor<4>, meta: Option<Tensor<2>>) -> MetaResNetOutput {
        // Image embedding.
        let embedding = self.backbone.embed(images);
        // Joined with the metadata embedding.
        let embedding = match (&self.meta, meta) {
            (Some(mlp), Some(meta)) => Tensor::cat(vec![embedding, mlp.forward(meta)], 1),
            (None, None) => embedding,
            (Some(_), None) => panic!("this MetaResNet has a metadata branch: pass the metadata"),
            (None, Some(_)) => {
                panic!("this MetaResNet was built with meta_dim 0: it takes no metadata")
            }
        };
        // Dropout → linear.
        let logit = self.fc.forward(self.dropout.forward(embedding.clone()));
        MetaResNetOutput { logit, embedding }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{autodiff_device, device};
    use burn::tensor::Distribution;

    fn inputs(dev: &Device) -> (Tensor<4>, Tensor<2>) {
        dev.seed(7);
        (
            Tensor::random([4, 3, 32, 32], Distribution::Default, dev),
            Tensor::random([4, 29], Distribution::Default, dev),
        )
    }

    #[test]
    fn joins_image_and_metadata_embeddings() {
        let dev = device();
        let config = MetaResNetConfig::new(ResNetConfig::tiny())
            .with_meta_dim(29)
            .with_meta_hidden([16, 8]);
        let model = config.init(&dev);
        let (images, meta) = inputs(&dev);
        let out = model.forward(images, Some(meta));
        assert_eq!(out.logit.dims(), [4, 1]);
        assert_eq!(out.embedding.dims(), [4, 64 + 8]);
    }

    #[test]
    fn without_metadata_branch_uses_the_image_alone() {
        let dev = device();
        let model = MetaResNetConfig::new(ResNetConfig::tiny()).init(&dev);
        assert!(model.meta.is_none());
        let (images, _) = inputs(&dev);
        assert_eq!(model.forward(images, None).embedding.dims(), [4, 64]);
    }

    #[test]
    #[should_panic(expected = "pass the metadata")]
    fn missing_metadata_panics_clearly() {
        let dev = device();
        let model = MetaResNetConfig::new(ResNetConfig::tiny())
            .with_meta_dim(3)
            .init(&dev);
        let (images, _) = inputs(&dev);
        let _ = model.forward(images, None);
    }

    #[test]
    fn training_is_stochastic_and_valid_is_deterministic() {
        let dev = autodiff_device();
        let config = MetaResNetConfig::new(ResNetConfig::tiny())
            .with_meta_dim(29)
            .with_meta_hidden([16, 8]);
        let model = config.init(&dev);
        let (images, meta) = inputs(&dev);
        let a = model
            .forward(images.clone(), Some(meta.clone()))
            .logit
            .into_data();
        let b = model
            .forward(images.clone(), Some(meta.clone()))
            .logit
            .into_data();
        assert_ne!(a, b, "dropout is active under autodiff");

        let eval = model.valid();
        let (images, meta) = (images.inner(), meta.inner());
        let c = eval
            .forward(images.clone(), Some(meta.clone()))
            .logit
            .into_data();
        let d = eval.forward(images, Some(meta)).logit.into_data();
        assert_eq!(c, d, "eval mode is deterministic");
    }
}
