//! What the benches share: the backend, the device and random inputs.

use burn::prelude::*;
use burn::tensor::Distribution;

/// The benches run on Burn's ndarray CPU backend.
pub type Bench = burn::backend::NdArray;

/// The CPU device.
pub fn device() -> Device<Bench> {
    burn::backend::ndarray::NdArrayDevice::Cpu
}

/// A batch of random images, `[batch, 3, size, size]`, seeded.
pub fn images(batch: usize, size: usize) -> Tensor<Bench, 4> {
    let dev = device();
    Bench::seed(&dev, 0);
    Tensor::random([batch, 3, size, size], Distribution::Default, &dev)
}

/// Forces a tensor's computation and makes it contiguous, as the next layer would.
pub fn materialise<const D: usize>(t: Tensor<Bench, D>) -> TensorData {
    t.into_data()
}
