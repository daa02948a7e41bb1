//! What a run reports: `report.md` with ROC curves and attention overlays as PNG, and the
//! self-contained `report.html`. Both say the same from one source: the summary and the tables
//! are built once ([`Table`]) and then written as Markdown or HTML, the ROC charts are one
//! plotters drawing ([`crate::plot::roc_bitmap`], [`crate::plot::roc_svg`]). A leaf: it takes
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
use crate::scores::{Metrics, ModelPredictions, ModelScore, Scored};

/// An AUC (or an IoU) to four decimals, `–` where undefined.
pub fn fmt_auc(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.4}"))
}

/// A model's row of the results table: pooled and mean-of-folds OOF AUC, test AUC, its CI.
fn score_cells(s: &ModelScore) -> [String; 5] {
    let folds: Vec<String> = s
        .fold_aucs
        .iter()
        .map(|a| a.map_or_else(|| "–".into(), |a| format!("{a:.3}")))
        .collect();
    [
        fmt_auc(s.oof_auc),
        fmt_auc(s.oof_auc_fold_mean),
        if folds.is_empty() {
            "–".into()
        } else {
            folds.join(" ")
        },
        fmt_auc(s.test_auc),
        s.test_auc_ci95
            .map_or_else(|| "–".into(), |[a, b]| format!("{a:.3}–{b:.3}")),
    ]
}

/// A table of text cells, built once and then written as Markdown (`report.md`, the terminal)
/// or as HTML (`report.html`), so that the two cannot differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The column headings.
    pub header: Vec<String>,
    /// The rows, a cell per heading.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The table in Markdown (a `|` in a cell escaped), ending in a newline.
    pub fn markdown(&self) -> String {
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut t = line(&self.header);
        t.push('|');
        t.push_str(&"---|".repeat(self.header.len()));
        t.push('\n');
        for row in &self.rows {
            t.push_str(&line(row));
        }
        t
    }

    /// The table in HTML (every cell escaped), a line per row, ending in a newline.
    pub fn html(&self) -> String {
        let mut t = String::from("<table><tr>");
        for cell in &self.header {
            write!(t, "<th>{}</th>", escape(cell)).expect("writing to a String");
        }
        t.push_str("</tr>\n");
        for row in &self.rows {
            t.push_str("<tr>");
            for cell in row {
                write!(t, "<td>{}</td>", escape(cell)).expect("writing to a String");
            }
            t.push_str("</tr>\n");
        }
        t.push_str("</table>\n");
        t
    }
}

/// The results table: per model (in report order) the pooled and the mean-of-folds OOF AUC,
/// the test AUC and its bootstrap 95 % interval.
pub fn results_table(metrics: &Metrics) -> Table {
    let header = [
        "model",
        "OOF AUC (pooled)",
        "OOF AUC (mean of folds)",
        "each fold",
        "test AUC",
        "test 95 % CI",
    ];
    Table {
        header: header.map(String::from).to_vec(),
        // `Scored`'s order is the report's: the baseline first, the ensemble last.
        rows: metrics
            .models
            .iter()
            .map(|(name, s)| {
                let mut row = vec![name.to_string()];
                row.extend(score_cells(s));
                row
            })
            .collect(),
    }
}

/// A paragraph of a report as HTML: `text` is prose with code between backticks, as in
/// Markdown; the code becomes `<code>`, and everything is escaped.
fn paragraph_html(text: &str) -> String {
    let mut h = String::from("<p>");
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            write!(h, "<code>{}</code>", escape(part)).expect("writing to a String");
        } else {
            h.push_str(&escape(part));
        }
    }
    h.push_str("</p>\n");
    h
}

/// What both reports say first, built once: the run's facts, the results table, and notes on
/// the ensemble and the attention boxes. Prose has code between backticks (see
/// [`paragraph_html`]).
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    /// The images, the folds, the backbone and the time, in one sentence.
    facts: String,
    /// The results table ([`results_table`]).
    results: Table,
    /// Paragraphs after the table: the ensemble's weights and how they were chosen, the
    /// attention boxes.
    notes: Vec<String>,
}

impl Summary {
    fn of(input: &ReportInput<'_>) -> Self {
        let metrics = input.metrics;
        let images = &metrics.images;
        let facts = format!(
            "{} training images ({} positive), {} test images{}{}; {} folds; backbone `{}`; \
             {} s of work.",
            images.train,
            images.train_positives,
            images.test,
            if images.test_labelled {
                " with known labels"
            } else {
                ""
            },
            if images.skipped > 0 {
                format!(
                    "; {} unreadable images left out (`skipped.csv`)",
                    images.skipped
                )
            } else {
                String::new()
            },
            input.folds,
            input.backbone,
            metrics.wall_seconds.round()
        );
        let mut notes = Vec::new();
        if !metrics.ensemble_weights.is_empty() {
            let w: Vec<String> = metrics
                .ensemble_members()
                .iter()
                .map(ToString::to_string)
                .collect();
            notes.push(format!("Ensemble weights: {}.", w.join(", ")));
            if !metrics.ensemble_note.is_empty() {
                notes.push(metrics.ensemble_note.clone());
            }
        }
        if let Some(a) = &metrics.attention {
            notes.push(format!(
                "Attention boxes: {} (images × folds); median IoU with the true box {} (test \
                 images {}); fallback to the whole image {:.1} %.",
                a.boxes,
                fmt_auc(a.iou_median),
                fmt_auc(a.iou_median_test),
                100.0 * a.fallback_rate
            ));
        }
        Self {
            facts,
            results: results_table(metrics),
            notes,
        }
    }

    /// For `report.md`: paragraphs apart, the table after the facts.
    fn markdown(&self) -> String {
        let mut md = format!("{}\n\n{}", self.facts, self.results.markdown());
        for note in &self.notes {
            write!(md, "\n{note}\n").expect("writing to a String");
        }
        md
    }

    /// For `report.html`.
    fn html(&self) -> String {
        let mut h = paragraph_html(&self.facts);
        h.push_str(&self.results.html());
        for note in &self.notes {
            h.push_str(&paragraph_html(note));
        }
        h
    }
}

/// Everything `report.md` shows.
#[derive(Debug)]
pub struct ReportInput<'a> {
    /// Where `report.md` and its PNGs go.
    pub dir: &'a Path,
    /// The scores.
    pub metrics: &'a Metrics,
    /// The predictions of the baseline, each model and the ensemble.
    pub predictions: &'a [(Scored, ModelPredictions)],
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
    let (oof_curves, test_curves) = curves(input);
    save_png(
        &roc_bitmap(&oof_curves, "ROC, out of fold", 480)?,
        &dir.join(ROC_OOF_PNG),
    )?;
    let mut md = String::from("# agc run report\n\n");
    md.push_str(&Summary::of(input).markdown());
    if let Some(signs) = &input.signs {
        let (about, table) = signs_table(input, signs);
        write!(md, "\n{about}\n\n{}", table.markdown()).expect("writing to a String");
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
/// from images without it: 0.5 means the model ignores the sign. The paragraph that explains
/// the table (code between backticks), and the table.
fn signs_table(input: &ReportInput<'_>, signs: &SignFlags) -> (String, Table) {
    let (labels, on_test) = match (signs.on_test, input.test_labels) {
        (true, Some(labels)) => (labels, true),
        _ => (input.labels, false),
    };
    let about = format!(
        "Which signs each model reads ({} images; `signs.csv`): within the benign (−) and the \
         malignant (+) images, the AUC of the model's score for the sign's presence; 0.5 means \
         the model ignores it.",
        if on_test { "test" } else { "out-of-fold" }
    );
    let mut header = vec!["model".to_string()];
    for name in &signs.names {
        header.extend([format!("{name} −"), format!("{name} +")]);
    }
    let mut rows = Vec::with_capacity(input.predictions.len());
    for (name, p) in input.predictions {
        let scores = if on_test { &p.test } else { &p.oof };
        if scores.len() != signs.flags.len() || labels.len() != signs.flags.len() {
            continue;
        }
        let mut row = vec![name.to_string()];
        for sign in 0..signs.names.len() {
            for class in [0u8, 1] {
                let (s, has): (Vec<f32>, Vec<u8>) = (0..scores.len())
                    .filter(|&i| labels[i] == class)
                    .map(|i| (scores[i], u8::from(signs.flags[i][sign])))
                    .unzip();
                row.push(fmt_auc(crate::metrics::roc_auc(&s, &has)));
            }
        }
        rows.push(row);
    }
    (about, Table { header, rows })
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

/// Writes `report.html` into `input.dir`: one self-contained page (styles, the ROC charts of
/// `report.md` as SVG, the attention grid as an embedded PNG; no other file, no script, no
/// network) with `report.md`'s summary (results table with confidence intervals, ensemble,
/// attention boxes), the sign table and `config` (the run's configuration, shown as given).
///
/// # Errors
/// A chart that cannot be drawn, an unreadable overlay grid, or an unwritable file.
pub fn write_html(input: &ReportInput<'_>, config: &str) -> Result<PathBuf> {
    let mut h = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>agc run report</title><style>\
         body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}\
         table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;\
         padding:.3em .6em;text-align:right}th:first-child,td:first-child{text-align:left}\
         .figs{display:flex;flex-wrap:wrap;gap:1em}pre{background:#f6f6f6;padding:1em;\
         overflow:auto}img{max-width:100%}</style></head><body>\n<h1>agc run report</h1>\n",
    );
    h.push_str(&Summary::of(input).html());
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
        let (about, table) = signs_table(input, signs);
        h.push_str("<h2>Signs</h2>\n");
        h.push_str(&paragraph_html(&about));
        h.push_str(&table.html());
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

/// Every model's out-of-fold ROC curve, and its test curve where the test labels are known.
fn curves<'a>(input: &'a ReportInput<'_>) -> (Vec<Curve<'a>>, Option<Vec<Curve<'a>>>) {
    let oof = input
        .predictions
        .iter()
        .map(|(n, p)| Curve {
            name: n.name(),
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
                name: n.name(),
                scores: &p.test,
                labels,
            })
            .collect()
    });
    (oof, test)
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

    use crate::model::ModelKind;
    use crate::scores::{AttentionStats, ImageCounts, ModelScore};

    fn metrics() -> Metrics {
        let score = |oof, mean, test, ci| ModelScore {
            oof_auc: Some(oof),
            oof_auc_fold_mean: Some(mean),
            fold_aucs: vec![Some(mean - 0.0111), None, Some(mean + 0.0111)],
            test_auc: test,
            test_auc_ci95: ci,
        };
        let models = [
            (
                Scored::Ensemble,
                score(0.9012, 0.8876, Some(0.9345), Some([0.871, 0.982])),
            ),
            (
                Scored::Model(ModelKind::Resnet),
                score(0.7123, 0.7034, Some(0.6987), Some([0.612, 0.777])),
            ),
            (
                Scored::Model(ModelKind::Cropnet),
                score(0.8456, 0.8321, None, None),
            ),
        ];
        Metrics {
            models: models.into(),
            ensemble_weights: [(ModelKind::Resnet, 0.25), (ModelKind::Cropnet, 0.75)].into(),
            ensemble_choice: None,
            ensemble_note: "Ensemble: weights fitted on the out-of-fold predictions.".into(),
            attention: Some(AttentionStats {
                boxes: 96,
                iou_median: Some(0.4321),
                iou_median_test: Some(0.5012),
                fallback_rate: 0.075,
            }),
            wall_seconds: 123.4,
            images: ImageCounts {
                train: 48,
                train_positives: 16,
                test: 24,
                test_labelled: true,
                skipped: 3,
            },
        }
    }

    fn input<'a>(
        dir: &'a Path,
        metrics: &'a Metrics,
        predictions: &'a [(Scored, ModelPredictions)],
        labels: &'a [u8],
    ) -> ReportInput<'a> {
        ReportInput {
            dir,
            metrics,
            predictions,
            labels,
            test_labels: Some(labels),
            folds: 4,
            backbone: "tiny<1>",
            signs: Some(SignFlags {
                on_test: false,
                names: vec!["dots".into()],
                flags: (0..labels.len()).map(|i| vec![i % 3 == 0]).collect(),
            }),
            overlays: Vec::new(),
        }
    }

    /// The numbers of `text` in order (runs of digits and points).
    fn figures(text: &str) -> Vec<String> {
        text.split(|c: char| !c.is_ascii_digit() && c != '.')
            .map(|s| s.trim_matches('.'))
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    /// `html` with every tag a space.
    fn without_tags(html: &str) -> String {
        let mut plain = String::new();
        let mut in_tag = false;
        for c in html.chars() {
            match c {
                '<' => in_tag = true,
                '>' if in_tag => {
                    in_tag = false;
                    plain.push(' ');
                }
                _ if !in_tag => plain.push(c),
                _ => {}
            }
        }
        plain
    }

    #[test]
    fn markdown_and_html_summaries_show_the_same_figures() {
        let metrics = metrics();
        let summary = Summary::of(&input(Path::new("."), &metrics, &[], &[]));
        let (md, html) = (summary.markdown(), summary.html());
        let figures_md = figures(&md);
        assert_eq!(figures_md, figures(&without_tags(&html)), "{md}\n{html}");
        for figure in [
            "0.9012", "0.8876", "0.9345", "0.871", "0.982", "0.8456", "0.25", "0.75", "96",
            "0.4321", "0.5012", "7.5", "48", "16", "24", "3", "4", "123",
        ] {
            assert!(
                figures_md.iter().any(|f| f == figure),
                "{figure} not in {md}"
            );
        }
        // Report order: the baseline first, the ensemble last.
        let rows: Vec<&str> = summary.results.rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(rows, ["resnet", "cropnet", "ensemble"]);
        assert!(md.contains("backbone `tiny<1>`"), "{md}");
        assert!(
            html.contains("backbone <code>tiny&lt;1&gt;</code>"),
            "{html}"
        );
    }

    #[test]
    fn tables_render_each_cell_once_in_markdown_and_html() {
        let table = Table {
            header: vec!["model".into(), "a|b".into()],
            rows: vec![
                vec!["x<y".into(), "0.5".into()],
                vec!["z".into(), "–".into()],
            ],
        };
        assert_eq!(
            table.markdown(),
            "| model | a\\|b |\n|---|---|\n| x<y | 0.5 |\n| z | – |\n"
        );
        assert_eq!(
            table.html(),
            "<table><tr><th>model</th><th>a|b</th></tr>\n<tr><td>x&lt;y</td><td>0.5</td></tr>\n\
             <tr><td>z</td><td>–</td></tr>\n</table>\n"
        );
    }

    #[test]
    fn report_md_and_html_hold_the_same_tables() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let metrics = metrics();
        let labels: Vec<u8> = (0..12).map(|i| u8::from(i % 2 == 0)).collect();
        let predictions: Vec<(Scored, ModelPredictions)> = [ModelKind::Resnet, ModelKind::Cropnet]
            .iter()
            .enumerate()
            .map(|(m, name)| {
                let scores: Vec<f32> = (0..12)
                    .map(|i| f32::midpoint((i * (5 + m) % 12) as f32 / 12.0, f32::from(labels[i])))
                    .collect();
                let p = ModelPredictions {
                    oof: scores.clone(),
                    test: scores,
                };
                (Scored::Model(*name), p)
            })
            .collect();
        let input = input(dir.path(), &metrics, &predictions, &labels);
        let md = std::fs::read_to_string(write_report(&input).expect("report.md")).expect("md");
        let html =
            std::fs::read_to_string(write_html(&input, "{}").expect("report.html")).expect("html");
        let results = results_table(&metrics);
        assert!(md.contains(&results.markdown()), "{md}");
        assert!(html.contains(&results.html()), "{html}");
        let (_, signs) = signs_table(&input, input.signs.as_ref().expect("signs"));
        assert_eq!(signs.rows.len(), 2);
        assert!(md.contains(&signs.markdown()) && html.contains(&signs.html()));
        for png in [ROC_OOF_PNG, ROC_TEST_PNG] {
            let img = image::open(dir.path().join(png)).expect("a ROC PNG");
            assert_eq!((img.width(), img.height()), (480, 480), "{png}");
        }
        assert_eq!(html.matches("<svg").count(), 2, "two ROC charts");
    }
}
