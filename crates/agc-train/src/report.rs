//! What a run reports: `report.md`, ROC curves and attention overlays as PNG. A leaf: it takes
//! plain data ([`ReportInput`], [`Overlay`]) and knows nothing of run directories, which
//! `run::orchestrate` reads to build that data.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use agc_core::{CentreCrop, Rect};
use agc_data::decode;

use crate::error::{Result, TrainError};
use crate::layout::{OVERLAY_GRID_PNG, REPORT_HTML, REPORT_MD, ROC_OOF_PNG, ROC_TEST_PNG};
use crate::plot::{
    Curve, draw_rect, draw_text, grid_image, heat_overlay, roc_bitmap, roc_svg, save_png, thumbnail,
};
use crate::scores::{Metrics, ModelPredictions};

fn fmt_auc(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.4}"))
}

/// A model's row of the results table: pooled and mean-of-folds OOF AUC, test AUC, its CI.
fn score_cells(s: &crate::scores::ModelScore) -> [String; 4] {
    [
        fmt_auc(s.oof_auc),
        fmt_auc(s.oof_auc_fold_mean),
        fmt_auc(s.test_auc),
        s.test_auc_ci95
            .map_or_else(|| "–".into(), |[a, b]| format!("{a:.3}–{b:.3}")),
    ]
}

/// The results table in Markdown.
pub fn results_table(metrics: &Metrics) -> String {
    let mut t = String::from(
        "| model | OOF AUC (pooled) | OOF AUC (mean of folds) | test AUC | test 95 % CI |\n\
         |---|---|---|---|---|\n",
    );
    for (name, s) in ordered(metrics) {
        writeln!(t, "| {name} | {} |", score_cells(s).join(" | ")).expect("writing to a String");
    }
    t
}

/// Everything `report.md` shows.
#[derive(Debug)]
pub struct ReportInput<'a> {
    /// Where `report.md` and its PNGs go.
    pub dir: &'a Path,
    /// The scores.
    pub metrics: &'a Metrics,
    /// Each model's predictions, by name.
    pub predictions: &'a [(String, ModelPredictions)],
    /// Training labels, in the order of the out-of-fold predictions.
    pub labels: &'a [u8],
    /// Test labels, where known (synthetic data).
    pub test_labels: Option<&'a [u8]>,
    /// Folds of the cross-validation.
    pub folds: usize,
    /// The backbone preset.
    pub backbone: &'a str,
    /// Which synthetic class signs each image shows, where known.
    pub signs: Option<SignFlags>,
    /// Attention overlays to draw (fold 0's ChipNet, test images first).
    pub overlays: Vec<Overlay>,
}

/// The synthetic class signs (`signs.csv`) of the images the signs table scores.
#[derive(Debug, Clone, PartialEq)]
pub struct SignFlags {
    /// Scored on the test images (their labels known), else out of fold.
    pub on_test: bool,
    /// The sign names, in column order.
    pub names: Vec<String>,
    /// Per image (in prediction order), whether it shows each sign.
    pub flags: Vec<Vec<bool>>,
}

/// One attention overlay: the map over the square the model saw, the crop box, the true box.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    /// The image's name (drawn on the tile).
    pub name: String,
    /// The original photograph.
    pub path: PathBuf,
    /// The attention map, row-major over a square grid.
    pub map: Vec<f32>,
    /// Where the square the model saw lies in the original.
    pub centre: CentreCrop,
    /// The crop box in the original.
    pub crop: Rect,
    /// The squared true box in the original, where known.
    pub truth: Option<Rect>,
}

/// Writes `report.md`, `roc_oof.png`, `roc_test.png` (with test labels) and
/// `overlays/grid.png` into `input.dir`.
///
/// # Errors
/// Unwritable files or unreadable originals.
pub fn write_report(input: &ReportInput<'_>) -> Result<PathBuf> {
    let dir = input.dir;
    let metrics = input.metrics;
    let (oof_curves, test_curves) = curves(input);
    save_png(
        &roc_bitmap(&oof_curves, "ROC, out of fold", 480)?,
        &dir.join(ROC_OOF_PNG),
    )?;
    let mut md = String::from("# agc run report\n\n");
    writeln!(
        md,
        "{} training images ({} positive), {} test images{}{}; {} folds; backbone `{}`; \
         {} s of work.\n",
        metrics.images.train,
        metrics.images.train_positives,
        metrics.images.test,
        if metrics.images.test_labelled {
            " with known labels"
        } else {
            ""
        },
        if metrics.images.skipped > 0 {
            format!(
                "; {} unreadable images left out (skipped.csv)",
                metrics.images.skipped
            )
        } else {
            String::new()
        },
        input.folds,
        input.backbone,
        metrics.wall_seconds.round()
    )
    .expect("writing to a String");
    md.push_str(&results_table(metrics));
    if !metrics.ensemble_weights.is_empty() {
        let w: Vec<String> = metrics
            .ensemble_weights
            .iter()
            .map(|(k, w)| format!("{k} {w:.2}"))
            .collect();
        writeln!(md, "\nEnsemble weights: {}.", w.join(", ")).expect("writing to a String");
        if !metrics.ensemble_note.is_empty() {
            writeln!(md, "{}", metrics.ensemble_note).expect("writing to a String");
        }
    }
    if let Some(a) = &metrics.attention {
        writeln!(
            md,
            "\nAttention boxes: {} (images × folds); median IoU with the true box {} (test \
             images {}); fallback to the whole image {:.1} %.",
            a.boxes,
            fmt_auc(a.iou_median),
            fmt_auc(a.iou_median_test),
            100.0 * a.fallback_rate
        )
        .expect("writing to a String");
    }
    if let Some(signs) = &input.signs {
        md.push_str(&signs_table(input, signs));
    }
    writeln!(md, "\n![ROC, out-of-fold]({ROC_OOF_PNG})").expect("writing to a String");
    if let Some(test_curves) = &test_curves {
        save_png(
            &roc_bitmap(test_curves, "ROC, test", 480)?,
            &dir.join(ROC_TEST_PNG),
        )?;
        writeln!(md, "![ROC, test]({ROC_TEST_PNG})").expect("writing to a String");
    }
    if !input.overlays.is_empty() {
        draw_overlays(&input.overlays, &dir.join(OVERLAY_GRID_PNG))?;
        writeln!(
            md,
            "\nAttention of fold 0's ChipNet on the first test images (red: the crop box; \
             green: the true box where known):\n\n![attention]({OVERLAY_GRID_PNG})"
        )
        .expect("writing to a String");
    }
    let path = dir.join(REPORT_MD);
    agc_data::fsutil::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// For synthetic data: which class signs each model reads. Within the benign and within the
/// malignant images separately, the AUC of the model's score for telling images with the sign
/// from images without it: 0.5 means the model ignores the sign.
fn signs_table(input: &ReportInput<'_>, signs: &SignFlags) -> String {
    let (labels, on_test) = match (signs.on_test, input.test_labels) {
        (true, Some(labels)) => (labels, true),
        _ => (input.labels, false),
    };
    let mut t = format!(
        "\nWhich signs each model reads ({} images; `signs.csv`): within the benign (−) and the \
         malignant (+) images, the AUC of the model's score for the sign's presence; 0.5 means \
         the model ignores it.\n\n| model |",
        if on_test { "test" } else { "out-of-fold" }
    );
    for name in &signs.names {
        write!(t, " {name} − | {name} + |").expect("writing to a String");
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(2 * signs.names.len()));
    t.push('\n');
    for (name, p) in input.predictions {
        let scores = if on_test { &p.test } else { &p.oof };
        if scores.len() != signs.flags.len() || labels.len() != signs.flags.len() {
            continue;
        }
        write!(t, "| {name} |").expect("writing to a String");
        for sign in 0..signs.names.len() {
            for class in [0u8, 1] {
                let (s, has): (Vec<f32>, Vec<u8>) = (0..scores.len())
                    .filter(|&i| labels[i] == class)
                    .map(|i| (scores[i], u8::from(signs.flags[i][sign])))
                    .unzip();
                write!(t, " {} |", fmt_auc(crate::metrics::roc_auc(&s, &has)))
                    .expect("writing to a String");
            }
        }
        t.push('\n');
    }
    t
}

/// Draws `overlays` into one grid PNG at `path`: each map over the square the model saw, the
/// crop box in red and the true box in green.
///
/// # Errors
/// No overlays, an original that cannot be read, or an unwritable file.
pub fn draw_overlays(overlays: &[Overlay], path: &Path) -> Result<usize> {
    let mut tiles = Vec::with_capacity(overlays.len());
    for o in overlays {
        let image = decode(&o.path, None)?.image;
        let tile = draw_overlay(&image, &o.map, o.centre, o.crop, o.truth, &o.name);
        tiles.push(thumbnail(&tile, 256));
    }
    if tiles.is_empty() {
        return Err(TrainError::Undefined(
            "there are no attention maps to draw".into(),
        ));
    }
    save_png(&grid_image(&tiles, 4, 4), path)?;
    Ok(tiles.len())
}

/// One overlay on the original `image`: `map` (row-major over a square grid) over the square
/// `centre` the model saw, the crop box in red, the true box in green where known, and `label`
/// in the corner; 256 px on its longer side.
pub fn draw_overlay(
    image: &image::RgbImage,
    map: &[f32],
    centre: CentreCrop,
    crop: Rect,
    truth: Option<Rect>,
    label: &str,
) -> image::RgbImage {
    let grid = (map.len() as f64).sqrt() as usize;
    let region = [centre.x as u32, centre.y as u32, centre.side as u32];
    let mut img = heat_overlay(image, map, grid, region, 0.45);
    let thick = (centre.side as u32 / 150).max(2);
    let corners = |r: &Rect| [r.x0 as u32, r.y0 as u32, r.x1 as u32, r.y1 as u32];
    if let Some(t) = &truth {
        draw_rect(&mut img, corners(t), [40, 220, 60], thick);
    }
    draw_rect(&mut img, corners(&crop), [230, 30, 30], thick);
    let mut tile = thumbnail(&img, 256);
    draw_text(&mut tile, 4, 4, label, [255, 255, 255], 1);
    tile
}

/// Writes `report.html` into `input.dir`: one self-contained page (styles, ROC curves as SVG
/// drawn with plotters, the attention grid as an embedded PNG; no other file, no script, no
/// network) with the results table and confidence intervals, the ensemble, the attention
/// boxes, the sign table and `config` (the run's configuration, shown as given).
///
/// # Errors
/// A chart that cannot be drawn, an unreadable overlay grid, or an unwritable file.
pub fn write_html(input: &ReportInput<'_>, config: &str) -> Result<PathBuf> {
    let metrics = input.metrics;
    let mut h = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>agc run report</title><style>\
         body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}\
         table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;\
         padding:.3em .6em;text-align:right}th:first-child,td:first-child{text-align:left}\
         .figs{display:flex;flex-wrap:wrap;gap:1em}pre{background:#f6f6f6;padding:1em;\
         overflow:auto}img{max-width:100%}</style></head><body>\n<h1>agc run report</h1>\n",
    );
    writeln!(
        h,
        "<p>{} training images ({} positive), {} test images{}{}; {} folds; backbone \
         <code>{}</code>; {} s of work.</p>",
        metrics.images.train,
        metrics.images.train_positives,
        metrics.images.test,
        if metrics.images.test_labelled {
            " with known labels"
        } else {
            ""
        },
        if metrics.images.skipped > 0 {
            format!("; {} unreadable images left out", metrics.images.skipped)
        } else {
            String::new()
        },
        input.folds,
        escape(input.backbone),
        metrics.wall_seconds.round()
    )
    .expect("writing to a String");
    h.push_str(&html_results(metrics));
    h.push_str("<div class=\"figs\">\n");
    let (oof, test) = curves(input);
    h.push_str(&roc_svg(&oof, "ROC, out of fold", 480)?);
    if let Some(test) = &test {
        h.push_str(&roc_svg(test, "ROC, test", 480)?);
    }
    h.push_str("</div>\n");
    let grid = input.dir.join(OVERLAY_GRID_PNG);
    if !input.overlays.is_empty() && grid.is_file() {
        let png = std::fs::read(&grid).map_err(crate::error::io(&grid))?;
        writeln!(
            h,
            "<h2>Attention</h2><p>Fold 0's ChipNet on the first test images (red: the crop \
             box; green: the true box where known).</p><img alt=\"attention overlays\" \
             src=\"data:image/png;base64,{}\">",
            base64(&png)
        )
        .expect("writing to a String");
    }
    if let Some(signs) = &input.signs {
        h.push_str(&html_signs(input, signs));
    }
    writeln!(
        h,
        "<h2>Configuration</h2><details><summary>config.json</summary><pre>{}</pre></details>\
         \n</body></html>",
        escape(config)
    )
    .expect("writing to a String");
    let path = input.dir.join(REPORT_HTML);
    agc_data::fsutil::write_atomic(&path, h.as_bytes())?;
    Ok(path)
}

/// The results table, the ensemble's weights and the attention boxes' statistics, as HTML.
fn html_results(metrics: &Metrics) -> String {
    let mut h = String::new();
    h.push_str(
        "<table><tr><th>model</th><th>OOF AUC (pooled)</th><th>OOF AUC (mean of folds)</th>\
         <th>test AUC</th><th>test 95 % CI</th></tr>\n",
    );
    for (name, s) in ordered(metrics) {
        writeln!(
            h,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(name),
            score_cells(s).join("</td><td>")
        )
        .expect("writing to a String");
    }
    h.push_str("</table>\n");
    if !metrics.ensemble_weights.is_empty() {
        let w: Vec<String> = metrics
            .ensemble_weights
            .iter()
            .map(|(k, w)| format!("{} {w:.2}", escape(k)))
            .collect();
        writeln!(h, "<p>Ensemble weights: {}.</p>", w.join(", ")).expect("writing to a String");
        if !metrics.ensemble_note.is_empty() {
            writeln!(h, "<p>{}</p>", escape(&metrics.ensemble_note)).expect("writing to a String");
        }
    }
    if let Some(a) = &metrics.attention {
        writeln!(
            h,
            "<p>Attention boxes: {} (images × folds); median IoU with the true box {} (test \
             images {}); fallback to the whole image {:.1} %.</p>",
            a.boxes,
            fmt_auc(a.iou_median),
            fmt_auc(a.iou_median_test),
            100.0 * a.fallback_rate
        )
        .expect("writing to a String");
    }
    h
}

/// The sign table (its Markdown, as HTML).
fn html_signs(input: &ReportInput<'_>, signs: &SignFlags) -> String {
    let mut h = String::new();
    h.push_str("<h2>Signs</h2>\n");
    for line in signs_table(input, signs).lines() {
        if line.starts_with("|---") {
            continue;
        }
        if let Some(row) = line.strip_prefix('|') {
            h.push_str("<tr>");
            for cell in row.trim_end_matches('|').split('|') {
                write!(h, "<td>{}</td>", escape(cell.trim())).expect("writing to a String");
            }
            h.push_str("</tr>\n");
        } else if !line.trim().is_empty() {
            writeln!(h, "<p>{}</p><table>", escape(line)).expect("writing to a String");
        }
    }
    h.push_str("</table>\n");

    h
}

/// Every model's out-of-fold ROC curve, and its test curve where the test labels are known.
fn curves<'a>(input: &'a ReportInput<'_>) -> (Vec<Curve<'a>>, Option<Vec<Curve<'a>>>) {
    let oof = input
        .predictions
        .iter()
        .map(|(n, p)| Curve {
            name: n,
            scores: &p.oof,
            labels: input.labels,
        })
        .collect();
    let test = input.test_labels.map(|labels| {
        input
            .predictions
            .iter()
            .filter(|(_, p)| p.test.len() == labels.len())
            .map(|(n, p)| Curve {
                name: n,
                scores: &p.test,
                labels,
            })
            .collect()
    });
    (oof, test)
}

/// The models of `metrics` in report order: the metadata-only baseline first, the ensemble
/// last.
fn ordered(metrics: &Metrics) -> Vec<(&String, &crate::scores::ModelScore)> {
    let order = [
        "metadata",
        "resnet",
        "attnresnet",
        "chipnet",
        "cropnet",
        "oracle_cropnet",
        "ensemble",
    ];
    let mut rows: Vec<_> = metrics.models.iter().collect();
    rows.sort_by_key(|(n, _)| order.iter().position(|o| o == n).unwrap_or(order.len()));
    rows
}

/// Text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_examples() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
