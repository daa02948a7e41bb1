//! The same ChipNet weights give the same outputs on every backend, and every backend trains.
//!
//! Flex is the reference; ndarray always runs, CUDA with `--features cuda` on a GPU machine.

use agc_core::{ChipNet, ChipNetConfig, MetaResNetConfig, ResNetConfig};
use burn::backend::Autodiff;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::{Distribution, backend::AutodiffBackend};

type Flex = burn::backend::Flex;

fn config() -> ChipNetConfig {
    ChipNetConfig::new(ResNetConfig::tiny()).with_attention_hidden(32)
}

/// A ChipNet on `B` with the weights of `reference`.
fn transfer<B: Backend>(reference: &ChipNet<Flex>, device: &B::Device) -> ChipNet<B> {
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
    let bytes = recorder
        .record(reference.clone().into_record(), ())
        .expect("record to bytes");
    let record = recorder.load(bytes, device).expect("record from bytes");
    config().init::<B>(device).load_record(record)
}

fn images<B: Backend>(device: &B::Device) -> Tensor<B, 4> {
    B::seed(device, 11);
    Tensor::random([3, 3, 224, 224], Distribution::Normal(0.0, 1.0), device)
}

fn max_relative_difference<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<Flex, D>) -> f32 {
    let a = a.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    let b = b.into_data().to_vec::<f32>().expect("f32");
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn check_backend<B: Backend>(device: &B::Device, tolerance: f32) {
    let flex_device = Default::default();
    let reference = config().init::<Flex>(&flex_device);
    let x = images::<Flex>(&flex_device);
    // This forward also initialises Burn's lazy parameters before `transfer` records them.
    let expected = reference.forward(x.clone());
    let model = transfer::<B>(&reference, device);
    let data = x.into_data();
    let out = model.forward(Tensor::from_data(data, device));
    let logit = max_relative_difference(out.logit, expected.logit);
    let attention = max_relative_difference(out.attention, expected.attention);
    eprintln!(
        "{}: logit {logit:.2e}, attention {attention:.2e}",
        std::any::type_name::<B>()
    );
    assert!(
        logit < tolerance && attention < tolerance,
        "logit {logit:e}, attention {attention:e}"
    );
}

/// A fixed batch, from a formula rather than the backend's global random generator (which
/// tests running in parallel share).
fn fixed<B: Backend, const D: usize>(
    shape: [usize; D],
    phase: f32,
    device: &B::Device,
) -> Tensor<B, D> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37 + phase).sin()).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Ten Adam steps on a fixed batch lower its training loss (batch-statistics batch norm, no
/// dropout, so the loss is a function of the weights alone).
fn check_training<B: AutodiffBackend>(device: &B::Device) {
    let mut model = MetaResNetConfig::new(ResNetConfig::tiny())
        .with_meta_dim(4)
        .with_dropout(0.0)
        .init::<B>(device);
    let mut optim = AdamConfig::new().init();
    let x = fixed::<B, 4>([8, 3, 64, 64], 0.0, device);
    let meta = fixed::<B, 2>([8, 4], 1.0, device);
    let y = Tensor::<B, 2>::from_floats(
        [[1.0], [0.0], [1.0], [0.0], [1.0], [0.0], [1.0], [0.0]],
        device,
    );
    let loss_of = |model: &agc_core::MetaResNet<B>| {
        let logit = model.forward(x.clone(), Some(meta.clone())).logit;
        (logit - y.clone()).powf_scalar(2.0).mean()
    };
    let first = loss_of(&model).into_scalar().elem::<f32>();
    for _ in 0..10 {
        let loss = loss_of(&model);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let last = loss_of(&model).into_scalar().elem::<f32>();
    eprintln!("training loss {first} → {last}");
    assert!(last < 0.5 * first, "loss went from {first} to {last}");
}

#[test]
fn ndarray_gives_the_same_chipnet_outputs_as_flex() {
    check_backend::<burn::backend::NdArray>(&Default::default(), 1e-3);
}

#[test]
fn flex_trains() {
    check_training::<Autodiff<Flex>>(&Default::default());
}

/// Measured on an H200 (docs/gpu.md): logit 1.5e-3, attention 1.6e-4 relative to Flex, which
/// is TF32-sized; hence a looser bound than between the CPU backends.
#[cfg(feature = "cuda")]
#[test]
fn cuda_gives_the_same_chipnet_outputs_as_flex() {
    check_backend::<burn::backend::Cuda>(&Default::default(), 1e-2);
}

#[cfg(feature = "cuda")]
#[test]
#[ignore = "did not finish within 200 s on an H200 with Burn 0.21 (docs/gpu.md); run with --ignored"]
fn cuda_trains() {
    check_training::<Autodiff<burn::backend::Cuda>>(&Default::default());
}
