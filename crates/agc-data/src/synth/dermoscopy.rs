//! The dermoscopy family: synthetic dermoscope photographs, designed apart from the skin family
//! to check the method on images it was not tuned to.
//!
//! What real dermoscopy has and the skin family lacks:
//!
//! - **the optics**: in about a third of the images the lesion is seen through a circular
//!   field with a dark vignette towards its rim and black outside it (so the centre square has
//!   black corners); the others have a milder vignette, some with black lens corners;
//! - **distractors**: a ruler along an edge, ink marks beside the lesion, gel bubbles with
//!   bright rims, specular glare, hair: none of them tells the class;
//! - **small lesions as well as large ones**: 5–32 % of the shorter side across by default,
//!   log-uniform, blob-shaped (a union of ellipses with a noisy border), anywhere in the centre
//!   square and inside the field;
//! - **fine class evidence**: every lesion carries a pigment network, a mesh of lines a pixel
//!   or two wide every 3–9 original pixels. Most malignant lesions (75 %, against 10 % of the
//!   benign ones) carry an *atypical* one: uneven spacing, thick broken lines, scattered dots,
//!   stronger contrast. The texture is mean-free over the lesion, so both classes darken the
//!   skin equally and shrinking the whole photograph (by 6 to 12 times to 112 px) averages it
//!   away; a crop around the lesion keeps it;
//! - **weak coarse cues**: malignant borders are rougher on average and some lesions show a
//!   blue-grey structure, more often malignant ones; the distributions overlap.
//!
//! `signs.csv` holds `atypical_network` (fine), `irregular_border` (the rougher half of the
//! border roughness range) and `blue_grey` (coarse).

// Geometry reads best with its usual one-letter names (x, y, u, v, r, d).
#![allow(clippy::many_single_char_names)]

use std::f32::consts::PI;

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Canvas, Family, Signs, SynthConfig, hash01};

/// The dermoscopy family's signs, the columns of its `signs.csv` after `image_name,target`.
pub(super) const SIGN_NAMES: &[&str] = &["atypical_network", "irregular_border", "blue_grey"];

/// Chance of a circular dermoscope field (black outside, dark vignette at the rim).
const FIELD_CHANCE: f64 = 0.35;
/// Chance, without a circular field, of black lens corners.
const CORNER_CHANCE: f64 = 0.3;
/// Chance of ink marks beside the lesion.
const INK_CHANCE: f64 = 0.2;
/// Chance of specular glare.
const GLARE_CHANCE: f64 = 0.3;
/// Chance of an atypical pigment network in a benign and in a malignant lesion.
const ATYPICAL_CHANCE: [f64; 2] = [0.1, 0.75];
/// Chance of a blue-grey structure in a benign and in a malignant lesion.
const BLUE_GREY_CHANCE: [f64; 2] = [0.12, 0.3];
/// Border roughness ranges of benign and malignant lesions (amplitude of the border noise, in
/// lesion radii), and the cut above which a border counts as irregular in `signs.csv`.
const ROUGHNESS: [(f32, f32); 2] = [(0.02, 0.14), (0.06, 0.24)];
const IRREGULAR_CUT: f32 = 0.13;

/// Renders one image of the family: the image, its lesion's box and its signs.
pub(super) fn render(
    config: &SynthConfig,
    rng: &mut ChaCha8Rng,
    positive: bool,
    width: u32,
    height: u32,
) -> (RgbImage, [u32; 4], Signs) {
    let mut canvas = skin(width, height, rng);
    let lesion = Lesion::random(rng, config, positive, width, height);
    let field = Field::random(rng, width, height, &lesion);
    lesion.draw(&mut canvas);
    if rng.random_bool(INK_CHANCE) {
        ink(&mut canvas, rng, &lesion);
    }
    if rng.random_bool(config.ruler.clamp(0.0, 1.0)) {
        ruler(&mut canvas, rng);
    }
    if rng.random_bool(config.hair.clamp(0.0, 1.0)) {
        hair(&mut canvas, rng);
    }
    if rng.random_bool(config.bubbles.clamp(0.0, 1.0)) {
        bubbles(&mut canvas, rng);
    }
    if rng.random_bool(GLARE_CHANCE) {
        glare(&mut canvas, rng);
    }
    field.apply(&mut canvas);
    let signs = Signs::new(
        Family::Dermoscopy,
        vec![
            lesion.network.atypical,
            lesion.roughness > IRREGULAR_CUT,
            lesion.blue_grey.is_some(),
        ],
    );
    (canvas.finish(), lesion.bbox, signs)
}

/// Smooth 2D value noise in [0, 1) with lattice spacing 1.
fn value_noise(x: f32, y: f32, seed: u32) -> f32 {
    let (xi, yi) = (x.floor(), y.floor());
    let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
    let (sx, sy) = (smooth(x - xi), smooth(y - yi));
    // Lattice coordinates may be negative: wrapping them is still a fixed hash.
    let (ix, iy) = (xi as i32, yi as i32);
    let at = |dx: i32, dy: i32| hash01((ix + dx) as u32, (iy + dy) as u32, seed);
    let top = at(0, 0) + (at(1, 0) - at(0, 0)) * sx;
    let bottom = at(0, 1) + (at(1, 1) - at(0, 1)) * sx;
    top + (bottom - top) * sy
}

/// Pinkish skin: a base tone, broad uneven shading and a faint fine grain.
fn skin(width: u32, height: u32, rng: &mut impl Rng) -> Canvas {
    let base = [
        rng.random_range(200.0..240.0f32),
        rng.random_range(150.0..185.0f32),
        rng.random_range(135.0..170.0f32),
    ];
    let scale = width.min(height) as f32 / rng.random_range(2.0..4.0f32);
    let shade = rng.random_range(0.05..0.15f32);
    let (broad, grain): (u32, u32) = (rng.random(), rng.random());
    let mut pixels = Vec::with_capacity((width * height) as usize);
    for y in 0..height {
        for x in 0..width {
            let (fx, fy) = (x as f32, y as f32);
            let k = (1.0 + shade * 2.0 * (value_noise(fx / scale, fy / scale, broad) - 0.5))
                * (1.0 + 0.06 * (value_noise(fx / 2.5, fy / 2.5, grain) - 0.5));
            pixels.push([base[0] * k, base[1] * k, base[2] * k]);
        }
    }
    Canvas {
        width,
        height,
        pixels,
        noise_seed: rng.random(),
    }
}

/// One ellipse of a lesion's outline, relative to the lesion's centre, in pixels.
struct Blob {
    dx: f32,
    dy: f32,
    ax: f32,
    ay: f32,
    cos: f32,
    sin: f32,
}

impl Blob {
    /// 1 at the centre, 0 on the outline, negative outside (in units of the ellipse's radii).
    fn level(&self, x: f32, y: f32) -> f32 {
        let (dx, dy) = (x - self.dx, y - self.dy);
        let (u, v) = (
            (dx * self.cos + dy * self.sin) / self.ax,
            (-dx * self.sin + dy * self.cos) / self.ay,
        );
        1.0 - (u * u + v * v).sqrt()
    }
}

/// A pigment network: a warped mesh of dark lines; atypical ones are uneven, broken, thicker
/// and dotted.
struct Network {
    spacing: f32,
    line: f32,
    cos: f32,
    sin: f32,
    atypical: bool,
    /// Contrast: how far a line darkens, and the mesh between lightens, the lesion's colour.
    contrast: f32,
    seed: u32,
}

impl Network {
    /// A network for a lesion `diameter` pixels across. Its mesh scales weakly with the
    /// lesion: 3–9 px in the original, so that a whole photograph shrunk to 112 px loses it
    /// while a crop keeps it.
    fn random(rng: &mut impl Rng, diameter: f32, atypical: bool) -> Self {
        let spacing = (diameter / rng.random_range(18.0..30.0f32)).clamp(3.0, 9.0);
        let turn = rng.random_range(0.0..PI);
        Self {
            spacing,
            line: if atypical {
                rng.random_range(1.2..2.0)
            } else {
                rng.random_range(0.9..1.5)
            },
            cos: turn.cos(),
            sin: turn.sin(),
            atypical,
            contrast: if atypical {
                rng.random_range(0.3..0.5)
            } else if rng.random_bool(0.25) {
                // A homogeneous benign lesion: hardly any network.
                rng.random_range(0.03..0.1)
            } else {
                rng.random_range(0.15..0.35)
            },
            seed: rng.random(),
        }
    }

    /// How much pigment covers pixel (x, y), in [0, 1].
    fn value(&self, x: f32, y: f32) -> f32 {
        let s = self.spacing;
        let n = |scale: f32, k: u32| value_noise(x / scale, y / scale, self.seed ^ k);
        // The mesh's own coordinates, warped by smooth noise; an atypical mesh also stretches
        // and squeezes locally (uneven holes).
        let stretch = if self.atypical {
            0.65 + 0.7 * n(4.0 * s, 0x11)
        } else {
            1.0
        };
        let u = (x * self.cos + y * self.sin) / (s * stretch) + 0.6 * (n(3.0 * s, 0x22) - 0.5);
        let v = (-x * self.sin + y * self.cos) / (s * stretch) + 0.6 * (n(3.0 * s, 0x33) - 0.5);
        let line = if self.atypical {
            self.line * (0.6 + 1.4 * n(2.0 * s, 0x44))
        } else {
            self.line
        };
        let to_line = |t: f32| (t - t.round()).abs() * s * stretch;
        let cover = |d: f32| (line / 2.0 + 0.5 - d).clamp(0.0, 1.0);
        let mut value = cover(to_line(u)).max(cover(to_line(v)));
        if self.atypical {
            // Broken lines: gaps where smooth noise is low.
            value *= ((n(0.8 * s, 0x55) - 0.3) * 5.0).clamp(0.0, 1.0);
            // Scattered dots on a jittered grid, about half the cells.
            let cell = 2.2 * s;
            let (i, j) = ((x / cell).floor(), (y / cell).floor());
            let h = |k: u32| hash01(i as i32 as u32, j as i32 as u32, self.seed ^ k);
            if h(0x66) < 0.5 {
                let (cx, cy) = (
                    (i + 0.2 + 0.6 * h(0x77)) * cell,
                    (j + 0.2 + 0.6 * h(0x88)) * cell,
                );
                let r = 0.8 + 1.2 * h(0x99);
                let d = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt();
                value = value.max((r + 0.5 - d).clamp(0.0, 1.0));
            }
        }
        value
    }
}

/// A blue-grey structure: a patch of the lesion shifted to blue-grey at the same brightness.
struct BlueGrey {
    x: f32,
    y: f32,
    radius: f32,
    strength: f32,
}

/// One lesion: its outline, colour, network and box.
struct Lesion {
    cx: f32,
    cy: f32,
    /// Half the drawn diameter, in pixels.
    radius: f32,
    blobs: Vec<Blob>,
    roughness: f32,
    border_seed: u32,
    border_frequency: f32,
    /// Width of the soft edge, in pixels.
    edge: f32,
    colour: [f32; 3],
    centre_dark: f32,
    variegation: f32,
    variegation_seed: u32,
    network: Network,
    blue_grey: Option<BlueGrey>,
    /// The farthest the lesion reaches from its centre, in pixels.
    reach: f32,
    /// `[x0, y0, x1, y1]`: the pixels at least half covered.
    bbox: [u32; 4],
    /// The network's mean over those pixels, subtracted so that the texture darkens the lesion
    /// by the same amount in both classes.
    network_mean: f32,
}

impl Lesion {
    // Over 80 lines on purpose: every random draw of a lesion in one fixed order, so that a
    // seed gives the same data set whatever else changes; split up, the order would hide.
    fn random(
        rng: &mut impl Rng,
        config: &SynthConfig,
        positive: bool,
        width: u32,
        height: u32,
    ) -> Self {
        let class = usize::from(positive);
        let side = width.min(height) as f32;
        let (lo, hi) = (
            config.lesion_min.max(0.01),
            config.lesion_max.max(config.lesion_min.max(0.01)),
        );
        let diameter = side * (lo.ln() + rng.random::<f32>() * (hi.ln() - lo.ln())).exp();
        let radius = (diameter / 2.0).max(4.0);
        let mut blobs = Vec::new();
        let main = radius * rng.random_range(0.8..1.0f32);
        let angle = rng.random_range(0.0..PI);
        blobs.push(Blob {
            dx: 0.0,
            dy: 0.0,
            ax: main,
            ay: main * rng.random_range(0.7..1.0f32),
            cos: angle.cos(),
            sin: angle.sin(),
        });
        // Malignant lesions are a little more often lopsided (more lobes).
        let lobes = if positive {
            rng.random_range(1..=3)
        } else {
            rng.random_range(0..=2)
        };
        for _ in 0..lobes {
            let (a, d) = (
                rng.random_range(0.0..2.0 * PI),
                radius * rng.random_range(0.15..0.45f32),
            );
            let r = radius * rng.random_range(0.45..0.75f32);
            let turn = rng.random_range(0.0..PI);
            blobs.push(Blob {
                dx: d * a.cos(),
                dy: d * a.sin(),
                ax: r,
                ay: r * rng.random_range(0.6..1.0f32),
                cos: turn.cos(),
                sin: turn.sin(),
            });
        }
        let (rough_lo, rough_hi) = ROUGHNESS[class];
        let roughness = rng.random_range(rough_lo..rough_hi);
        let edge = rng.random_range(1.0..4.0f32);
        let reach = blobs
            .iter()
            .map(|b| b.dx.hypot(b.dy) + b.ax.max(b.ay))
            .fold(0.0f32, f32::max)
            * (1.0 + roughness)
            + edge
            + 2.0;
        let atypical = rng.random_bool(ATYPICAL_CHANCE[class]);
        let network = Network::random(rng, diameter, atypical);
        let colour = [
            rng.random_range(105.0..165.0f32),
            rng.random_range(65.0..105.0f32),
            rng.random_range(45.0..80.0f32),
        ];
        let variegation = if positive {
            rng.random_range(0.02..0.12f32)
        } else {
            rng.random_range(0.0..0.08f32)
        };
        // The centre square, inside which the lesion lies whole.
        let (sx, sy) = ((width as f32 - side) / 2.0, (height as f32 - side) / 2.0);
        let margin = reach.min(side / 2.0 - 1.0);
        let cx = sx + rng.random_range(margin..=(side - margin).max(margin));
        let cy = sy + rng.random_range(margin..=(side - margin).max(margin));
        let blue_grey = rng.random_bool(BLUE_GREY_CHANCE[class]).then(|| {
            let (a, d) = (
                rng.random_range(0.0..2.0 * PI),
                radius * rng.random_range(0.0..0.4f32),
            );
            BlueGrey {
                x: cx + d * a.cos(),
                y: cy + d * a.sin(),
                radius: radius * rng.random_range(0.3..0.6f32),
                strength: rng.random_range(0.25..0.5f32),
            }
        });
        let mut lesion = Self {
            cx,
            cy,
            radius,
            blobs,
            roughness,
            border_seed: rng.random(),
            border_frequency: rng.random_range(2.0..5.0f32),
            edge,
            colour,
            centre_dark: rng.random_range(0.0..0.25f32),
            variegation,
            variegation_seed: rng.random(),
            network,
            blue_grey,
            reach,
            bbox: [0; 4],
            network_mean: 0.0,
        };
        lesion.measure(width, height);
        lesion
    }

    /// The pixel window the lesion can touch, `[x0, y0, x1, y1)`.
    fn window(&self, width: u32, height: u32) -> [u32; 4] {
        let clip = |v: f32, max: u32| (v.max(0.0) as u32).min(max);
        [
            clip(self.cx - self.reach, width),
            clip(self.cy - self.reach, height),
            clip(self.cx + self.reach + 1.0, width),
            clip(self.cy + self.reach + 1.0, height),
        ]
    }

    /// How much of pixel (x, y) the lesion covers, in [0, 1].
    fn coverage(&self, x: u32, y: u32) -> f32 {
        let (px, py) = (x as f32 + 0.5 - self.cx, y as f32 + 0.5 - self.cy);
        let level = self
            .blobs
            .iter()
            .map(|b| b.level(px, py))
            .fold(f32::MIN, f32::max);
        // A noisy border: smooth noise around the circle (so it closes on itself).
        let angle = py.atan2(px);
        let f = self.border_frequency;
        let wobble = value_noise(
            f * angle.cos() + 9.0,
            f * angle.sin() + 9.0,
            self.border_seed,
        ) - 0.5;
        let signed = (level + 2.0 * self.roughness * wobble) * self.radius;
        (signed / self.edge + 0.5).clamp(0.0, 1.0)
    }

    /// Sets the box (the pixels at least half covered) and the network's mean over them.
    fn measure(&mut self, width: u32, height: u32) {
        let [x0, y0, x1, y1] = self.window(width, height);
        let mut bbox = [u32::MAX, u32::MAX, 0, 0];
        let (mut sum, mut count) = (0.0f64, 0usize);
        for y in y0..y1 {
            for x in x0..x1 {
                if self.coverage(x, y) >= 0.5 {
                    bbox = [
                        bbox[0].min(x),
                        bbox[1].min(y),
                        bbox[2].max(x + 1),
                        bbox[3].max(y + 1),
                    ];
                    sum += f64::from(self.network.value(x as f32 + 0.5, y as f32 + 0.5));
                    count += 1;
                }
            }
        }
        if count == 0 {
            // Too small to cover half a pixel anywhere: the centre pixel.
            let (x, y) = (self.cx as u32, self.cy as u32);
            bbox = [x, y, x + 1, y + 1];
        }
        self.bbox = bbox;
        self.network_mean = if count > 0 {
            (sum / count as f64) as f32
        } else {
            0.0
        };
    }

    fn draw(&self, canvas: &mut Canvas) {
        let [x0, y0, x1, y1] = self.window(canvas.width, canvas.height);
        let scale = (self.radius / 2.0).max(2.0);
        for y in y0..y1 {
            for x in x0..x1 {
                let cover = self.coverage(x, y);
                if cover <= 0.0 {
                    continue;
                }
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let r2 = ((px - self.cx).powi(2) + (py - self.cy).powi(2)) / self.radius.powi(2);
                let shade = (1.0 - self.centre_dark * (1.0 - r2).max(0.0))
                    * (1.0
                        + self.variegation
                            * 2.0
                            * (value_noise(px / scale, py / scale, self.variegation_seed) - 0.5));
                let texture =
                    1.0 - self.network.contrast * (self.network.value(px, py) - self.network_mean);
                let k = shade * texture;
                let mut colour = self.colour.map(|c| c * k);
                if let Some(b) = &self.blue_grey {
                    let d2 = ((px - b.x).powi(2) + (py - b.y).powi(2)) / b.radius.powi(2);
                    let weight = b.strength * (1.0 - d2).max(0.0).powi(2);
                    let grey = colour.iter().sum::<f32>() / 3.0;
                    let target = [grey * 0.75, grey * 0.85, grey * 1.4];
                    for c in 0..3 {
                        colour[c] += (target[c] - colour[c]) * weight;
                    }
                }
                canvas.blend(x, y, colour, cover * 0.95);
            }
        }
    }
}

/// The optics around the image: a circular dermoscope field, or a mild vignette with or without
/// black lens corners.
enum Field {
    Circle {
        cx: f32,
        cy: f32,
        radius: f32,
        /// The share of the radius, from the rim inwards, that the vignette darkens.
        rim: f32,
        /// How dark the vignette gets at the rim.
        depth: f32,
    },
    Open {
        vignette: f32,
        /// The lens circle's radius (black outside), in pixels, if the corners are black.
        corners: Option<f32>,
    },
}

impl Field {
    /// A field that leaves the lesion inside it.
    fn random(rng: &mut impl Rng, width: u32, height: u32, lesion: &Lesion) -> Self {
        let (w, h) = (width as f32, height as f32);
        let side = w.min(h);
        if rng.random_bool(FIELD_CHANCE) {
            let cx = w / 2.0 + side * rng.random_range(-0.03..0.03f32);
            let cy = h / 2.0 + side * rng.random_range(-0.03..0.03f32);
            let holds = ((lesion.cx - cx).hypot(lesion.cy - cy) + lesion.reach) / 0.92;
            Self::Circle {
                cx,
                cy,
                radius: (side * rng.random_range(0.45..0.6f32)).max(holds),
                rim: rng.random_range(0.15..0.35),
                depth: rng.random_range(0.5..0.85),
            }
        } else {
            let half_diagonal = w.hypot(h) / 2.0;
            let corners = rng.random_bool(CORNER_CHANCE).then(|| {
                let holds = (lesion.cx - w / 2.0).hypot(lesion.cy - h / 2.0) + lesion.reach + 2.0;
                (half_diagonal * rng.random_range(0.75..0.92f32)).max(holds)
            });
            Self::Open {
                vignette: rng.random_range(0.1..0.35),
                corners,
            }
        }
    }

    fn apply(&self, canvas: &mut Canvas) {
        let (w, h) = (canvas.width as f32, canvas.height as f32);
        let black = [12.0, 10.0, 11.0];
        for y in 0..canvas.height {
            for x in 0..canvas.width {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let p = &mut canvas.pixels[(y * canvas.width + x) as usize];
                let (gain, outside) = match *self {
                    Self::Circle {
                        cx,
                        cy,
                        radius,
                        rim,
                        depth,
                    } => {
                        let d = (px - cx).hypot(py - cy);
                        let t = ((d / radius - (1.0 - rim)) / rim).clamp(0.0, 1.0);
                        (
                            1.0 - depth * t * t,
                            (d - radius + 1.0).clamp(0.0, 2.0) / 2.0,
                        )
                    }
                    Self::Open { vignette, corners } => {
                        let d = (px - w / 2.0).hypot(py - h / 2.0);
                        let r2 = d * d / (w * w / 4.0 + h * h / 4.0);
                        let outside = corners.map_or(0.0, |r| (d - r + 1.0).clamp(0.0, 2.0) / 2.0);
                        (1.0 - vignette * r2, outside)
                    }
                };
                for c in 0..3 {
                    p[c] = p[c] * gain * (1.0 - outside) + black[c] * outside;
                }
            }
        }
    }
}

/// Purple or blue marker ink beside the lesion (surgeons mark lesions of both classes).
fn ink(canvas: &mut Canvas, rng: &mut impl Rng, lesion: &Lesion) {
    let colour = if rng.random_bool(0.5) {
        [115.0, 60.0, 150.0]
    } else {
        [50.0, 70.0, 165.0]
    };
    for _ in 0..rng.random_range(1..=3) {
        let a = rng.random_range(0.0..2.0 * PI);
        let d = lesion.reach * rng.random_range(1.3..1.9f32);
        let (x, y) = (lesion.cx + d * a.cos(), lesion.cy + d * a.sin());
        let r = rng.random_range(3.0..10.0f32);
        let alpha = rng.random_range(0.55..0.85f32);
        if rng.random_bool(0.5) {
            canvas.disc(x, y, r, colour, alpha);
        } else {
            // A short stroke along the lesion's outline.
            let arc = rng.random_range(0.2..0.6f32);
            let steps = (arc * d) as usize + 1;
            for s in 0..=steps {
                let t = a + arc * s as f32 / steps as f32;
                canvas.disc(
                    lesion.cx + d * t.cos(),
                    lesion.cy + d * t.sin(),
                    r / 3.0,
                    colour,
                    alpha,
                );
            }
        }
    }
}

/// A transparent ruler: a light strip with millimetre ticks, longer every fifth and tenth,
/// and dark figures beside every tenth.
fn ruler(canvas: &mut Canvas, rng: &mut impl Rng) {
    let vertical = rng.random_bool(0.5);
    let (len, across) = canvas.along_across(vertical);
    let thick = (across / 12).max(16);
    let inset = rng.random_range(0..=across / 20);
    let start = if rng.random_bool(0.5) {
        inset
    } else {
        across - thick - inset
    };
    let mm = rng.random_range(8..=16u32);
    for along in 0..len {
        for b in start..start + thick {
            let depth = b - start;
            let mark = match (along / mm) % 10 {
                0 => thick * 3 / 5,
                5 => thick * 2 / 5,
                _ => thick / 4,
            };
            let on_tick = along % mm == 0 && depth < mark;
            let figure = (along / mm) % 10 == 0
                && along % mm > 2
                && along % mm < mm.min(8)
                && depth > thick * 2 / 3
                && depth < thick - 3;
            let (colour, alpha) = if on_tick || figure {
                ([25.0, 25.0, 30.0], 0.85)
            } else {
                ([245.0, 245.0, 240.0], 0.45)
            };
            let (x, y) = if vertical { (b, along) } else { (along, b) };
            canvas.blend(x, y, colour, alpha);
        }
    }
}

/// Hairs: thin dark strands that wander (a random walk with a slowly turning heading).
fn hair(canvas: &mut Canvas, rng: &mut impl Rng) {
    let (w, h) = (canvas.width as f32, canvas.height as f32);
    let side = w.min(h);
    for _ in 0..rng.random_range(3..=25) {
        let colour = [
            rng.random_range(15.0..60.0f32),
            rng.random_range(12.0..45.0f32),
            rng.random_range(10.0..35.0f32),
        ];
        let (mut x, mut y) = (rng.random_range(0.0..w), rng.random_range(0.0..h));
        let mut heading = rng.random_range(0.0..2.0 * PI);
        let mut turn = 0.0f32;
        let width = rng.random_range(0.5..1.3f32);
        let alpha = rng.random_range(0.6..0.9f32);
        for _ in 0..(side * rng.random_range(0.15..0.7f32)) as usize {
            canvas.disc(x, y, width, colour, alpha);
            turn = (turn + rng.random_range(-0.004..0.004f32)).clamp(-0.02, 0.02);
            heading += turn;
            x += heading.cos();
            y += heading.sin();
        }
    }
}

/// Gel bubbles: clear discs with a bright rim on one side and a thin dark ring on the other.
fn bubbles(canvas: &mut Canvas, rng: &mut impl Rng) {
    let side = canvas.width.min(canvas.height) as f32;
    for _ in 0..rng.random_range(1..=8) {
        let r = rng.random_range(4.0..(side * 0.06).max(5.0));
        let cx = rng.random_range(0.0..canvas.width as f32);
        let cy = rng.random_range(0.0..canvas.height as f32);
        let light = rng.random_range(0.0..2.0 * PI);
        let (x0, x1) = ((cx - r - 2.0).max(0.0) as u32, (cx + r + 2.0) as u32);
        let (y0, y1) = ((cy - r - 2.0).max(0.0) as u32, (cy + r + 2.0) as u32);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                let d = dx.hypot(dy);
                if d > r + 1.0 {
                    continue;
                }
                let facing = (dy.atan2(dx) - light).cos();
                let rim_cover = (1.0 - (d - (r - 1.0)).abs()).clamp(0.0, 1.0);
                if facing > 0.2 {
                    canvas.blend(x, y, [255.0, 255.0, 255.0], 0.8 * rim_cover * facing);
                } else {
                    canvas.blend(x, y, [40.0, 35.0, 35.0], 0.5 * rim_cover * -facing.min(0.0));
                }
                if d < r - 1.0 {
                    canvas.blend(x, y, [255.0, 255.0, 255.0], 0.07);
                }
            }
        }
    }
}

/// Specular glare: one to four bright elongated spots.
fn glare(canvas: &mut Canvas, rng: &mut impl Rng) {
    for _ in 0..rng.random_range(1..=4) {
        let r = rng.random_range(4.0..25.0f32);
        let stretch = rng.random_range(1.0..2.5f32);
        let turn = rng.random_range(0.0..PI);
        let (cos, sin) = (turn.cos(), turn.sin());
        let cx = rng.random_range(0.0..canvas.width as f32);
        let cy = rng.random_range(0.0..canvas.height as f32);
        let reach = 2.5 * r * stretch;
        let (x0, x1) = ((cx - reach).max(0.0) as u32, (cx + reach) as u32);
        let (y0, y1) = ((cy - reach).max(0.0) as u32, (cy + reach) as u32);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                let (u, v) = (
                    (dx * cos + dy * sin) / (r * stretch),
                    (-dx * sin + dy * cos) / r,
                );
                let alpha = 1.3 * (-(u * u + v * v)).exp();
                canvas.blend(x, y, [255.0, 255.0, 252.0], alpha);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_in_centre_square, iou, small_of};
    use super::super::{SynthSplit, sample};
    use super::*;

    fn small() -> SynthConfig {
        SynthConfig {
            max_side: 480,
            ..small_of(Family::Dermoscopy)
        }
    }

    fn sum(p: image::Rgb<u8>) -> f32 {
        p.0.iter().map(|&v| f32::from(v)).sum()
    }

    #[test]
    fn the_box_columns_match_the_rendered_lesion() {
        let config = small();
        let mut checked = 0;
        for i in 0..24 {
            let s = sample(&config, SynthSplit::Train, i);
            let truth = s.record.lesion_box.expect("box");
            let (w, h) = s.image.dimensions();
            // A circular field's dark rim next to the lesion would count as lesion here: those
            // images are checked by `a_circular_field_is_black_outside_and_holds_the_lesion`.
            if [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)]
                .iter()
                .any(|&(x, y)| sum(*s.image.get_pixel(x, y)) < 90.0)
            {
                continue;
            }
            checked += 1;
            // A window a fifth of the box larger on each side: a box that is off shows there.
            let (bw, bh) = ((truth[2] - truth[0]) / 5 + 2, (truth[3] - truth[1]) / 5 + 2);
            let window = [
                truth[0].saturating_sub(bw),
                truth[1].saturating_sub(bh),
                (truth[2] + bw).min(w),
                (truth[3] + bh).min(h),
            ];
            // The skin: the median of the window's outer ring, leaving out black field.
            let mut ring: Vec<f32> = s
                .image
                .enumerate_pixels()
                .filter(|(x, y, _)| {
                    (*x >= window[0] && *x < window[2] && *y >= window[1] && *y < window[3])
                        && (*x < truth[0] || *x >= truth[2] || *y < truth[1] || *y >= truth[3])
                })
                .map(|(_, _, p)| sum(*p))
                .filter(|&v| v > 90.0)
                .collect();
            ring.sort_by(f32::total_cmp);
            let skin = ring[ring.len() / 2];
            // Dark: well below the skin (the lesion's colour is about half of it), measured on
            // a 3×3 mean so the lighter mesh between network lines does not leave holes.
            let mut seen = [u32::MAX, u32::MAX, 0, 0];
            for y in window[1] + 1..window[3] - 1 {
                for x in window[0] + 1..window[2] - 1 {
                    let mean = (0..9)
                        .map(|k| sum(*s.image.get_pixel(x + k % 3 - 1, y + k / 3 - 1)))
                        .sum::<f32>()
                        / 9.0;
                    if mean < 0.75 * skin && mean > 90.0 {
                        seen = [
                            seen[0].min(x),
                            seen[1].min(y),
                            seen[2].max(x + 1),
                            seen[3].max(y + 1),
                        ];
                    }
                }
            }
            let overlap = iou(truth, seen);
            assert!(
                overlap > 0.8,
                "image {i}: box {truth:?}, dark pixels {seen:?}"
            );
            assert_in_centre_square(truth, (w, h));
        }
        assert!(checked >= 10, "only {checked} images without black corners");
    }

    /// Mean and standard deviation of the brightness in the middle third of each image's box,
    /// per class: `[[benign mean, malignant mean], [benign std, malignant std]]`.
    fn lesion_statistics(config: &SynthConfig, images: usize, shrink: u32) -> [[f64; 2]; 2] {
        let mut acc = [[0.0f64; 2]; 2];
        let mut counts = [0usize; 2];
        for i in 0..images {
            let s = sample(config, SynthSplit::Train, i);
            let [x0, y0, x1, y1] = s.record.lesion_box.expect("box");
            let image = if shrink > 1 {
                let (w, h) = s.image.dimensions();
                image::imageops::resize(
                    &s.image,
                    w / shrink,
                    h / shrink,
                    image::imageops::FilterType::Triangle,
                )
            } else {
                s.image.clone()
            };
            let (cx, cy) = (x0.midpoint(x1) / shrink, y0.midpoint(y1) / shrink);
            let r = ((x1 - x0).min(y1 - y0) / 6 / shrink).max(1);
            let values: Vec<f64> = (cy - r..cy + r)
                .flat_map(|y| (cx - r..cx + r).map(move |x| (x, y)))
                .map(|(x, y)| f64::from(sum(*image.get_pixel(x, y))))
                .collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
            let class = usize::from(s.record.target == Some(1));
            acc[0][class] += mean;
            acc[1][class] += var.sqrt();
            counts[class] += 1;
        }
        for row in &mut acc {
            for (v, n) in row.iter_mut().zip(counts) {
                *v /= n as f64;
            }
        }
        acc
    }

    #[test]
    fn the_evidence_is_fine_texture_at_equal_mean_darkness() {
        let config = SynthConfig {
            min_side: 700,
            max_side: 900,
            lesion_min: 0.12,
            lesion_max: 0.3,
            ..small()
        };
        let [means, stds] = lesion_statistics(&config, 48, 1);
        // Equal mean darkening, up to the spread of the random base colours.
        assert!(
            (means[0] - means[1]).abs() < 0.06 * means[0],
            "class means {means:?}"
        );
        // At full resolution malignant lesions are clearly more textured...
        assert!(stds[1] > 1.3 * stds[0], "texture {stds:?}");
        // ...and shrunk eight times as a whole photograph, most of that difference is gone
        // (what is left is the coarse cues': variegation and blue-grey structures).
        let [_, shrunk] = lesion_statistics(&config, 48, 8);
        assert!(
            shrunk[1] - shrunk[0] < 0.6 * (stds[1] - stds[0]),
            "texture after shrinking {shrunk:?} against {stds:?}"
        );
    }

    #[test]
    fn a_circular_field_is_black_outside_and_holds_the_lesion() {
        let config = small();
        let mut circles = 0;
        for i in 0..30 {
            let s = sample(&config, SynthSplit::Test, i);
            let (w, h) = s.image.dimensions();
            let corner = sum(*s.image.get_pixel(0, 0)).max(sum(*s.image.get_pixel(w - 1, h - 1)));
            if corner < 90.0 {
                circles += 1;
                // The lesion's centre is not black.
                let [x0, y0, x1, y1] = s.record.lesion_box.expect("box");
                let centre = sum(*s.image.get_pixel(x0.midpoint(x1), y0.midpoint(y1)));
                assert!(centre > 90.0, "image {i}: lesion centre {centre}");
            }
        }
        // A third of the images have a circular field, some others black lens corners.
        assert!(
            (8..=22).contains(&circles),
            "{circles} of 30 with black corners"
        );
    }

    #[test]
    fn signs_follow_the_class() {
        let config = SynthConfig {
            positive_rate: 0.5,
            min_side: 200,
            max_side: 260,
            ..small()
        };
        let mut counts = [[0usize; 3]; 2];
        let mut totals = [0usize; 2];
        for i in 0..120 {
            let s = sample(&config, SynthSplit::Train, i);
            assert_eq!(s.signs.names(), SIGN_NAMES);
            let class = usize::from(s.record.target == Some(1));
            totals[class] += 1;
            for (k, &f) in s.signs.flags().iter().enumerate() {
                counts[class][k] += usize::from(f);
            }
        }
        let share = |c: usize, k: usize| counts[c][k] as f64 / totals[c] as f64;
        for (k, name) in SIGN_NAMES.iter().enumerate() {
            assert!(
                share(1, k) > share(0, k),
                "{name} in {:.2} of malignant, {:.2} of benign",
                share(1, k),
                share(0, k)
            );
        }
        assert!(share(1, 0) > 0.6 && share(0, 0) < 0.25, "{counts:?}");
    }
}
