//! Batch normalisation's arithmetic on plain `f32` slices laid out `[N, C, P]` (P: the pixels of
//! one channel of one image): each pass reads the tensor once, where Burn's generic batch norm
//! takes a transposing copy and a separate element-wise pass for every term.
//!
//! - [`statistics`]: the batch's per-channel mean and biased variance, in two passes (mean first,
//!   then the squared deviations from it, as Burn computes them), summed in `f64` per channel;
//! - [`affine`]: `y = x · scale[c] + shift[c]`, which is batch norm once the statistics are known
//!   (`scale = γ / √(var + ε)`, `shift = β − mean · scale`);
//! - [`backward`]: the gradients of batch norm over the batch's own statistics: one pass for the
//!   per-channel sums `Σ dy` and `Σ dy · (x − mean)`, one for the input's gradient.
//! - [`affine_backward`]: the gradients of [`affine`] with respect to `x`, `scale` and `shift`.
//!
//! The planes (one channel of one image each) are split into one contiguous range per thread;
//! every thread sums into its own per-channel partials, added in thread order, so a result
//! depends on the number of threads only.

use crate::parallel::{split_runs, thread_ranges};
use rayon::prelude::*;

/// The shape of a batch-norm input, `[batch, channels, pixels]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Images in the batch.
    pub batch: usize,
    /// Channels, each with its own statistics.
    pub channels: usize,
    /// Elements of one channel of one image (the product of the dimensions after the channels).
    pub pixels: usize,
}

impl Layout {
    fn len(self) -> usize {
        self.batch * self.channels * self.pixels
    }

    /// Elements per channel over the batch: the count the statistics average over.
    fn per_channel(self) -> usize {
        self.batch * self.pixels
    }
}

/// Per-channel sums of `plane_sums(channel, plane)` over every plane, each thread into its own
/// partials, added in thread order.
fn channel_sums<const K: usize>(
    l: Layout,
    plane_sums: impl Fn(usize, usize) -> [f64; K] + Sync,
) -> Vec<[f64; K]> {
    let partials: Vec<Vec<[f64; K]>> = thread_ranges(l.batch * l.channels)
        .into_par_iter()
        .map(|planes| {
            let mut sums = vec![[0.0f64; K]; l.channels];
            for plane in planes {
                let channel = plane % l.channels;
                let add = plane_sums(channel, plane);
                for (s, a) in sums[channel].iter_mut().zip(add) {
                    *s += a;
                }
            }
            sums
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![[0.0; K]; l.channels]);
    for part in parts {
        for (t, p) in total.iter_mut().zip(part) {
            for (a, b) in t.iter_mut().zip(p) {
                *a += b;
            }
        }
    }
    total
}

/// Writes `f(channel, plane, out)` for every plane of a new `[N, C, P]` tensor, each thread on
/// its own range of planes.
fn map_planes(l: Layout, f: impl Fn(usize, usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0.0f32; l.len()];
    let ranges = thread_ranges(l.batch * l.channels);
    let parts = split_runs(&mut out, &ranges, l.pixels);
    ranges
        .into_par_iter()
        .zip(parts)
        .for_each(|(planes, part)| {
            if l.pixels == 0 {
                return;
            }
            for (plane, dst) in planes.zip(part.chunks_exact_mut(l.pixels)) {
                f(plane % l.channels, plane, dst);
            }
        });
    out
}

/// `Σ f(i)` over a plane, in eight `f32` lanes (which the compiler vectorises), then as `f64`.
#[inline]
fn lane_sum(len: usize, f: impl Fn(usize) -> f32) -> f64 {
    let mut lanes = [0.0f32; 8];
    let whole = len / 8 * 8;
    for i in (0..whole).step_by(8) {
        for (j, lane) in lanes.iter_mut().enumerate() {
            *lane += f(i + j);
        }
    }
    let tail: f32 = (whole..len).map(&f).sum();
    lanes.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(tail)
}

fn plane(data: &[f32], l: Layout, plane: usize) -> &[f32] {
    &data[plane * l.pixels..][..l.pixels]
}

/// The mean and biased variance of every channel of `x` over the batch and pixels.
///
/// # Panics
/// If `x` does not hold `l`'s elements.
pub fn statistics(x: &[f32], l: Layout) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), l.len(), "batch norm: input length");
    let count = l.per_channel().max(1) as f64;
    let sums = channel_sums(l, |_, q| {
        let xs = plane(x, l, q);
        [lane_sum(xs.len(), |i| xs[i])]
    });
    let mean: Vec<f32> = sums.iter().map(|[s]| (s / count) as f32).collect();
    let squares = channel_sums(l, |c, q| {
        let (xs, m) = (plane(x, l, q), mean[c]);
        [lane_sum(xs.len(), |i| (xs[i] - m) * (xs[i] - m))]
    });
    let var = squares.iter().map(|[s]| (s / count) as f32).collect();
    (mean, var)
}

/// `x · scale[c] + shift[c]` for every element of channel `c`.
///
/// # Panics
/// If a slice's length does not match `l`.
pub fn affine(x: &[f32], l: Layout, scale: &[f32], shift: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), l.len(), "batch norm: input length");
    assert!(scale.len() == l.channels && shift.len() == l.channels);
    map_planes(l, |c, q, out| {
        let (a, b) = (scale[c], shift[c]);
        for (y, &v) in out.iter_mut().zip(plane(x, l, q)) {
            *y = v * a + b;
        }
    })
}

/// The per-channel `scale` and `shift` of batch norm with `gamma`, `beta` and the statistics
/// `mean`, `var`: `scale = γ / √(var + ε)`, `shift = β − mean · scale`.
pub fn scale_shift(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma
        .iter()
        .zip(var)
        .map(|(&g, &v)| (f64::from(g) / (f64::from(v) + epsilon).sqrt()) as f32)
        .collect();
    let shift = beta
        .iter()
        .zip(mean)
        .zip(&scale)
        .map(|((&b, &m), &s)| b - m * s)
        .collect();
    (scale, shift)
}

/// The gradients of batch norm over the batch's own statistics (`mean`, biased `var`, as
/// [`statistics`] gives them): `(dx, dγ, dβ)` from the output's gradient `dy`.
///
/// With `x̂ = (x − mean) / √(var + ε)` and `M` elements per channel:
/// `dβ = Σ dy`, `dγ = Σ dy · x̂`, `dx = γ / √(var + ε) · (dy − dβ / M − x̂ · dγ / M)`.
///
/// # Panics
/// If a slice's length does not match `l`.
pub fn backward(
    x: &[f32],
    l: Layout,
    gamma: &[f32],
    [mean, var]: [&[f32]; 2],
    epsilon: f64,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), l.len(), "batch norm: input length");
    assert_eq!(dy.len(), l.len(), "batch norm: gradient length");
    let inv_std: Vec<f64> = var
        .iter()
        .map(|&v| 1.0 / (f64::from(v) + epsilon).sqrt())
        .collect();
    let sums = channel_sums(l, |c, q| {
        let (xs, dys, m) = (plane(x, l, q), plane(dy, l, q), mean[c]);
        [
            lane_sum(dys.len(), |i| dys[i]),
            lane_sum(dys.len(), |i| dys[i] * (xs[i] - m)),
        ]
    });
    let count = l.per_channel().max(1) as f64;
    let dbeta: Vec<f32> = sums.iter().map(|s| s[0] as f32).collect();
    let dgamma: Vec<f32> = sums
        .iter()
        .zip(&inv_std)
        .map(|(s, i)| (s[1] * i) as f32)
        .collect();
    // dx = on_dy · dy + on_x · x + constant per channel, with on_dy = γ/σ,
    // on_x = −on_dy · dγ / (σ M), constant = −on_dy · dβ / M − on_x · mean.
    let coefficients: Vec<[f32; 3]> = (0..l.channels)
        .map(|c| {
            let on_dy = f64::from(gamma[c]) * inv_std[c];
            let on_x = -on_dy * sums[c][1] * inv_std[c] * inv_std[c] / count;
            let constant = -on_dy * sums[c][0] / count - on_x * f64::from(mean[c]);
            [on_dy as f32, on_x as f32, constant as f32]
        })
        .collect();
    let dx = map_planes(l, |c, q, out| {
        let [on_dy, on_x, constant] = coefficients[c];
        for ((g, &dyv), &xv) in out.iter_mut().zip(plane(dy, l, q)).zip(plane(x, l, q)) {
            *g = on_dy * dyv + on_x * xv + constant;
        }
    });
    (dx, dgamma, dbeta)
}

/// The gradients of [`affine`]: `(dx, dscale, dshift)` from the output's gradient `dy`.
///
/// # Panics
/// If a slice's length does not match `l`.
pub fn affine_backward(
    x: &[f32],
    l: Layout,
    scale: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), l.len(), "batch norm: input length");
    assert_eq!(dy.len(), l.len(), "batch norm: gradient length");
    let sums = channel_sums(l, |_, q| {
        let (xs, dys) = (plane(x, l, q), plane(dy, l, q));
        [
            lane_sum(dys.len(), |i| dys[i] * xs[i]),
            lane_sum(dys.len(), |i| dys[i]),
        ]
    });
    let dx = map_planes(l, |c, q, out| {
        for (g, &d) in out.iter_mut().zip(plane(dy, l, q)) {
            *g = d * scale[c];
        }
    });
    let dscale = sums.iter().map(|s| s[0] as f32).collect();
    let dshift = sums.iter().map(|s| s[1] as f32).collect();
    (dx, dscale, dshift)
}

#[cfg(test)]
mod tests {
    // x, dy, dx: the names of batch norm's formulas.
    #![allow(clippy::many_single_char_names, clippy::similar_names)]

    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed * 97)
                    % 1000;
                v as f32 / 250.0 - 2.0 + seed as f32 * 0.5
            })
            .collect()
    }

    /// Batch norm over the batch's statistics, written out directly in `f64`.
    fn direct(x: &[f32], l: Layout, gamma: &[f32], beta: &[f32], eps: f64) -> Vec<f64> {
        let mut y = vec![0.0f64; x.len()];
        for c in 0..l.channels {
            let at = |n: usize, p: usize| (n * l.channels + c) * l.pixels + p;
            let all: Vec<f64> = (0..l.batch)
                .flat_map(|n| (0..l.pixels).map(move |p| (n, p)))
                .map(|(n, p)| f64::from(x[at(n, p)]))
                .collect();
            let mean = all.iter().sum::<f64>() / all.len() as f64;
            let var = all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all.len() as f64;
            for n in 0..l.batch {
                for p in 0..l.pixels {
                    let xhat = (f64::from(x[at(n, p)]) - mean) / (var + eps).sqrt();
                    y[at(n, p)] = xhat * f64::from(gamma[c]) + f64::from(beta[c]);
                }
            }
        }
        y
    }

    fn layouts() -> [Layout; 4] {
        let l = |batch, channels, pixels| Layout {
            batch,
            channels,
            pixels,
        };
        // Images, chips of one or four pixels, and more threads than planes.
        [l(3, 4, 37), l(17, 3, 1), l(9, 5, 4), l(1, 1, 3)]
    }

    #[test]
    fn statistics_and_affine_match_direct_batch_norm() {
        for (i, l) in layouts().into_iter().enumerate() {
            let x = values(l.len(), i as u32);
            let gamma = values(l.channels, 10 + i as u32);
            let beta = values(l.channels, 20 + i as u32);
            let (mean, var) = statistics(&x, l);
            let (scale, shift) = scale_shift(&gamma, &beta, &mean, &var, 1e-5);
            let y = affine(&x, l, &scale, &shift);
            for (a, b) in y.iter().zip(direct(&x, l, &gamma, &beta, 1e-5)) {
                assert!((f64::from(*a) - b).abs() < 1e-4, "{a} against {b} ({l:?})");
            }
        }
    }

    /// The gradients against central differences of `Σ y · probe` through [`direct`].
    #[test]
    fn gradients_match_finite_differences() {
        for (i, l) in layouts().into_iter().enumerate() {
            let x = values(l.len(), 30 + i as u32);
            let gamma = values(l.channels, 40 + i as u32);
            let beta = values(l.channels, 50 + i as u32);
            let probe = values(l.len(), 60 + i as u32);
            let eps = 1e-3;
            let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| {
                direct(x, l, gamma, beta, eps)
                    .iter()
                    .zip(&probe)
                    .map(|(y, p)| y * f64::from(*p))
                    .sum::<f64>()
            };
            let (mean, var) = statistics(&x, l);
            let (dx, dgamma, dbeta) = backward(&x, l, &gamma, [&mean, &var], eps, &probe);
            let h = 1e-2f32;
            let numeric = |values: &[f32], at: usize, f: &dyn Fn(&[f32]) -> f64| {
                let (mut up, mut down) = (values.to_vec(), values.to_vec());
                up[at] += h;
                down[at] -= h;
                (f(&up) - f(&down)) / (2.0 * f64::from(h))
            };
            let close = |analytic: f32, numeric: f64, what: &str| {
                let tol = 2e-3 * (1.0 + numeric.abs());
                assert!(
                    (f64::from(analytic) - numeric).abs() < tol,
                    "{what}: {analytic} against {numeric} ({l:?})"
                );
            };
            for (j, &analytic) in dx.iter().enumerate() {
                close(analytic, numeric(&x, j, &|x| loss(x, &gamma, &beta)), "dx");
            }
            for c in 0..l.channels {
                close(
                    dgamma[c],
                    numeric(&gamma, c, &|g| loss(&x, g, &beta)),
                    "dgamma",
                );
                close(
                    dbeta[c],
                    numeric(&beta, c, &|b| loss(&x, &gamma, b)),
                    "dbeta",
                );
            }
        }
    }

    #[test]
    fn affine_gradients_are_the_products_sums() {
        let l = Layout {
            batch: 4,
            channels: 3,
            pixels: 5,
        };
        let (x, dy) = (values(l.len(), 1), values(l.len(), 2));
        let scale = values(3, 3);
        let (dx, dscale, dshift) = affine_backward(&x, l, &scale, &dy);
        for c in 0..3 {
            let (mut ds, mut dsh) = (0.0f64, 0.0f64);
            for n in 0..4 {
                for p in 0..5 {
                    let at = (n * 3 + c) * 5 + p;
                    assert!((dx[at] - dy[at] * scale[c]).abs() < 1e-6);
                    ds += f64::from(dy[at] * x[at]);
                    dsh += f64::from(dy[at]);
                }
            }
            assert!((f64::from(dscale[c]) - ds).abs() < 1e-4);
            assert!((f64::from(dshift[c]) - dsh).abs() < 1e-4);
        }
    }
}
