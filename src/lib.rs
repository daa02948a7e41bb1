#![doc = include_str!("../README.md")]

/// Models and kernels: ResNet, ChipNet, attention pooling, boxes from attention.
pub use agc_core as core;
/// Data: datasets, preprocessing, augmentations, folds, synthetic lesions.
pub use agc_data as data;
/// Training: losses, metrics, the training loop, cross-validation, cropping, ensembles.
pub use agc_train as train;

/// The devices agc is built for, one constructor per enabled Cargo feature.
///
/// Burn 0.22's tensors and modules carry no backend type: library code is written once and the
/// device is chosen at run time (binaries, examples, tests and benches pick it).
pub mod device {
    use burn::prelude::Device;

    /// Burn's pure-Rust CPU backend that trains (feature `flex`, on by default).
    #[cfg(feature = "flex")]
    pub fn flex() -> Device {
        Device::flex()
    }

    /// NVIDIA GPU number `index` through CUDA (feature `cuda`).
    #[cfg(feature = "cuda")]
    pub fn cuda(index: usize) -> Device {
        Device::cuda(index)
    }
}
