//! The GPU code path (CubeCL kernels, fusion, autotune) through Burn's wgpu backend, against
//! Flex: on a machine without a GPU, Mesa's lavapipe is the Vulkan device.
//!
//!     cargo test --features wgpu -- wgpu

#![cfg(feature = "wgpu")]

use agc::core::{ChipGrid, ChipNetConfig, ResNetConfig};
use burn::prelude::*;
use burn::tensor::{DeviceKind, Distribution};

fn gpu() -> Device {
    Device::wgpu(DeviceKind::Cpu)
}

#[test]
fn wgpu_chipnet_forward_matches_flex() {
    let cpu = Device::flex();
    cpu.seed(3);
    let model = ChipNetConfig::new(ResNetConfig::tiny())
        .with_grid(ChipGrid {
            chip: 16,
            stride: None,
        })
        .with_attention_hidden(16)
        .init(&cpu);
    let images = Tensor::<4>::random([2, 3, 64, 64], Distribution::Default, &cpu);
    let want = model.forward(images.clone());
    let on_gpu = model.to_device(&gpu());
    let got = on_gpu.forward(images.to_device(&gpu()));
    let a: Vec<f32> = want
        .logit
        .into_data()
        .convert::<f32>()
        .iter::<f32>()
        .collect();
    let b: Vec<f32> = got
        .logit
        .into_data()
        .convert::<f32>()
        .iter::<f32>()
        .collect();
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(d < 1e-3, "logits differ by {d}: flex {a:?}, wgpu {b:?}");
}

/// Ten Adam steps of a tiny ChipNet on a fixed batch, on `device`: the losses and the final
/// weights of the attention's first convolution.
fn train_steps(device: &Device) -> (Vec<f32>, Vec<f32>) {
    use burn::optim::{AdamConfig, GradientsParams};
    // The same initial weights on both devices: made on the CPU (with autodiff, so that they
    // are tracked), then moved.
    let cpu = Device::flex().autodiff();
    cpu.seed(5);
    let model = ChipNetConfig::new(ResNetConfig::tiny())
        .with_grid(ChipGrid {
            chip: 16,
            stride: None,
        })
        .with_attention_hidden(16)
        .with_dropout(0.0)
        .with_attention_dropout(0.0)
        .init(&cpu);
    let images = Tensor::<4>::random([4, 3, 32, 32], Distribution::Default, &cpu);
    let labels = Tensor::<1>::from_floats([1.0, 0.0, 1.0, 0.0], &cpu);
    let mut model = model.to_device(device);
    let (images, labels) = (images.to_device(device), labels.to_device(device));
    let mut optim = AdamConfig::new().init();
    let loss = agc::train::Loss::Bce;
    let mut losses = Vec::new();
    for _ in 0..10 {
        let value = loss.forward(model.forward(images.clone()).logit, labels.clone());
        losses.push(value.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(value.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let weights = model
        .attention
        .conv1
        .weight
        .val()
        .into_data()
        .convert::<f32>()
        .iter::<f32>()
        .collect();
    (losses, weights)
}

#[test]
#[ignore = "on lavapipe the first training-mode loss differs from Flex's (0.754 against 0.582, \
            docs/gpu.md); inference matches"]
fn wgpu_train_steps_match_flex() {
    let (flex_losses, flex_weights) = train_steps(&Device::flex().autodiff());
    let (gpu_losses, gpu_weights) = train_steps(&gpu().autodiff());
    assert!(
        gpu_losses[9] < gpu_losses[0],
        "the loss falls on wgpu: {gpu_losses:?}"
    );
    let loss_diff = flex_losses
        .iter()
        .zip(&gpu_losses)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let weight_diff = flex_weights
        .iter()
        .zip(&gpu_weights)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        loss_diff < 1e-3,
        "losses differ by {loss_diff}: {flex_losses:?} vs {gpu_losses:?}"
    );
    assert!(weight_diff < 1e-3, "weights differ by {weight_diff}");
}
