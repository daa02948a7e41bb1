#![doc = include_str!("../README.md")]

/// Models and kernels: ResNet, ChipNet, attention pooling, boxes from attention.
pub use agc_core as core;
/// Data: datasets, preprocessing, augmentations, folds, synthetic lesions.
pub use agc_data as data;
/// Training: losses, metrics, the training loop, cross-validation, cropping, ensembles.
pub use agc_train as train;

/// Where models run: `Device::flex()` (the CPU), `Device::cuda(i)` with the `cuda` feature,
/// `Device::wgpu(kind)` with the `wgpu` feature, and `.autodiff()` for training; [`devices`]
/// gives them by name. Burn 0.22's tensors and modules carry no backend type, so library
/// code is written once and the device is chosen at run time.
pub use burn::prelude::Device;

pub mod devices;
pub mod malloc;
