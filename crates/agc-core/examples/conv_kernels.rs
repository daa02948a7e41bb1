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
//! Prints one line per geometry and a total per model; `RAYON_NUM_THREADS` sets the threads.

use agc_core::conv::kernel::{ConvGeometry, conv2d_backward, conv2d_forward};
use std::time::Instant;

/// `(name, geometry, how many times the model has it)` for a ResNet of `blocks` basic blocks per
/// stage and `width` channels in its first stage, over `batch` images of `side` pixels.
fn resnet(
    batch: usize,
    side: usize,
    width: usize,
    blocks: usize,
) -> Vec<(String, ConvGeometry, usize)> {
    let g = |c, s, o, k, stride, pad| ConvGeometry {
        batch,
        in_channels: c,
        input: [s, s],
        out_channels: o,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [pad, pad],
    };
    let mut out = vec![(format!("stem {side}"), g(3, side, width, 7, 2, 3), 1)];
    // The stem's stride and the max pooling's.
    let mut s = side.div_ceil(2).div_ceil(2);
    out.push((
        format!("{width}@{s} 3x3"),
        g(width, s, width, 3, 1, 1),
        2 * blocks,
    ));
    let mut c = width;
    for o in [2 * width, 4 * width, 8 * width] {
        out.push((format!("{c}->{o}@{s} 3x3/2"), g(c, s, o, 3, 2, 1), 1));
        out.push((format!("{c}->{o}@{s} 1x1/2"), g(c, s, o, 1, 2, 0), 1));
        s = s.div_ceil(2);
        out.push((format!("{o}@{s} 3x3"), g(o, s, o, 3, 1, 1), 2 * blocks - 1));
        c = o;
    }
    out
}

/// The same for a ResNet-50 (bottleneck blocks, the stride on the 3×3 as in torchvision) over
/// `batch` images of `side` pixels.
fn resnet50(batch: usize, side: usize) -> Vec<(String, ConvGeometry, usize)> {
    let g = |c, s, o, k, stride, pad| ConvGeometry {
        batch,
        in_channels: c,
        input: [s, s],
        out_channels: o,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [pad, pad],
    };
    let mut out = vec![(format!("stem {side}"), g(3, side, 64, 7, 2, 3), 1)];
    let (mut s, mut c) = (side.div_ceil(2).div_ceil(2), 64);
    for (stage, (width, blocks)) in [(64, 3), (128, 4), (256, 6), (512, 3)]
        .into_iter()
        .enumerate()
    {
        let (o, stride) = (4 * width, if stage == 0 { 1 } else { 2 });
        let t = s.div_ceil(stride);
        out.push((format!("{c}->{width}@{s} 1x1"), g(c, s, width, 1, 1, 0), 1));
        out.push((
            format!("{width}@{s} 3x3/{stride}"),
            g(width, s, width, 3, stride, 1),
            1,
        ));
        out.push((
            format!("{c}->{o}@{s} 1x1/{stride}"),
            g(c, s, o, 1, stride, 0),
            1,
        ));
        out.push((
            format!("{width}->{o}@{t} 1x1"),
            g(width, t, o, 1, 1, 0),
            blocks,
        ));
        out.push((
            format!("{o}->{width}@{t} 1x1"),
            g(o, t, width, 1, 1, 0),
            blocks - 1,
        ));
        out.push((
            format!("{width}@{t} 3x3"),
            g(width, t, width, 3, 1, 1),
            blocks - 1,
        ));
        (s, c) = (t, o);
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
            let [oh, ow] = g.output();
            let x = vec![0.5f32; g.batch * g.in_channels * g.input[0] * g.input[1]];
            let w = vec![0.01f32; g.out_channels * g.in_channels * g.kernel[0] * g.kernel[1]];
            let dy = vec![0.1f32; g.batch * g.out_channels * oh * ow];
            // The stem's input needs no gradient, as in training.
            let want_x = g.in_channels != 3;
            let f = best_ms(reps, || {
                std::hint::black_box(conv2d_forward(&x, &w, &g));
            });
            let b = best_ms(reps, || {
                std::hint::black_box(conv2d_backward(&x, &w, &dy, &g, want_x, true));
            });
            println!("{model:<14} {name:<18} x{times}  forward {f:8.2} ms  backward {b:8.2} ms");
            forward += f * times as f64;
            backward += b * times as f64;
        }
        println!(
            "TOTAL {model} forward_ms={forward:.1} backward_ms={backward:.1} sum_ms={:.1}",
            forward + backward
        );
    }
}
