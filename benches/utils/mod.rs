//! What the benches share: the device and random inputs.

use burn::prelude::*;
use burn::tensor::Distribution;

/// The CPU device the benches run on: Flex, Burn's pure-Rust CPU backend (agc's default).
pub fn device() -> Device {
    Device::flex()
}

/// A batch of random images, `[batch, 3, size, size]`, seeded.
pub fn images(batch: usize, size: usize) -> Tensor<4> {
    let dev = device();
    dev.seed(0);
    Tensor::random([batch, 3, size, size], Distribution::Default, &dev)
}

/// Forces a tensor's computation and makes it contiguous, as the next layer would.
pub fn materialise<const D: usize>(t: Tensor<D>) -> TensorData {
    t.into_data()
}
