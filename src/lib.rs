#![doc = include_str!("../README.md")]

/// Models and kernels: ResNet, ChipNet, attention pooling, boxes from attention.
pub use agc_core as core;
/// Data: datasets, preprocessing, augmentations, folds, synthetic lesions.
pub use agc_data as data;
/// Training: losses, metrics, the training loop, cross-validation, cropping, ensembles.
pub use agc_train as train;

/// The concrete backends agc is built for, one per enabled Cargo feature.
///
/// Library code is generic over `B: Backend`; binaries, examples, tests and benches pick one of
/// these.
pub mod backend {
    /// Burn's pure-Rust CPU backend that trains (feature `flex`, on by default).
    #[cfg(feature = "flex")]
    pub type Flex = burn::backend::Flex;
    /// Burn's ndarray CPU backend, for inference (feature `ndarray`, on by default).
    #[cfg(feature = "ndarray")]
    pub type NdArray = burn::backend::NdArray;
    /// NVIDIA GPUs through CUDA (feature `cuda`).
    #[cfg(feature = "cuda")]
    pub type Cuda = burn::backend::Cuda;
}
