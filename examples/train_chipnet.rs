//! Trains a ChipNet on your own tensors with the library API — no files, no run directory — and
//! prints where it looks.
//!
//!     cargo run --release --example train_chipnet
//!
//! The images here are made in memory: 64×64 noise, and in the positives a bright 16×16 patch
//! in one random chip of the 4×4 grid. A tiny ChipNet (agc-core) learns to tell them apart with
//! Adam and the focal loss (agc-train), and its attention moves onto the patch: the example
//! prints the loss falling and, for a positive, the attention map, the box, and the patch.
//! Replace `batch` with your own `[N, 3, S, S]` images (ImageNet-normalised) and labels.

use agc::core::{BoxConfig, ChipGrid, ChipNetConfig, ResNetConfig, attention_boxes};
use agc::train::Loss;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZE: usize = 64;
const CHIP: usize = 16;

/// `n` images and labels; a positive carries a bright chip at a random place, returned too.
fn batch(n: usize, rng: &mut ChaCha8Rng, device: &Device) -> (Tensor<4>, Tensor<1>, Vec<usize>) {
    let grid = SIZE / CHIP;
    let mut pixels = vec![0f32; n * 3 * SIZE * SIZE];
    let mut labels = Vec::with_capacity(n);
    let mut places = Vec::with_capacity(n);
    for i in 0..n {
        let image = &mut pixels[i * 3 * SIZE * SIZE..(i + 1) * 3 * SIZE * SIZE];
        for v in image.iter_mut() {
            *v = rng.random_range(-1.0..1.0);
        }
        let positive = i % 2 == 0;
        let place = rng.random_range(0..grid * grid);
        if positive {
            let (cy, cx) = (place / grid * CHIP, place % grid * CHIP);
            for c in 0..3 {
                for y in cy..cy + CHIP {
                    for x in cx..cx + CHIP {
                        image[c * SIZE * SIZE + y * SIZE + x] = 2.0;
                    }
                }
            }
        }
        labels.push(if positive { 1.0 } else { 0.0 });
        places.push(place);
    }
    (
        Tensor::from_data(TensorData::new(pixels, [n, 3, SIZE, SIZE]), device),
        Tensor::from_data(TensorData::new(labels, [n]), device),
        places,
    )
}

fn main() {
    let device = Device::flex().autodiff();
    device.seed(7);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut model = ChipNetConfig::new(ResNetConfig::tiny())
        .with_grid(ChipGrid {
            chip: CHIP,
            stride: None,
        })
        .with_attention_hidden(32)
        .init(&device);
    let mut optim = AdamConfig::new().init();
    let loss = Loss::default();
    for step in 0..=60 {
        let (images, labels, _) = batch(16, &mut rng, &device);
        let out = model.forward(images);
        let value = loss.forward(out.logit, labels);
        if step % 10 == 0 {
            println!(
                "step {step:2}: focal loss {:.4}",
                value.clone().into_scalar::<f32>()
            );
        }
        let grads = GradientsParams::from_grads(value.backward(), &model);
        model = optim.step(2e-3, model, grads);
    }

    // Where the trained model looks, on a new positive (inference: no dropout, no autodiff).
    let model = model.valid();
    let plain = device.clone().without_autodiff();
    let (images, _, places) = batch(1, &mut rng, &plain);
    let out = model.forward(images);
    let grid = SIZE / CHIP;
    let weights: Vec<f32> = out
        .attention
        .clone()
        .into_data()
        .convert::<f32>()
        .iter::<f32>()
        .collect();
    println!(
        "\nattention of a positive whose bright chip is number {}:",
        places[0]
    );
    for row in weights.chunks(grid) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:.3}")).collect();
        println!("  {}", cells.join(" "));
    }
    let found = attention_boxes(out.attention, [SIZE, SIZE], &BoxConfig::new())
        .pop()
        .expect("one image, one box");
    let (py, px) = (places[0] / grid * CHIP, places[0] % grid * CHIP);
    println!(
        "box x {}..{}, y {}..{}; the bright chip is x {px}..{}, y {py}..{}",
        found.square.x0,
        found.square.x1,
        found.square.y0,
        found.square.y1,
        px + CHIP,
        py + CHIP
    );
}
