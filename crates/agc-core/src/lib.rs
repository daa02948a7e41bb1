//! Models and kernels of agc, written once for any Burn [`Device`](burn::prelude::Device).
//!
//! - [`ResNet`]: torchvision-compatible ResNets (18 to 152, and a tiny preset), with
//!   [`ResNet::load_torchvision`] for `.pth` and `.safetensors` weights;
//! - [`conv::conv2d`]: the ResNets' convolutions, batched over images on Flex (a Burn backend
//!   extension with its own backward pass);
//! - [`norm::batch_norm`]: the ResNets' batch norms, one pass per step on Flex (likewise);
//! - [`pool::max_pool2d`]: the ResNets' max pooling on Flex (likewise);
//! - [`ChipGrid`]: cuts images into chips and lays chip embeddings back out as a map;
//! - [`AttentionPool`]: softmax attention pooling over a grid of embeddings;
//! - [`MetaResNet`] (CropNet is a `MetaResNet` trained on crops), [`ChipNet`], [`AttnResNet`];
//! - [`box_in_original`] ([`attention_box`], then [`CentreCrop::map_box`]): from an attention
//!   map to a square crop box in the original image;
//! - [`initialize_params`]: draws a fresh model's lazily initialised weights where it was built,
//!   before it is moved or copied.
//!
//! This crate does no file I/O beyond reading weight files.

pub mod adam;
pub mod attention;
pub mod boxes;
pub mod chips;
pub mod conv;
pub mod dropout2d;
pub mod models;
pub mod norm;
mod parallel;
pub mod params;
pub mod pool;
pub mod resnet;
pub mod weights;

pub use attention::{AttentionPool, AttentionPoolConfig, AttentionPoolOutput, AttentionReduce};
pub use boxes::{
    AttentionBox, BoxConfig, CentreCrop, Fallback, Rect, attention_box, attention_boxes,
    box_in_original, upsample_bilinear,
};
pub use chips::ChipGrid;
pub use dropout2d::{Dropout2d, Dropout2dConfig};
pub use models::{
    AttentionOutput, AttnResNet, AttnResNetConfig, ChipNet, ChipNetConfig, FieldMask, MetaResNet,
    MetaResNetConfig, MetaResNetOutput, PooledHead, contrast_prior,
};
pub use params::initialize_params;
pub use resnet::{BlockKind, ResNet, ResNetConfig, global_avg_pool};
pub use weights::{LoadOptions, LoadReport, WeightsError};

#[cfg(test)]
pub(crate) mod test_util {
    //! The device unit tests run on: Flex, Burn's pure-Rust CPU backend that trains.

    /// The CPU device, for inference.
    pub fn device() -> burn::prelude::Device {
        burn::prelude::Device::flex()
    }

    /// The CPU device with autodiff, for training.
    pub fn autodiff_device() -> burn::prelude::Device {
        device().autodiff()
    }
}
