//! Report figures. ROC curves are drawn once, with plotters, for any backend: as SVG for
//! `report.html` and as a bitmap for `report.md`'s PNGs, their text in the bundled DejaVu Sans.
//! On photographs: attention heat maps, rectangles, thumbnails, tile grids, and labels in a
//! built-in 5×7 bitmap font.
//!
//! Conventions: images are `image::RgbImage` (8-bit RGB, row-major, origin top-left, x to the
//! right, y down); rectangles are `[x0, y0, x1, y1)` with exclusive ends; drawing clips to the
//! image, so nothing here panics on out-of-range coordinates. Binary labels follow
//! [`crate::roc_auc`]: `1` is positive, anything else negative; NaN scores rank lowest.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::{ImageFormat, Rgb, RgbImage};
use plotters::coord::Shift;
use plotters::prelude::{
    BitMapBackend, ChartBuilder, Color, DrawingArea, DrawingBackend, IntoDrawingArea, LineSeries,
    Palette, Palette99, PathElement, SVGBackend, SeriesLabelPosition,
};
use plotters::style::FontStyle;

/// Why a figure could not be saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// The image could not be encoded as PNG.
    #[error("{path}: cannot encode PNG: {message}")]
    Encode {
        /// The file that was to be written.
        path: PathBuf,
        /// What the encoder said.
        message: String,
    },
    /// The file could not be written (the error names the file).
    #[error(transparent)]
    Write(#[from] agc_data::DataError),
    /// A chart could not be drawn.
    #[error("drawing a chart: {0}")]
    Draw(String),
}

const WHITE: [u8; 3] = [255, 255, 255];
const PAD: [u8; 3] = [48, 48, 48];

/// Glyph width and height in font pixels; characters advance by `GLYPH_W + 1`.
const GLYPH_W: u32 = 5;
const GLYPH_H: u32 = 7;

/// The characters that have a glyph in [`FONT`], in its order.
const FONT_CHARS: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.,-+_=()/:% ";

/// The 5×7 glyphs of [`FONT_CHARS`]: byte 6 (the most significant used) is the top row, byte 0
/// the bottom one; in each row bit 4 is the leftmost column.
#[rustfmt::skip]
const FONT: [u64; 48] = [
    0x0E_11_13_15_19_11_0E, 0x04_0C_04_04_04_04_0E, 0x0E_11_01_02_04_08_1F,  // '0' '1' '2'
    0x1F_02_04_02_01_11_0E, 0x02_06_0A_12_1F_02_02, 0x1F_10_1E_01_01_11_0E,  // '3' '4' '5'
    0x06_08_10_1E_11_11_0E, 0x1F_01_02_04_08_08_08, 0x0E_11_11_0E_11_11_0E,  // '6' '7' '8'
    0x0E_11_11_0F_01_02_0C, 0x0E_11_11_11_1F_11_11, 0x1E_11_11_1E_11_11_1E,  // '9' 'A' 'B'
    0x0E_11_10_10_10_11_0E, 0x1C_12_11_11_11_12_1C, 0x1F_10_10_1E_10_10_1F,  // 'C' 'D' 'E'
    0x1F_10_10_1E_10_10_10, 0x0E_11_10_17_11_11_0F, 0x11_11_11_1F_11_11_11,  // 'F' 'G' 'H'
    0x0E_04_04_04_04_04_0E, 0x07_02_02_02_02_12_0C, 0x11_12_14_18_14_12_11,  // 'I' 'J' 'K'
    0x10_10_10_10_10_10_1F, 0x11_1B_15_15_11_11_11, 0x11_11_19_15_13_11_11,  // 'L' 'M' 'N'
    0x0E_11_11_11_11_11_0E, 0x1E_11_11_1E_10_10_10, 0x0E_11_11_11_15_12_0D,  // 'O' 'P' 'Q'
    0x1E_11_11_1E_14_12_11, 0x0F_10_10_0E_01_01_1E, 0x1F_04_04_04_04_04_04,  // 'R' 'S' 'T'
    0x11_11_11_11_11_11_0E, 0x11_11_11_11_11_0A_04, 0x11_11_11_15_15_15_0A,  // 'U' 'V' 'W'
    0x11_11_0A_04_0A_11_11, 0x11_11_11_0A_04_04_04, 0x1F_01_02_04_08_10_1F,  // 'X' 'Y' 'Z'
    0x00_00_00_00_00_0C_0C, 0x00_00_00_00_0C_04_08, 0x00_00_00_1F_00_00_00,  // '.' ',' '-'
    0x00_04_04_1F_04_04_00, 0x00_00_00_00_00_00_1F, 0x00_00_1F_00_1F_00_00,  // '+' '_' '='
    0x02_04_08_08_08_04_02, 0x08_04_02_02_02_04_08, 0x00_01_02_04_08_10_00,  // '(' ')' '/'
    0x00_0C_0C_00_0C_0C_00, 0x18_19_02_04_08_13_03, 0x00_00_00_00_00_00_00,  // ':' '%' ' '
];

/// The rows of the glyph of `c`, top first. Lower-case letters use the upper-case glyphs;
/// characters without a glyph are drawn as a small box.
fn glyph(c: char) -> [u8; 7] {
    let bits = FONT_CHARS
        .find(c.to_ascii_uppercase())
        .map_or(0x00_1F_11_11_11_1F_00, |i| FONT[i]);
    std::array::from_fn(|row| (bits >> (8 * (6 - row))) as u8)
}

/// Sets pixel `(x, y)` if it lies inside the image.
fn put(image: &mut RgbImage, x: i64, y: i64, colour: [u8; 3]) {
    if x >= 0 && y >= 0 && x < i64::from(image.width()) && y < i64::from(image.height()) {
        image.put_pixel(x as u32, y as u32, Rgb(colour));
    }
}

/// Fills the `w`×`h` block with top-left `(x, y)`, clipped to the image.
fn fill(image: &mut RgbImage, x: i64, y: i64, w: u32, h: u32, colour: [u8; 3]) {
    for dy in 0..i64::from(h) {
        for dx in 0..i64::from(w) {
            put(image, x + dx, y + dy, colour);
        }
    }
}

/// Draws `text` with its top-left corner at `(x, y)` in the built-in 5×7 font, each font pixel
/// a `scale`×`scale` block; a character cell is 6×8 font pixels and `'\n'` starts a new line.
/// Lower-case letters use the upper-case glyphs; characters without a glyph (digits, letters
/// and `. , - + _ = ( ) / : %` have one) are drawn as a small box. Clipped to the image.
pub fn draw_text(image: &mut RgbImage, x: u32, y: u32, text: &str, colour: [u8; 3], scale: u32) {
    let (x0, mut cy) = (i64::from(x), i64::from(y));
    let (advance, line) = (
        i64::from((GLYPH_W + 1) * scale),
        i64::from((GLYPH_H + 1) * scale),
    );
    let s = i64::from(scale);
    let mut cx = x0;
    for c in text.chars() {
        if c == '\n' {
            (cx, cy) = (x0, cy + line);
            continue;
        }
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                    let px = cx + i64::from(col) * s;
                    fill(image, px, cy + row as i64 * s, scale, scale, colour);
                }
            }
        }
        cx += advance;
    }
}

/// Draws the outline of the rectangle `[x0, y0, x1, y1)` (exclusive ends), `thickness` pixels
/// wide on the inside of the rectangle, clipped to the image. An empty rectangle or a zero
/// thickness draws nothing.
pub fn draw_rect(image: &mut RgbImage, rect: [u32; 4], colour: [u8; 3], thickness: u32) {
    let [x0, y0, x1, y1] = rect;
    let (x1, y1) = (x1.min(image.width()), y1.min(image.height()));
    let [rx1, ry1] = [rect[2], rect[3]];
    if thickness == 0 {
        return;
    }
    for y in y0..y1 {
        let band = y < y0.saturating_add(thickness) || y >= ry1.saturating_sub(thickness);
        for x in x0..x1 {
            let edge = x < x0.saturating_add(thickness) || x >= rx1.saturating_sub(thickness);
            if band || edge {
                image.put_pixel(x, y, Rgb(colour));
            }
        }
    }
}

/// The ROC curve of `scores` against binary `labels` as `[false-positive rate, true-positive
/// rate]` points, from `[0, 0]` to `[1, 1]`.
///
/// The samples are taken in order of decreasing score and one point is emitted after each
/// group of equal scores, so a tie between positives and negatives moves diagonally. Returns
/// just `[[0, 0], [1, 1]]` when a class is missing or the lengths differ.
pub fn roc_points(scores: &[f32], labels: &[u8]) -> Vec<[f64; 2]> {
    let diagonal = vec![[0.0, 0.0], [1.0, 1.0]];
    if scores.len() != labels.len() {
        return diagonal;
    }
    let positives = labels.iter().filter(|&&l| l == 1).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return diagonal;
    }
    // NaN ranks lowest; `+ 0.0` turns -0.0 into 0.0 so that `total_cmp` sees one score.
    let key = |i: usize| {
        if scores[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            scores[i] + 0.0
        }
    };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    let mut points = vec![[0.0, 0.0]];
    let (mut tp, mut fp) = (0usize, 0usize);
    for (k, &i) in order.iter().enumerate() {
        if labels[i] == 1 {
            tp += 1;
        } else {
            fp += 1;
        }
        let group_ends = order
            .get(k + 1)
            .is_none_or(|&j| key(j).total_cmp(&key(i)).is_ne());
        if group_ends {
            points.push([fp as f64 / negatives as f64, tp as f64 / positives as f64]);
        }
    }
    points
}

/// One ROC curve of a figure: a model's scores and the binary labels they are judged against.
#[derive(Debug, Clone, Copy)]
pub struct Curve<'a> {
    /// The legend entry (e.g. the model's name).
    pub name: &'a str,
    /// One score per sample; higher means more likely positive.
    pub scores: &'a [f32],
    /// One label per sample: 1 positive, anything else negative.
    pub labels: &'a [u8],
}

/// A jet-like colour for `t` in 0..1 (clamped): dark blue → blue → cyan → yellow → red → dark red.
fn jet(t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    let band = |centre: f32| (1.5 - (4.0 * t - centre).abs()).clamp(0.0, 1.0);
    [band(3.0), band(2.0), band(1.0)]
}

/// Samples the row-major `grid`×`grid` map `map` at continuous cell coordinates `(u, v)`
/// (cell centres at integers), bilinearly, clamping at the borders.
fn bilinear(map: &[f32], grid: usize, u: f32, v: f32) -> f32 {
    let last = (grid - 1) as f32;
    let (u, v) = (u.clamp(0.0, last), v.clamp(0.0, last));
    let (c0, r0) = (u.floor() as usize, v.floor() as usize);
    let (c1, r1) = ((c0 + 1).min(grid - 1), (r0 + 1).min(grid - 1));
    let (fu, fv) = (u - c0 as f32, v - r0 as f32);
    let at = |r: usize, c: usize| map[r * grid + c];
    let top = at(r0, c0) * (1.0 - fu) + at(r0, c1) * fu;
    let low = at(r1, c0) * (1.0 - fu) + at(r1, c1) * fu;
    top * (1.0 - fv) + low * fv
}

/// A copy of `image` with the attention map blended over the square `region = [x, y, side]`
/// (the part of the image the model saw), and everything outside the region darkened (each
/// channel × 0.6).
///
/// `attention` is a row-major `grid`×`grid` map (row 0 at the top; any finite values, non-finite
/// ones count as the minimum). It is upsampled bilinearly with half-pixel centres to
/// `side`×`side`, normalised to 0..1 by its min and max (a constant map becomes all 0), coloured
/// with a jet-like colormap (0 dark blue, 1 dark red) and blended as
/// `(1 - alpha) · pixel + alpha · colour` (`alpha` clamped to 0..1). Parts of the region
/// outside the image are ignored.
///
/// # Panics
/// If `grid` is 0 or `attention.len() != grid * grid`.
pub fn heat_overlay(
    image: &RgbImage,
    attention: &[f32],
    grid: usize,
    region: [u32; 3],
    alpha: f32,
) -> RgbImage {
    assert!(grid > 0, "heat_overlay: empty attention grid");
    assert_eq!(
        attention.len(),
        grid * grid,
        "heat_overlay: attention is not grid × grid"
    );
    let [rx, ry, side] = region;
    let alpha = if alpha.is_nan() {
        0.0
    } else {
        alpha.clamp(0.0, 1.0)
    };
    let finite = attention.iter().copied().filter(|v| v.is_finite());
    let lo = finite.clone().fold(f32::INFINITY, f32::min);
    let hi = finite.fold(f32::NEG_INFINITY, f32::max);
    let map: Vec<f32> = attention
        .iter()
        .map(|&v| if v.is_finite() { v } else { lo })
        .collect();
    let range = hi - lo;
    let cell = grid as f32 / side.max(1) as f32;

    let mut out = image.clone();
    for (x, y, pixel) in out.enumerate_pixels_mut() {
        let (dx, dy) = (x.wrapping_sub(rx), y.wrapping_sub(ry));
        if x < rx || y < ry || dx >= side || dy >= side {
            pixel.0 = pixel.0.map(|c| (f32::from(c) * 0.6).round() as u8);
            continue;
        }
        let u = (dx as f32 + 0.5) * cell - 0.5;
        let v = (dy as f32 + 0.5) * cell - 0.5;
        let t = if range > 0.0 && range.is_finite() {
            (bilinear(&map, grid, u, v) - lo) / range
        } else {
            0.0
        };
        let heat = jet(t);
        for (c, h) in pixel.0.iter_mut().zip(heat) {
            *c = ((1.0 - alpha) * f32::from(*c) + alpha * h * 255.0).round() as u8;
        }
    }
    out
}

/// `image` scaled to fit inside `side`×`side` with its aspect ratio kept (triangle filter; each
/// side at least one pixel), centred on an exactly `side`×`side` dark grey canvas.
pub fn thumbnail(image: &RgbImage, side: u32) -> RgbImage {
    let mut canvas = RgbImage::from_pixel(side, side, Rgb(PAD));
    let (w, h) = image.dimensions();
    if w == 0 || h == 0 || side == 0 {
        return canvas;
    }
    let fit = (f64::from(side) / f64::from(w)).min(f64::from(side) / f64::from(h));
    let nw = ((f64::from(w) * fit).round() as u32).clamp(1, side);
    let nh = ((f64::from(h) * fit).round() as u32).clamp(1, side);
    let resized = image::imageops::resize(image, nw, nh, image::imageops::FilterType::Triangle);
    let (ox, oy) = ((side - nw) / 2, (side - nh) / 2);
    image::imageops::replace(&mut canvas, &resized, i64::from(ox), i64::from(oy));
    canvas
}

/// The `tiles` laid out left to right, top to bottom, in rows of `columns` (at least 1) cells,
/// with `gap` white pixels between neighbouring cells and no outer border. A cell is as large
/// as the widest and the tallest tile; smaller tiles are centred in theirs. With `n` tiles the
/// image is `c·W + (c−1)·gap` wide and `r·H + (r−1)·gap` tall, where `c = min(columns, n)` and
/// `r = ⌈n / columns⌉`; no tiles give a 0×0 image.
pub fn grid_image(tiles: &[RgbImage], columns: usize, gap: u32) -> RgbImage {
    if tiles.is_empty() {
        return RgbImage::new(0, 0);
    }
    let columns = columns.max(1);
    let cell_w = tiles.iter().map(RgbImage::width).max().unwrap_or(0);
    let cell_h = tiles.iter().map(RgbImage::height).max().unwrap_or(0);
    let (cols, rows) = (
        columns.min(tiles.len()) as u32,
        tiles.len().div_ceil(columns) as u32,
    );
    let width = cols * cell_w + (cols - 1) * gap;
    let height = rows * cell_h + (rows - 1) * gap;
    let mut out = RgbImage::from_pixel(width, height, Rgb(WHITE));
    for (i, tile) in tiles.iter().enumerate() {
        let (col, row) = ((i % columns) as u32, (i / columns) as u32);
        let x = col * (cell_w + gap) + (cell_w - tile.width()) / 2;
        let y = row * (cell_h + gap) + (cell_h - tile.height()) / 2;
        image::imageops::replace(&mut out, tile, i64::from(x), i64::from(y));
    }
    out
}

/// Encodes `image` as PNG and writes it to `path` atomically (through a `.partial` sibling that
/// is renamed into place), creating the parent directory if needed.
///
/// # Errors
/// [`PlotError::Encode`] if the PNG encoder fails, [`PlotError::Write`] if the file cannot be
/// written.
pub fn save_png(image: &RgbImage, path: &Path) -> Result<(), PlotError> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .map_err(|e| PlotError::Encode {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    agc_data::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

/// DejaVu Sans 2.37 (from Debian's `fonts-dejavu-core`; its licence is
/// `assets/DejaVuSans-LICENSE.txt`): the text of the ROC charts, in the SVG as in the bitmap.
const CHART_FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers [`CHART_FONT`] as plotters' `sans-serif` family (all styles fall back to it), once
/// per process. plotters measures text with it in every backend and draws bitmap text with it.
fn register_chart_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, CHART_FONT).is_ok()
    });
    if registered {
        Ok(())
    } else {
        Err(PlotError::Draw(
            "the bundled chart font (DejaVu Sans) cannot be read".into(),
        ))
    }
}

/// Draws a ROC chart on `root`, the one drawing for every backend: white background, `title`
/// on top, axes "false positive rate" (x) and "true positive rate" (y) from 0 to 1 with a
/// light mesh, the chance diagonal in light grey, curve `i` as a 2-px line in
/// `Palette99::pick(i)`, and a legend in the lower right with `"name (0.912)"` (the curve's
/// AUC, as the results tables give it; `–` where a class is missing) per curve.
fn draw_roc<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    curves: &[Curve],
    title: &str,
) -> Result<(), PlotError> {
    // plotters' colours, not this module's RGB triples.
    use plotters::prelude::{BLACK, WHITE};
    let fail = |e: &dyn std::fmt::Display| PlotError::Draw(e.to_string());
    register_chart_font()?;
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("false positive rate")
        .y_desc("true positive rate")
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
        .map_err(|e| fail(&e))?;
    for (i, c) in curves.iter().enumerate() {
        let points = roc_points(c.scores, c.labels);
        let colour = Palette99::pick(i).to_rgba();
        // The AUC of the results tables (`crate::roc_auc`), so legend and table agree.
        let auc = crate::roc_auc(c.scores, c.labels)
            .map_or_else(|| "–".to_string(), |a| format!("{a:.3}"));
        let label = format!("{} ({auc})", c.name);
        chart
            .draw_series(LineSeries::new(
                points.into_iter().map(|[x, y]| (x, y)),
                colour.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}

/// ROC curves as an SVG document (`side`×`side` px), for `report.html`: the drawing of
/// [`roc_bitmap`], through plotters' SVG backend.
///
/// # Errors
/// A drawing error of plotters (named).
pub fn roc_svg(curves: &[Curve], title: &str, side: u32) -> Result<String, PlotError> {
    let mut svg = String::new();
    draw_roc(
        &SVGBackend::with_string(&mut svg, (side, side)).into_drawing_area(),
        curves,
        title,
    )?;
    Ok(svg)
}

/// ROC curves as a `side`×`side` image, for `report.md` (saved with [`save_png`]): the drawing
/// of [`roc_svg`], through plotters' bitmap backend.
///
/// # Errors
/// A drawing error of plotters (named).
pub fn roc_bitmap(curves: &[Curve], title: &str, side: u32) -> Result<RgbImage, PlotError> {
    let mut rgb = vec![0; 3 * side as usize * side as usize];
    draw_roc(
        &BitMapBackend::with_buffer(&mut rgb, (side, side)).into_drawing_area(),
        curves,
        title,
    )?;
    RgbImage::from_raw(side, side, rgb)
        .ok_or_else(|| PlotError::Draw(format!("no {side}×{side} RGB image from the bitmap")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLACK: [u8; 3] = [0, 0, 0];

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// The area under the drawn polyline by the trapezoid rule: what the curve of
    /// [`roc_points`] shows, to be held to the AUC the tables and the legend give.
    fn trapezoid_auc(points: &[[f64; 2]]) -> f64 {
        points
            .windows(2)
            .map(|w| (w[1][0] - w[0][0]) * (w[0][1] + w[1][1]) / 2.0)
            .sum()
    }

    #[test]
    fn roc_of_perfect_ranking_passes_through_top_left() {
        let points = roc_points(&[0.9, 0.8, 0.2, 0.1], &[1, 1, 0, 0]);
        assert_eq!(points.first(), Some(&[0.0, 0.0]));
        assert_eq!(points.last(), Some(&[1.0, 1.0]));
        assert!(points.contains(&[0.0, 1.0]), "{points:?}");
        assert!(close(trapezoid_auc(&points), 1.0));
    }

    #[test]
    fn tied_scores_move_diagonally_and_auc_matches_hand_computed() {
        let points = roc_points(&[0.1, 0.4, 0.4, 0.8], &[0, 0, 1, 1]);
        assert_eq!(points, vec![[0.0, 0.0], [0.0, 0.5], [0.5, 1.0], [1.0, 1.0]]);
        assert!(close(trapezoid_auc(&points), 0.875));
    }

    #[test]
    fn trapezoid_auc_agrees_with_rank_auc() {
        let scores: Vec<f32> = (0..200)
            .map(|i| ((i * 37 % 101) as f32 / 20.0).floor())
            .collect();
        let labels: Vec<u8> = (0..200).map(|i| u8::from((i * 53 % 7) < 3)).collect();
        let rank = crate::roc_auc(&scores, &labels).expect("both classes present");
        let trap = trapezoid_auc(&roc_points(&scores, &labels));
        assert!(
            (rank - trap).abs() < 1e-9,
            "rank {rank} vs trapezoid {trap}"
        );
    }

    #[test]
    fn roc_with_a_missing_class_is_the_diagonal() {
        assert_eq!(
            roc_points(&[0.3, 0.7], &[1, 1]),
            vec![[0.0, 0.0], [1.0, 1.0]]
        );
        assert_eq!(roc_points(&[0.3], &[1, 0]), vec![[0.0, 0.0], [1.0, 1.0]]);
    }

    /// Two curves of AUC 5/6 and 3/4 (by hand: pairs of a positive above a negative).
    fn two_curves<'a>(scores: &'a [f32], labels: &'a [u8]) -> [Curve<'a>; 2] {
        [
            Curve {
                name: "chipnet",
                scores,
                labels,
            },
            Curve {
                name: "cropnet",
                scores: &scores[..4],
                labels: &labels[..4],
            },
        ]
    }
    const SCORES: [f32; 5] = [0.9, 0.6, 0.5, 0.2, 0.1];
    const LABELS: [u8; 5] = [1, 0, 1, 0, 0];

    fn palette(i: usize) -> [u8; 3] {
        let (r, g, b) = Palette99::pick(i).rgb();
        [r, g, b]
    }

    #[test]
    fn roc_bitmap_has_the_size_and_draws_each_curve_colour_and_the_text() {
        let img = roc_bitmap(&two_curves(&SCORES, &LABELS), "ROC", 400).expect("drawn");
        assert_eq!(img.dimensions(), (400, 400));
        for colour in [palette(0), palette(1)] {
            let n = img.pixels().filter(|p| p.0 == colour).count();
            assert!(n > 50, "colour {colour:?} drawn on {n} pixels");
        }
        assert!(!img.pixels().any(|p| p.0 == palette(2)));
        // The font renders: the title's glyphs darken the band above the plot.
        let dark = (0..400)
            .flat_map(|x| (0..24).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 100))
            .count();
        assert!(dark > 20, "{dark} dark pixels in the title band");
    }

    /// `(colour, vertices)` of each `<polyline>` in `svg`.
    fn polylines(svg: &str) -> Vec<(String, Vec<(u32, u32)>)> {
        let attribute = |tag: &str, name: &str| {
            let start = tag.find(&format!(" {name}=\"")).expect(name) + name.len() + 3;
            tag[start..]
                .split('"')
                .next()
                .expect("closing quote")
                .to_string()
        };
        svg.split("<polyline")
            .skip(1)
            .map(|tag| {
                let tag = tag.split("/>").next().expect("tag end");
                let points = attribute(tag, "points")
                    .split_whitespace()
                    .map(|p| {
                        let (x, y) = p.split_once(',').expect("x,y");
                        (x.parse().expect("x"), y.parse().expect("y"))
                    })
                    .collect();
                (attribute(tag, "stroke"), points)
            })
            .collect()
    }

    #[test]
    fn svg_and_bitmap_are_one_drawing() {
        let curves = two_curves(&SCORES, &LABELS);
        let svg = roc_svg(&curves, "ROC, test", 400).expect("SVG");
        let img = roc_bitmap(&curves, "ROC, test", 400).expect("bitmap");
        for text in [
            "ROC, test",
            "chipnet (0.833)",
            "cropnet (0.750)",
            "true positive rate",
        ] {
            assert!(svg.contains(text), "{text:?} not in the SVG");
        }
        // Every vertex of a curve or legend line in the SVG is drawn in a curve colour in the
        // bitmap: the same layout, the legend (placed by its measured text) included.
        let colours = [palette(0), palette(1)];
        let hex = colours.map(|[r, g, b]| format!("#{r:02X}{g:02X}{b:02X}"));
        let lines: Vec<_> = polylines(&svg)
            .into_iter()
            .filter(|(stroke, _)| hex.contains(stroke))
            .collect();
        assert_eq!(lines.len(), 4, "two curves and two legend lines");
        for (stroke, points) in &lines {
            for &(x, y) in points {
                // A line's last pixel may fall one short of its end point.
                let near = (x - 1..=x + 1)
                    .flat_map(|u| (y - 1..=y + 1).map(move |v| (u, v)))
                    .any(|(u, v)| colours.contains(&img.get_pixel(u, v).0));
                assert!(
                    near,
                    "{stroke} vertex ({x}, {y}) is not drawn in the bitmap"
                );
            }
        }
    }

    fn grey(w: u32, h: u32, v: u8) -> RgbImage {
        RgbImage::from_pixel(w, h, Rgb([v, v, v]))
    }

    #[test]
    fn heat_overlay_changes_the_region_and_only_darkens_outside() {
        let img = grey(40, 30, 200);
        let out = heat_overlay(&img, &[1.0, 2.0, 3.0, 4.0], 2, [10, 5, 20], 0.5);
        assert_eq!(out.dimensions(), img.dimensions());
        for (x, y, p) in out.enumerate_pixels() {
            let inside = (10..30).contains(&x) && (5..25).contains(&y);
            if inside {
                assert_ne!(p.0, [200; 3], "({x}, {y}) unchanged");
            } else {
                assert_eq!(p.0, [120; 3], "({x}, {y}) not darkened");
            }
        }
    }

    #[test]
    fn hot_top_left_cell_makes_top_left_redder() {
        let mut attention = vec![1.0; 16];
        attention[0] = 10.0;
        let out = heat_overlay(&grey(64, 64, 128), &attention, 4, [0, 0, 64], 0.7);
        let redness = |x, y| {
            let p: &Rgb<u8> = out.get_pixel(x, y);
            i32::from(p.0[0]) - i32::from(p.0[2])
        };
        assert!(
            redness(1, 1) > redness(62, 62) + 50,
            "{} vs {}",
            redness(1, 1),
            redness(62, 62)
        );
    }

    #[test]
    fn constant_attention_map_blends_one_colour() {
        let out = heat_overlay(&grey(8, 8, 90), &[3.0; 9], 3, [0, 0, 8], 1.0);
        assert!(
            out.pixels().all(|p| p.0 == [0, 0, 128]),
            "{:?}",
            out.get_pixel(0, 0)
        );
    }

    #[test]
    fn draw_rect_colours_the_border_and_not_the_interior() {
        let mut img = grey(20, 20, 0);
        draw_rect(&mut img, [2, 3, 12, 15], [255, 0, 0], 2);
        for (x, y, p) in img.enumerate_pixels() {
            let inside = (2..12).contains(&x) && (3..15).contains(&y);
            let interior = (4..10).contains(&x) && (5..13).contains(&y);
            let red = p.0 == [255, 0, 0];
            assert_eq!(red, inside && !interior, "({x}, {y})");
        }
    }

    #[test]
    fn draw_rect_clips_to_the_image() {
        let mut img = grey(10, 10, 0);
        draw_rect(&mut img, [5, 5, 50, 50], [0, 255, 0], 1);
        assert_eq!(img.get_pixel(5, 9).0, [0, 255, 0]);
        assert_eq!(img.get_pixel(9, 5).0, [0, 255, 0]);
        assert_eq!(
            img.get_pixel(9, 9).0,
            [0, 0, 0],
            "the far edges lie outside"
        );
    }

    #[test]
    fn thumbnail_keeps_aspect_and_pads_centred() {
        let img = RgbImage::from_pixel(100, 50, Rgb([200, 0, 0]));
        let t = thumbnail(&img, 40);
        assert_eq!(t.dimensions(), (40, 40));
        assert_eq!(t.get_pixel(20, 20).0, [200, 0, 0]);
        assert_eq!(t.get_pixel(20, 9).0, PAD);
        assert_eq!(t.get_pixel(20, 10).0, [200, 0, 0]);
        assert_eq!(t.get_pixel(20, 29).0, [200, 0, 0]);
        assert_eq!(t.get_pixel(20, 30).0, PAD);
    }

    #[test]
    fn grid_image_size_arithmetic() {
        let mut tiles = vec![grey(10, 8, 0); 4];
        tiles.push(grey(12, 6, 0));
        let out = grid_image(&tiles, 3, 2);
        assert_eq!(out.dimensions(), (3 * 12 + 2 * 2, 2 * 8 + 2));
        assert_eq!(out.get_pixel(12, 0).0, WHITE, "gap between cells");
        assert_eq!(
            out.get_pixel(1, 0).0,
            [0; 3],
            "first tile centred in its cell"
        );
        assert_eq!(out.get_pixel(0, 0).0, WHITE, "margin of a narrower tile");
        assert_eq!(grid_image(&tiles, 10, 2).dimensions(), (5 * 12 + 4 * 2, 8));
        assert_eq!(grid_image(&[], 3, 2).dimensions(), (0, 0));
    }

    #[test]
    fn draw_text_sets_glyph_pixels_and_boxes_unknown_characters() {
        let mut img = grey(30, 10, 255);
        draw_text(&mut img, 0, 0, "1~", BLACK, 1);
        // '1': column 2 of the top row is set, column 0 is not.
        assert_eq!(img.get_pixel(2, 0).0, BLACK);
        assert_eq!(img.get_pixel(0, 0).0, WHITE);
        // '~' has no glyph: a box from row 1 to 5 in the second cell.
        assert_eq!(img.get_pixel(6, 1).0, BLACK);
        assert_eq!(img.get_pixel(8, 3).0, WHITE);
        assert_eq!(img.get_pixel(10, 5).0, BLACK);
        let (mut a, mut b) = (grey(12, 16, 0), grey(12, 16, 0));
        draw_text(&mut a, 0, 0, "q", WHITE, 2);
        draw_text(&mut b, 0, 0, "Q", WHITE, 2);
        assert_eq!(a, b);
    }

    #[test]
    fn save_png_round_trips_without_partial_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("figs").join("roc.png");
        let img = roc_bitmap(&[], "ROC", 123).expect("drawn");
        save_png(&img, &path).expect("saved");
        let back = image::open(&path).expect("readable PNG").to_rgb8();
        assert_eq!(back.dimensions(), (123, 123));
        assert_eq!(back, img);
        assert!(!agc_data::fsutil::partial_path(&path).exists());
    }
}
