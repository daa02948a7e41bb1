//! Seeded image augmentations for training and test-time augmentation: premade hair layers (the
//! SIIM-ISIC "DrawHair" augmentation), flips, rotation with a mirrored border, colour jitter, and
//! ImageNet normalisation.
//!
//! Images are 8-bit RGB, `size`×`size`, row-major HWC bytes. Every random choice comes from a
//! [`ChaCha8Rng`] seeded by the caller, so the same seed always gives the same bytes, on every
//! machine and in every data-loader thread.

use std::fmt;
use std::sync::Arc;

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// ImageNet channel means (RGB), for values scaled to `[0, 1]`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB), for values scaled to `[0, 1]`.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Hair counts a premade hair layer draws from; zero appears twice, so a fifth of the layers are
/// empty. (The first version used 50–600 hairs per layer: at 224 px that covered most of the
/// image, hid the lesion, and a model trained with it learned nothing; see docs/results.md.)
pub const HAIR_COUNTS: [usize; 10] = [0, 0, 2, 4, 6, 8, 12, 16, 24, 32];

/// The five dark hair colours (RGB) a hair is drawn in.
pub const HAIR_COLOURS: [[u8; 3]; 5] = [
    [18, 14, 12], // near black
    [40, 28, 20], // dark brown
    [66, 46, 32], // brown
    [36, 34, 38], // dark grey
    [88, 66, 46], // light brown
];

/// Hair layers an [`Augmenter`] builds when its config asks for hair.
pub const DEFAULT_HAIR_LAYERS: usize = 20;

/// How many canvas pixels per image pixel (each way) hairs are drawn at before downscaling.
const SUPERSAMPLE: usize = 2;

/// Converts `size`×`size` RGB bytes (HWC) to `[3, size, size]` floats (CHW), each value
/// normalised as `(value / 255 - mean) / std` with the ImageNet statistics.
///
/// # Panics
/// If `pixels.len() != size * size * 3`.
pub fn normalize(pixels: &[u8], size: usize) -> Vec<f32> {
    check_len(pixels, size);
    let plane = size * size;
    // One lookup table per channel: 768 divisions instead of 3·S².
    let lut: [[f32; 256]; 3] = std::array::from_fn(|c| {
        std::array::from_fn(|v| (v as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
    });
    let mut out = vec![0.0; 3 * plane];
    let (red, rest) = out.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    for (i, px) in pixels.chunks_exact(3).enumerate() {
        red[i] = lut[0][usize::from(px[0])];
        green[i] = lut[1][usize::from(px[1])];
        blue[i] = lut[2][usize::from(px[2])];
    }
    out
}

/// A per-sample seed from a run seed, an epoch and a sample index (SplitMix64 mixing; distinct
/// indices of one run and epoch always give distinct seeds).
pub fn sample_seed(run_seed: u64, epoch: u64, index: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(run_seed) ^ epoch) ^ index)
}

/// One SplitMix64 step: a bijective mix of 64 bits.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Panics unless `pixels` holds a `size`×`size` RGB image.
fn check_len(pixels: &[u8], size: usize) {
    assert_eq!(
        pixels.len(),
        size * size * 3,
        "expected a {size}×{size} RGB image ({} bytes), got {} bytes",
        size * size * 3,
        pixels.len()
    );
}

/// Mirrors a `size`×`size` RGB image left to right, in place.
///
/// # Panics
/// If `pixels.len() != size * size * 3`.
pub fn flip_horizontal(pixels: &mut [u8], size: usize) {
    check_len(pixels, size);
    if size == 0 {
        return;
    }
    for row in pixels.chunks_exact_mut(size * 3) {
        let (px, _) = row.as_chunks_mut::<3>();
        px.reverse();
    }
}

/// Mirrors a `size`×`size` RGB image top to bottom, in place.
///
/// # Panics
/// If `pixels.len() != size * size * 3`.
pub fn flip_vertical(pixels: &mut [u8], size: usize) {
    check_len(pixels, size);
    let stride = size * 3;
    for y in 0..size / 2 {
        let (top, bottom) = pixels.split_at_mut((size - 1 - y) * stride);
        top[y * stride..(y + 1) * stride].swap_with_slice(&mut bottom[..stride]);
    }
}

/// Reflect-101 ("mirror without repeating the edge", OpenCV's `BORDER_REFLECT_101`) of index `i`
/// into `0..n`.
fn reflect101(i: i64, n: i64) -> usize {
    if n <= 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    (if m >= n { period - m } else { m }) as usize
}

/// Rotates a `size`×`size` RGB image counter-clockwise by `degrees` about its centre.
///
/// Each output pixel is inverse-mapped into the input and sampled bilinearly; samples outside the
/// image are mirrored back in (reflect-101), so there are no black corners. Multiples of 90°
/// map pixel centres exactly onto pixel centres, and 0° is the identity.
///
/// # Panics
/// If `pixels.len() != size * size * 3`.
pub fn rotate(pixels: &[u8], size: usize, degrees: f32) -> Vec<u8> {
    check_len(pixels, size);
    let radians = f64::from(degrees).to_radians();
    // Snap the floating-point noise of multiples of 90° so those rotations are exact.
    let snap = |v: f64| if v.abs() < 1e-9 { 0.0 } else { v };
    let (cos, sin) = (snap(radians.cos()), snap(radians.sin()));
    if sin == 0.0 && cos > 0.0 {
        return pixels.to_vec();
    }
    let (cos, sin) = (cos as f32, sin as f32);
    let centre = (size as f32 - 1.0) / 2.0;
    let n = size as i64;
    // Sources lie within `centre·√2` of the centre, so adding 2·size makes every one positive.
    let n2 = 2 * n;
    let shift = n2 as f32;
    let (src, _) = pixels.as_chunks::<3>();
    let mut out = vec![0; pixels.len()];
    for (y, row) in out.chunks_exact_mut(size * 3).enumerate() {
        let dy = y as f32 - centre;
        // Source coordinates of output (x, y): (cos·dx − sin·dy, sin·dx + cos·dy) + centre.
        let base_x = -sin * dy + centre;
        let base_y = cos * dy + centre;
        let (row, _) = row.as_chunks_mut::<3>();
        for (x, px) in row.iter_mut().enumerate() {
            let dx = x as f32 - centre;
            let sx = cos * dx + base_x;
            let sy = sin * dx + base_y;
            // Floor by truncating a shifted positive value (no libm `floor` call).
            let (ox, oy) = (sx + shift, sy + shift);
            let (tx, ty) = (ox as i64, oy as i64);
            // Bilinear weights in 1/256ths; the four products sum to 2^16.
            let wx = ((ox - tx as f32) * 256.0 + 0.5) as u32;
            let wy = ((oy - ty as f32) * 256.0 + 0.5) as u32;
            let (x0, y0) = (tx - n2, ty - n2);
            let (i00, i01, i10, i11) = if x0 >= 0 && y0 >= 0 && x0 + 1 < n && y0 + 1 < n {
                let i = y0 as usize * size + x0 as usize;
                (i, i + 1, i + size, i + size + 1)
            } else {
                let (xa, xb) = (reflect101(x0, n), reflect101(x0 + 1, n));
                let (ya, yb) = (reflect101(y0, n), reflect101(y0 + 1, n));
                (
                    ya * size + xa,
                    ya * size + xb,
                    yb * size + xa,
                    yb * size + xb,
                )
            };
            let (p00, p01, p10, p11) = (src[i00], src[i01], src[i10], src[i11]);
            let w00 = (256 - wx) * (256 - wy);
            let w01 = wx * (256 - wy);
            let w10 = (256 - wx) * wy;
            let w11 = wx * wy;
            for c in 0..3 {
                let v = u32::from(p00[c]) * w00
                    + u32::from(p01[c]) * w01
                    + u32::from(p10[c]) * w10
                    + u32::from(p11[c]) * w11;
                px[c] = ((v + (1 << 15)) >> 16) as u8;
            }
        }
    }
    out
}

/// One operation of [`ColorJitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JitterStep {
    /// Multiply every value by the brightness factor.
    Brightness,
    /// Blend with the image's mean grey level by the contrast factor.
    Contrast,
    /// Blend with the image's greyscale version by the saturation factor.
    Saturation,
}

/// Colour jitter factors with torchvision `ColorJitter` semantics (hue excepted): a factor of 1
/// leaves the image unchanged, and the steps run in `order`, each clamping to `[0, 255]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorJitter {
    /// Brightness factor: values are multiplied by it.
    pub brightness: f32,
    /// Contrast factor: `f·image + (1 − f)·mean grey level`.
    pub contrast: f32,
    /// Saturation factor: `f·image + (1 − f)·greyscale(image)`.
    pub saturation: f32,
    /// The order the three steps run in (torchvision draws a random order per image).
    pub order: [JitterStep; 3],
}

/// Greyscale (ITU-R 601 luma) of an RGB value, as torchvision's `rgb_to_grayscale`.
fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

impl ColorJitter {
    /// Factors that change nothing.
    pub const IDENTITY: Self = Self {
        brightness: 1.0,
        contrast: 1.0,
        saturation: 1.0,
        order: [
            JitterStep::Brightness,
            JitterStep::Contrast,
            JitterStep::Saturation,
        ],
    };

    /// Draws each factor uniformly from `[max(0, 1 − strength), 1 + strength]` and a random step
    /// order. Always consumes the same draws, whatever `strength` is.
    pub fn sample(strength: f32, rng: &mut impl Rng) -> Self {
        let strength = strength.max(0.0);
        let low = (1.0 - strength).max(0.0);
        let high = 1.0 + strength;
        let mut factor = || low + (high - low) * rng.random::<f32>();
        let (brightness, contrast, saturation) = (factor(), factor(), factor());
        let mut order = Self::IDENTITY.order;
        order.shuffle(rng);
        Self {
            brightness,
            contrast,
            saturation,
            order,
        }
    }

    /// Whether every factor is 1 (applying changes nothing).
    #[allow(
        clippy::float_cmp,
        reason = "exactly 1 is the identity; any other factor must run"
    )]
    pub fn is_identity(&self) -> bool {
        self.brightness == 1.0 && self.contrast == 1.0 && self.saturation == 1.0
    }

    /// Applies the jitter to RGB bytes (any number of pixels) in place, rounding once at the end.
    ///
    /// # Panics
    /// If `pixels.len()` is not a multiple of 3.
    pub fn apply(&self, pixels: &mut [u8]) {
        assert!(
            pixels.len().is_multiple_of(3),
            "expected RGB bytes, got {} bytes (not a multiple of 3)",
            pixels.len()
        );
        if self.is_identity() || pixels.is_empty() {
            return;
        }
        let mut values: Vec<f32> = pixels.iter().map(|&v| f32::from(v)).collect();
        for step in self.order {
            match step {
                JitterStep::Brightness => {
                    let f = self.brightness;
                    for v in &mut values {
                        *v = (*v * f).clamp(0.0, 255.0);
                    }
                }
                JitterStep::Contrast => {
                    let f = self.contrast;
                    let sum: f64 = values
                        .chunks_exact(3)
                        .map(|p| f64::from(luma(p[0], p[1], p[2])))
                        .sum();
                    let offset = (1.0 - f) * (sum / (values.len() / 3) as f64) as f32;
                    for v in &mut values {
                        *v = (f * *v + offset).clamp(0.0, 255.0);
                    }
                }
                JitterStep::Saturation => {
                    let f = self.saturation;
                    for p in values.chunks_exact_mut(3) {
                        let offset = (1.0 - f) * luma(p[0], p[1], p[2]);
                        for v in p {
                            *v = (f * *v + offset).clamp(0.0, 255.0);
                        }
                    }
                }
            }
        }
        for (dst, v) in pixels.iter_mut().zip(values) {
            *dst = (v + 0.5) as u8;
        }
    }
}

/// One premade hair layer.
#[derive(Clone, PartialEq, Eq)]
struct HairLayer {
    /// Hairs drawn on it.
    hairs: usize,
    /// Straight (not premultiplied) RGBA, `size`×`size`×4.
    rgba: Vec<u8>,
    /// Indices of the pixels with non-zero alpha, so compositing skips bare skin.
    covered: Vec<u32>,
}

/// A bank of premade hair layers (the SIIM-ISIC "DrawHair" augmentation).
///
/// Each layer holds a hair count from [`HAIR_COUNTS`]; each hair is a circular arc (random
/// centre, radius, start angle and sweep) 1–3 pixels of a 224-pixel image wide (scaled with the
/// size, at least half a pixel), in one of [`HAIR_COLOURS`] with
/// alpha 70–180. Hairs are drawn at twice the resolution, their centres may lie outside the frame
/// (so hairs enter from the edges), and the canvas is blurred slightly and box-downscaled to
/// `size`, which antialiases them.
///
/// Counts are dealt from shuffled copies of [`HAIR_COUNTS`], ten layers at a time, so every full
/// ten layers hold exactly two empty layers and eight with hair.
#[derive(Clone, PartialEq, Eq)]
pub struct HairBank {
    /// Side of every layer.
    size: u32,
    /// The layers.
    layers: Vec<HairLayer>,
}

impl fmt::Debug for HairBank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hairs: Vec<usize> = self.layers.iter().map(|l| l.hairs).collect();
        f.debug_struct("HairBank")
            .field("size", &self.size)
            .field("hairs", &hairs)
            .finish_non_exhaustive()
    }
}

impl HairBank {
    /// Builds `layers` premade RGBA hair layers of `size`×`size`, seeded (layers are drawn in
    /// parallel, each from its own ChaCha stream, so the bank depends only on the arguments).
    pub fn new(size: u32, layers: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut counts = Vec::with_capacity(layers);
        while counts.len() < layers {
            let mut block = HAIR_COUNTS;
            block.shuffle(&mut rng);
            counts.extend(block.into_iter().take(layers - counts.len()));
        }
        let layers = counts
            .into_par_iter()
            .enumerate()
            .map(|(i, hairs)| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(i as u64 + 1);
                draw_layer(size as usize, hairs, &mut rng)
            })
            .collect();
        Self { size, layers }
    }

    /// Side of every layer.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the bank has no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Hairs drawn on layer `layer` (0 means the layer is fully transparent).
    ///
    /// # Panics
    /// If `layer >= self.len()`.
    pub fn hair_count(&self, layer: usize) -> usize {
        self.layer_ref(layer).hairs
    }

    /// The straight-alpha RGBA bytes (`size`×`size`×4, row-major) of layer `layer`.
    ///
    /// # Panics
    /// If `layer >= self.len()`.
    pub fn layer(&self, layer: usize) -> &[u8] {
        &self.layer_ref(layer).rgba
    }

    /// Layer `layer`, or a panic that says how many there are.
    fn layer_ref(&self, layer: usize) -> &HairLayer {
        self.layers.get(layer).unwrap_or_else(|| {
            panic!(
                "hair layer {layer} out of range: the bank has {} layers",
                self.layers.len()
            )
        })
    }

    /// Alpha-composites layer `layer` onto `image` (`size`×`size` RGB bytes), in place. Hair only
    /// darkens: each value becomes `min(original, over)`, so a hair lighter than a dark lesion
    /// leaves it as it was instead of drawing a pale strand.
    ///
    /// # Panics
    /// If the image is not `size`×`size` RGB or `layer >= self.len()`.
    pub fn apply(&self, image: &mut [u8], layer: usize) {
        let size = self.size as usize;
        assert_eq!(
            image.len(),
            size * size * 3,
            "hair layers are {size}×{size}: expected {} RGB bytes, got {}",
            size * size * 3,
            image.len()
        );
        let layer = self.layer_ref(layer);
        for &i in &layer.covered {
            let i = i as usize;
            let src = &layer.rgba[i * 4..i * 4 + 4];
            let alpha = u32::from(src[3]);
            for (c, dst) in image[i * 3..i * 3 + 3].iter_mut().enumerate() {
                let d = u32::from(*dst);
                let over = (u32::from(src[c]) * alpha + d * (255 - alpha) + 127) / 255;
                *dst = over.min(d) as u8;
            }
        }
    }

    /// [`HairBank::apply`] on an [`RgbImage`].
    ///
    /// # Panics
    /// As [`HairBank::apply`].
    pub fn apply_image(&self, image: &mut RgbImage, layer: usize) {
        assert_eq!(
            image.dimensions(),
            (self.size, self.size),
            "hair layers are {0}×{0}, the image is {1}×{2}",
            self.size,
            image.width(),
            image.height()
        );
        self.apply(image, layer);
    }
}

/// Box-downscales a premultiplied `size·SUPERSAMPLE`-square canvas by SUPERSAMPLE×SUPERSAMPLE
/// blocks and un-premultiplies it: the layer's RGBA bytes and the pixels it covers.
fn downscale(canvas: &[[f32; 4]], size: usize) -> (Vec<u8>, Vec<u32>) {
    let cs = size * SUPERSAMPLE;
    let mut rgba = vec![0; size * size * 4];
    let mut covered = Vec::new();
    let norm = (SUPERSAMPLE * SUPERSAMPLE) as f32;
    for y in 0..size {
        for x in 0..size {
            let mut acc = [0.0f32; 4];
            for sy in 0..SUPERSAMPLE {
                let row = (y * SUPERSAMPLE + sy) * cs + x * SUPERSAMPLE;
                for p in &canvas[row..row + SUPERSAMPLE] {
                    for c in 0..4 {
                        acc[c] += p[c];
                    }
                }
            }
            let a = acc[3] / norm;
            let a8 = (a * 255.0 + 0.5).min(255.0) as u8;
            if a8 == 0 {
                continue;
            }
            let i = y * size + x;
            let out = &mut rgba[i * 4..i * 4 + 4];
            for c in 0..3 {
                out[c] = (acc[c] / norm / a + 0.5).clamp(0.0, 255.0) as u8;
            }
            out[3] = a8;
            covered.push(i as u32);
        }
    }
    (rgba, covered)
}

/// Draws one hair layer of `size`×`size` with `hairs` arcs.
fn draw_layer(size: usize, hairs: usize, rng: &mut ChaCha8Rng) -> HairLayer {
    if hairs == 0 || size == 0 {
        return HairLayer {
            hairs,
            rgba: vec![0; size * size * 4],
            covered: Vec::new(),
        };
    }
    let extent = size as f32;
    let cs = size * SUPERSAMPLE;
    let scale = SUPERSAMPLE as f32;
    // Premultiplied RGBA canvas (colour in 0–255, alpha in 0–1).
    let mut canvas = vec![[0.0f32; 4]; cs * cs];
    // Which hair last covered each canvas pixel, so one hair composites once per pixel.
    let mut owner = vec![0u32; cs * cs];
    for hair in 1..=hairs as u32 {
        let colour = HAIR_COLOURS[rng.random_range(0..HAIR_COLOURS.len())];
        let alpha = f32::from(rng.random_range(70u8..=180)) / 255.0;
        let width = f32::from(rng.random_range(1u8..=3)) * (extent / 224.0).max(0.5);
        let radius = rng.random_range(extent / 6.0..=extent * 1.5);
        let start = rng.random_range(0.0..std::f32::consts::TAU);
        let sweep = rng.random_range(10f32..=60.0).to_radians();
        // The arc starts at a point within a quarter side of the frame; its centre lies wherever
        // that puts it (often outside the frame).
        let anchor_x = rng.random_range(-0.25 * extent..1.25 * extent);
        let anchor_y = rng.random_range(-0.25 * extent..1.25 * extent);
        let centre_x = (anchor_x - radius * start.cos()) * scale;
        let centre_y = (anchor_y - radius * start.sin()) * scale;
        let r = radius * scale;
        let half = width * scale / 2.0;
        let src = [
            f32::from(colour[0]) * alpha,
            f32::from(colour[1]) * alpha,
            f32::from(colour[2]) * alpha,
            alpha,
        ];
        // Stamp discs every half canvas pixel along the arc.
        let steps = (sweep * r * 2.0).ceil().max(1.0) as usize;
        for s in 0..=steps {
            let angle = start + sweep * s as f32 / steps as f32;
            // Canvas pixel (i, j) has its centre at (i + 0.5, j + 0.5).
            let px = centre_x + r * angle.cos() - 0.5;
            let py = centre_y + r * angle.sin() - 0.5;
            let (x_lo, x_hi) = ((px - half).ceil(), (px + half).floor());
            let (y_lo, y_hi) = ((py - half).ceil(), (py + half).floor());
            if x_hi < 0.0 || y_hi < 0.0 || x_lo >= cs as f32 || y_lo >= cs as f32 {
                continue;
            }
            let (x_lo, x_hi) = (x_lo.max(0.0) as usize, (x_hi as usize).min(cs - 1));
            let (y_lo, y_hi) = (y_lo.max(0.0) as usize, (y_hi as usize).min(cs - 1));
            for y in y_lo..=y_hi {
                let dy = y as f32 - py;
                for x in x_lo..=x_hi {
                    let dx = x as f32 - px;
                    let i = y * cs + x;
                    if dx * dx + dy * dy > half * half || owner[i] == hair {
                        continue;
                    }
                    owner[i] = hair;
                    let dst = &mut canvas[i];
                    let keep = 1.0 - alpha;
                    for c in 0..4 {
                        dst[c] = src[c] + dst[c] * keep;
                    }
                }
            }
        }
    }
    let (rgba, covered) = downscale(&blur_121(&canvas, cs), size);
    HairLayer {
        hairs,
        rgba,
        covered,
    }
}

/// Separable `[1, 2, 1] / 4` blur of an `n`×`n` premultiplied RGBA canvas, edges clamped.
fn blur_121(canvas: &[[f32; 4]], n: usize) -> Vec<[f32; 4]> {
    let mix = |a: [f32; 4], b: [f32; 4], c: [f32; 4]| -> [f32; 4] {
        std::array::from_fn(|k| 0.25 * a[k] + 0.5 * b[k] + 0.25 * c[k])
    };
    let mut horizontal = vec![[0.0f32; 4]; n * n];
    for y in 0..n {
        let row = &canvas[y * n..(y + 1) * n];
        for x in 0..n {
            horizontal[y * n + x] = mix(row[x.saturating_sub(1)], row[x], row[(x + 1).min(n - 1)]);
        }
    }
    let mut out = vec![[0.0f32; 4]; n * n];
    for y in 0..n {
        let (up, down) = (y.saturating_sub(1), (y + 1).min(n - 1));
        for x in 0..n {
            out[y * n + x] = mix(
                horizontal[up * n + x],
                horizontal[y * n + x],
                horizontal[down * n + x],
            );
        }
    }
    out
}

/// Which augmentations to apply, and how strongly.
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent on/off switches, one per augmentation"
)]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentConfig {
    /// Composite a random premade hair layer (training only).
    pub hair: bool,
    /// Random horizontal flip, p = 0.5.
    pub hflip: bool,
    /// Random vertical flip, p = 0.5.
    pub vflip: bool,
    /// Random rotation by an angle uniform in [0°, 360°), bilinear, with a mirrored border.
    pub rotate: bool,
    /// Random rotation by 0°, 90°, 180° or 270°, each with p = 0.25: lossless, and with both
    /// flips every symmetry of the square (PyTorch recipes draw it as `torch.rot90`). Ignored
    /// when `rotate` is set.
    #[serde(default)]
    pub rotate90: bool,
    /// Colour jitter strength: brightness, contrast and saturation factors are each uniform in
    /// `[1 − jitter, 1 + jitter]` (0 turns jitter off).
    pub jitter: f32,
}

impl AugmentConfig {
    /// Training: hair, both flips, rotation and jitter 0.2 (factors in [0.8, 1.2]).
    pub fn train() -> Self {
        Self {
            hair: true,
            hflip: true,
            vflip: true,
            rotate: true,
            rotate90: false,
            jitter: 0.2,
        }
    }

    /// Test-time augmentation: both flips and jitter 0.15 (factors in [0.85, 1.15]); no hair,
    /// no rotation.
    pub fn tta() -> Self {
        Self {
            hair: false,
            hflip: true,
            vflip: true,
            rotate: false,
            rotate90: false,
            jitter: 0.15,
        }
    }

    /// Validation: nothing (the identity).
    pub fn none() -> Self {
        Self {
            hair: false,
            hflip: false,
            vflip: false,
            rotate: false,
            rotate90: false,
            jitter: 0.0,
        }
    }

    /// Flips and quarter turns only (every symmetry of the square, no resampling): the
    /// augmentation both agc and a PyTorch script can draw the same way, used by the
    /// learning-parity benchmark (docs/learning-parity.md).
    pub fn symmetries() -> Self {
        Self {
            hflip: true,
            vflip: true,
            rotate90: true,
            ..Self::none()
        }
    }
}

impl Default for AugmentConfig {
    /// [`AugmentConfig::none`].
    fn default() -> Self {
        Self::none()
    }
}

/// Every random choice of one augmented sample, drawn from its seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentDraw {
    /// Hair layer to composite, if the config asks for hair.
    pub hair_layer: Option<usize>,
    /// Whether to mirror left to right.
    pub hflip: bool,
    /// Whether to mirror top to bottom.
    pub vflip: bool,
    /// Counter-clockwise rotation in degrees (0 when rotation is off).
    pub degrees: f32,
    /// Colour jitter factors ([`ColorJitter::IDENTITY`] when jitter is off).
    pub jitter: ColorJitter,
}

/// Applies an [`AugmentConfig`] to `size`×`size` RGB images; cheap to clone and share between
/// data-loader threads (the hair bank sits behind an [`Arc`]).
#[derive(Debug, Clone)]
pub struct Augmenter {
    /// What to apply.
    config: AugmentConfig,
    /// Side of the images.
    size: u32,
    /// Premade hair layers, built only when the config asks for hair.
    hair: Option<Arc<HairBank>>,
}

impl Augmenter {
    /// An augmenter for `size`×`size` images; when `config.hair`, builds a bank of
    /// [`DEFAULT_HAIR_LAYERS`] hair layers seeded from `seed`.
    pub fn new(config: AugmentConfig, size: u32, seed: u64) -> Self {
        let hair = config
            .hair
            .then(|| Arc::new(HairBank::new(size, DEFAULT_HAIR_LAYERS, seed)));
        Self { config, size, hair }
    }

    /// An augmenter that shares an existing hair bank (used only when `config.hair`).
    ///
    /// # Panics
    /// If the bank's layers are not `size`×`size`.
    pub fn with_hair_bank(config: AugmentConfig, size: u32, bank: Arc<HairBank>) -> Self {
        assert_eq!(
            bank.size(),
            size,
            "hair bank layers are {0}×{0}, the augmenter's images {size}×{size}",
            bank.size()
        );
        let hair = config.hair.then_some(bank);
        Self { config, size, hair }
    }

    /// What this augmenter applies.
    pub fn config(&self) -> &AugmentConfig {
        &self.config
    }

    /// Side of the images.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The hair bank, present only when the config asks for hair.
    pub fn hair_bank(&self) -> Option<&Arc<HairBank>> {
        self.hair.as_ref()
    }

    /// The random choices `seed` makes. The draws are always taken in the same order, so
    /// turning one augmentation off does not change the choices of the others.
    pub fn draw(&self, seed: u64) -> AugmentDraw {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let hair_pick: u64 = rng.random();
        let hflip = rng.random_bool(0.5);
        let vflip = rng.random_bool(0.5);
        let degrees = rng.random::<f32>() * 360.0;
        let jitter = ColorJitter::sample(self.config.jitter, &mut rng);
        let quarter_turns = rng.random_range(0..4u8);
        let hair_layer = self
            .hair
            .as_ref()
            .filter(|bank| !bank.is_empty())
            .map(|bank| (hair_pick % bank.len() as u64) as usize);
        AugmentDraw {
            hair_layer,
            hflip: self.config.hflip && hflip,
            vflip: self.config.vflip && vflip,
            degrees: if self.config.rotate {
                degrees
            } else if self.config.rotate90 {
                90.0 * f32::from(quarter_turns)
            } else {
                0.0
            },
            jitter: if self.config.jitter > 0.0 {
                jitter
            } else {
                ColorJitter::IDENTITY
            },
        }
    }

    /// The augmented copy of one `size`×`size` RGB image; `seed` decides every random choice
    /// (pass e.g. [`sample_seed`] of the run seed, epoch and index). Hair, then flips, then
    /// rotation, then colour jitter.
    ///
    /// # Panics
    /// If `pixels.len() != size * size * 3`.
    pub fn apply(&self, pixels: &[u8], seed: u64) -> Vec<u8> {
        self.apply_draw(pixels, &self.draw(seed))
    }

    /// Applies given choices (see [`Augmenter::draw`]) to one `size`×`size` RGB image.
    ///
    /// # Panics
    /// If `pixels.len() != size * size * 3`, or the hair layer is not in the bank.
    pub fn apply_draw(&self, pixels: &[u8], draw: &AugmentDraw) -> Vec<u8> {
        let size = self.size as usize;
        check_len(pixels, size);
        let mut out = pixels.to_vec();
        if let (Some(bank), Some(layer)) = (&self.hair, draw.hair_layer) {
            bank.apply(&mut out, layer);
        }
        if draw.hflip {
            flip_horizontal(&mut out, size);
        }
        if draw.vflip {
            flip_vertical(&mut out, size);
        }
        if draw.degrees != 0.0 {
            out = rotate(&out, size, draw.degrees);
        }
        draw.jitter.apply(&mut out);
        out
    }

    /// [`Augmenter::apply`] on an [`RgbImage`].
    ///
    /// # Panics
    /// If the image is not `size`×`size`.
    pub fn apply_image(&self, image: &RgbImage, seed: u64) -> RgbImage {
        assert_eq!(
            image.dimensions(),
            (self.size, self.size),
            "the augmenter takes {0}×{0} images, got {1}×{2}",
            self.size,
            image.width(),
            image.height()
        );
        let pixels = self.apply(image.as_raw(), seed);
        RgbImage::from_raw(self.size, self.size, pixels)
            .expect("augmenting keeps the byte length of a size×size RGB image")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic, textured `size`×`size` test image.
    fn image(size: usize, seed: u64) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..size * size * 3).map(|_| rng.random()).collect()
    }

    /// Largest absolute difference between two byte slices.
    fn max_diff(a: &[u8], b: &[u8]) -> u8 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn normalize_returns_chw_planes_with_imagenet_statistics() {
        // 2×2 image: pixel k has channels (10k, 10k + 1, 10k + 2), k = y·2 + x.
        let pixels: Vec<u8> = (0..4u8)
            .flat_map(|k| [10 * k, 10 * k + 1, 10 * k + 2])
            .collect();
        let out = normalize(&pixels, 2);
        assert_eq!(out.len(), 12);
        for c in 0..3 {
            for k in 0..4 {
                let value = f32::from(10 * k as u8 + c as u8);
                let expected = (value / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                assert!((out[c * 4 + k] - expected).abs() < 1e-6, "c {c} k {k}");
            }
        }
        // Spot-check absolute values: 0 in red is −0.485/0.229, 255 in blue is 0.594/0.225.
        assert!((out[0] + 2.117_904).abs() < 1e-5);
        let white = normalize(&[255; 3], 1);
        assert!((white[2] - 2.64).abs() < 1e-5);
    }

    #[test]
    #[should_panic(expected = "expected a 3×3 RGB image")]
    fn normalize_rejects_a_buffer_of_the_wrong_size() {
        normalize(&[0; 26], 3);
    }

    #[test]
    fn sample_seeds_differ_across_indices_and_epochs() {
        let a = sample_seed(7, 0, 0);
        assert_eq!(a, sample_seed(7, 0, 0));
        assert_ne!(a, sample_seed(7, 0, 1));
        assert_ne!(a, sample_seed(7, 1, 0));
        assert_ne!(a, sample_seed(8, 0, 0));
    }

    #[test]
    fn horizontal_flip_mirrors_columns_exactly() {
        let size = 5;
        let original = image(size, 1);
        let mut flipped = original.clone();
        flip_horizontal(&mut flipped, size);
        for y in 0..size {
            for x in 0..size {
                let o = (y * size + (size - 1 - x)) * 3;
                let f = (y * size + x) * 3;
                assert_eq!(flipped[f..f + 3], original[o..o + 3], "({x}, {y})");
            }
        }
        flip_horizontal(&mut flipped, size);
        assert_eq!(flipped, original);
    }

    #[test]
    fn vertical_flip_mirrors_rows_exactly() {
        let size = 5;
        let original = image(size, 2);
        let mut flipped = original.clone();
        flip_vertical(&mut flipped, size);
        for y in 0..size {
            let o = (size - 1 - y) * size * 3;
            let f = y * size * 3;
            assert_eq!(
                flipped[f..f + size * 3],
                original[o..o + size * 3],
                "row {y}"
            );
        }
        flip_vertical(&mut flipped, size);
        assert_eq!(flipped, original);
    }

    #[test]
    fn rotation_by_zero_or_a_full_turn_is_the_identity() {
        let original = image(9, 3);
        assert_eq!(rotate(&original, 9, 0.0), original);
        assert_eq!(rotate(&original, 9, 360.0), original);
    }

    #[test]
    fn rotation_by_90_degrees_is_a_transpose_then_vertical_flip() {
        for size in [8, 9] {
            let original = image(size, 4);
            let rotated = rotate(&original, size, 90.0);
            // Counter-clockwise: out[y][x] = in[x][size − 1 − y].
            let mut expected = vec![0; original.len()];
            for y in 0..size {
                for x in 0..size {
                    let o = (x * size + (size - 1 - y)) * 3;
                    let r = (y * size + x) * 3;
                    expected[r..r + 3].copy_from_slice(&original[o..o + 3]);
                }
            }
            assert!(max_diff(&rotated, &expected) <= 1, "size {size}");
            // Four quarter turns come back to the start.
            let mut back = rotated;
            for _ in 0..3 {
                back = rotate(&back, size, 90.0);
            }
            assert!(max_diff(&back, &original) <= 1, "size {size}");
        }
    }

    #[test]
    fn rotation_mirrors_the_border_so_a_flat_image_stays_flat() {
        let size = 16;
        let flat: Vec<u8> = [200u8, 120, 40].repeat(size * size);
        for degrees in [17.0, 45.0, 133.0, 301.5] {
            assert_eq!(rotate(&flat, size, degrees), flat, "{degrees}°");
        }
    }

    #[test]
    fn reflect101_mirrors_without_repeating_the_edge() {
        let mapped: Vec<usize> = (-4..9).map(|i| reflect101(i, 4)).collect();
        assert_eq!(mapped, [2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2]);
        assert_eq!(reflect101(-3, 1), 0);
    }

    #[test]
    fn jitter_with_unit_factors_is_the_identity() {
        let original = image(6, 5);
        let mut pixels = original.clone();
        ColorJitter::IDENTITY.apply(&mut pixels);
        assert_eq!(pixels, original);
        // Also when the steps actually run (factors a hair away from 1 round back).
        let nearly = ColorJitter {
            brightness: 1.0 + 1e-7,
            contrast: 1.0 - 1e-7,
            saturation: 1.0 + 1e-7,
            ..ColorJitter::IDENTITY
        };
        nearly.apply(&mut pixels);
        assert_eq!(pixels, original);
    }

    #[test]
    fn brightness_multiplies_and_clamps() {
        let mut pixels = vec![100, 50, 0, 250, 200, 10];
        ColorJitter {
            brightness: 1.2,
            ..ColorJitter::IDENTITY
        }
        .apply(&mut pixels);
        assert_eq!(pixels, [120, 60, 0, 255, 240, 12]);
    }

    #[test]
    fn contrast_blends_with_the_mean_grey_and_saturation_with_the_luma() {
        // Two grey pixels, 50 and 150: mean grey level 100.
        let mut pixels = vec![50, 50, 50, 150, 150, 150];
        ColorJitter {
            contrast: 0.5,
            ..ColorJitter::IDENTITY
        }
        .apply(&mut pixels);
        assert_eq!(pixels, [75, 75, 75, 125, 125, 125]);
        // Pure red: luma 0.299·200 = 59.8; saturation 0 gives that grey, 0.5 half way.
        let mut red = vec![200, 0, 0];
        ColorJitter {
            saturation: 0.0,
            ..ColorJitter::IDENTITY
        }
        .apply(&mut red);
        assert_eq!(red, [60, 60, 60]);
        let mut red = vec![200, 0, 0];
        ColorJitter {
            saturation: 0.5,
            ..ColorJitter::IDENTITY
        }
        .apply(&mut red);
        assert_eq!(red, [130, 30, 30]);
    }

    #[test]
    fn sampled_jitter_factors_stay_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..500 {
            let j = ColorJitter::sample(0.2, &mut rng);
            for f in [j.brightness, j.contrast, j.saturation] {
                assert!((0.8..=1.2).contains(&f), "{f}");
            }
            let mut order = j.order;
            order.sort_by_key(|s| *s as u8);
            assert_eq!(order, ColorJitter::IDENTITY.order);
        }
    }

    #[test]
    fn empty_hair_layers_are_fully_transparent_and_others_are_not() {
        let bank = HairBank::new(48, 10, 11);
        let mut empty = 0;
        for layer in 0..bank.len() {
            let alpha_sum: u64 = bank
                .layer(layer)
                .chunks_exact(4)
                .map(|p| u64::from(p[3]))
                .sum();
            if bank.hair_count(layer) == 0 {
                empty += 1;
                assert_eq!(alpha_sum, 0, "layer {layer}");
            } else {
                assert!(alpha_sum > 0, "layer {layer} has hairs but no alpha");
            }
        }
        assert_eq!(empty, 2);
    }

    #[test]
    fn every_ten_hair_layers_hold_both_empty_and_hairy_layers() {
        for seed in 0..5 {
            let bank = HairBank::new(16, 10, seed);
            let counts: Vec<usize> = (0..bank.len()).map(|l| bank.hair_count(l)).collect();
            let mut sorted = counts.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, HAIR_COUNTS, "seed {seed}: {counts:?}");
        }
        let bank = HairBank::new(16, 13, 3);
        assert_eq!(bank.len(), 13);
        assert!(!bank.is_empty());
    }

    #[test]
    fn hair_only_darkens_the_image() {
        let size = 40;
        let bank = HairBank::new(size as u32, 10, 12);
        let original = image(size, 6);
        let bright = vec![235u8; size * size * 3];
        for layer in 0..bank.len() {
            let mut pixels = original.clone();
            bank.apply(&mut pixels, layer);
            assert!(
                pixels.iter().zip(&original).all(|(a, b)| a <= b),
                "layer {layer}"
            );
            let mut light = bright.clone();
            bank.apply(&mut light, layer);
            let darkened = light.iter().filter(|&&v| v < 235).count();
            if bank.hair_count(layer) == 0 {
                assert_eq!(light, bright, "empty layer {layer} changed the image");
            } else {
                assert!(darkened > 0, "layer {layer} drew no visible hair");
            }
        }
    }

    #[test]
    fn hair_layers_are_dark_with_alpha_in_the_drawn_range() {
        let bank = HairBank::new(64, 10, 13);
        let mut saw_strong = false;
        for layer in 0..bank.len() {
            for p in bank.layer(layer).chunks_exact(4).filter(|p| p[3] > 0) {
                assert!(p[..3].iter().all(|&c| c <= 100), "{p:?}");
                saw_strong |= p[3] >= 70;
            }
        }
        assert!(saw_strong, "no pixel reached the lowest hair alpha");
    }

    #[test]
    fn hair_bank_is_deterministic_for_a_seed() {
        let a = HairBank::new(32, 10, 21);
        assert_eq!(a, HairBank::new(32, 10, 21));
        assert_ne!(a, HairBank::new(32, 10, 22));
        assert!(format!("{a:?}").starts_with("HairBank { size: 32, hairs: ["));
    }

    #[test]
    #[should_panic(expected = "hair layers are 8×8")]
    fn hair_on_an_image_of_another_size_panics() {
        let bank = HairBank::new(8, 2, 0);
        let mut pixels = vec![0; 9 * 9 * 3];
        bank.apply(&mut pixels, 0);
    }

    #[test]
    fn the_same_seed_gives_the_same_output_and_other_seeds_differ() {
        let size = 32;
        let augmenter = Augmenter::new(AugmentConfig::train(), size as u32, 1);
        let original = image(size, 7);
        let a = augmenter.apply(&original, 42);
        assert_eq!(a, augmenter.apply(&original, 42));
        assert_eq!(a, augmenter.clone().apply(&original, 42));
        // A second augmenter with the same seed builds the same bank.
        assert_eq!(
            a,
            Augmenter::new(AugmentConfig::train(), size as u32, 1).apply(&original, 42)
        );
        assert_ne!(a, augmenter.apply(&original, 43));
        assert_ne!(a, original);
    }

    #[test]
    fn the_none_config_is_the_identity() {
        let size = 24;
        let augmenter = Augmenter::new(AugmentConfig::none(), size as u32, 1);
        assert!(augmenter.hair_bank().is_none());
        let original = image(size, 8);
        for seed in 0..20 {
            assert_eq!(augmenter.apply(&original, seed), original, "seed {seed}");
        }
    }

    #[test]
    fn a_flip_only_config_mirrors_columns_or_leaves_the_image_alone() {
        let size = 12;
        let config = AugmentConfig {
            hflip: true,
            ..AugmentConfig::none()
        };
        let augmenter = Augmenter::new(config, size as u32, 0);
        let original = image(size, 9);
        let mut mirrored = original.clone();
        flip_horizontal(&mut mirrored, size);
        let mut flips = 0;
        for seed in 0..64 {
            let out = augmenter.apply(&original, seed);
            if augmenter.draw(seed).hflip {
                flips += 1;
                assert_eq!(out, mirrored, "seed {seed}");
            } else {
                assert_eq!(out, original, "seed {seed}");
            }
        }
        assert!((16..=48).contains(&flips), "{flips} flips in 64");
        // A forced flip through the draw mirrors exactly.
        let forced = AugmentDraw {
            hflip: true,
            ..augmenter.draw(0)
        };
        assert_eq!(augmenter.apply_draw(&original, &forced), mirrored);
    }

    #[test]
    fn symmetries_draw_each_of_the_eight_symmetries_and_never_resample() {
        let size = 10;
        let augmenter = Augmenter::new(AugmentConfig::symmetries(), size as u32, 0);
        assert!(augmenter.hair_bank().is_none());
        let original = image(size, 11);
        let mut seen = std::collections::BTreeMap::new();
        for seed in 0..400 {
            let draw = augmenter.draw(seed);
            assert!(
                [0.0, 90.0, 180.0, 270.0].contains(&draw.degrees),
                "seed {seed}: {}°",
                draw.degrees
            );
            assert!(draw.jitter.is_identity());
            let out = augmenter.apply(&original, seed);
            // Lossless: the same multiset of pixels.
            let (mut a, mut b) = (out.clone(), original.clone());
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "seed {seed}");
            *seen.entry(out).or_insert(0) += 1;
        }
        // Eight distinct images (the dihedral group of the square), each about 1/8 of the time.
        assert_eq!(seen.len(), 8);
        assert!(seen.values().all(|&n| (25..=75).contains(&n)), "{seen:?}");
    }

    #[test]
    fn tta_never_draws_hair() {
        let augmenter = Augmenter::new(AugmentConfig::tta(), 16, 0);
        assert!(!augmenter.config().hair);
        assert!(augmenter.hair_bank().is_none());
        for seed in 0..50 {
            let draw = augmenter.draw(seed);
            assert_eq!(draw.hair_layer, None);
            assert!(draw.degrees.abs() < 1e-9, "rotated by {}°", draw.degrees);
            for f in [
                draw.jitter.brightness,
                draw.jitter.contrast,
                draw.jitter.saturation,
            ] {
                assert!((0.85..=1.15).contains(&f), "{f}");
            }
        }
        // The training config does draw hair, from its own bank.
        let train = Augmenter::new(AugmentConfig::train(), 16, 0);
        assert_eq!(
            train.hair_bank().map(|b| b.len()),
            Some(DEFAULT_HAIR_LAYERS)
        );
        assert!((0..50).all(|s| train.draw(s).hair_layer.is_some()));
    }

    #[test]
    fn turning_an_augmentation_off_keeps_the_other_choices() {
        let full = Augmenter::new(AugmentConfig::tta(), 8, 0);
        let no_flip = Augmenter::new(
            AugmentConfig {
                hflip: false,
                ..AugmentConfig::tta()
            },
            8,
            0,
        );
        for seed in 0..20 {
            let (a, b) = (full.draw(seed), no_flip.draw(seed));
            assert_eq!(a.vflip, b.vflip);
            assert_eq!(a.jitter, b.jitter);
            assert!(!b.hflip);
        }
    }

    #[test]
    fn augmenter_works_on_rgb_images_and_is_shareable() {
        fn shareable<T: Send + Sync + Clone + fmt::Debug>() {}
        shareable::<Augmenter>();
        let augmenter = Augmenter::new(AugmentConfig::tta(), 10, 0);
        let pixels = image(10, 10);
        let img = RgbImage::from_raw(10, 10, pixels.clone()).expect("10×10×3 bytes");
        assert_eq!(
            augmenter.apply_image(&img, 5).into_raw(),
            augmenter.apply(&pixels, 5)
        );
    }
}
