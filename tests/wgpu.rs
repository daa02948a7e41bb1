//! The GPU code path (CubeCL kernels, fusion, autotune) through Burn's wgpu backend, against
//! Flex: on a machine without a GPU, Mesa's lavapipe is the Vulkan device.
//!
//!     cargo test --features wgpu -- wgpu
//!
//! `AGC_TEST_DEVICE` picks the device as `--device` names it: `wgpu:cpu` (the default, the
//! software adapter), `wgpu` on a machine with a GPU, or `cuda:0` in a build with `cuda` as well
//! (`scripts/gpu-check.sh` runs these tests on both). On CUDA, whose matrix products round
//! through TF32, the tolerances are ten times wider.

#![cfg(feature = "wgpu")]

mod common;

use agc::core::{ChipGrid, ChipNetConfig, ResNetConfig, initialize_params};
use agc::devices::{DeviceArg, Gpu, parse_device};
use burn::prelude::*;
use burn::tensor::Distribution;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The name of the device under test, as `--device` gives it.
fn gpu_name() -> String {
    std::env::var("AGC_TEST_DEVICE").unwrap_or_else(|_| "wgpu:cpu".into())
}

/// The device under test, and how much wider than on wgpu its tolerances are.
fn gpu() -> (Device, f32) {
    let name = gpu_name();
    match parse_device(&name) {
        Ok(DeviceArg::Gpus(gpus)) if gpus.len() == 1 => {
            let scale = if matches!(gpus[0], Gpu::Cuda(_)) {
                10.0
            } else {
                1.0
            };
            (gpus[0].device(), scale)
        }
        Ok(_) => panic!("AGC_TEST_DEVICE={name:?}: one GPU"),
        Err(e) => panic!("AGC_TEST_DEVICE: {e:#}"),
    }
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().iter::<f32>().collect()
}

/// The largest absolute difference, and the largest absolute value of `a`.
fn max_diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    (d, a.iter().map(|x| x.abs()).fold(0.0, f32::max))
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
    initialize_params(&model);
    let images = Tensor::<4>::random([2, 3, 64, 64], Distribution::Default, &cpu);
    let want = model.forward(images.clone());
    let (gpu, scale) = gpu();
    let got = model.to_device(&gpu).forward(images.to_device(&gpu));
    let (a, b) = (values(want.logit), values(got.logit));
    let (d, _) = max_diff(&a, &b);
    let (a2, b2) = (values(want.attention), values(got.attention));
    let (d2, _) = max_diff(&a2, &b2);
    eprintln!("ChipNet on the GPU against Flex: logits within {d:e}, attention within {d2:e}");
    assert!(
        d < 1e-3 * scale,
        "logits differ by {d}: flex {a:?}, wgpu {b:?}"
    );
    assert!(d2 < 1e-4 * scale, "attention differs by {d2}");
}

/// A torchvision-shaped ResNet-18 (random weights) on two 64² images: the 512-wide embedding.
#[test]
fn wgpu_resnet18_forward_matches_flex() {
    let cpu = Device::flex();
    cpu.seed(4);
    let model = ResNetConfig::resnet18().init(&cpu);
    initialize_params(&model);
    let images = Tensor::<4>::random([2, 3, 64, 64], Distribution::Default, &cpu);
    let want = values(model.embed(images.clone()));
    let (gpu, scale) = gpu();
    let got = values(model.to_device(&gpu).embed(images.to_device(&gpu)));
    let (d, largest) = max_diff(&want, &got);
    eprintln!("ResNet-18 on the GPU against Flex: embeddings within {d:e} (largest {largest})");
    assert!(
        d <= 1e-4 * scale * largest.max(1.0),
        "embeddings differ by {d} (largest value {largest})"
    );
}

/// Ten Adam steps of a tiny ChipNet on a fixed batch, on `device`: the losses and the final
/// weights of the attention's first convolution. `done(step)` is called after each step.
fn train_steps(device: &Device, mut done: impl FnMut(usize)) -> (Vec<f32>, Vec<f32>) {
    use burn::optim::{AdamConfig, GradientsParams};
    // The same initial weights on both devices: drawn on the CPU (with autodiff, so that they
    // are tracked), then forked (moved as fresh leaves). Burn draws a fresh model's weights when
    // they are first read, on the device the model is on by then, so `initialize_params` draws
    // them before the move.
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
    initialize_params(&model);
    let images = Tensor::<4>::random([4, 3, 32, 32], Distribution::Default, &cpu);
    let labels = Tensor::<1>::from_floats([1.0, 0.0, 1.0, 0.0], &cpu);
    let mut model = model.fork(device);
    let (images, labels) = (images.to_device(device), labels.to_device(device));
    let mut optim = AdamConfig::new().init();
    let loss = agc::train::Loss::Bce;
    let mut losses = Vec::new();
    for step in 1..=10 {
        let value = loss.forward(model.forward(images.clone()).logit, labels.clone());
        losses.push(value.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(value.backward(), &model);
        model = optim.step(1e-3, model, grads);
        done(step);
    }
    (losses, values(model.attention.conv1.weight.val()))
}

/// How long one training step may take before the test calls it a stall:
/// `AGC_TEST_STEP_TIMEOUT_S` seconds, 300 by default: CI's lavapipe (Mesa 22) takes about a
/// minute for the first step, which compiles and autotunes every kernel; Mesa 25's took 6.5 min
/// with a cold autotune cache (docs/gpu.md, "Training that stalls").
fn step_limit() -> Duration {
    let secs = std::env::var("AGC_TEST_STEP_TIMEOUT_S").map_or(300, |s| {
        s.parse()
            .unwrap_or_else(|_| panic!("AGC_TEST_STEP_TIMEOUT_S={s:?}: a number of seconds"))
    });
    Duration::from_secs(secs)
}

/// What the training thread reports.
enum Progress {
    /// Step N (from 1) is done.
    Step(usize),
    /// The losses and the final weights.
    Done(Vec<f32>, Vec<f32>),
}

/// [`train_steps`] on a thread of its own, each step timed and printed, failing with the step
/// that did not finish within [`step_limit`] instead of hanging (the stalled thread is left
/// behind; the test process ends with the test).
fn guarded_train_steps(device: Device, name: &str) -> (Vec<f32>, Vec<f32>) {
    let limit = step_limit();
    let (tx, rx) = mpsc::channel();
    let worker = {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let (losses, weights) = train_steps(&device, |step| {
                let _ = tx.send(Progress::Step(step));
            });
            let _ = tx.send(Progress::Done(losses, weights));
        })
    };
    drop(tx);
    let start = Instant::now();
    let mut last = start;
    for step in 1..=10 {
        match rx.recv_timeout(limit) {
            Ok(Progress::Step(done)) => {
                assert_eq!(done, step);
                let now = Instant::now();
                eprintln!(
                    "{name}: step {step} took {:.1} s ({:.1} s in all)",
                    (now - last).as_secs_f64(),
                    (now - start).as_secs_f64()
                );
                last = now;
            }
            Ok(Progress::Done(..)) => unreachable!("the steps end after the tenth"),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "{name}: training step {step} of 10 did not finish within {} s ({:.0} s since \
                 the start; AGC_TEST_STEP_TIMEOUT_S sets the limit). Step 1 compiles and \
                 autotunes every kernel; a later step that stalls points at the device or \
                 its driver (docs/gpu.md, \"Training that stalls\")",
                limit.as_secs(),
                start.elapsed().as_secs_f64()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The thread panicked: its own message says why.
                std::panic::resume_unwind(worker.join().expect_err("the thread ended early"))
            }
        }
    }
    match rx.recv_timeout(limit) {
        Ok(Progress::Done(losses, weights)) => (losses, weights),
        _ => panic!(
            "{name}: the final weights did not come back within {} s",
            limit.as_secs()
        ),
    }
}

/// Training on the GPU follows Flex step for step. Tolerances: 1e-4 on the loss (measured on
/// lavapipe: 6e-7) and 2e-4 on the weights, which ten steps of 1e-3 move by up to 1e-2
/// (measured: 2e-5).
#[test]
fn wgpu_train_steps_match_flex() {
    let (flex_losses, flex_weights) = train_steps(&Device::flex().autodiff(), |_| ());
    let (gpu, scale) = gpu();
    let (gpu_losses, gpu_weights) = guarded_train_steps(gpu.autodiff(), &gpu_name());
    assert!(
        gpu_losses[9] < 0.5 * gpu_losses[0],
        "the loss falls on wgpu: {gpu_losses:?}"
    );
    let (loss_diff, _) = max_diff(&flex_losses, &gpu_losses);
    let (weight_diff, _) = max_diff(&flex_weights, &gpu_weights);
    eprintln!(
        "the GPU against Flex over ten steps: losses {flex_losses:?} vs {gpu_losses:?}, \
         largest loss difference {loss_diff:e}, largest weight difference {weight_diff:e}"
    );
    assert!(
        loss_diff < 1e-4 * scale,
        "losses differ by {loss_diff}: {flex_losses:?} vs {gpu_losses:?}"
    );
    assert!(
        weight_diff < 2e-4 * scale,
        "weights differ by {weight_diff}"
    );
}

/// A batch too large for the GPU's memory ends the run with an error that names the device and
/// the batch size to lower, not a panic. Lavapipe allows buffers of up to 128 MiB: a ResNet-18's
/// first feature map for 48 images of 224² (154 MB) does not fit. It runs the `agc` binary on
/// lavapipe whatever `AGC_TEST_DEVICE` says (a real GPU has room for the batch).
#[test]
fn wgpu_train_out_of_memory_names_the_device_and_the_batch_size() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    common::synth(&data, 100, 4);
    let run = dir.path().join("run");
    let mut args = vec!["train", "--model", "resnet"];
    args.extend(common::tiny_run_args_with(&data, &run, "1"));
    for (flag, value) in [
        ("--backbone", "resnet18"),
        ("--image-size", "224"),
        ("--chip", "32"),
        ("--batch-size", "48"),
    ] {
        let at = args
            .iter()
            .position(|a| *a == flag)
            .expect("a tiny-run flag")
            + 1;
        args[at] = value;
    }
    args.extend(["--device", "wgpu:cpu"]);
    let err = common::agc_fails(&args);
    assert!(
        err.contains("--device wgpu:cpu: the GPU ran out of memory")
            && err.contains("--batch-size (now 48)")
            && err.contains("resumes"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // The step that ran out of memory was announced first, as the first on this GPU.
    let notice = err
        .find("the first training step on")
        .unwrap_or_else(|| panic!("no first-step notice before the step: {err}"));
    assert!(
        err[notice..].contains("compiling and autotuning")
            && notice < err.find("ran out of memory").expect("checked above"),
        "{err}"
    );
}
