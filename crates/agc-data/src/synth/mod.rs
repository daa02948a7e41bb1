//! Synthetic lesions: a seeded data set in the ISIC layout whose true lesion boxes are known.
//!
//! Two families of images, chosen by [`SynthConfig::family`], designed independently and with
//! different class evidence, so that a method tuned on one can be checked on the other:
//!
//! - [`Family::Skin`] (described here): skin photographs whose lesions carry a coarse veil,
//!   fine globules and freckles around them;
//! - [`Family::Dermoscopy`] ([`dermoscopy`]): dermoscope photographs with circular fields, dark
//!   vignettes and black corners, rulers, ink, gel bubbles and glare, lesions from small to
//!   large, and class evidence that lives mostly in the fine pigment network inside the lesion.
//!
//! In the skin family every image is a skin-toned photograph (low-frequency shading, vignetting, sensor noise,
//! optional hair, ruler marks and bubbles as distractors) of a non-square size, with one
//! lesion inside its centre square. The class signal has two parts:
//!
//! - a **coarse** one that survives shrinking the whole image to S: malignant lesions are on
//!   average more irregular at the border, more elongated and more variegated in colour, with
//!   distributions that overlap strongly with the benign ones, and most of them (80 %, against
//!   15 % of the benign ones) carry a blue-grey "veil" patch that even a single chip of the
//!   shrunken image shows: this is what lets an attention model find the lesion;
//! - **context** outside the lesion: freckles (sun damage) on the surrounding skin of 65 % of
//!   the malignant and 15 % of the benign images, kept away from the lesion so a crop leaves
//!   them out. As in real photographs, the whole image knows something the crop does not, which
//!   is why an ensemble of the two can beat both;
//! - a strong **fine** one: most malignant lesions (75 %, against 5 % of the benign ones) are
//!   dotted with globules one to two original pixels in radius every five to eight pixels. A
//!   whole-image resize to S averages them away; a crop around the lesion keeps them. The
//!   lesion's base colour is lightened to compensate, so both classes have the same mean lesion
//!   colour and the dots do not leak into the coarse view.
//!
//! Metadata carries a weak signal too (malignant patients are older on average).
//!
//! Layout written by [`generate`]: `train.csv`, `test.csv` (no `target`), `test_labels.csv`,
//! `train/<image_name>.jpg`, `test/<image_name>.jpg`; both CSVs carry the true box in original
//! pixels (`lesion_x0, lesion_y0, lesion_x1, lesion_y1`). `signs.csv` says which of the signs
//! above each image carries ([`Signs`]), so a run can report which ones its models read.

// Geometry reads best with its usual one-letter names (x, y, u, v, r, d).
#![allow(clippy::many_single_char_names)]

use std::f32::consts::PI;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result, io};
use crate::fsutil::{write_atomic, write_json};
use crate::metadata::{Record, columns};

pub mod dermoscopy;

/// A family of synthetic images (`agc synth --family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Skin photographs: veil, globules and freckles (the first family, the demo's).
    #[default]
    Skin,
    /// Dermoscope photographs: circular fields, rulers, ink, bubbles, glare; an atypical
    /// pigment network as the main (fine) evidence ([`dermoscopy`]).
    Dermoscopy,
}

impl Family {
    /// Every family, in the order they are listed.
    pub const ALL: [Self; 2] = [Self::Skin, Self::Dermoscopy];

    /// The family's name on the command line and in `synth.json`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Skin => "skin",
            Self::Dermoscopy => "dermoscopy",
        }
    }

    /// The columns of the family's `signs.csv` after `image_name` and `target`.
    #[must_use]
    pub fn sign_names(self) -> &'static [&'static str] {
        match self {
            Self::Skin => &["veil", "globules", "freckles"],
            Self::Dermoscopy => dermoscopy::SIGN_NAMES,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Family {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "no synthetic family {s:?}; the families are {}",
                    names.join(", ")
                )
            })
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Training images.
    pub train: usize,
    /// Test images.
    pub test: usize,
    /// Fraction of malignant images.
    pub positive_rate: f64,
    /// Smallest side of an original, in pixels.
    pub min_side: u32,
    /// Largest side of an original, in pixels.
    pub max_side: u32,
    /// Smallest lesion diameter, as a fraction of the image's shorter side.
    pub lesion_min: f32,
    /// Largest lesion diameter, as a fraction of the image's shorter side.
    pub lesion_max: f32,
    /// Probability of hair on an image.
    pub hair: f64,
    /// Probability of a ruler along an edge.
    pub ruler: f64,
    /// Probability of bubbles.
    pub bubbles: f64,
    /// JPEG quality.
    pub quality: u8,
    /// Seed of everything.
    pub seed: u64,
    /// Which family of images (absent from `synth.json` files written before there were two:
    /// those are the skin family).
    #[serde(default)]
    pub family: Family,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            train: 800,
            test: 400,
            positive_rate: 0.2,
            min_side: 600,
            max_side: 1600,
            lesion_min: 0.04,
            lesion_max: 0.33,
            hair: 0.3,
            ruler: 0.2,
            bubbles: 0.2,
            quality: 92,
            seed: 0,
            family: Family::Skin,
        }
    }
}

impl SynthConfig {
    /// The demo's data: 1 000 synthetic photographs of 600 to 1 200 pixels, a quarter
    /// malignant, lesions 15–40 % of the shorter side across (as in dermoscopy, where the
    /// lesion is large but its fine structure is lost when the photograph is shrunk).
    pub fn demo() -> Self {
        Self {
            train: 600,
            test: 400,
            positive_rate: 0.25,
            min_side: 600,
            max_side: 1200,
            lesion_min: 0.15,
            lesion_max: 0.4,
            seed: 7,
            ..Self::default()
        }
    }

    /// The defaults of a family: [`Self::default`] for the skin family; for the dermoscopy
    /// family 700–1 400-pixel photographs with lesions 5–32 % of the shorter side across, hair
    /// on a third of them, rulers and gel bubbles on a quarter.
    #[must_use]
    pub fn of_family(family: Family) -> Self {
        match family {
            Family::Skin => Self::default(),
            Family::Dermoscopy => Self {
                min_side: 700,
                max_side: 1400,
                lesion_min: 0.05,
                lesion_max: 0.32,
                hair: 0.35,
                ruler: 0.25,
                bubbles: 0.25,
                family,
                ..Self::default()
            },
        }
    }

    /// The demo's data in `family`: the same counts and class balance as [`Self::demo`], the
    /// family's image and lesion sizes; the skin family's is [`Self::demo`] itself.
    #[must_use]
    pub fn demo_of(family: Family) -> Self {
        match family {
            Family::Skin => Self::demo(),
            Family::Dermoscopy => Self {
                train: 600,
                test: 400,
                positive_rate: 0.25,
                seed: 11,
                ..Self::of_family(family)
            },
        }
    }
}

/// One generated image and its metadata.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The original image.
    pub image: RgbImage,
    /// Its metadata row, with `target` and `lesion_box` set.
    pub record: Record,
    /// Which of the class signs the image carries.
    pub signs: Signs,
}

/// The class signs a synthetic image carries (each more common in malignant images), written
/// to `signs.csv` so that a run can check which of them each model reads. Which signs there
/// are depends on the family ([`Family::sign_names`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signs {
    family: Family,
    flags: Vec<bool>,
}

impl Signs {
    /// The signs of an image of `family`, in [`Family::sign_names`] order.
    ///
    /// # Panics
    /// If `flags` does not hold one flag per sign of the family.
    #[must_use]
    pub fn new(family: Family, flags: Vec<bool>) -> Self {
        assert_eq!(
            flags.len(),
            family.sign_names().len(),
            "one flag per sign of the {family} family"
        );
        Self { family, flags }
    }

    /// The sign names, the column names of `signs.csv` after `image_name` and `target`.
    #[must_use]
    pub fn names(&self) -> &'static [&'static str] {
        self.family.sign_names()
    }

    /// The flags, in [`Self::names`] order.
    #[must_use]
    pub fn flags(&self) -> &[bool] {
        &self.flags
    }
}

/// What [`generate`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SynthReport {
    /// Images written by this call.
    pub written: usize,
    /// Images already present from an earlier (possibly interrupted) call with the same config.
    pub kept: usize,
    /// Malignant training images.
    pub train_positives: usize,
    /// Malignant test images.
    pub test_positives: usize,
}

/// Which half of the data set an image belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthSplit {
    /// `train/`, labels in `train.csv`.
    Train,
    /// `test/`, labels in `test_labels.csv`.
    Test,
}

impl SynthSplit {
    fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Test => "test",
        }
    }
}

const SITES: [&str; 6] = [
    "head/neck",
    "lower extremity",
    "oral/genital",
    "palms/soles",
    "torso",
    "upper extremity",
];

/// Renders image `index` of `split`: deterministic for a config, independent of other images.
pub fn sample(config: &SynthConfig, split: SynthSplit, index: usize) -> Sample {
    let stream = match split {
        SynthSplit::Train => 0x7472_6169_6e00_0000u64,
        SynthSplit::Test => 0x7465_7374_0000_0000,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(
        config.seed ^ stream ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let positive = rng.random_bool(config.positive_rate.clamp(0.0, 1.0));
    let (lo, hi) = (
        config.min_side.max(64),
        config.max_side.max(config.min_side.max(64)),
    );
    let width = rng.random_range(lo..=hi);
    let height = rng.random_range(lo..=hi);
    let (image, bbox, signs) = match config.family {
        Family::Skin => skin(config, &mut rng, positive, width, height),
        Family::Dermoscopy => dermoscopy::render(config, &mut rng, positive, width, height),
    };
    let record = metadata(&mut rng, split, index, positive, bbox);
    Sample {
        image,
        record,
        signs,
    }
}

/// An image of the skin family, its lesion's box and its signs.
fn skin(
    config: &SynthConfig,
    rng: &mut ChaCha8Rng,
    positive: bool,
    width: u32,
    height: u32,
) -> (RgbImage, [u32; 4], Signs) {
    let mut canvas = Canvas::new(width, height, rng);
    let lesion = Lesion::random(rng, width, height, config, positive);
    lesion.draw(&mut canvas, rng);
    let freckles = rng.random_bool(FRECKLE_CHANCE[usize::from(positive)]);
    let signs = Signs::new(
        Family::Skin,
        vec![lesion.veil.is_some(), lesion.dots.is_some(), freckles],
    );
    if freckles {
        canvas.freckles(rng, lesion.bbox);
    }
    if rng.random_bool(config.ruler.clamp(0.0, 1.0)) {
        canvas.ruler(rng);
    }
    if rng.random_bool(config.bubbles.clamp(0.0, 1.0)) {
        canvas.bubbles(rng);
    }
    if rng.random_bool(config.hair.clamp(0.0, 1.0)) {
        canvas.hair(rng);
    }
    (canvas.finish(), lesion.bbox, signs)
}

fn metadata(
    rng: &mut ChaCha8Rng,
    split: SynthSplit,
    index: usize,
    positive: bool,
    bbox: [u32; 4],
) -> Record {
    let age: f32 = if positive { 58.0 } else { 46.0 } + 14.0 * normal(rng);
    let age = ((age / 5.0).round() * 5.0).clamp(10.0, 90.0);
    let site = if positive && rng.random_bool(0.3) {
        "torso"
    } else {
        SITES[rng.random_range(0..SITES.len())]
    };
    Record {
        image_name: format!("SYN_{}_{index:06}", split.name()),
        patient_id: Some(format!("SP_{}_{:05}", split.name(), index / 3)),
        sex: (!rng.random_bool(0.03)).then(|| {
            if rng.random_bool(0.5) {
                "male"
            } else {
                "female"
            }
            .to_string()
        }),
        age: (!rng.random_bool(0.03)).then_some(age),
        site: (!rng.random_bool(0.04)).then(|| site.to_string()),
        target: Some(u8::from(positive)),
        lesion_box: Some(bbox),
    }
}

/// Roughly standard-normal noise (sum of three uniforms).
fn normal(rng: &mut impl Rng) -> f32 {
    (rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5) * 2.0
}

/// A 2D integer hash in [0, 1), for per-pixel noise and dot jitter without storing state.
fn hash01(x: u32, y: u32, seed: u32) -> f32 {
    let mut h =
        x.wrapping_mul(0x27d4_eb2d) ^ y.wrapping_mul(0x1656_67b1) ^ seed.wrapping_mul(0x9e37_79b9);
    h ^= h >> 15;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    (h >> 8) as f32 / (1u32 << 24) as f32
}

/// An RGB image in f32 while it is drawn.
struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<[f32; 3]>,
    noise_seed: u32,
}

impl Canvas {
    /// Skin: base tone × low-frequency shading × vignette.
    fn new(width: u32, height: u32, rng: &mut impl Rng) -> Self {
        let base = [
            rng.random_range(190.0..235.0),
            rng.random_range(140.0..180.0),
            rng.random_range(115.0..155.0),
        ];
        let (fx, fy) = (rng.random_range(0.3..1.2f32), rng.random_range(0.3..1.2f32));
        let (px, py) = (
            rng.random_range(0.0..2.0 * PI),
            rng.random_range(0.0..2.0 * PI),
        );
        let shade_amp = rng.random_range(0.03..0.1f32);
        let vignette = rng.random_range(0.1..0.4f32);
        let col: Vec<f32> = (0..width)
            .map(|x| (2.0 * PI * fx * x as f32 / width as f32 + px).sin())
            .collect();
        let mut pixels = Vec::with_capacity((width * height) as usize);
        for y in 0..height {
            let v = y as f32 / height as f32;
            let row = (2.0 * PI * fy * v + py).cos();
            for (x, c) in col.iter().enumerate() {
                let u = x as f32 / width as f32;
                let r2 = (u - 0.5).powi(2) + (v - 0.5).powi(2);
                let k = (1.0 + shade_amp * c * row) * (1.0 - vignette * r2);
                pixels.push([base[0] * k, base[1] * k, base[2] * k]);
            }
        }
        Self {
            width,
            height,
            pixels,
            noise_seed: rng.random(),
        }
    }

    fn blend(&mut self, x: u32, y: u32, colour: [f32; 3], alpha: f32) {
        if x < self.width && y < self.height {
            let p = &mut self.pixels[(y * self.width + x) as usize];
            for c in 0..3 {
                p[c] += (colour[c] - p[c]) * alpha.clamp(0.0, 1.0);
            }
        }
    }

    /// Dark arcs across the image, 1–3 px wide.
    fn hair(&mut self, rng: &mut impl Rng) {
        let (w, h) = (self.width as f32, self.height as f32);
        for _ in 0..rng.random_range(5..40) {
            let colour = [
                [30.0, 22.0, 18.0],
                [55.0, 38.0, 28.0],
                [20.0, 20.0, 20.0],
                [75.0, 55.0, 40.0],
            ][rng.random_range(0..4)];
            let (x0, y0) = (rng.random_range(0.0..w), rng.random_range(0.0..h));
            let (x1, y1) = (rng.random_range(0.0..w), rng.random_range(0.0..h));
            let (cx, cy) = (rng.random_range(0.0..w), rng.random_range(0.0..h));
            let width = rng.random_range(0.5..1.5f32);
            let alpha = rng.random_range(0.5..0.85f32);
            let steps = ((x1 - x0).abs() + (y1 - y0).abs()) as usize * 2 + 2;
            for s in 0..=steps {
                let t = s as f32 / steps as f32;
                let px = (1.0 - t).powi(2) * x0 + 2.0 * (1.0 - t) * t * cx + t * t * x1;
                let py = (1.0 - t).powi(2) * y0 + 2.0 * (1.0 - t) * t * cy + t * t * y1;
                self.disc(px, py, width, colour, alpha);
            }
        }
    }

    fn disc(&mut self, cx: f32, cy: f32, r: f32, colour: [f32; 3], alpha: f32) {
        let (x0, x1) = ((cx - r - 1.0).max(0.0) as u32, (cx + r + 1.0) as u32);
        let (y0, y1) = ((cy - r - 1.0).max(0.0) as u32, (cy + r + 1.0) as u32);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
                let cover = (r + 0.5 - d).clamp(0.0, 1.0);
                if cover > 0.0 {
                    self.blend(x, y, colour, alpha * cover);
                }
            }
        }
    }

    /// The image's extent along and across an edge strip (a ruler's length and the room
    /// for its width): `(height, width)` for a vertical strip, `(width, height)` otherwise.
    fn along_across(&self, vertical: bool) -> (u32, u32) {
        if vertical {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }

    /// A light strip with tick marks along one edge.
    fn ruler(&mut self, rng: &mut impl Rng) {
        let vertical = rng.random_bool(0.5);
        let (len, across) = self.along_across(vertical);
        let thick = (across / 14).max(12);
        let at_start = rng.random_bool(0.5);
        let start = if at_start { 0 } else { across - thick };
        let step = rng.random_range(8..16);
        for along in 0..len {
            for b in start..start + thick {
                let long = if along % (step * 5) == 0 {
                    thick / 3
                } else {
                    0
                };
                let is_mark = along % step == 0 && (b - start) < thick / 2 + long;
                let colour = if is_mark {
                    [40.0, 40.0, 45.0]
                } else {
                    [235.0, 235.0, 225.0]
                };
                let (x, y) = if vertical { (b, along) } else { (along, b) };
                self.blend(x, y, colour, 0.9);
            }
        }
    }

    /// Light circles with a bright rim.
    fn bubbles(&mut self, rng: &mut impl Rng) {
        for _ in 0..rng.random_range(1..7) {
            let r = rng.random_range(10.0..60.0f32);
            let cx = rng.random_range(0.0..self.width as f32);
            let cy = rng.random_range(0.0..self.height as f32);
            let (x0, x1) = ((cx - r - 2.0).max(0.0) as u32, (cx + r + 2.0) as u32);
            let (y0, y1) = ((cy - r - 2.0).max(0.0) as u32, (cy + r + 2.0) as u32);
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                    if d < r {
                        let rim = ((d - (r - 2.5)) / 2.5).clamp(0.0, 1.0);
                        self.blend(x, y, [250.0, 250.0, 250.0], 0.12 + 0.6 * rim);
                    }
                }
            }
        }
    }

    /// Freckles: 8–20 brown spots on the skin, 3.6–6 % of the shorter side across so that they
    /// survive shrinking the whole image to the model's input (4–7 px at 112 px), none within
    /// a quarter of the lesion's size of its box, so a crop around the lesion leaves them out.
    fn freckles(&mut self, rng: &mut impl Rng, lesion: [u32; 4]) {
        let side = self.width.min(self.height) as f32;
        let (lw, lh) = (
            (lesion[2] - lesion[0]) as f32,
            (lesion[3] - lesion[1]) as f32,
        );
        let keep_out = [
            lesion[0] as f32 - 0.25 * lw,
            lesion[1] as f32 - 0.25 * lh,
            lesion[2] as f32 + 0.25 * lw,
            lesion[3] as f32 + 0.25 * lh,
        ];
        for _ in 0..rng.random_range(8..=20) {
            let radius = side * rng.random_range(0.018..0.03f32);
            let cx = rng.random_range(0.0..self.width as f32);
            let cy = rng.random_range(0.0..self.height as f32);
            let shade = rng.random_range(0.5..0.7f32);
            let alpha = rng.random_range(0.75..0.95f32);
            if cx + radius > keep_out[0]
                && cx - radius < keep_out[2]
                && cy + radius > keep_out[1]
                && cy - radius < keep_out[3]
            {
                continue;
            }
            let (x0, x1) = ((cx - radius).max(0.0) as u32, (cx + radius).ceil() as u32);
            let (y0, y1) = ((cy - radius).max(0.0) as u32, (cy + radius).ceil() as u32);
            for y in y0..y1.min(self.height) {
                for x in x0..x1.min(self.width) {
                    let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
                    let cover = (radius + 0.5 - d).clamp(0.0, 1.0);
                    if cover > 0.0 {
                        let p = self.pixels[(y * self.width + x) as usize];
                        let brown = [p[0] * shade, p[1] * shade * 0.9, p[2] * shade * 0.8];
                        self.blend(x, y, brown, cover * alpha);
                    }
                }
            }
        }
    }

    /// Adds sensor noise and converts to 8-bit.
    fn finish(self) -> RgbImage {
        let Self {
            width,
            height,
            pixels,
            noise_seed,
        } = self;
        RgbImage::from_fn(width, height, |x, y| {
            let p = pixels[(y * width + x) as usize];
            let n = (hash01(x, y, noise_seed) + hash01(x, y, noise_seed ^ 0x5bd1_e995) - 1.0) * 6.0;
            Rgb([
                (p[0] + n).round().clamp(0.0, 255.0) as u8,
                (p[1] + n).round().clamp(0.0, 255.0) as u8,
                (p[2] + n).round().clamp(0.0, 255.0) as u8,
            ])
        })
    }
}

/// One lesion: a star-shaped region with a harmonic border, elongation, colour and texture.
struct Lesion {
    cx: f32,
    cy: f32,
    radius: f32,
    elongation: f32,
    rotation: f32,
    harmonics: Vec<(f32, f32, f32)>,
    colour: [f32; 3],
    variegation: f32,
    variegation_phase: f32,
    dots: Option<Dots>,
    veil: Option<Veil>,
    /// `[x0, y0, x1, y1]`, the bounding box of every pixel the lesion covers.
    bbox: [u32; 4],
}

/// The coarse, local malignant signal: a blue-grey patch inside the lesion (after the
/// "blue-white veil" of dermoscopy), present in most malignant lesions and some benign ones. It
/// keeps the pixels' brightness and shifts their hue, so it survives shrinking the image and is
/// visible to a single chip.
struct Veil {
    /// Centre offset from the lesion centre, in lesion radii.
    offset: [f32; 2],
    /// Radius, in lesion radii.
    radius: f32,
    /// Blend weight at the veil's centre.
    strength: f32,
}

/// Chance of freckles (sun damage) on the skin around a benign and around a malignant lesion:
/// context that only the whole image shows.
const FRECKLE_CHANCE: [f64; 2] = [0.15, 0.65];

/// Chance of globules (the fine signal) in a benign and in a malignant lesion.
const DOTS_CHANCE: [f64; 2] = [0.05, 0.75];

/// Chance of a veil in a benign and in a malignant lesion.
const VEIL_CHANCE: [f64; 2] = [0.15, 0.8];

/// The fine malignant signal: dark globules on a jittered grid.
struct Dots {
    spacing: f32,
    radius: f32,
    darkness: f32,
    seed: u32,
}

impl Lesion {
    fn random(
        rng: &mut impl Rng,
        width: u32,
        height: u32,
        config: &SynthConfig,
        positive: bool,
    ) -> Self {
        let side = width.min(height) as f32;
        let (lo, hi) = (
            config.lesion_min.max(0.01),
            config.lesion_max.max(config.lesion_min.max(0.01)),
        );
        // Log-uniform diameter.
        let diameter = side * (lo.ln() + rng.random::<f32>() * (hi.ln() - lo.ln())).exp();
        let radius = diameter / 2.0;
        // Coarse signal: overlapping distributions of irregularity, elongation, variegation.
        let irregular = if positive {
            rng.random_range(0.04..0.16f32)
        } else {
            rng.random_range(0.01..0.1f32)
        };
        let harmonics = [2.0f32, 3.0, 5.0, 7.0, 11.0]
            .iter()
            .map(|&k| {
                (
                    k,
                    irregular * rng.random::<f32>() / k.sqrt(),
                    rng.random_range(0.0..2.0 * PI),
                )
            })
            .collect::<Vec<_>>();
        let elongation = if positive {
            rng.random_range(1.0..1.5f32)
        } else {
            rng.random_range(1.0..1.3f32)
        };
        let variegation = if positive {
            rng.random_range(0.0..0.25f32)
        } else {
            rng.random_range(0.0..0.12f32)
        };
        let colour = [
            rng.random_range(95.0..145.0f32),
            rng.random_range(60.0..95.0f32),
            rng.random_range(45.0..75.0f32),
        ];
        let dots = rng
            .random_bool(DOTS_CHANCE[usize::from(positive)])
            .then(|| Dots {
                spacing: rng.random_range(5.0..8.0),
                radius: rng.random_range(1.0..1.8),
                darkness: rng.random_range(0.4..0.55),
                seed: rng.random(),
            });
        let veil = rng
            .random_bool(VEIL_CHANCE[usize::from(positive)])
            .then(|| Veil {
                offset: [rng.random_range(-0.35..0.35), rng.random_range(-0.35..0.35)],
                radius: rng.random_range(0.5..0.9),
                strength: rng.random_range(0.7..1.0),
            });
        // The farthest the border reaches from the centre.
        let reach = radius * elongation * (1.0 + harmonics.iter().map(|h| h.1).sum::<f32>()) + 2.0;
        // Anywhere inside the centre square.
        let (sx, sy) = ((width as f32 - side) / 2.0, (height as f32 - side) / 2.0);
        let margin = reach.min(side / 2.0 - 1.0);
        let cx = sx + rng.random_range(margin..=(side - margin).max(margin));
        let cy = sy + rng.random_range(margin..=(side - margin).max(margin));
        let mut lesion = Self {
            cx,
            cy,
            radius,
            elongation,
            rotation: rng.random_range(0.0..PI),
            harmonics,
            colour,
            variegation,
            variegation_phase: rng.random_range(0.0..2.0 * PI),
            dots,
            veil,
            bbox: [0; 4],
        };
        lesion.bbox = lesion.bounding_box(width, height, reach);
        lesion
    }

    /// Normalised radial position: < 1 inside, > 1 outside.
    fn rho(&self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let (s, c) = self.rotation.sin_cos();
        let (u, v) = ((dx * c + dy * s) / self.elongation, -dx * s + dy * c);
        let theta = v.atan2(u);
        let border = self.radius
            * (1.0
                + self
                    .harmonics
                    .iter()
                    .map(|&(k, a, p)| a * (k * theta + p).sin())
                    .sum::<f32>());
        ((u * u + v * v).sqrt() / border, theta)
    }

    /// Coverage of pixel (x, y): a one-pixel soft edge.
    fn cover(&self, x: u32, y: u32) -> (f32, f32, f32) {
        let (rho, theta) = self.rho(x as f32 + 0.5, y as f32 + 0.5);
        let edge_px = self.radius.max(1.0);
        ((1.0 - rho) * edge_px + 0.5, rho, theta)
    }

    fn bounding_box(&self, width: u32, height: u32, reach: f32) -> [u32; 4] {
        let x0 = (self.cx - reach).max(0.0) as u32;
        let y0 = (self.cy - reach).max(0.0) as u32;
        let x1 = ((self.cx + reach).ceil() as u32).min(width);
        let y1 = ((self.cy + reach).ceil() as u32).min(height);
        let mut b = [u32::MAX, u32::MAX, 0, 0];
        for y in y0..y1 {
            for x in x0..x1 {
                if self.cover(x, y).0 > 0.0 {
                    b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
                }
            }
        }
        if b[0] == u32::MAX {
            [x0, y0, x0 + 1, y0 + 1]
        } else {
            b
        }
    }

    fn draw(&self, canvas: &mut Canvas, rng: &mut impl Rng) {
        let [x0, y0, x1, y1] = self.bbox;
        // Mean-preserving compensation for the dots' darkening.
        let lighten = self.dots.as_ref().map_or(1.0, |d| {
            let coverage = (PI * d.radius * d.radius / (d.spacing * d.spacing)).min(0.5);
            1.0 / (1.0 - d.darkness * coverage)
        });
        let tone = rng.random_range(0.8..0.95f32);
        for y in y0..y1 {
            for x in x0..x1 {
                let (cover, rho, theta) = self.cover(x, y);
                if cover <= 0.0 {
                    continue;
                }
                // Darker towards the centre, zero-mean variegation around the base colour.
                let radial = tone + (1.0 - tone) * rho.min(1.0);
                let vari = 1.0
                    + self.variegation
                        * (2.0 * theta + self.variegation_phase).sin()
                        * (1.0 - rho.min(1.0) * 0.5);
                let mut k = radial * vari * lighten;
                if let Some(d) = &self.dots {
                    k *= 1.0 - d.darkness * d.coverage(x, y);
                }
                let mut colour = [self.colour[0] * k, self.colour[1] * k, self.colour[2] * k];
                if let Some(v) = &self.veil {
                    // Blue-grey of the same brightness, blended in with a smooth falloff.
                    let (vx, vy) = (
                        self.cx + v.offset[0] * self.radius,
                        self.cy + v.offset[1] * self.radius,
                    );
                    let d2 = ((x as f32 + 0.5 - vx).powi(2) + (y as f32 + 0.5 - vy).powi(2))
                        / (v.radius * self.radius).powi(2);
                    let weight = v.strength * (1.0 - d2 * d2).max(0.0);
                    let grey = colour.iter().sum::<f32>() / 3.0;
                    let target = [grey * 0.7, grey * 0.9, grey * 1.4];
                    for c in 0..3 {
                        colour[c] += (target[c] - colour[c]) * weight;
                    }
                }
                canvas.blend(x, y, colour, cover.min(1.0) * 0.95);
            }
        }
    }
}

impl Dots {
    /// How much of pixel (x, y) a globule covers: the nearest jittered grid point's disc.
    fn coverage(&self, x: u32, y: u32) -> f32 {
        let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
        let (i, j) = ((px / self.spacing).floor(), (py / self.spacing).floor());
        let jitter = (self.spacing / 2.0 - self.radius - 0.5).max(0.0);
        let cx =
            (i + 0.5) * self.spacing + (hash01(i as u32, j as u32, self.seed) - 0.5) * 2.0 * jitter;
        let cy = (j + 0.5) * self.spacing
            + (hash01(j as u32, i as u32, self.seed ^ 0xabcd) - 0.5) * 2.0 * jitter;
        let d = ((px - cx).powi(2) + (py - cy).powi(2)).sqrt();
        (self.radius + 0.5 - d).clamp(0.0, 1.0)
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct SynthManifest {
    config: SynthConfig,
}

/// Writes a synthetic data set into `out` (see the module docs for the layout).
///
/// Images are written atomically one by one; CSVs last. A call with the same config over an
/// interrupted one keeps the images already written (they are deterministic) and writes the
/// rest; over a finished one it does nothing.
///
/// # Errors
/// If a file cannot be written, or `out` holds a data set made with another config.
pub fn generate(
    config: &SynthConfig,
    out: &Path,
    progress: &dyn crate::progress::Progress,
) -> Result<SynthReport> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let manifest_path = out.join("synth.json");
    let manifest = SynthManifest {
        config: config.clone(),
    };
    if let Ok(bytes) = std::fs::read(&manifest_path) {
        let existing: SynthManifest =
            serde_json::from_slice(&bytes).map_err(|e| DataError::Json {
                path: manifest_path.clone(),
                message: e.to_string(),
            })?;
        if existing != manifest {
            return Err(DataError::Invalid {
                name: "out",
                message: format!(
                    "{} holds a synthetic data set made with another config; choose another directory",
                    out.display()
                ),
            });
        }
    }
    write_json(&manifest_path, &manifest)?;

    let mut report = SynthReport::default();
    let mut tables = Vec::new();
    let mut all_signs = Vec::new();
    for (split, count) in [
        (SynthSplit::Train, config.train),
        (SynthSplit::Test, config.test),
    ] {
        let dir = out.join(split.name());
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let bar = progress.start(&format!("synth {}", split.name()), count as u64);
        let results: Vec<Result<(Record, Signs, bool)>> = (0..count)
            .into_par_iter()
            .map(|i| {
                let r = write_sample(config, split, i, &dir);
                bar.advance(1);
                r
            })
            .collect();
        drop(bar);
        let mut records = Vec::with_capacity(count);
        for r in results {
            let (record, signs, written) = r?;
            if written {
                report.written += 1;
            } else {
                report.kept += 1;
            }
            all_signs.push((record.image_name.clone(), record.target, signs));
            records.push(record);
        }
        let positives = records.iter().filter(|r| r.target == Some(1)).count();
        match split {
            SynthSplit::Train => report.train_positives = positives,
            SynthSplit::Test => report.test_positives = positives,
        }
        tables.push((split, records));
    }
    for (split, records) in &tables {
        write_csv(
            &out.join(format!("{}.csv", split.name())),
            records,
            *split == SynthSplit::Train,
        )?;
        if *split == SynthSplit::Test {
            write_labels(&out.join("test_labels.csv"), records)?;
        }
    }
    write_signs(&out.join("signs.csv"), config.family, &all_signs)?;
    Ok(report)
}

/// Renders and writes one image unless it exists; returns its record, its signs and whether it
/// was written.
fn write_sample(
    config: &SynthConfig,
    split: SynthSplit,
    index: usize,
    dir: &Path,
) -> Result<(Record, Signs, bool)> {
    let s = sample(config, split, index);
    let path: PathBuf = dir.join(format!("{}.jpg", s.record.image_name));
    if path.is_file() {
        return Ok((s.record, s.signs, false));
    }
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, config.quality)
        .encode_image(&s.image)
        .map_err(|e| DataError::Image {
            path: path.clone(),
            message: e.to_string(),
        })?;
    write_atomic(&path, &bytes)?;
    Ok((s.record, s.signs, true))
}

fn write_csv(path: &Path, records: &[Record], with_target: bool) -> Result<()> {
    let csv_error = |e: csv::Error| DataError::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header = vec![
        columns::IMAGE,
        columns::PATIENT,
        columns::SEX,
        columns::AGE,
        columns::SITE,
    ];
    if with_target {
        header.push(columns::TARGET);
    }
    header.extend(columns::LESION_BOX);
    writer.write_record(&header).map_err(csv_error)?;
    for r in records {
        let mut row = vec![
            r.image_name.clone(),
            r.patient_id.clone().unwrap_or_default(),
            r.sex.clone().unwrap_or_default(),
            r.age.map_or(String::new(), |a| format!("{a:.1}")),
            r.site.clone().unwrap_or_default(),
        ];
        if with_target {
            row.push(r.target.unwrap_or(0).to_string());
        }
        row.extend(
            r.lesion_box
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string),
        );
        writer.write_record(&row).map_err(csv_error)?;
    }
    let bytes = writer.into_inner().map_err(|e| DataError::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// `signs.csv`: `image_name,target,<the family's signs>` (0 or 1), training images first.
fn write_signs(path: &Path, family: Family, rows: &[(String, Option<u8>, Signs)]) -> Result<()> {
    SignsTable {
        names: family
            .sign_names()
            .iter()
            .map(ToString::to_string)
            .collect(),
        rows: rows
            .iter()
            .map(|(name, target, signs)| SignsRow {
                image_name: name.clone(),
                target: target.unwrap_or(0),
                flags: signs.flags().to_vec(),
            })
            .collect(),
    }
    .write(path)
}

/// `signs.csv` of a synthetic data set: `image_name,target,<sign>...`, each sign 0 or 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignsTable {
    /// The sign names: the columns after `image_name` and `target`.
    pub names: Vec<String>,
    /// One row per image.
    pub rows: Vec<SignsRow>,
}

/// One image of [`SignsTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignsRow {
    /// The image.
    pub image_name: String,
    /// Its label.
    pub target: u8,
    /// Whether it shows each sign, in [`SignsTable::names`] order.
    pub flags: Vec<bool>,
}

impl SignsTable {
    /// Writes the table atomically.
    ///
    /// # Errors
    /// An unwritable file.
    pub fn write(&self, path: &Path) -> Result<()> {
        let csv_error = |e: csv::Error| DataError::Csv {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut writer = csv::Writer::from_writer(Vec::new());
        let header = [columns::IMAGE, columns::TARGET]
            .into_iter()
            .chain(self.names.iter().map(String::as_str));
        writer.write_record(header).map_err(csv_error)?;
        for row in &self.rows {
            let cells = [row.image_name.clone(), row.target.to_string()]
                .into_iter()
                .chain(row.flags.iter().map(|&f| u8::from(f).to_string()));
            writer.write_record(cells).map_err(csv_error)?;
        }
        let bytes = writer.into_inner().map_err(|e| DataError::Csv {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        write_atomic(path, &bytes)
    }

    /// Reads a table written by [`Self::write`].
    ///
    /// # Errors
    /// An unreadable file, a header that is not `image_name,target,<sign>...` with at least
    /// one sign, or a cell that is not 0 or 1 (named with its row and column).
    pub fn read(path: &Path) -> Result<Self> {
        let csv_error = |e: csv::Error| DataError::Csv {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut reader = csv::Reader::from_path(path).map_err(csv_error)?;
        let header: Vec<String> = reader
            .headers()
            .map_err(csv_error)?
            .iter()
            .map(str::to_string)
            .collect();
        if header.len() < 3 || header[0] != columns::IMAGE || header[1] != columns::TARGET {
            return Err(DataError::Csv {
                path: path.to_path_buf(),
                message: format!(
                    "the header {:?} is not image_name,target,<sign>...",
                    header.join(",")
                ),
            });
        }
        let mut rows = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(csv_error)?;
            let bit = |c: usize| match record.get(c).map(str::trim) {
                Some("0") => Ok(false),
                Some("1") => Ok(true),
                other => Err(DataError::BadValue {
                    path: path.to_path_buf(),
                    row: i + 1,
                    column: header[c].clone(),
                    value: other.unwrap_or_default().to_string(),
                    message: "a sign or target is 0 or 1".into(),
                }),
            };
            rows.push(SignsRow {
                image_name: record.get(0).unwrap_or_default().trim().to_string(),
                target: u8::from(bit(1)?),
                flags: (2..header.len()).map(bit).collect::<Result<_>>()?,
            });
        }
        Ok(Self {
            names: header[2..].to_vec(),
            rows,
        })
    }
}

fn write_labels(path: &Path, records: &[Record]) -> Result<()> {
    let csv_error = |e: csv::Error| DataError::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record([columns::IMAGE, columns::TARGET])
        .map_err(csv_error)?;
    for r in records {
        writer
            .write_record([r.image_name.clone(), r.target.unwrap_or(0).to_string()])
            .map_err(csv_error)?;
    }
    let bytes = writer.into_inner().map_err(|e| DataError::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{Split, read_labels, read_metadata};

    /// A small data set of `family` without hair, rulers or bubbles.
    pub(super) fn small_of(family: Family) -> SynthConfig {
        SynthConfig {
            train: 12,
            test: 6,
            positive_rate: 0.5,
            min_side: 300,
            max_side: 420,
            hair: 0.0,
            ruler: 0.0,
            bubbles: 0.0,
            ..SynthConfig::of_family(family)
        }
    }

    fn small() -> SynthConfig {
        small_of(Family::Skin)
    }

    /// Asserts that `truth` lies inside the centre square of a `width`×`height` image.
    pub(super) fn assert_in_centre_square(truth: [u32; 4], (w, h): (u32, u32)) {
        let side = w.min(h);
        let (ox, oy) = ((w - side) / 2, (h - side) / 2);
        assert!(
            truth[0] >= ox && truth[2] <= ox + side && truth[1] >= oy && truth[3] <= oy + side,
            "{truth:?} outside the centre square of {w}×{h}"
        );
    }

    /// The bounding box of pixels much darker than the skin within `window` (freckles, the
    /// context signal, are dark too but kept a quarter of the lesion's size away from it).
    fn dark_box(img: &RgbImage, window: [u32; 4]) -> [u32; 4] {
        let mut b = [u32::MAX, u32::MAX, 0, 0];
        for (x, y, p) in img.enumerate_pixels() {
            let inside = x >= window[0] && x < window[2] && y >= window[1] && y < window[3];
            if inside && u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2]) < 360 {
                b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
            }
        }
        b
    }

    pub(super) fn iou(a: [u32; 4], b: [u32; 4]) -> f64 {
        let w = a[2].min(b[2]).saturating_sub(a[0].max(b[0]));
        let h = a[3].min(b[3]).saturating_sub(a[1].max(b[1]));
        let inter = f64::from(w * h);
        let area = |r: [u32; 4]| f64::from((r[2] - r[0]) * (r[3] - r[1]));
        inter / (area(a) + area(b) - inter)
    }

    #[test]
    fn the_box_columns_match_the_rendered_lesion() {
        let config = small();
        for i in 0..8 {
            let s = sample(&config, SynthSplit::Train, i);
            let truth = s.record.lesion_box.expect("box");
            // A window a fifth of the box larger on each side: a box that is off shows there.
            let (bw, bh) = ((truth[2] - truth[0]) / 5, (truth[3] - truth[1]) / 5);
            let window = [
                truth[0].saturating_sub(bw),
                truth[1].saturating_sub(bh),
                truth[2] + bw,
                truth[3] + bh,
            ];
            let seen = dark_box(&s.image, window);
            assert!(
                iou(truth, seen) > 0.8,
                "image {i}: box {truth:?}, dark pixels {seen:?}"
            );
            assert_in_centre_square(truth, s.image.dimensions());
        }
    }

    #[test]
    fn samples_are_deterministic_and_seeded() {
        let config = small();
        let a = sample(&config, SynthSplit::Test, 3);
        let b = sample(&config, SynthSplit::Test, 3);
        assert_eq!(a.image, b.image);
        assert_eq!(a.record, b.record);
        let c = sample(&SynthConfig { seed: 9, ..config }, SynthSplit::Test, 3);
        assert_ne!(a.image, c.image);
    }

    #[test]
    fn both_classes_have_the_same_mean_lesion_colour() {
        // The dots are compensated: the malignant lesion's mean is the benign one's, up to the
        // spread of the random base colours.
        let config = SynthConfig {
            positive_rate: 0.5,
            ..small()
        };
        let (mut sums, mut counts) = ([0.0f64; 2], [0usize; 2]);
        for i in 0..40 {
            let s = sample(&config, SynthSplit::Train, i);
            let [x0, y0, x1, y1] = s.record.lesion_box.expect("box");
            let (cx, cy, r) = (x0.midpoint(x1), y0.midpoint(y1), (x1 - x0).min(y1 - y0) / 5);
            let mut total = 0.0;
            for y in cy - r..cy + r {
                for x in cx - r..cx + r {
                    total += f64::from(
                        s.image
                            .get_pixel(x, y)
                            .0
                            .iter()
                            .map(|&v| u32::from(v))
                            .sum::<u32>(),
                    );
                }
            }
            let class = usize::from(s.record.target == Some(1));
            sums[class] += total / f64::from(4 * r * r);
            counts[class] += 1;
        }
        let means = [sums[0] / counts[0] as f64, sums[1] / counts[1] as f64];
        assert!(
            (means[0] - means[1]).abs() < 0.06 * means[0],
            "class means {means:?}"
        );
    }

    #[test]
    fn generate_writes_the_isic_layout_and_resumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = small();
        let report = generate(&config, dir.path(), &crate::progress::Silent).expect("generates");
        assert_eq!((report.written, report.kept), (18, 0));
        let train = read_metadata(&dir.path().join("train.csv"), Split::Train).expect("train.csv");
        let test = read_metadata(&dir.path().join("test.csv"), Split::Test).expect("test.csv");
        assert_eq!((train.len(), test.len()), (12, 6));
        assert!(
            test.iter().all(|r| r.target.is_none()),
            "test.csv has no labels"
        );
        assert!(train.iter().all(|r| r.lesion_box.is_some()));
        let labels = read_labels(&dir.path().join("test_labels.csv")).expect("labels");
        assert_eq!(labels.len(), 6);
        let signs = std::fs::read_to_string(dir.path().join("signs.csv")).expect("signs.csv");
        let lines: Vec<&str> = signs.lines().collect();
        assert_eq!(lines[0], "image_name,target,veil,globules,freckles");
        assert_eq!(lines.len(), 1 + 18);
        for (line, (split, i)) in lines[1..].iter().zip(
            (0..12)
                .map(|i| (SynthSplit::Train, i))
                .chain((0..6).map(|i| (SynthSplit::Test, i))),
        ) {
            let s = sample(&config, split, i);
            let flags: Vec<_> = s
                .signs
                .flags()
                .iter()
                .map(|&f| u8::from(f).to_string())
                .collect();
            let flags = flags.join(",");
            let expected = format!(
                "{},{},{flags}",
                s.record.image_name,
                s.record.target.unwrap_or(0)
            );
            assert_eq!(*line, expected);
        }
        // The table reads back as written; a cell that is not 0 or 1 is named.
        let table = SignsTable::read(&dir.path().join("signs.csv")).expect("reads");
        assert_eq!(table.names, ["veil", "globules", "freckles"]);
        assert_eq!(table.rows.len(), 18);
        let first = sample(&config, SynthSplit::Train, 0);
        assert_eq!(table.rows[0].flags, first.signs.flags());
        let bad = dir.path().join("bad_signs.csv");
        std::fs::write(&bad, signs.replacen(lines[1], "ISIC_x,1,0,2,0", 1)).expect("write");
        let err = SignsTable::read(&bad).expect_err("a 2").to_string();
        assert!(
            err.contains("bad_signs.csv") && err.contains("globules") && err.contains("\"2\""),
            "{err}"
        );
        assert_eq!(
            labels.iter().filter(|l| l.1 == 1).count(),
            report.test_positives
        );
        for r in &train {
            assert!(
                dir.path()
                    .join("train")
                    .join(format!("{}.jpg", r.image_name))
                    .is_file()
            );
        }
        // An interrupted run: one image gone. The same call writes just that one.
        std::fs::remove_file(
            dir.path()
                .join("test")
                .join(format!("{}.jpg", test[2].image_name)),
        )
        .expect("rm");
        let again = generate(&config, dir.path(), &crate::progress::Silent).expect("resumes");
        assert_eq!((again.written, again.kept), (1, 17));
        let other = SynthConfig { seed: 1, ..config };
        assert!(
            generate(&other, dir.path(), &crate::progress::Silent).is_err(),
            "another config into the same directory"
        );
    }
}
