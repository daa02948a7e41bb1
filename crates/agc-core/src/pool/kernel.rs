//! Max pooling's arithmetic on plain `f32` planes (one channel of one image each, row-major).
//!
//! Each plane is pooled in two steps. When a backward pass needs the maxima's positions: along
//! every input row the window maximum of each output column and where it lies, then down the
//! rows of each output row's window, so that ties and NaNs go as in Burn's Flex kernel and
//! PyTorch: of equal maxima the first in row-major window order wins, a NaN always wins, and of
//! several NaNs the last. For the values alone: down the rows first, whole rows at a time (which
//! vectorises), then along them; the same values, except that a tie of 0 and −0 may keep the
//! other sign. Padding is never a candidate. The backward pass adds each output's gradient onto
//! the input pixel it came from.

use crate::parallel::{split_runs, thread_ranges};
use rayon::prelude::*;
use std::ops::Range;

/// The geometry of a 2-D max pooling (no dilation, floor mode, symmetric padding no larger than
/// half the kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Planes: images × channels.
    pub planes: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Padding on each side, along height and width.
    pub padding: [usize; 2],
}

impl PoolGeometry {
    /// Output height and width.
    pub fn output(&self) -> [usize; 2] {
        [0, 1].map(|d| (self.input[d] + 2 * self.padding[d] - self.kernel[d]) / self.stride[d] + 1)
    }

    /// Whether the kernel handles this geometry: every window holds an input pixel.
    pub fn supported(&self) -> bool {
        (0..2).all(|d| {
            self.input[d] > 0
                && self.kernel[d] > 0
                && self.stride[d] > 0
                && 2 * self.padding[d] <= self.kernel[d]
                && self.input[d] + 2 * self.padding[d] >= self.kernel[d]
        })
    }

    fn in_len(&self) -> usize {
        self.input[0] * self.input[1]
    }

    fn out_len(&self) -> usize {
        let [h, w] = self.output();
        h * w
    }

    /// The input positions `[start, end)` of output position `o`'s window along dimension `d`.
    fn window(&self, d: usize, o: usize) -> Range<usize> {
        let start = o * self.stride[d];
        let lo = start.saturating_sub(self.padding[d]);
        let hi = (start + self.kernel[d] - self.padding[d]).min(self.input[d]);
        lo..hi
    }
}

/// Whether `v` replaces the running maximum `m`: strictly larger, or NaN.
#[inline]
fn wins(v: f32, m: f32) -> bool {
    v > m || v.is_nan()
}

/// The running maximum after `v`, without a branch (so that loops of it vectorise).
#[inline]
fn pick(m: f32, v: f32) -> f32 {
    if wins(v, m) { v } else { m }
}

/// Pools one plane into `out`, values only: down each output row's window of input rows
/// first (whole rows at a time), then along the result. `windows` are the output columns'
/// windows, `column` scratch.
fn pool_plane(
    x: &[f32],
    g: &PoolGeometry,
    windows: &[Range<usize>],
    out: &mut [f32],
    column: &mut Vec<f32>,
) {
    let ([_, w], [oh, ow]) = (g.input, g.output());
    column.resize(w, 0.0);
    for (oy, out) in out.chunks_exact_mut(ow).enumerate().take(oh) {
        let rows = g.window(0, oy);
        column.copy_from_slice(&x[rows.start * w..][..w]);
        for iy in rows.start + 1..rows.end {
            for (m, &v) in column.iter_mut().zip(&x[iy * w..][..w]) {
                *m = pick(*m, v);
            }
        }
        for (o, cols) in out.iter_mut().zip(windows) {
            let span = &column[cols.clone()];
            *o = span[1..].iter().fold(span[0], |m, &v| pick(m, v));
        }
    }
}

/// Pools one plane into `out`, and into `index` (the input pixel of each maximum, row-major
/// within the plane): along each input row first, then down the rows, so that of equal maxima
/// the first in row-major order wins. `windows` are the output columns' windows, `rows` and
/// `row_args` scratch.
fn pool_plane_indexed(
    x: &[f32],
    g: &PoolGeometry,
    windows: &[Range<usize>],
    [out, rows]: [&mut [f32]; 2],
    [index, row_args]: [&mut [u32]; 2],
) {
    let ([h, w], [oh, ow]) = (g.input, g.output());
    // Along each input row: the maximum of every output column's window, and its column.
    for iy in 0..h {
        let line = &x[iy * w..][..w];
        let (maxima, args) = (&mut rows[iy * ow..][..ow], &mut row_args[iy * ow..][..ow]);
        for ((m, a), cols) in maxima.iter_mut().zip(args.iter_mut()).zip(windows) {
            let span = &line[cols.clone()];
            let (mut best, mut at) = (span[0], 0);
            for (j, &v) in span.iter().enumerate().skip(1) {
                let better = wins(v, best);
                best = if better { v } else { best };
                at = if better { j } else { at };
            }
            *m = best;
            *a = (iy * w + cols.start + at) as u32;
        }
    }
    // Down each output row's window of input rows, column by column.
    for oy in 0..oh {
        let window = g.window(0, oy);
        let (out, index) = (&mut out[oy * ow..][..ow], &mut index[oy * ow..][..ow]);
        out.copy_from_slice(&rows[window.start * ow..][..ow]);
        index.copy_from_slice(&row_args[window.start * ow..][..ow]);
        for iy in window.start + 1..window.end {
            let (maxima, args) = (&rows[iy * ow..][..ow], &row_args[iy * ow..][..ow]);
            for (((m, i), &v), &a) in out.iter_mut().zip(index.iter_mut()).zip(maxima).zip(args) {
                let better = wins(v, *m);
                *m = if better { v } else { *m };
                *i = if better { a } else { *i };
            }
        }
    }
}

/// Max pooling of `x` (`planes` planes of `input` pixels): the output, and, when `indexed`,
/// for each output the input pixel (row-major within its plane) it came from.
///
/// # Panics
/// If `x` does not hold the geometry's input or the geometry is not [supported](PoolGeometry::supported).
pub fn max_pool2d(x: &[f32], g: &PoolGeometry, indexed: bool) -> (Vec<f32>, Option<Vec<u32>>) {
    assert!(g.supported(), "max pool: unsupported geometry {g:?}");
    assert_eq!(x.len(), g.planes * g.in_len(), "max pool: input length");
    assert!(
        u32::try_from(g.in_len()).is_ok(),
        "max pool: plane too large"
    );
    let (in_len, out_len) = (g.in_len(), g.out_len());
    let ([h, _], [_, ow]) = (g.input, g.output());
    let windows: Vec<Range<usize>> = (0..ow).map(|o| g.window(1, o)).collect();
    let mut out = vec![0.0f32; g.planes * out_len];
    let mut index = if indexed {
        vec![0u32; g.planes * out_len]
    } else {
        Vec::new()
    };
    let ranges = thread_ranges(g.planes);
    let outs = split_runs(&mut out, &ranges, out_len);
    let indices: Vec<Option<&mut [u32]>> = if indexed {
        split_runs(&mut index, &ranges, out_len)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        ranges.iter().map(|_| None).collect()
    };
    ranges
        .into_par_iter()
        .zip(outs)
        .zip(indices)
        .for_each(|((planes, out), index)| {
            let planes = planes.zip(out.chunks_exact_mut(out_len));
            if let Some(index) = index {
                let (mut rows, mut row_args) = (vec![0.0f32; h * ow], vec![0u32; h * ow]);
                for ((plane, out), index) in planes.zip(index.chunks_exact_mut(out_len)) {
                    let x = &x[plane * in_len..][..in_len];
                    pool_plane_indexed(x, g, &windows, [out, &mut rows], [index, &mut row_args]);
                }
            } else {
                let mut column = Vec::new();
                for (plane, out) in planes {
                    pool_plane(
                        &x[plane * in_len..][..in_len],
                        g,
                        &windows,
                        out,
                        &mut column,
                    );
                }
            }
        });
    (out, indexed.then_some(index))
}

/// The input's gradient: each output's gradient `dy` added onto the input pixel `index` says it
/// came from.
///
/// # Panics
/// If `dy` or `index` does not hold the geometry's output.
pub fn max_pool2d_backward(dy: &[f32], index: &[u32], g: &PoolGeometry) -> Vec<f32> {
    let (in_len, out_len) = (g.in_len(), g.out_len());
    assert_eq!(dy.len(), g.planes * out_len, "max pool: gradient length");
    assert_eq!(index.len(), dy.len(), "max pool: index length");
    let mut dx = vec![0.0f32; g.planes * in_len];
    let ranges = thread_ranges(g.planes);
    let parts = split_runs(&mut dx, &ranges, in_len);
    ranges.into_par_iter().zip(parts).for_each(|(planes, dx)| {
        for (i, plane) in planes.enumerate() {
            let dx = &mut dx[i * in_len..][..in_len];
            let at = plane * out_len;
            for (&d, &j) in dy[at..at + out_len].iter().zip(&index[at..at + out_len]) {
                dx[j as usize] += d;
            }
        }
    });
    dx
}

#[cfg(test)]
mod tests {
    // x, g, h, w, v: the names of the pooling's formulas.
    #![allow(clippy::many_single_char_names)]

    use super::*;

    /// Max pooling written out directly, with Flex's rule for ties and NaNs.
    fn direct(x: &[f32], g: &PoolGeometry) -> (Vec<f32>, Vec<u32>) {
        let ([h, w], [oh, ow]) = (g.input, g.output());
        let (mut out, mut index) = (Vec::new(), Vec::new());
        for p in 0..g.planes {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best: Option<(f32, usize)> = None;
                    for ky in 0..g.kernel[0] {
                        for kx in 0..g.kernel[1] {
                            let (iy, ix) = (oy * g.stride[0] + ky, ox * g.stride[1] + kx);
                            let (Some(iy), Some(ix)) =
                                (iy.checked_sub(g.padding[0]), ix.checked_sub(g.padding[1]))
                            else {
                                continue;
                            };
                            if iy >= h || ix >= w {
                                continue;
                            }
                            let v = x[p * h * w + iy * w + ix];
                            // Flex's rule, spelled out: the first of equal maxima, the last NaN.
                            if best.is_none_or(|(m, _)| v > m || v.is_nan()) {
                                best = Some((v, iy * w + ix));
                            }
                        }
                    }
                    let (m, at) = best.unwrap();
                    out.push(m);
                    index.push(at as u32);
                }
            }
        }
        (out, index)
    }

    fn geometries() -> Vec<PoolGeometry> {
        let g = |planes, input, k, s, p| PoolGeometry {
            planes,
            input,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
        };
        vec![
            g(3, [9, 8], 3, 2, 1),
            g(5, [4, 4], 3, 2, 1),
            g(7, [2, 2], 3, 2, 1),
            g(2, [1, 1], 3, 2, 1),
            g(2, [6, 7], 2, 2, 0),
            g(3, [5, 5], 3, 1, 0),
            PoolGeometry {
                planes: 2,
                input: [7, 6],
                kernel: [3, 2],
                stride: [1, 3],
                padding: [1, 0],
            },
        ]
    }

    /// Values with ties (rounded to halves) and, in `nan` mode, NaNs.
    fn values(len: usize, seed: u32, nan: bool) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 16;
                if nan && v.is_multiple_of(11) {
                    f32::NAN
                } else {
                    (v % 9) as f32 * 0.5 - 2.0
                }
            })
            .collect()
    }

    #[test]
    fn pooling_matches_a_direct_scan_with_ties_and_nans() {
        for (i, g) in geometries().into_iter().enumerate() {
            assert!(g.supported());
            for nan in [false, true] {
                let x = values(g.planes * g.in_len(), i as u32, nan);
                let (out, index) = max_pool2d(&x, &g, true);
                let (values_only, none) = max_pool2d(&x, &g, false);
                assert!(none.is_none());
                let (expected, expected_index) = direct(&x, &g);
                assert_eq!(index.unwrap(), expected_index, "{g:?}");
                for output in [out, values_only] {
                    for (a, b) in output.iter().zip(&expected) {
                        assert!(
                            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                            "{a} against {b}, {g:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn backward_sends_each_gradient_to_its_maximum() {
        for (i, g) in geometries().into_iter().enumerate() {
            let x = values(g.planes * g.in_len(), 7 + i as u32, false);
            let index = max_pool2d(&x, &g, true).1.unwrap();
            let dy: Vec<f32> = (0..index.len()).map(|j| j as f32 + 1.0).collect();
            let dx = max_pool2d_backward(&dy, &index, &g);
            let mut expected = vec![0.0f32; x.len()];
            for (j, &at) in index.iter().enumerate() {
                expected[j / g.out_len() * g.in_len() + at as usize] += dy[j];
            }
            assert_eq!(dx, expected, "{g:?}");
        }
    }

    #[test]
    fn windows_in_the_padding_alone_or_empty_images_are_not_supported() {
        let wide = PoolGeometry {
            planes: 1,
            input: [4, 4],
            kernel: [2, 2],
            stride: [2, 2],
            padding: [2, 2],
        };
        assert!(!wide.supported());
        let empty = PoolGeometry {
            input: [0, 4],
            padding: [1, 1],
            ..wide
        };
        assert!(!empty.supported());
    }
}
