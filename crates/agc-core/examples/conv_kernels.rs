//! Times agc's convolution kernels (`agc_core::conv::kernel`) alone on the geometries of one
//! training step of: ChipNet-R18 (`chipnet`, batch 8 of 224² images in 7×7 chips of 32², so 392
//! chips), the CPU preset's ChipNet (`chipnet-cpu`, `[1,1,1,1]` of width 16, batch 32 of 224²
//! images in 28×28 chips of 8², so 25 088 chips), a ResNet-18 (`resnet18`, batch 8 of 224²) and
//! a ResNet-50 over 98 chips of 32² (`resnet50-chips`, model_bench's `r50_98chips_32`): forward,
//! and backward for both gradients, each the best of `--reps` runs (default 7) so that other
//! work on the machine weighs as little as it can.
//!
//!     cargo run --release -p agc-core --example conv_kernels [-- --reps 7 --only chipnet-cpu]
//!
//! Prints one line per geometry, with the forward pass's rate in GFLOP/s (two per multiply-add,
//! taps in the padding included), and a total per model; `--layer TEXT` keeps the geometries
//! whose name contains it (`--layer 512@7`), `--forward` skips the backward passes (for a
//! profiler); `RAYON_NUM_THREADS` sets the threads.

use agc_core::conv::kernel::{ConvGeometry, conv2d_backward, conv2d_forward};
use std::time::Instant;

/// A square convolution of `batch` images: `[c_in, side, side]` to `c_out` channels, a `k`×`k`
/// kernel, `stride`, `pad`.
fn conv(
    batch: usize,
    [c_in, side, c_out]: [usize; 3],
    k: usize,
    [stride, pad]: [usize; 2],
) -> ConvGeometry {
    ConvGeometry {
        batch,
        in_channels: c_in,
        input: [side, side],
        out_channels: c_out,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [pad, pad],
    }
}

/// A named geometry and how many times the model has it.
type Layer = (String, ConvGeometry, usize);

/// The layers of a ResNet of `blocks` basic blocks per stage and `width` channels in its first
/// stage, over `batch` images of `side` pixels.
fn resnet(batch: usize, side: usize, width: usize, blocks: usize) -> Vec<Layer> {
    let mut out = vec![(
        format!("stem {side}"),
        conv(batch, [3, side, width], 7, [2, 3]),
        1,
    )];
    // The stem's stride and the max pooling's.
    let mut at = side.div_ceil(2).div_ceil(2);
    let first = conv(batch, [width, at, width], 3, [1, 1]);
    out.push((format!("{width}@{at} 3x3"), first, 2 * blocks));
    let mut c_in = width;
    for c_out in [2 * width, 4 * width, 8 * width] {
        let entry = conv(batch, [c_in, at, c_out], 3, [2, 1]);
        out.push((format!("{c_in}->{c_out}@{at} 3x3/2"), entry, 1));
        let shortcut = conv(batch, [c_in, at, c_out], 1, [2, 0]);
        out.push((format!("{c_in}->{c_out}@{at} 1x1/2"), shortcut, 1));
        at = at.div_ceil(2);
        let rest = conv(batch, [c_out, at, c_out], 3, [1, 1]);
        out.push((format!("{c_out}@{at} 3x3"), rest, 2 * blocks - 1));
        c_in = c_out;
    }
    out
}

/// The layers of a ResNet-50 (bottleneck blocks, the stride on the 3×3 as in torchvision) over
/// `batch` images of `side` pixels.
fn resnet50(batch: usize, side: usize) -> Vec<Layer> {
    let mut out = vec![(
        format!("stem {side}"),
        conv(batch, [3, side, 64], 7, [2, 3]),
        1,
    )];
    let (mut at, mut c_in) = (side.div_ceil(2).div_ceil(2), 64);
    for (stage, (width, blocks)) in [(64, 3), (128, 4), (256, 6), (512, 3)]
        .into_iter()
        .enumerate()
    {
        let (c_out, stride) = (4 * width, if stage == 0 { 1 } else { 2 });
        let next = at.div_ceil(stride);
        let layers = [
            (
                format!("{c_in}->{width}@{at} 1x1"),
                conv(batch, [c_in, at, width], 1, [1, 0]),
                1,
            ),
            (
                format!("{width}@{at} 3x3/{stride}"),
                conv(batch, [width, at, width], 3, [stride, 1]),
                1,
            ),
            (
                format!("{c_in}->{c_out}@{at} 1x1/{stride}"),
                conv(batch, [c_in, at, c_out], 1, [stride, 0]),
                1,
            ),
            (
                format!("{width}->{c_out}@{next} 1x1"),
                conv(batch, [width, next, c_out], 1, [1, 0]),
                blocks,
            ),
            (
                format!("{c_out}->{width}@{next} 1x1"),
                conv(batch, [c_out, next, width], 1, [1, 0]),
                blocks - 1,
            ),
            (
                format!("{width}@{next} 3x3"),
                conv(batch, [width, next, width], 3, [1, 1]),
                blocks - 1,
            ),
        ];
        out.extend(layers);
        (at, c_in) = (next, c_out);
    }
    out
}

fn best_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let reps: usize = value("--reps").map_or(7, |v| v.parse().expect("--reps N"));
    let only = value("--only").cloned();
    let layer = value("--layer").cloned();
    let forward_only = args.iter().any(|a| a == "--forward");
    println!(
        "# agc convolution kernels, {} rayon threads, best of {reps}",
        rayon::current_num_threads()
    );
    for (model, geometries) in [
        ("chipnet", resnet(8 * 49, 32, 64, 2)),
        ("chipnet-cpu", resnet(32 * 784, 8, 16, 1)),
        ("resnet18", resnet(8, 224, 64, 2)),
        ("resnet50-chips", resnet50(98, 32)),
    ] {
        if only.as_deref().is_some_and(|o| o != model) {
            continue;
        }
        let (mut forward, mut backward) = (0.0, 0.0);
        for (name, g, times) in geometries {
            if layer.as_deref().is_some_and(|l| !name.contains(l)) {
                continue;
            }
            let [oh, ow] = g.output();
            let x = vec![0.5f32; g.batch * g.in_channels * g.input[0] * g.input[1]];
            let w = vec![0.01f32; g.out_channels * g.in_channels * g.kernel[0] * g.kernel[1]];
            let dy = vec![0.1f32; g.batch * g.out_channels * oh * ow];
            // The stem's input needs no gradient, as in training.
            let want_x = g.in_channels != 3;
            let f = best_ms(reps, || {
                std::hint::black_box(conv2d_forward(&x, &w, &g));
            });
            let b = if forward_only {
                0.0
            } else {
                best_ms(reps, || {
                    std::hint::black_box(conv2d_backward(&x, &w, &dy, &g, want_x, true));
                })
            };
            // Each output value takes one multiply-add per weight of its output channel.
            let flops = 2.0 * (g.batch * oh * ow * w.len()) as f64;
            let rate = flops / f / 1e6;
            println!(
                "{model:<14} {name:<18} x{times}  forward {f:8.2} ms ({rate:5.1} GFLOP/s)  backward {b:8.2} ms"
            );
            forward += f * times as f64;
            backward += b * times as f64;
        }
        println!(
            "TOTAL {model} forward_ms={forward:.1} backward_ms={backward:.1} sum_ms={:.1}",
            forward + backward
        );
    }
}
