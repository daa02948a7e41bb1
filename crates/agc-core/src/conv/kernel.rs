//! The convolution's arithmetic on plain `f32` slices, NCHW in and out: im2col over a block of
//! output pixels, one matrix product per block.
//!
//! A block is either a tile of one large image's output pixels or a group of whole small images
//! (ChipNet's chips), so that every product has a few hundred rows or more however small the
//! images are. The block's columns are stored transposed, `[K, rows]` with `K` = input channels
//! × kernel height × kernel width in the weight's own order, so the weight `[O, K]` is used where
//! it lies, and an image's output pixels are written straight into its NCHW planes. The
//! backward pass reuses the same columns: the weight's gradient is `dY × columnsᵀ` summed over
//! the blocks, the input's gradient is `Wᵀ × dY` added back through the columns (col2im). Each
//! thread works on its own contiguous range of images, so the col2im never races and every
//! thread owns its partial weight gradient.
//!
//! Images of a few pixels a side (ChipNet's chips after a stride or two: 2×2, 1×1) skip im2col
//! altogether: the convolution of such an image is a dense matrix of the weights (see
//! `Dense`), and the batch's convolution one product with the input and output as they lie.
//!
//! Large images at stride 1 (a ResNet's first stages) skip it too: one product per kernel tap
//! over a zero-padded copy of the image, shifted by the tap (see `Shifted`).

use crate::parallel::{split_runs, thread_ranges};
use gemm::{Parallelism, gemm};
use rayon::prelude::*;
use std::borrow::Cow;

/// How large the blocks of output pixels are.
#[derive(Clone, Copy, Debug)]
struct Blocking {
    /// Most column entries a block holds, unless `min_rows` needs more.
    columns: usize,
    /// Fewest output pixels per block (where the image has them).
    min_rows: usize,
}

/// 512 Ki column entries (2 MiB, about what a core's L2 cache holds), but at least 256 output
/// pixels, so that a 3×3 convolution of 512 channels still multiplies a few hundred rows per
/// pass over its 9 MiB of weights. A tile of a large image has that many output pixels, a group
/// of small images as many whole images as fit, at least one.
const BLOCKING: Blocking = Blocking {
    columns: 1 << 19,
    min_rows: 256,
};

/// The geometry of one 2-D convolution (no groups, no dilation, no bias).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding on each side, along height and width.
    pub padding: [usize; 2],
}

impl ConvGeometry {
    /// Output height and width.
    pub fn output(&self) -> [usize; 2] {
        [0, 1].map(|d| (self.input[d] + 2 * self.padding[d] - self.kernel[d]) / self.stride[d] + 1)
    }

    fn in_pixels(&self) -> usize {
        self.input[0] * self.input[1]
    }

    fn out_pixels(&self) -> usize {
        let [h, w] = self.output();
        h * w
    }

    /// Length of one column (one output pixel's receptive field).
    fn k(&self) -> usize {
        self.kernel[0] * self.kernel[1] * self.in_channels
    }

    fn weight_len(&self) -> usize {
        self.out_channels * self.k()
    }

    /// Output pixels per block under `blocking`.
    fn block_rows(&self, blocking: Blocking) -> usize {
        (blocking.columns / self.k().max(1))
            .max(blocking.min_rows)
            .max(1)
    }

    /// The tap table the group blocks need, empty when every block is a tile of one image.
    fn table_for(&self, blocking: Blocking) -> Vec<usize> {
        if self.out_pixels() >= self.block_rows(blocking) {
            Vec::new()
        } else {
            tap_table(self)
        }
    }

    /// The blocks of images `images`, in order, sized by `blocking`.
    fn blocks(&self, images: std::ops::Range<usize>, blocking: Blocking) -> Vec<Block> {
        let p = self.out_pixels();
        let rows = self.block_rows(blocking);
        if p >= rows {
            images
                .flat_map(|image| {
                    (0..p).step_by(rows).map(move |pix0| Block::Tile {
                        image,
                        pix0,
                        len: rows.min(p - pix0),
                    })
                })
                .collect()
        } else {
            let group = (rows / p.max(1)).max(1);
            let end = images.end;
            images
                .step_by(group)
                .map(|first| Block::Images {
                    first,
                    count: group.min(end - first),
                })
                .collect()
        }
    }
}

/// The output pixels one matrix product covers; their columns lie side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    /// Output pixels `pix0..pix0 + len` of one large image.
    Tile {
        image: usize,
        pix0: usize,
        len: usize,
    },
    /// Every output pixel of the small images `first..first + count`.
    Images { first: usize, count: usize },
}

impl Block {
    /// Output pixels in the block, for images of `g`'s geometry.
    fn rows(self, g: &ConvGeometry) -> usize {
        match self {
            Block::Tile { len, .. } => len,
            Block::Images { count, .. } => count * g.out_pixels(),
        }
    }
}

/// The convolution of small images as one dense matrix, `[O · Ho · Wo, C · H · W]`: output pixel
/// `(o, p)` takes input pixel `(c, q)` times the weight of the kernel tap that joins `p` to `q`,
/// and zero where none does. Over a batch the convolution is then `Y = X · Dᵀ` with the input
/// and output as they lie in memory (`[N, C · H · W]`, `[N, O · Ho · Wo]`), with no im2col,
/// col2im, gather or scatter: the packing that costs more than the products when ChipNet's
/// chips are down to a few pixels a side. It is chosen for images small enough to be grouped
/// whose input pixels number at most [`DENSE_PIXELS_PER_TAP`] times the kernel's taps, so that
/// the dense matrix multiplies no more than 1.5 times what im2col would (less where taps fall in
/// the padding, as most do over a 1×1 or 2×2 image), and only where `D` has at most
/// [`DENSE_ENTRIES_PER_VALUE`] entries per value that im2col and the scatter move for one image:
/// `D` is built and packed for every call, which a batch of fewer images than that does not
/// repay (measured in `r50_98chips_32`: a ResNet-50's 1×1 convolutions of 2 048 channels and its
/// 3×3 ones over 2×2 chips, batch 98, took 1.7–2.5 times as long dense). The choice depends on
/// the geometry alone, never on the batch, so that an image's output does not depend on the
/// images beside it (`agc predict` gives the same probabilities at any batch size). A 1×1 kernel
/// over 1×1 images needs no `D`: it is the weight.
struct Dense {
    /// `(p, q, tap)`: output pixel `p` reads input pixel `q` through kernel tap `tap`
    /// (`ky · kw + kx`), for every pair a tap joins, in order.
    links: Vec<[usize; 3]>,
}

/// [`Dense`] is used for images of at most this many input pixels per kernel tap (3 / 2).
const DENSE_PIXELS_PER_TAP: [usize; 2] = [3, 2];

/// [`Dense`] is used where `D` has at most this many entries per value that im2col and the
/// scatter would move for one image: it pays where batches are about a hundred images or more.
const DENSE_ENTRIES_PER_VALUE: usize = 64;

/// The largest dense matrix [`Dense`] builds, in entries (16 MiB of `f32`).
const DENSE_MAX_ENTRIES: usize = 1 << 22;

impl Dense {
    /// The dense form of `g`'s convolution, when `blocking` would group its images and the dense
    /// matrix is not much larger than the work of im2col.
    fn of(g: &ConvGeometry, blocking: Blocking) -> Option<Self> {
        let (p_in, p_out) = (g.in_pixels(), g.out_pixels());
        let taps = g.kernel[0] * g.kernel[1];
        let [num, den] = DENSE_PIXELS_PER_TAP;
        let small = p_out < g.block_rows(blocking) && p_in * den <= taps * num;
        let (c_n, o_n) = (g.in_channels, g.out_channels);
        let entries = o_n * p_out * c_n * p_in;
        let packing = (c_n * taps + o_n) * p_out;
        if !small || entries > DENSE_MAX_ENTRIES || entries > packing * DENSE_ENTRIES_PER_VALUE {
            return None;
        }
        let ([h, w], [kh, kw], [sy, sx], [py, px]) = (g.input, g.kernel, g.stride, g.padding);
        let [oh, ow] = g.output();
        let mut links = Vec::new();
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..kh {
                    let Some(iy) = tap(oy, ky, sy, py, h) else {
                        continue;
                    };
                    for kx in 0..kw {
                        if let Some(ix) = tap(ox, kx, sx, px, w) {
                            links.push([oy * ow + ox, iy * w + ix, ky * kw + kx]);
                        }
                    }
                }
            }
        }
        Some(Self { links })
    }

    /// Whether `D` is the weight itself: a 1×1 kernel from one input pixel to one output pixel.
    fn is_weight(g: &ConvGeometry) -> bool {
        g.kernel == [1, 1] && g.in_pixels() == 1 && g.out_pixels() == 1
    }

    /// The dense matrix `D`, `[O · Ho · Wo, C · H · W]`, of the weight `w` (`[O, C, kh, kw]`).
    fn matrix<'a>(&self, g: &ConvGeometry, w: &'a [f32]) -> Cow<'a, [f32]> {
        if Self::is_weight(g) {
            return Cow::Borrowed(w);
        }
        let (c_n, p_in, p_out) = (g.in_channels, g.in_pixels(), g.out_pixels());
        let (taps, cols) = (g.kernel[0] * g.kernel[1], c_n * p_in);
        let mut d = vec![0.0f32; g.out_channels * p_out * cols];
        for (o, rows) in d.chunks_exact_mut(p_out * cols).enumerate() {
            for c in 0..c_n {
                let kernel = &w[(o * c_n + c) * taps..][..taps];
                for &[p, q, t] in &self.links {
                    rows[p * cols + c * p_in + q] = kernel[t];
                }
            }
        }
        Cow::Owned(d)
    }

    /// The weight's gradient `[O, C, kh, kw]` from the dense matrix's, `dd`: each weight is the
    /// sum of its entries in `D`.
    fn weight_gradient(&self, g: &ConvGeometry, dd: Vec<f32>) -> Vec<f32> {
        if Self::is_weight(g) {
            return dd;
        }
        let (c_n, p_in, p_out) = (g.in_channels, g.in_pixels(), g.out_pixels());
        let (taps, cols) = (g.kernel[0] * g.kernel[1], c_n * p_in);
        let mut dw = vec![0.0f32; g.weight_len()];
        for (o, rows) in dd.chunks_exact(p_out * cols).enumerate() {
            for c in 0..c_n {
                let kernel = &mut dw[(o * c_n + c) * taps..][..taps];
                for &[p, q, t] in &self.links {
                    kernel[t] += rows[p * cols + c * p_in + q];
                }
            }
        }
        dw
    }
}

/// The convolution of a large image at stride 1 as one matrix product per kernel tap, without
/// im2col. In the image zero-padded and flattened row by row (`[C, Hp · Wp]`), output pixel `(y,
/// x)` reads through tap `(ky, kx)` the padded pixel `(y + ky) · Wp + x + kx`: over output pixels
/// laid out `Wp` apart per row, what one tap reads is the padded image shifted by `ky · Wp + kx`,
/// a plain `[C, n]` matrix whose rows lie `Hp · Wp` apart. So the image is copied once (im2col
/// writes it once per tap, and gemm packs it again), the products `W_tap [O, C] × shifted [C,
/// n]` are added up over the taps into `[O, n]`, and the `Wo` valid columns of each row copied
/// into the output. The backward pass runs the same products transposed: the weight's gradient
/// per tap is `dY [O, n] × shiftedᵀ`, and the padded input's gradient gets `W_tapᵀ × dY` added
/// at the tap's shift, with `dY` laid out `Wp` apart per row and zero in between. The `Wp − Wo`
/// columns per row past the image's right edge are computed and dropped, so it is chosen only
/// where they add at most [`SHIFTED_WASTE`] of the work: large images, as ResNet's first stages
/// have (its 3×3 convolutions over 56² and 28², on AVX2: the backward pass 15–17 % faster than
/// through im2col, the forward pass about as fast; docs/performance.md).
struct Shifted {
    /// Height and width of the padded image.
    padded: [usize; 2],
    /// Output rows per product.
    band: usize,
}

/// [`Shifted`] is used where the columns it computes and drops are at most this fraction of the
/// output's (1 / 8): 3×3 kernels over images of 16 pixels a side or more.
const SHIFTED_WASTE: [usize; 2] = [1, 8];

/// The buffers of one thread's [`Shifted`] pass: the padded image (zero in the padding, which no
/// image writes) and a band of sums or output gradients, `Wp` apart per row.
struct ShiftedBuffers {
    padded: Vec<f32>,
    band: Vec<f32>,
    /// Entries per channel in `band`: the longest band's.
    band_len: usize,
}

impl Shifted {
    /// The shifted form of `g`'s convolution, for tiles of large images at stride 1.
    fn of(g: &ConvGeometry, blocking: Blocking) -> Option<Self> {
        let [_, ow] = g.output();
        let padded = [0, 1].map(|d| g.input[d] + 2 * g.padding[d]);
        let [num, den] = SHIFTED_WASTE;
        let tiles = g.out_pixels() >= g.block_rows(blocking);
        if g.stride != [1, 1] || !tiles || (padded[1] - ow) * den > ow * num {
            return None;
        }
        // Whole rows, about `min_rows` output pixels per product: in one noisy comparison on
        // the 56² and 28² layers of a ResNet-18, no slower than im2col's tiles (800-900
        // pixels) and faster than whole images.
        let band = blocking.min_rows.div_ceil(padded[1]).max(1);
        Some(Self { padded, band })
    }

    fn plane(&self) -> usize {
        self.padded[0] * self.padded[1]
    }

    fn buffers(&self, g: &ConvGeometry) -> ShiftedBuffers {
        let band_len = (self.band - 1) * self.padded[1] + g.output()[1];
        ShiftedBuffers {
            padded: vec![0.0; g.in_channels * self.plane()],
            band: vec![0.0; g.out_channels * band_len],
            band_len,
        }
    }

    /// Copies image `i` of `x` into the inside of the padded planes.
    fn pad(&self, g: &ConvGeometry, x: &[f32], i: usize, padded: &mut [f32]) {
        let (len, wd) = (g.in_channels * g.in_pixels(), g.input[1]);
        let image = &x[i * len..][..len];
        for [from, to] in self.inside(g) {
            padded[to..to + wd].copy_from_slice(&image[from..from + wd]);
        }
    }

    /// The weight `[O, C, kh, kw]` as `[taps, O, C]`, or back with `back`.
    fn per_tap(g: &ConvGeometry, w: &[f32], back: bool) -> Vec<f32> {
        let (taps, oc) = (g.kernel[0] * g.kernel[1], g.out_channels * g.in_channels);
        let mut out = vec![0.0f32; w.len()];
        for i in 0..w.len() {
            let (j, t) = (i / taps, i % taps);
            if back {
                out[i] = w[t * oc + j];
            } else {
                out[t * oc + j] = w[i];
            }
        }
        out
    }

    /// The output rows of each product: `(y0, rows, n)`, `n` the columns it covers.
    fn bands(&self, g: &ConvGeometry) -> impl Iterator<Item = (usize, usize, usize)> {
        let ([oh, ow], wp, band) = (g.output(), self.padded[1], self.band);
        (0..oh).step_by(band).map(move |y0| {
            let rows = band.min(oh - y0);
            (y0, rows, (rows - 1) * wp + ow)
        })
    }

    /// Where tap `t`'s input for the band starting at output row `y0` begins in a padded plane.
    fn shift(&self, g: &ConvGeometry, y0: usize, t: usize) -> usize {
        let kw = g.kernel[1];
        (y0 + t / kw) * self.padded[1] + t % kw
    }

    /// Where each row of an image `[C, H, W]` starts, and where it lies in the padded planes.
    fn inside(&self, g: &ConvGeometry) -> impl Iterator<Item = [usize; 2]> {
        let ([h, wd], [py, px], wp) = (g.input, g.padding, self.padded[1]);
        let plane = self.plane();
        (0..g.in_channels * h).map(move |row| {
            let (c, y) = (row / h, row % h);
            [row * wd, c * plane + (y + py) * wp + px]
        })
    }

    /// The output of the images `range` of `x` into `out` (their part of the output).
    fn forward(
        &self,
        (x, w): (&[f32], &[f32]),
        g: &ConvGeometry,
        range: std::ops::Range<usize>,
        out: &mut [f32],
        parallelism: Parallelism,
    ) {
        let (c_n, o_n, p_out) = (g.in_channels, g.out_channels, g.out_pixels());
        let (ow, wp, plane) = (g.output()[1], self.padded[1], self.plane());
        let taps = g.kernel[0] * g.kernel[1];
        let per_tap = Self::per_tap(g, w, false);
        let mut buffers = self.buffers(g);
        for (i, dst) in range.zip(out.chunks_exact_mut(o_n * p_out)) {
            self.pad(g, x, i, &mut buffers.padded);
            for (y0, rows, n) in self.bands(g) {
                let sums = &mut buffers.band[..o_n * n];
                for t in 0..taps {
                    let weight = Matrix::rows(&per_tap[t * o_n * c_n..][..o_n * c_n], c_n);
                    let input = Matrix {
                        data: &buffers.padded[self.shift(g, y0, t)..],
                        strides: (plane, 1),
                    };
                    product(
                        sums,
                        (n, 1),
                        [o_n, n, c_n],
                        weight,
                        input,
                        t > 0,
                        parallelism,
                    );
                }
                for (sums, dst) in sums.chunks_exact(n).zip(dst.chunks_exact_mut(p_out)) {
                    for (y, line) in (y0..y0 + rows).zip(sums.chunks(wp)) {
                        dst[y * ow..][..ow].copy_from_slice(&line[..ow]);
                    }
                }
            }
        }
    }

    /// [`backward_in_blocks`] for the images `range` (their part of the input's gradient `dx`
    /// when asked for): returns this thread's part of the weight's gradient when `want_w`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        (x, w, dy): (&[f32], &[f32], &[f32]),
        g: &ConvGeometry,
        (range, mut dx): (std::ops::Range<usize>, Option<&mut [f32]>),
        want_w: bool,
        parallelism: Parallelism,
    ) -> Option<Vec<f32>> {
        let (c_n, o_n, p_in, p_out) =
            (g.in_channels, g.out_channels, g.in_pixels(), g.out_pixels());
        let (ow, wp, plane) = (g.output()[1], self.padded[1], self.plane());
        let (taps, start) = (g.kernel[0] * g.kernel[1], range.start);
        let per_tap = Self::per_tap(g, w, false);
        let mut dw = want_w.then(|| vec![0.0f32; w.len()]);
        let mut buffers = self.buffers(g);
        let mut dpadded = vec![0.0f32; if dx.is_some() { c_n * plane } else { 0 }];
        let (len, wd) = (buffers.band_len, g.input[1]);
        for i in range {
            if want_w {
                self.pad(g, x, i, &mut buffers.padded);
            }
            dpadded.fill(0.0);
            let dy = &dy[i * o_n * p_out..][..o_n * p_out];
            for (y0, rows, n) in self.bands(g) {
                // dY of the band, `Wp` apart per row; the columns between rows are never
                // written, so they stay zero and add nothing below.
                for (line, dy) in buffers
                    .band
                    .chunks_exact_mut(len)
                    .zip(dy.chunks_exact(p_out))
                {
                    for (y, row) in (y0..y0 + rows).zip(line.chunks_mut(wp)) {
                        row[..ow].copy_from_slice(&dy[y * ow..][..ow]);
                    }
                }
                let dy_band = Matrix {
                    data: &buffers.band,
                    strides: (len, 1),
                };
                for t in 0..taps {
                    let shift = self.shift(g, y0, t);
                    if let Some(dw) = dw.as_mut() {
                        // dW_tap[o, c] += dY[o, :] · shifted[c, :]
                        let input = Matrix {
                            data: &buffers.padded[shift..],
                            strides: (1, plane),
                        };
                        let dw = &mut dw[t * o_n * c_n..][..o_n * c_n];
                        product(
                            dw,
                            (c_n, 1),
                            [o_n, c_n, n],
                            dy_band,
                            input,
                            true,
                            parallelism,
                        );
                    }
                    if dx.is_some() {
                        // dshifted[c, :] += W_tap[:, c] · dY[:, :]
                        let weight =
                            Matrix::transposed(&per_tap[t * o_n * c_n..][..o_n * c_n], c_n);
                        let dst = &mut dpadded[shift..];
                        product(
                            dst,
                            (plane, 1),
                            [c_n, n, o_n],
                            weight,
                            dy_band,
                            true,
                            parallelism,
                        );
                    }
                }
            }
            if let Some(dx) = dx.as_deref_mut() {
                let dx = &mut dx[(i - start) * c_n * p_in..][..c_n * p_in];
                for [to, from] in self.inside(g) {
                    dx[to..to + wd].copy_from_slice(&dpadded[from..from + wd]);
                }
            }
        }
        dw.map(|dw| Self::per_tap(g, &dw, true))
    }
}

/// The ranges of images each thread works on, and whether the matrix products should use the
/// threads themselves (fewer images than threads).
fn split(batch: usize) -> (Vec<std::ops::Range<usize>>, Parallelism) {
    let threads = rayon::current_num_threads().max(1);
    let ranges = thread_ranges(batch);
    let parallelism = if ranges.len() < threads {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    (ranges, parallelism)
}

/// The input pixel an output pixel's kernel tap reads, or `None` in the padding.
#[inline]
fn tap(out: usize, k: usize, stride: usize, pad: usize, size: usize) -> Option<usize> {
    (out * stride + k).checked_sub(pad).filter(|&i| i < size)
}

/// The columns of one kernel tap along one output row of a tile: `run` is the range of block
/// columns, `inside` the part of it whose tap lands in the image (`None` when none does), with
/// the input index (within the image) of its first column; consecutive columns are `stride`
/// input pixels apart.
struct TapRun {
    k: usize,
    run: std::ops::Range<usize>,
    inside: Option<(std::ops::Range<usize>, usize)>,
}

/// Calls `visit` for every [`TapRun`] of the tile `pix0..end` of one image's output pixels, in
/// the column matrix's row order.
fn tap_runs(g: &ConvGeometry, pix0: usize, end: usize, mut visit: impl FnMut(TapRun)) {
    let (c_n, [h, w], [kh, kw], [sy, sx], [py, px]) =
        (g.in_channels, g.input, g.kernel, g.stride, g.padding);
    let out_w = g.output()[1];
    for c in 0..c_n {
        for ky in 0..kh {
            for kx in 0..kw {
                let k = (c * kh + ky) * kw + kx;
                let mut pix = pix0;
                while pix < end {
                    let (oy, ox0) = (pix / out_w, pix % out_w);
                    let ox1 = out_w.min(ox0 + end - pix);
                    let col = pix - pix0;
                    let run = col..col + ox1 - ox0;
                    // ox·sx + kx − px ∈ [0, w)  ⇔  ox ∈ [⌈(px − kx) / sx⌉, ⌈(w + px − kx) / sx⌉)
                    let lo = px.saturating_sub(kx).div_ceil(sx).clamp(ox0, ox1);
                    let hi = (w + px).saturating_sub(kx).div_ceil(sx).clamp(lo, ox1);
                    let row = tap(oy, ky, sy, py, h).filter(|_| lo < hi);
                    let inside = row.map(|iy| {
                        let cols = col + lo - ox0..col + hi - ox0;
                        (cols, (c * h + iy) * w + lo * sx + kx - px)
                    });
                    visit(TapRun { k, run, inside });
                    pix += ox1 - ox0;
                }
            }
        }
    }
}

/// Marks a kernel tap that falls in the padding in a [`tap_table`].
const PADDING: usize = usize::MAX;

/// For each kernel tap `ky · kw + kx` and each output pixel of an image, the input pixel the tap
/// reads, or [`PADDING`]: the gather of a group of whole small images, where the row-by-row
/// runs of a large image would be a few pixels long.
fn tap_table(g: &ConvGeometry) -> Vec<usize> {
    let ([h, w], [kh, kw], [sy, sx], [py, px]) = (g.input, g.kernel, g.stride, g.padding);
    let [oh, ow] = g.output();
    let mut table = Vec::with_capacity(kh * kw * oh * ow);
    for ky in 0..kh {
        for kx in 0..kw {
            for oy in 0..oh {
                for ox in 0..ow {
                    table.push(match (tap(oy, ky, sy, py, h), tap(ox, kx, sx, px, w)) {
                        (Some(iy), Some(ix)) => iy * w + ix,
                        _ => PADDING,
                    });
                }
            }
        }
    }
    table
}

/// [`im2col`] of a group of whole images (`first`, `first + 1`, …), through [`tap_table`].
fn im2col_images(x: &[f32], g: &ConvGeometry, first: usize, table: &[usize], cols: &mut [f32]) {
    let (c_n, p_in, p_out) = (g.in_channels, g.in_pixels(), g.out_pixels());
    let taps = g.kernel[0] * g.kernel[1];
    let rows = cols.len() / g.k();
    for c in 0..c_n {
        for t in 0..taps {
            let line = &mut cols[(c * taps + t) * rows..][..rows];
            let table = &table[t * p_out..][..p_out];
            for (i, dst) in line.chunks_exact_mut(p_out).enumerate() {
                let plane = &x[((first + i) * c_n + c) * p_in..][..p_in];
                for (d, &at) in dst.iter_mut().zip(table) {
                    *d = if at == PADDING { 0.0 } else { plane[at] };
                }
            }
        }
    }
}

/// [`col2im`] of a group of whole images, through [`tap_table`]; `dx` starts at image `start`.
fn col2im_images(
    dcols: &[f32],
    g: &ConvGeometry,
    first: usize,
    table: &[usize],
    dx: &mut [f32],
    start: usize,
) {
    let (c_n, p_in, p_out) = (g.in_channels, g.in_pixels(), g.out_pixels());
    let taps = g.kernel[0] * g.kernel[1];
    let rows = dcols.len() / g.k();
    for c in 0..c_n {
        for t in 0..taps {
            let line = &dcols[(c * taps + t) * rows..][..rows];
            let table = &table[t * p_out..][..p_out];
            for (i, src) in line.chunks_exact(p_out).enumerate() {
                let plane = &mut dx[((first + i - start) * c_n + c) * p_in..][..p_in];
                for (s, &at) in src.iter().zip(table) {
                    if at != PADDING {
                        plane[at] += s;
                    }
                }
            }
        }
    }
}

/// Fills the block's transposed columns `cols` (`[K, rows]`) from the NCHW input `x`; `table` is
/// the geometry's [`tap_table`].
fn im2col(x: &[f32], g: &ConvGeometry, block: Block, table: &[usize], cols: &mut [f32]) {
    let (image, pix0, rows) = match block {
        Block::Tile { image, pix0, len } => (image, pix0, len),
        Block::Images { first, .. } => return im2col_images(x, g, first, table, cols),
    };
    let image_len = g.in_channels * g.in_pixels();
    let image = &x[image * image_len..][..image_len];
    let step = g.stride[1];
    tap_runs(g, pix0, pix0 + rows, |TapRun { k, run, inside }| {
        let line = &mut cols[k * rows..][..rows];
        let Some((inner, at)) = inside else {
            line[run].fill(0.0);
            return;
        };
        line[run.start..inner.start].fill(0.0);
        line[inner.end..run.end].fill(0.0);
        let dst = &mut line[inner];
        if step == 1 {
            dst.copy_from_slice(&image[at..at + dst.len()]);
        } else {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = image[at + j * step];
            }
        }
    });
}

/// Adds the block's transposed column gradients `dcols` (`[K, rows]`) onto the NCHW input
/// gradient `dx`, which starts at image `start`; `table` is the geometry's [`tap_table`].
fn col2im(
    dcols: &[f32],
    g: &ConvGeometry,
    block: Block,
    table: &[usize],
    dx: &mut [f32],
    start: usize,
) {
    let (image, pix0, rows) = match block {
        Block::Tile { image, pix0, len } => (image, pix0, len),
        Block::Images { first, .. } => {
            return col2im_images(dcols, g, first, table, dx, start);
        }
    };
    let image_len = g.in_channels * g.in_pixels();
    let image = &mut dx[(image - start) * image_len..][..image_len];
    let step = g.stride[1];
    tap_runs(g, pix0, pix0 + rows, |TapRun { k, inside, .. }| {
        let Some((inner, at)) = inside else {
            return;
        };
        let src = &dcols[k * rows..][inner];
        if step == 1 {
            for (d, s) in image[at..at + src.len()].iter_mut().zip(src) {
                *d += s;
            }
        } else {
            for (j, s) in src.iter().enumerate() {
                image[at + j * step] += s;
            }
        }
    });
}

/// A matrix operand of [`product`]: its data and its (row, column) strides.
#[derive(Clone, Copy)]
struct Matrix<'a> {
    data: &'a [f32],
    strides: (usize, usize),
}

impl<'a> Matrix<'a> {
    /// Row-major, `cols` entries per row.
    fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            strides: (cols, 1),
        }
    }

    /// The transpose of a row-major matrix with `cols` entries per row.
    fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            strides: (1, cols),
        }
    }

    fn covers(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.strides.0 + (cols - 1) * self.strides.1 < self.data.len()
    }
}

/// Images per product of [`per_image_rows`].
const ROWS_PER_PRODUCT: usize = 64;

/// `dst = lhs × rhs` for `lhs` of one image per row (`[images, k]`, row-major) and `dst` likewise
/// (`[images, n]`), in products of exactly [`ROWS_PER_PRODUCT`] rows, the last one padded with
/// zero rows. gemm's order of summation depends on the product's shape (a single row goes down
/// its matrix-vector path, and its blocking of `k` follows `m` and `n`), so with the number of
/// rows fixed an image's output does not depend on how many images share its batch or thread
/// (`agc predict` gives the same probabilities at any batch size).
fn per_image_rows(
    dst: &mut [f32],
    lhs: &[f32],
    [n, k]: [usize; 2],
    rhs: Matrix<'_>,
    parallelism: Parallelism,
) {
    let multiply = |dst: &mut [f32], lhs: &[f32]| {
        let size = [ROWS_PER_PRODUCT, n, k];
        product(
            dst,
            (n, 1),
            size,
            Matrix::rows(lhs, k),
            rhs,
            false,
            parallelism,
        );
    };
    let (mut rows, mut out) = (Vec::new(), Vec::new());
    for (dst, lhs) in dst
        .chunks_mut(ROWS_PER_PRODUCT * n)
        .zip(lhs.chunks(ROWS_PER_PRODUCT * k))
    {
        if dst.len() == ROWS_PER_PRODUCT * n {
            multiply(dst, lhs);
        } else {
            rows.clear();
            rows.extend_from_slice(lhs);
            rows.resize(ROWS_PER_PRODUCT * k, 0.0);
            out.resize(ROWS_PER_PRODUCT * n, 0.0);
            multiply(&mut out, &rows);
            dst.copy_from_slice(&out[..dst.len()]);
        }
    }
}

/// `dst (+)= lhs[m, k] × rhs[k, n]`, `dst` with (row, column) strides `dst_strides`;
/// `accumulate` adds onto `dst`. The one call into `gemm`, which takes raw pointers.
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)]
fn product(
    dst: &mut [f32],
    dst_strides: (usize, usize),
    [m, n, k]: [usize; 3],
    lhs: Matrix<'_>,
    rhs: Matrix<'_>,
    accumulate: bool,
    parallelism: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    let dst_view = Matrix {
        data: dst,
        strides: dst_strides,
    };
    assert!(dst_view.covers(m, n), "gemm: destination too short");
    assert!(
        lhs.covers(m, k) && rhs.covers(k, n),
        "gemm: operand too short"
    );
    let s = |v: usize| v as isize;
    // SAFETY: every pointer covers its strided extent (checked above: m × n for dst, m × k and
    // k × n for the operands), dst is a unique borrow and so aliases neither operand, and gemm
    // computes dst := alpha·dst + beta·lhs·rhs for f32 with alpha read only when read_dst.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            s(dst_strides.1),
            s(dst_strides.0),
            accumulate,
            lhs.data.as_ptr(),
            s(lhs.strides.1),
            s(lhs.strides.0),
            rhs.data.as_ptr(),
            s(rhs.strides.1),
            s(rhs.strides.0),
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `dst.copy_from_slice(src)` for the planes of [`scatter_images`] and [`gather_images`], which
/// can be a few pixels each: a call to `memmove` per plane took a tenth of the CPU preset's
/// ChipNet training (8-pixel chips, profiled before [`Dense`]), so small planes are copied in
/// place, four values at a time.
#[inline]
fn copy_plane(dst: &mut [f32], src: &[f32]) {
    if dst.len() >= 32 {
        dst.copy_from_slice(src);
        return;
    }
    let (mut d, mut s) = (dst.chunks_exact_mut(4), src.chunks_exact(4));
    for (d, s) in (&mut d).zip(&mut s) {
        let d: &mut [f32; 4] = d.try_into().expect("chunks of 4");
        *d = s.try_into().expect("chunks of 4");
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// Copies `src` (`[channels, count · pixels]`, the images side by side) into images
/// `first..first + count` of an NCHW tensor of `channels` planes of `pixels` pixels that starts
/// at image `start`.
fn scatter_images(
    nchw: &mut [f32],
    start: usize,
    [channels, pixels]: [usize; 2],
    [first, count]: [usize; 2],
    src: &[f32],
) {
    for (ch, line) in src.chunks(count * pixels).take(channels).enumerate() {
        for (i, image) in line.chunks(pixels).enumerate() {
            let plane = (first + i - start) * channels + ch;
            copy_plane(&mut nchw[plane * pixels..][..pixels], image);
        }
    }
}

/// Copies images `first..first + count` of an NCHW tensor of `channels` planes of `pixels`
/// pixels into `dst` (`[channels, count · pixels]`), side by side.
fn gather_images(
    nchw: &[f32],
    [channels, pixels]: [usize; 2],
    [first, count]: [usize; 2],
    dst: &mut [f32],
) {
    for (ch, line) in dst.chunks_mut(count * pixels).take(channels).enumerate() {
        for (i, image) in line.chunks_mut(pixels).enumerate() {
            let plane = (first + i) * channels + ch;
            copy_plane(image, &nchw[plane * pixels..][..pixels]);
        }
    }
}

/// Forward pass: `x` `[N, C, H, W]`, `w` `[O, C, kh, kw]` → `[N, O, Ho, Wo]`.
pub fn conv2d_forward(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    forward_in_blocks(x, w, g, BLOCKING)
}

fn forward_in_blocks(x: &[f32], w: &[f32], g: &ConvGeometry, blocking: Blocking) -> Vec<f32> {
    let (o_n, p_out, k) = (g.out_channels, g.out_pixels(), g.k());
    debug_assert_eq!(x.len(), g.batch * g.in_channels * g.in_pixels());
    debug_assert_eq!(w.len(), g.weight_len());
    let mut out = vec![0.0f32; g.batch * o_n * p_out];
    let (ranges, parallelism) = split(g.batch);
    let parts = split_runs(&mut out, &ranges, o_n * p_out);
    if let Some(dense) = Dense::of(g, blocking) {
        // Y[n, :] = X[n, :] · Dᵀ
        let (matrix, x_len, y_len) = (
            dense.matrix(g, w),
            g.in_channels * g.in_pixels(),
            o_n * p_out,
        );
        ranges.into_par_iter().zip(parts).for_each(|(range, out)| {
            let x = &x[range.start * x_len..range.end * x_len];
            let matrix = Matrix::transposed(&matrix, x_len);
            per_image_rows(out, x, [y_len, x_len], matrix, parallelism);
        });
        return out;
    }
    if let Some(shifted) = Shifted::of(g, blocking) {
        ranges.into_par_iter().zip(parts).for_each(|(range, out)| {
            shifted.forward((x, w), g, range, out, parallelism);
        });
        return out;
    }
    let table = g.table_for(blocking);
    ranges.into_par_iter().zip(parts).for_each(|(range, out)| {
        let (mut cols, mut tmp) = (Vec::new(), Vec::new());
        let start = range.start;
        let w = Matrix::rows(w, k);
        for block in g.blocks(range, blocking) {
            let rows = block.rows(g);
            cols.resize(k * rows, 0.0);
            im2col(x, g, block, &table, &mut cols);
            let cols = Matrix::rows(&cols, rows);
            // out[o, pixel] = W[o, :] · columns[:, pixel]
            // A tile of one image is written in place, a group of images side by side first.
            match block {
                Block::Tile { image, pix0, .. } => {
                    let at = (image - start) * o_n * p_out + pix0;
                    let dst = &mut out[at..];
                    product(dst, (p_out, 1), [o_n, rows, k], w, cols, false, parallelism);
                }
                Block::Images { first, count } => {
                    tmp.resize(o_n * rows, 0.0);
                    product(
                        &mut tmp,
                        (rows, 1),
                        [o_n, rows, k],
                        w,
                        cols,
                        false,
                        parallelism,
                    );
                    scatter_images(out, start, [o_n, p_out], [first, count], &tmp);
                }
            }
        }
    });
    out
}

/// Backward pass: from `x`, `w` and the output's gradient `dy` (`[N, O, Ho, Wo]`), the gradients
/// of the input (`[N, C, H, W]`) and of the weight (`[O, C, kh, kw]`), each only when asked for.
pub fn conv2d_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    want_x: bool,
    want_w: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    backward_in_blocks(x, w, dy, g, [want_x, want_w], BLOCKING)
}

fn backward_in_blocks(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    [want_x, want_w]: [bool; 2],
    blocking: Blocking,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (c_n, o_n) = (g.in_channels, g.out_channels);
    let (p_in, p_out, k) = (g.in_pixels(), g.out_pixels(), g.k());
    debug_assert_eq!(dy.len(), g.batch * o_n * p_out);
    let mut dx = if want_x {
        vec![0.0f32; g.batch * c_n * p_in]
    } else {
        Vec::new()
    };
    let (ranges, parallelism) = split(g.batch);
    let table = g.table_for(blocking);
    let shifted = Shifted::of(g, blocking);
    let dense = Dense::of(g, blocking).map(|dense| {
        let matrix = dense.matrix(g, w);
        (dense, matrix)
    });
    let parts: Vec<Option<&mut [f32]>> = if want_x {
        split_runs(&mut dx, &ranges, c_n * p_in)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        ranges.iter().map(|_| None).collect()
    };
    let partials: Vec<Option<Vec<f32>>> = ranges
        .into_par_iter()
        .zip(parts)
        .map(|(range, mut dx)| {
            if let Some((_, matrix)) = &dense {
                return backward_dense(x, dy, g, matrix, (range, dx), want_w, parallelism);
            }
            if let Some(shifted) = &shifted {
                return shifted.backward((x, w, dy), g, (range, dx), want_w, parallelism);
            }
            let mut dw = want_w.then(|| vec![0.0f32; o_n * k]);
            let (mut cols, mut dys, mut dcols) = (Vec::new(), Vec::new(), Vec::new());
            let start = range.start;
            for block in g.blocks(range, blocking) {
                let rows = block.rows(g);
                // dY of the block as an [O, rows] matrix: in place for a tile of one image.
                let dy_block = match block {
                    Block::Tile { image, pix0, .. } => Matrix {
                        data: &dy[image * o_n * p_out + pix0..],
                        strides: (p_out, 1),
                    },
                    Block::Images { first, count } => {
                        dys.resize(o_n * rows, 0.0);
                        gather_images(dy, [o_n, p_out], [first, count], &mut dys);
                        Matrix::rows(&dys, rows)
                    }
                };
                if let Some(dw) = dw.as_mut() {
                    // dW[o, kk] += dY[o, :] · columns[kk, :]
                    cols.resize(k * rows, 0.0);
                    im2col(x, g, block, &table, &mut cols);
                    product(
                        dw,
                        (k, 1),
                        [o_n, k, rows],
                        dy_block,
                        Matrix::transposed(&cols, rows),
                        true,
                        parallelism,
                    );
                }
                if let Some(dx) = dx.as_deref_mut() {
                    // dcolumns[kk, pixel] = W[:, kk] · dY[:, pixel]
                    dcols.resize(k * rows, 0.0);
                    product(
                        &mut dcols,
                        (rows, 1),
                        [k, rows, o_n],
                        Matrix::transposed(w, k),
                        dy_block,
                        false,
                        parallelism,
                    );
                    col2im(&dcols, g, block, &table, dx, start);
                }
            }
            dw
        })
        .collect();
    let dw = want_w.then(|| {
        // thread_ranges gives one range at least, and each returns its part when want_w.
        let mut parts = partials.into_iter().flatten();
        let mut sum = parts.next().expect("one range at least");
        for part in parts {
            for (s, p) in sum.iter_mut().zip(&part) {
                *s += p;
            }
        }
        match &dense {
            Some((dense, _)) => dense.weight_gradient(g, sum),
            None => sum,
        }
    });
    (want_x.then_some(dx), dw)
}

/// [`backward_in_blocks`] for images of a [`Dense`] geometry, over the images `range` (their
/// part of the input's gradient `dx` when asked for): returns `dD = dYᵀ · X`, which the caller
/// folds into the weight's gradient after the threads' sum, when `want_w`.
fn backward_dense(
    x: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    matrix: &[f32],
    (range, dx): (std::ops::Range<usize>, Option<&mut [f32]>),
    want_w: bool,
    parallelism: Parallelism,
) -> Option<Vec<f32>> {
    let (x_len, y_len) = (
        g.in_channels * g.in_pixels(),
        g.out_channels * g.out_pixels(),
    );
    let images = range.len();
    let x = &x[range.start * x_len..range.end * x_len];
    let dy = &dy[range.start * y_len..range.end * y_len];
    if let Some(dx) = dx {
        // dX[n, :] = dY[n, :] · D
        per_image_rows(
            dx,
            dy,
            [x_len, y_len],
            Matrix::rows(matrix, x_len),
            parallelism,
        );
    }
    want_w.then(|| {
        let mut dd = vec![0.0f32; y_len * x_len];
        let (dy, x) = (Matrix::transposed(dy, y_len), Matrix::rows(x, x_len));
        product(
            &mut dd,
            (x_len, 1),
            [y_len, x_len, images],
            dy,
            x,
            false,
            parallelism,
        );
        dd
    })
}

#[cfg(test)]
mod tests {
    // x, w, y, dx, dw: the names of the convolution's formulas.
    #![allow(clippy::many_single_char_names, clippy::similar_names)]

    use super::*;

    /// Direct convolution, for reference.
    fn naive(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let [oh, ow] = g.output();
        let [h, wd] = g.input;
        let [kh, kw] = g.kernel;
        let mut y = vec![0.0f32; g.batch * g.out_channels * oh * ow];
        for n in 0..g.batch {
            for o in 0..g.out_channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = 0.0f64;
                        for c in 0..g.in_channels {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let (Some(iy), Some(ix)) = (
                                        tap(oy, ky, g.stride[0], g.padding[0], h),
                                        tap(ox, kx, g.stride[1], g.padding[1], wd),
                                    ) else {
                                        continue;
                                    };
                                    s += f64::from(x[((n * g.in_channels + c) * h + iy) * wd + ix])
                                        * f64::from(
                                            w[((o * g.in_channels + c) * kh + ky) * kw + kx],
                                        );
                                }
                            }
                        }
                        y[((n * g.out_channels + o) * oh + oy) * ow + ox] = s as f32;
                    }
                }
            }
        }
        y
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "element {i}: {x} against {y}"
            );
        }
    }

    fn geometries() -> Vec<ConvGeometry> {
        let g = |batch, in_channels, input, out_channels, k, stride, padding| ConvGeometry {
            batch,
            in_channels,
            input,
            out_channels,
            kernel: [k, k],
            stride: [stride, stride],
            padding: [padding, padding],
        };
        vec![
            g(3, 4, [7, 5], 6, 3, 1, 1),
            g(5, 3, [9, 8], 4, 3, 2, 1),
            g(2, 3, [11, 11], 5, 7, 2, 3),
            g(4, 6, [5, 5], 3, 1, 1, 0),
            g(3, 6, [6, 5], 7, 1, 2, 0),
            g(7, 5, [1, 1], 4, 3, 1, 1),
            g(1, 2, [4, 6], 3, 3, 1, 0),
            // Small images that are convolved as a dense matrix: 2×2 (one output pixel under a
            // stride of 2), an 8×8 stem under a 7×7 kernel like ChipNet's 8-pixel chips, and
            // one output pixel from all of a 3×3 image.
            g(5, 3, [2, 2], 4, 3, 1, 1),
            g(6, 3, [2, 2], 5, 3, 2, 1),
            g(8, 2, [8, 8], 3, 7, 2, 3),
            g(5, 2, [3, 3], 3, 3, 1, 0),
            // A 1×1 kernel over 1×1 images: the weight itself.
            g(4, 5, [1, 1], 3, 1, 1, 0),
            // More images per thread than one product's ROWS_PER_PRODUCT: whole products and
            // a padded last one.
            g(150, 2, [2, 2], 3, 3, 1, 1),
            // Images whose tiles are convolved one kernel tap at a time (`Shifted`): a 3×3
            // kernel over 16×16 images, a 5×5 one over 12×33, no padding over 10×20.
            g(2, 3, [16, 16], 4, 3, 1, 1),
            g(3, 2, [12, 33], 3, 5, 1, 2),
            g(2, 3, [10, 20], 2, 3, 1, 0),
        ]
    }

    /// Small grouped images are convolved as a dense matrix, large ones and tiles through im2col;
    /// the dense matrix holds each weight where its tap joins an output pixel to an input pixel.
    #[test]
    fn small_images_are_convolved_as_a_dense_matrix() {
        let dense = |g: &ConvGeometry| Dense::of(g, BLOCKING).is_some();
        let chips: Vec<ConvGeometry> = geometries()[7..11].to_vec();
        assert_eq!(chips.len(), 4);
        assert!(chips.iter().all(dense), "the small images above");
        let one_pixel = geometries()[5];
        assert!(dense(&one_pixel), "1x1 images under a 3x3 kernel");
        // More input pixels than 1.5 per tap: im2col, as in tiles of one image.
        assert!(!dense(&geometries()[0]), "7x5 images under a 3x3 kernel");
        assert!(
            Dense::of(
                &chips[0],
                Blocking {
                    columns: 1,
                    min_rows: 1
                }
            )
            .is_none()
        );
        // D against what im2col moves per image, whatever the batch: 512 to 512 channels over
        // 1×1 images, 262 144 entries against 5 120 values (51 per value): dense; 1 024 to
        // 1 024, 1 048 576 against 10 240 (102): im2col.
        let mut wide = geometries()[5];
        for batch in [1, 7, 98, 4096] {
            (wide.batch, wide.in_channels, wide.out_channels) = (batch, 512, 512);
            assert!(dense(&wide), "batch {batch}");
            (wide.in_channels, wide.out_channels) = (1024, 1024);
            assert!(!dense(&wide), "batch {batch}");
        }
        // A 1×1 kernel: D is the weight, 64 · 64 entries against 128 values per image.
        (
            wide.in_channels,
            wide.out_channels,
            wide.kernel,
            wide.padding,
        ) = (64, 64, [1, 1], [0, 0]);
        assert!(dense(&wide) && Dense::is_weight(&wide));
        // One 2×2 image, one channel in and out, a 3×3 kernel numbered 0..9 with padding 1:
        // output pixel (0, 0) reads input (0, 0) through the kernel's centre (tap 4), (0, 1)
        // through tap 5, (1, 0) through tap 7 and (1, 1) through tap 8.
        let g = ConvGeometry {
            batch: 1,
            in_channels: 1,
            input: [2, 2],
            out_channels: 1,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
        };
        let w: Vec<f32> = (0..9u8).map(f32::from).collect();
        let d = Dense::of(&g, BLOCKING).expect("dense").matrix(&g, &w);
        #[rustfmt::skip]
        let expected = [
            4.0, 5.0, 7.0, 8.0,
            3.0, 4.0, 6.0, 7.0,
            1.0, 2.0, 4.0, 5.0,
            0.0, 1.0, 3.0, 4.0,
        ];
        assert_eq!(*d, expected);
        // Each weight's gradient is the sum of its entries: tap 4 appears four times.
        let dw = Dense::of(&g, BLOCKING)
            .expect("dense")
            .weight_gradient(&g, vec![1.0; 16]);
        assert_eq!(dw, [1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
    }

    /// Tiles of large images at stride 1 are convolved tap by tap over a padded copy, unless the
    /// columns past each row's end would add more than an eighth of the work.
    #[test]
    fn large_images_at_stride_1_are_convolved_tap_by_tap() {
        let tiles = Blocking {
            columns: 1,
            min_rows: 1,
        };
        let shifted = |g: &ConvGeometry, blocking| Shifted::of(g, blocking).is_some();
        let all = geometries();
        let taps: Vec<ConvGeometry> = all[all.len() - 3..].to_vec();
        assert!(taps.iter().all(|g| shifted(g, tiles)), "the three above");
        assert!(shifted(&all[3], tiles), "a 1x1 kernel at stride 1");
        assert!(
            !shifted(&all[0], tiles),
            "7x5 images: 2 of 7 columns dropped"
        );
        assert!(!shifted(&all[1], tiles), "stride 2");
        // Grouped small images are never shifted.
        assert!(!taps.iter().any(|g| shifted(g, BLOCKING)));
        // ResNet-18's 3×3 convolutions over 56² and 28² at batch 8 are; over 14² and 7² (groups
        // of images) and at stride 2, not.
        let resnet = |channels, side, stride| ConvGeometry {
            batch: 8,
            in_channels: channels,
            input: [side, side],
            out_channels: channels,
            kernel: [3, 3],
            stride: [stride, stride],
            padding: [1, 1],
        };
        assert!(shifted(&resnet(64, 56, 1), BLOCKING));
        assert!(shifted(&resnet(128, 28, 1), BLOCKING));
        assert!(!shifted(&resnet(256, 14, 1), BLOCKING));
        assert!(!shifted(&resnet(512, 7, 1), BLOCKING));
        assert!(!shifted(&resnet(64, 56, 2), BLOCKING));
        // Bands of whole rows, about `min_rows` output pixels each, covering every row once.
        let g = resnet(64, 56, 1);
        let s = Shifted::of(&g, BLOCKING).expect("shifted");
        assert_eq!((s.padded, s.band), ([58, 58], 5));
        let bands: Vec<_> = s.bands(&g).collect();
        assert_eq!(bands[0], (0, 5, 4 * 58 + 56));
        assert_eq!(*bands.last().expect("bands"), (55, 1, 56));
        assert_eq!(bands.iter().map(|b| b.1).sum::<usize>(), 56);
        // Tap (1, 2) of the band from output row 5 starts at padded pixel (6, 2).
        assert_eq!(s.shift(&g, 5, 5), 6 * 58 + 2);
    }

    /// Blocks of one output pixel, of tiles of an image and of groups of whole images.
    const BLOCK_SIZES: [Blocking; 5] = [
        Blocking {
            columns: 1,
            min_rows: 1,
        },
        Blocking {
            columns: 60,
            min_rows: 1,
        },
        Blocking {
            columns: 400,
            min_rows: 1,
        },
        Blocking {
            columns: 1,
            min_rows: 40,
        },
        BLOCKING,
    ];

    #[test]
    fn forward_matches_a_direct_convolution() {
        for (i, g) in geometries().into_iter().enumerate() {
            let x = values(g.batch * g.in_channels * g.in_pixels(), 2 * i as u32);
            let w = values(g.weight_len(), 2 * i as u32 + 1);
            let expected = naive(&x, &w, &g);
            for blocking in BLOCK_SIZES {
                close(&forward_in_blocks(&x, &w, &g, blocking), &expected, 1e-5);
            }
        }
    }

    #[test]
    fn blocks_are_tiles_of_large_images_and_groups_of_small_ones() {
        let g = geometries()[0];
        assert_eq!(g.batch, 3);
        let (p, k) = (g.out_pixels(), g.k());
        let blocks = |columns, min_rows| {
            let blocks = g.blocks(0..g.batch, Blocking { columns, min_rows });
            let covered: usize = blocks.iter().map(|b| b.rows(&g)).sum();
            assert_eq!(covered, g.batch * p, "every output pixel once");
            blocks
        };
        let half = p.div_ceil(2);
        let tiles: Vec<Block> = (0..g.batch)
            .flat_map(|image| {
                [(0, half), (half, p - half)].map(|(pix0, len)| Block::Tile { image, pix0, len })
            })
            .collect();
        assert_eq!(blocks(k * half, 1), tiles, "two tiles per image");
        let pairs = vec![
            Block::Images { first: 0, count: 2 },
            Block::Images { first: 2, count: 1 },
        ];
        assert_eq!(
            blocks(k * p * 2, 1),
            pairs,
            "groups of two images, then the last one alone"
        );
        assert_eq!(
            blocks(1, 2 * p),
            pairs,
            "min_rows outweighs a tiny column budget"
        );
        assert_eq!(
            blocks(k * p, 1),
            (0..g.batch)
                .map(|image| Block::Tile {
                    image,
                    pix0: 0,
                    len: p
                })
                .collect::<Vec<_>>(),
            "a block of exactly one image is a tile of it"
        );
    }

    /// The gradients against the direct convolution's: for a linear map, the input's gradient
    /// of `sum(y · dy)` is found by convolving unit vectors, and the weight's likewise.
    #[test]
    fn backward_matches_the_direct_convolutions_gradients() {
        for (i, g) in geometries().into_iter().enumerate() {
            let x = values(g.batch * g.in_channels * g.in_pixels(), 3 * i as u32);
            let w = values(g.weight_len(), 3 * i as u32 + 1);
            let y_len = g.batch * g.out_channels * g.out_pixels();
            let dy = values(y_len, 3 * i as u32 + 2);
            let dot = |y: &[f32]| {
                y.iter()
                    .zip(&dy)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>()
            };
            let (dx, dw) = conv2d_backward(&x, &w, &dy, &g, true, true);
            let (dx, dw) = (dx.unwrap(), dw.unwrap());
            for blocking in BLOCK_SIZES {
                let (bx, bw) = backward_in_blocks(&x, &w, &dy, &g, [true, true], blocking);
                close(&bx.unwrap(), &dx, 1e-5);
                close(&bw.unwrap(), &dw, 1e-5);
            }
            let expect_dx: Vec<f32> = (0..x.len())
                .map(|j| {
                    let mut e = vec![0.0f32; x.len()];
                    e[j] = 1.0;
                    dot(&naive(&e, &w, &g)) as f32
                })
                .collect();
            let expect_dw: Vec<f32> = (0..w.len())
                .map(|j| {
                    let mut e = vec![0.0f32; w.len()];
                    e[j] = 1.0;
                    dot(&naive(&x, &e, &g)) as f32
                })
                .collect();
            close(&dx, &expect_dx, 1e-5);
            close(&dw, &expect_dw, 1e-5);
            let (only_x, none_w) = conv2d_backward(&x, &w, &dy, &g, true, false);
            assert!(none_w.is_none());
            assert_eq!(only_x.unwrap(), dx);
        }
    }
}
