//! From an attention map to a square crop box, and from the resized image back to the original.
//!
//! The steps (docs/method.md, step 3):
//! 1. upsample the `grid_h`×`grid_w` map bilinearly to the image size (half-pixel centres, like
//!    OpenCV's `INTER_LINEAR` and PyTorch's `align_corners=False`);
//! 2. threshold at `mean + k·std` of the upsampled map;
//! 3. take the bounding box of every pixel above the threshold (optionally of the largest
//!    8-connected component only, AG-CNN's rule);
//! 4. make it square around its centre with side = the longer side (plus margin, at least the
//!    minimum side), moved, not shrunk, to stay inside the image;
//! 5. an empty mask, a non-finite map or a near-uniform map gives the whole image, and says so;
//! 6. [`CentreCrop::map_box`] maps the box back to the original image.

use burn::prelude::*;

/// A half-open pixel rectangle `[x0, x1) × [y0, y1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    /// First column.
    pub x0: usize,
    /// First row.
    pub y0: usize,
    /// One past the last column.
    pub x1: usize,
    /// One past the last row.
    pub y1: usize,
}

impl Rect {
    /// The square with top-left corner `(x, y)` and side `side`.
    pub fn square(x: usize, y: usize, side: usize) -> Self {
        Self {
            x0: x,
            y0: y,
            x1: x + side,
            y1: y + side,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.x1 - self.x0
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.y1 - self.y0
    }

    /// Whether `(x, y)` lies inside.
    pub fn contains(&self, x: usize, y: usize) -> bool {
        (self.x0..self.x1).contains(&x) && (self.y0..self.y1).contains(&y)
    }

    /// Whether `other` lies entirely inside.
    pub fn contains_rect(&self, other: &Rect) -> bool {
        self.x0 <= other.x0 && self.y0 <= other.y0 && other.x1 <= self.x1 && other.y1 <= self.y1
    }

    /// This box squared around its centre (side = the longer side, plus `config.margin` of it
    /// on each side, at least `config.min_side`, at most the image's shorter side), then moved,
    /// without shrinking, to lie inside a `height`×`width` image. The one rule by which agc
    /// squares a box: attention boxes (in the S×S image) and true lesion boxes (in the original)
    /// alike, so that crops by either are cut the same way. Odd leftovers go after the box: a
    /// square `d` pixels longer than a side starts `⌊d/2⌋` before it.
    #[must_use]
    pub fn square_around(&self, [height, width]: [usize; 2], config: &BoxConfig) -> Rect {
        let longer = self.width().max(self.height());
        let with_margin = (longer as f64 * (1.0 + 2.0 * config.margin.max(0.0))).ceil() as usize;
        let side = with_margin
            .max(config.min_side)
            .max(1)
            .min(width.min(height));
        // Same centre (to half a pixel), then clamped into [0, size − side].
        let place = |start: usize, extent: usize, size: usize| {
            let start = start as isize - (side as isize - extent as isize).div_euclid(2);
            start.clamp(0, (size - side) as isize) as usize
        };
        Rect::square(
            place(self.x0, self.width(), width),
            place(self.y0, self.height(), height),
            side,
        )
    }

    /// Intersection over union with `other` (0 when they do not overlap).
    pub fn iou(&self, other: &Rect) -> f64 {
        let w = self.x1.min(other.x1).saturating_sub(self.x0.max(other.x0));
        let h = self.y1.min(other.y1).saturating_sub(self.y0.max(other.y0));
        let inter = (w * h) as f64;
        let union = (self.width() * self.height() + other.width() * other.height()) as f64 - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }
}

/// Options of [`attention_box`].
#[derive(Config, Debug, PartialEq)]
pub struct BoxConfig {
    /// Threshold = `mean + k · std` of the upsampled map.
    #[config(default = 1.5)]
    pub k: f64,
    /// Extra context on each side, as a fraction of the square's side (0.1 adds 10 % each side).
    /// A run squares the true lesion boxes with the same margin (oracle crops, IoU), so that the
    /// oracle crop is cut as an attention crop is.
    #[config(default = 0.0)]
    pub margin: f64,
    /// The smallest side of the square box, in image pixels.
    #[config(default = 0)]
    pub min_side: usize,
    /// Keep only the largest 8-connected region above the threshold (AG-CNN's rule) instead of
    /// every pixel above it.
    #[config(default = false)]
    pub largest_component: bool,
    /// A map whose coefficient of variation (`std / |mean|`) is at most this is near-uniform.
    #[config(default = 1e-3)]
    pub uniform_tolerance: f64,
}

/// Why a box is the whole image rather than the attention's hot region; written as its
/// [`Fallback::as_str`] name in CSV files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// The map holds a NaN or an infinity.
    NonFinite,
    /// The map is (near-)uniform: it points nowhere.
    Uniform,
    /// No pixel lies above the threshold.
    EmptyMask,
}

impl Fallback {
    /// A short lower-case name, for CSV files and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NonFinite => "non_finite",
            Self::Uniform => "uniform",
            Self::EmptyMask => "empty_mask",
        }
    }
}

/// The box found in one attention map.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionBox {
    /// The square crop box in image pixels.
    pub square: Rect,
    /// The tight bounding box of the thresholded region, before squaring; `None` on fallback.
    pub tight: Option<Rect>,
    /// The threshold applied to the upsampled map (NaN when the map was not finite).
    pub threshold: f32,
    /// Set when the box is the whole image because the map gave no usable region.
    pub fallback: Option<Fallback>,
}

/// Upsamples a row-major `grid_h`×`grid_w` map to `height`×`width` bilinearly with half-pixel
/// centres (OpenCV `INTER_LINEAR`, PyTorch `interpolate(..., align_corners=False)`).
///
/// # Panics
/// If `map.len() != grid_h · grid_w` or a size is zero.
pub fn upsample_bilinear(
    map: &[f32],
    [grid_h, grid_w]: [usize; 2],
    [height, width]: [usize; 2],
) -> Vec<f32> {
    assert_eq!(map.len(), grid_h * grid_w, "map is not {grid_h}×{grid_w}");
    assert!(
        grid_h * grid_w * height * width > 0,
        "sizes must be positive"
    );
    let rows = taps(grid_h, height);
    let cols = taps(grid_w, width);
    // Interpolate along x for every grid row, then along y.
    let mut horizontal = vec![0.0f32; grid_h * width];
    for (gy, out) in horizontal.chunks_exact_mut(width).enumerate() {
        let row = &map[gy * grid_w..(gy + 1) * grid_w];
        for (o, &(i0, i1, l)) in out.iter_mut().zip(&cols) {
            *o = row[i0] * (1.0 - l) + row[i1] * l;
        }
    }
    let mut result = vec![0.0f32; height * width];
    for (out, &(i0, i1, l)) in result.chunks_exact_mut(width).zip(&rows) {
        let (a, b) = (
            &horizontal[i0 * width..][..width],
            &horizontal[i1 * width..][..width],
        );
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = a * (1.0 - l) + b * l;
        }
    }
    result
}

/// The two source indices and the weight of the second, for every output index.
fn taps(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f64 / output as f64;
    (0..output)
        .map(|o| {
            let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            (i0, i1, (src - i0 as f64) as f32)
        })
        .collect()
}

/// Finds the square crop box of one attention map over a `height`×`width` image.
///
/// # Panics
/// If `map.len() != grid_h · grid_w` or a size is zero.
pub fn attention_box(
    map: &[f32],
    grid: [usize; 2],
    [height, width]: [usize; 2],
    config: &BoxConfig,
) -> AttentionBox {
    let whole = |threshold, why| AttentionBox {
        square: centred_square(width, height),
        tight: None,
        threshold,
        fallback: Some(why),
    };
    if map.iter().any(|v| !v.is_finite()) {
        return whole(f32::NAN, Fallback::NonFinite);
    }
    let up = upsample_bilinear(map, grid, [height, width]);
    let n = up.len() as f64;
    let mean = up.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = up
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    let threshold = (mean + config.k * std) as f32;
    if std == 0.0 || std <= config.uniform_tolerance * mean.abs() {
        return whole(threshold, Fallback::Uniform);
    }
    let mut mask: Vec<bool> = up.iter().map(|&v| v > threshold).collect();
    if config.largest_component {
        keep_largest_component(&mut mask, width);
    }
    let Some(tight) = bounding_box(&mask, width) else {
        return whole(threshold, Fallback::EmptyMask);
    };
    AttentionBox {
        square: tight.square_around([height, width], config),
        tight: Some(tight),
        threshold,
        fallback: None,
    }
}

/// Boxes for a batch of attention maps, `[batch, grid_h, grid_w]`, over `height`×`width` images.
///
/// # Panics
/// If a size is zero.
pub fn attention_boxes(
    attention: Tensor<3>,
    image: [usize; 2],
    config: &BoxConfig,
) -> Vec<AttentionBox> {
    let [_, grid_h, grid_w] = attention.dims();
    let values = attention
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32 above");
    values
        .chunks_exact(grid_h * grid_w)
        .map(|map| attention_box(map, [grid_h, grid_w], image, config))
        .collect()
}

/// The largest square centred in a `width`×`height` image (the whole image when it is square),
/// placed as torchvision's `center_crop` places it (see [`centred_offset`]).
fn centred_square(width: usize, height: usize) -> Rect {
    let side = width.min(height);
    Rect::square(
        centred_offset(width - side),
        centred_offset(height - side),
        side,
    )
}

/// The offset that centres a span `spare` pixels shorter than the image: `spare / 2` rounded
/// half to even, as torchvision's `center_crop` computes it (`int(round((h - th) / 2.0))`,
/// Python's `round`), so odd spares ending in 3 (mod 4) round up.
fn centred_offset(spare: usize) -> usize {
    spare / 2 + usize::from(spare % 4 == 3)
}

/// The bounding box of the `true` pixels of a row-major mask, if any.
fn bounding_box(mask: &[bool], width: usize) -> Option<Rect> {
    let mut found: Option<Rect> = None;
    for (i, _) in mask.iter().enumerate().filter(|(_, on)| **on) {
        let (x, y) = (i % width, i / width);
        let r = found.get_or_insert(Rect {
            x0: x,
            y0: y,
            x1: x + 1,
            y1: y + 1,
        });
        r.x0 = r.x0.min(x);
        r.x1 = r.x1.max(x + 1);
        r.y1 = r.y1.max(y + 1);
    }
    found
}

/// Clears every pixel of the mask outside its largest 8-connected component.
fn keep_largest_component(mask: &mut [bool], width: usize) {
    let height = mask.len() / width;
    let mut label = vec![0u32; mask.len()];
    let (mut best, mut best_size, mut next) = (0u32, 0usize, 0u32);
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || label[start] != 0 {
            continue;
        }
        next += 1;
        label[start] = next;
        stack.push(start);
        let mut size = 0;
        while let Some(i) = stack.pop() {
            size += 1;
            let (x, y) = (i % width, i / width);
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let j = ny * width + nx;
                    if mask[j] && label[j] == 0 {
                        label[j] = next;
                        stack.push(j);
                    }
                }
            }
        }
        if size > best_size {
            (best, best_size) = (next, size);
        }
    }
    for (on, l) in mask.iter_mut().zip(&label) {
        *on = *l == best && *l != 0;
    }
}

/// Where a preprocessed S×S image came from in its original: the square region
/// `[x, x + side) × [y, y + side)` of a `width`×`height` original, resized to S×S.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CentreCrop {
    /// Width of the original image.
    pub width: usize,
    /// Height of the original image.
    pub height: usize,
    /// Left edge of the square region.
    pub x: usize,
    /// Top edge of the square region.
    pub y: usize,
    /// Side of the square region.
    pub side: usize,
}

impl CentreCrop {
    /// The centre square crop of a `width`×`height` image: side = the shorter side, offset =
    /// half the difference rounded half to even, as torchvision's `center_crop`
    /// (`int(round((w - side) / 2.0))`). agc-data's cache cuts this square, so boxes map back
    /// through the very geometry the images were made with.
    ///
    /// # Panics
    /// If a size is zero.
    pub fn centre_square(width: usize, height: usize) -> Self {
        assert!(
            width > 0 && height > 0,
            "an image has positive sizes, got {width}×{height}"
        );
        let Rect { x0, y0, .. } = centred_square(width, height);
        Self {
            width,
            height,
            x: x0,
            y: y0,
            side: width.min(height),
        }
    }

    /// The square `square` of a `width`×`height` original, as the region a crop was cut from.
    ///
    /// # Panics
    /// If `square` is not a square.
    pub fn of_square(width: usize, height: usize, square: Rect) -> Self {
        assert_eq!(
            square.width(),
            square.height(),
            "{square:?} is not a square"
        );
        Self {
            width,
            height,
            x: square.x0,
            y: square.y0,
            side: square.width(),
        }
    }

    /// The square region, as a [`Rect`] of the original.
    pub fn region(&self) -> Rect {
        Rect::square(self.x, self.y, self.side)
    }

    /// Maps a box in the `size`×`size` preprocessed image to the original: a square of side
    /// `round(box side · side / size)` (at least 1), placed at the scaled top-left corner and
    /// kept inside the square region.
    ///
    /// # Panics
    /// If `size` is zero or `bbox` is not inside the `size`×`size` image.
    pub fn map_box(&self, bbox: Rect, size: usize) -> Rect {
        assert!(
            size > 0 && bbox.x1 <= size && bbox.y1 <= size,
            "box {bbox:?} is not inside a {size}×{size} image"
        );
        let scale = self.side as f64 / size as f64;
        let longer = bbox.width().max(bbox.height()) as f64;
        let mapped = ((longer * scale).round() as usize).clamp(1, self.side);
        let place = |start: usize, origin: usize| {
            let start = (start as f64 * scale).round() as usize;
            origin + start.min(self.side - mapped)
        };
        Rect::square(place(bbox.x0, self.x), place(bbox.y0, self.y), mapped)
    }
}

/// The one path from a ChipNet attention map to a crop of the original, shared by a run's crop
/// step and by scoring new photographs: the `grid`×`grid` map gives a box in the `size`×`size`
/// image the model saw ([`attention_box`]), and `centre` (where that image lies in the
/// original) carries it to the original ([`CentreCrop::map_box`]). Returns the box found and
/// the square of the original to crop.
///
/// # Panics
/// If `map.len() != grid²` or a size is zero.
pub fn box_in_original(
    map: &[f32],
    grid: usize,
    size: usize,
    centre: &CentreCrop,
    config: &BoxConfig,
) -> (AttentionBox, Rect) {
    let found = attention_box(map, [grid, grid], [size, size], config);
    let original = centre.map_box(found.square, size);
    (found, original)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::device;
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    use proptest::prelude::*;

    /// A 7×7 map, zero but for the given `(row, col, value)` entries.
    fn map_with(hot: &[(usize, usize, f32)]) -> Vec<f32> {
        let mut m = vec![0.0f32; 49];
        for &(r, c, v) in hot {
            m[r * 7 + c] = v;
        }
        m
    }

    #[test]
    fn upsampling_matches_burn_bilinear_without_align_corners() {
        let dev = device();
        let map: Vec<f32> = (0..49).map(|i| ((i * 37) % 11) as f32 / 11.0).collect();
        let tensor = Tensor::<1>::from_floats(map.as_slice(), &dev).reshape([1, 1, 7, 7]);
        let options = InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([224, 160]);
        let expected = interpolate(tensor, options)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let ours = upsample_bilinear(&map, [7, 7], [224, 160]);
        let max = ours
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(max < 1e-5, "max difference {max}");
    }

    #[test]
    fn upsampling_matches_opencv_inter_linear_on_a_known_row() {
        // cv2.resize(np.array([[0, 1]], np.float32), (8, 1), interpolation=cv2.INTER_LINEAR)
        let row = upsample_bilinear(&[0.0, 1.0], [1, 2], [1, 8]);
        let expected = [0.0, 0.0, 0.125, 0.375, 0.625, 0.875, 1.0, 1.0];
        assert_eq!(row, expected);
    }

    #[test]
    fn hot_chip_gives_a_square_box_around_it() {
        let map = map_with(&[(2, 4, 1.0)]);
        let b = attention_box(&map, [7, 7], [224, 224], &BoxConfig::new());
        assert_eq!(b.fallback, None);
        let sq = b.square;
        assert_eq!(sq.width(), sq.height());
        // Chip (2, 4) covers x 128..160, y 64..96: the box is centred on it.
        let (cx, cy) = (sq.x0.midpoint(sq.x1), sq.y0.midpoint(sq.y1));
        assert!(
            (142..=146).contains(&cx) && (78..=82).contains(&cy),
            "{sq:?}"
        );
        assert!(b.tight.is_some_and(|t| sq.contains_rect(&t)));
    }

    #[test]
    fn two_hot_chips_span_both_and_the_square_takes_the_longer_side() {
        let map = map_with(&[(1, 1, 1.0), (1, 5, 1.0)]);
        let b = attention_box(&map, [7, 7], [224, 224], &BoxConfig::new());
        let tight = b.tight.expect("a region above the threshold");
        assert!(
            tight.width() > 4 * 32 && tight.height() < 2 * 32,
            "{tight:?}"
        );
        assert_eq!(b.square.width(), tight.width());
        assert!(b.square.contains_rect(&tight));
    }

    #[test]
    fn largest_component_drops_the_smaller_region() {
        // A 2×2 block of hot chips and a single hot chip far away.
        let map = map_with(&[
            (0, 0, 1.0),
            (0, 1, 1.0),
            (1, 0, 1.0),
            (1, 1, 1.0),
            (6, 6, 1.0),
        ]);
        let all = attention_box(&map, [7, 7], [224, 224], &BoxConfig::new());
        let largest = attention_box(
            &map,
            [7, 7],
            [224, 224],
            &BoxConfig::new().with_largest_component(true),
        );
        assert!(
            all.tight.expect("region").x1 > 192,
            "both regions: {:?}",
            all.tight
        );
        let t = largest.tight.expect("region");
        assert!(t.x1 <= 96 && t.y1 <= 96, "only the block: {t:?}");
    }

    #[test]
    fn box_near_the_edge_is_moved_inside_not_shrunk() {
        let map = map_with(&[(0, 6, 1.0)]);
        let config = BoxConfig::new().with_min_side(100);
        let b = attention_box(&map, [7, 7], [224, 224], &config);
        assert_eq!(b.square, Rect::square(124, 0, 100));
    }

    #[test]
    fn margin_widens_the_square() {
        let map = map_with(&[(3, 3, 1.0)]);
        let plain = attention_box(&map, [7, 7], [224, 224], &BoxConfig::new());
        let wide = attention_box(
            &map,
            [7, 7],
            [224, 224],
            &BoxConfig::new().with_margin(0.25),
        );
        let expected = (plain.square.width() as f64 * 1.5).ceil() as usize;
        assert_eq!(wide.square.width(), expected);
    }

    #[test]
    fn degenerate_maps_fall_back_to_the_whole_image_and_say_why() {
        let whole = Rect::square(0, 0, 224);
        let cases = [
            (vec![1.0 / 49.0; 49], Fallback::Uniform),
            (vec![0.0; 49], Fallback::Uniform),
            (map_with(&[(3, 3, f32::NAN)]), Fallback::NonFinite),
            (map_with(&[(3, 3, f32::INFINITY)]), Fallback::NonFinite),
            // Everything hot but one cold chip: mean + 1.5·std lies above every pixel.
            (
                (0..49).map(|i| if i == 0 { 0.0 } else { 1.0 }).collect(),
                Fallback::EmptyMask,
            ),
        ];
        for (map, why) in cases {
            let b = attention_box(&map, [7, 7], [224, 224], &BoxConfig::new());
            assert_eq!(
                (b.square, b.fallback, b.tight),
                (whole, Some(why), None),
                "{why:?}"
            );
        }
    }

    #[test]
    fn batch_boxes_follow_the_tensor_rows() {
        let dev = device();
        let maps = [map_with(&[(0, 0, 1.0)]), map_with(&[(6, 6, 1.0)])].concat();
        let t = Tensor::<1>::from_floats(maps.as_slice(), &dev).reshape([2, 7, 7]);
        let boxes = attention_boxes(t, [224, 224], &BoxConfig::new());
        assert!(
            boxes[0].square.x0 == 0 && boxes[1].square.x1 == 224,
            "{boxes:?}"
        );
    }

    #[test]
    fn mapping_goes_through_the_centre_square_of_the_original() {
        // 1600×1200 original: the centre square is x 200..1400, y 0..1200, resized to 224.
        let crop = CentreCrop::centre_square(1600, 1200);
        assert_eq!((crop.x, crop.y, crop.side), (200, 0, 1200));
        assert_eq!(
            crop.map_box(Rect::square(0, 0, 224), 224),
            Rect::square(200, 0, 1200)
        );
        // Chip (1, 2) of the 7×7 grid.
        let scale = 1200.0 / 224.0;
        let mapped = crop.map_box(Rect::square(64, 32, 32), 224);
        assert_eq!(mapped.width(), (32.0f64 * scale).round() as usize);
        assert_eq!(mapped.x0, 200 + (64.0f64 * scale).round() as usize);
        assert_eq!(mapped.y0, (32.0f64 * scale).round() as usize);
    }

    #[test]
    fn iou_of_known_rectangles() {
        let a = Rect::square(0, 0, 10);
        assert!((a.iou(&a) - 1.0).abs() < 1e-12);
        assert!((a.iou(&Rect::square(5, 0, 10)) - 50.0 / 150.0).abs() < 1e-12);
        assert!(a.iou(&Rect::square(20, 20, 5)).abs() < 1e-12);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn box_is_square_inside_and_contains_the_hottest_chip(
            map in proptest::collection::vec(0.0f32..1.0, 49),
            hot in 0usize..49,
            boost in 0.05f32..2.0,
            margin in 0.0f64..0.5,
            min_side in 0usize..160,
        ) {
            let mut map = map;
            let max = map.iter().copied().fold(0.0, f32::max);
            map[hot] = max + boost;
            let config = BoxConfig::new().with_margin(margin).with_min_side(min_side);
            let b = attention_box(&map, [7, 7], [224, 224], &config);
            let sq = b.square;
            prop_assert_eq!(sq.width(), sq.height());
            prop_assert!(sq.x1 <= 224 && sq.y1 <= 224);
            prop_assert!(sq.width() >= min_side.max(1));
            // The hottest chip's region overlaps the box.
            let chip = Rect::square((hot % 7) * 32, (hot / 7) * 32, 32);
            prop_assert!(sq.iou(&chip) > 0.0, "box {:?} misses chip {:?}", sq, chip);
            // The hottest upsampled pixel is inside the box.
            let up = upsample_bilinear(&map, [7, 7], [224, 224]);
            let argmax = up.iter().enumerate().fold(0, |best, (i, v)| if *v > up[best] { i } else { best });
            prop_assert!(sq.contains(argmax % 224, argmax / 224));
            if let Some(t) = b.tight {
                prop_assert!(sq.contains_rect(&t));
            }
        }

        #[test]
        fn a_box_is_squared_around_its_centre_by_one_rule(
            width in 1usize..400,
            height in 1usize..400,
            corner in (0usize..400, 0usize..400),
            extent in (0usize..400, 0usize..400),
            margin in 0.0f64..0.5,
            min_side in 0usize..200,
        ) {
            let x0 = corner.0 % width;
            let y0 = corner.1 % height;
            let tight = Rect { x0, y0, x1: (x0 + extent.0).min(width), y1: (y0 + extent.1).min(height) };
            let config = BoxConfig::new().with_margin(margin).with_min_side(min_side);
            let sq = tight.square_around([height, width], &config);
            let longer = tight.width().max(tight.height());
            let side = ((longer as f64 * (1.0 + 2.0 * margin)).ceil() as usize)
                .max(min_side).max(1).min(width.min(height));
            prop_assert_eq!((sq.width(), sq.height()), (side, side));
            prop_assert!(sq.x1 <= width && sq.y1 <= height);
            if side >= longer {
                prop_assert!(sq.contains_rect(&tight), "{:?} misses {:?}", sq, tight);
            }
            // Where it is not moved by an edge, the leftover d splits ⌊d/2⌋ before the box
            // and ⌈d/2⌉ after it, on both axes.
            for (start, extent, s0, size) in [
                (tight.x0, tight.width(), sq.x0, width),
                (tight.y0, tight.height(), sq.y0, height),
            ] {
                let before = (side as isize - extent as isize).div_euclid(2);
                let free = start as isize - before;
                if free >= 0 && free as usize + side <= size {
                    prop_assert_eq!(s0 as isize, free);
                }
            }
        }

        #[test]
        fn mapped_box_is_square_and_inside_the_original(
            width in 224usize..3000,
            height in 224usize..3000,
            x in 0usize..224,
            y in 0usize..224,
            side in 1usize..224,
        ) {
            let side = side.min(224 - x).min(224 - y);
            let crop = CentreCrop::centre_square(width, height);
            let m = crop.map_box(Rect::square(x, y, side), 224);
            prop_assert_eq!(m.width(), m.height());
            prop_assert!(m.x1 <= width && m.y1 <= height);
            prop_assert!(m.x0 >= crop.x && m.y0 >= crop.y);
            prop_assert!(m.x1 <= crop.x + crop.side && m.y1 <= crop.y + crop.side);
            // The centre moves with the scale: rounding the corner and the side, and at most one
            // pixel of clamping, keep it within 1.75 original pixels.
            let scale = crop.side as f64 / 224.0;
            let cx = crop.x as f64 + (x as f64 + side as f64 / 2.0) * scale;
            let mx = (m.x0 + m.x1) as f64 / 2.0;
            prop_assert!((cx - mx).abs() <= 1.75, "{cx} vs {mx}");
        }
    }
}
