//! What a run reports: `metrics.json`, `report.md`, ROC curves and attention overlays as PNG.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use agc_data::{DataDir, decode};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::model::ModelKind;
use crate::pipeline::{
    AttentionStats, ModelPredictions, ModelScore, Run, read_csv_rows, true_square,
};
use crate::plot::{
    Curve, draw_rect, draw_text, grid_image, heat_overlay, roc_image, save_png, thumbnail,
};

/// `RUN/metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Scores per model (`resnet`, `chipnet`, `cropnet`, `oracle_cropnet`, `ensemble`, ...).
    pub models: BTreeMap<String, ModelScore>,
    /// The ensemble's members and normalised weights.
    pub ensemble_weights: BTreeMap<String, f64>,
    /// How well the attention boxes found the lesions.
    pub attention: Option<AttentionStats>,
    /// Wall-clock seconds of the command that wrote this file (including resumed work only
    /// from this invocation).
    pub wall_seconds: f64,
    /// Training images, positives among them, test images.
    pub images: ImageCounts,
}

/// Sizes of the data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageCounts {
    /// Training images.
    pub train: usize,
    /// Positives among them.
    pub train_positives: usize,
    /// Test images.
    pub test: usize,
    /// Whether test labels were known (synthetic data).
    pub test_labelled: bool,
}

/// Scores every trained model and the ensemble and writes `metrics.json`.
///
/// # Errors
/// Unreadable predictions or an unwritable file.
pub fn write_metrics(
    run: &Run,
    predictions: &[(String, ModelPredictions)],
    weights: &[(ModelKind, f64)],
    wall_seconds: f64,
) -> Result<Metrics> {
    let metrics = Metrics {
        models: predictions
            .iter()
            .map(|(name, p)| (name.clone(), run.score(p)))
            .collect(),
        ensemble_weights: weights
            .iter()
            .map(|(k, w)| (k.name().to_string(), *w))
            .collect(),
        attention: run.attention_stats()?,
        wall_seconds,
        images: ImageCounts {
            train: run.train.len(),
            train_positives: run.labels.iter().filter(|&&y| y == 1).count(),
            test: run.test.len(),
            test_labelled: run.test_labels.is_some(),
        },
    };
    agc_data::fsutil::write_json(&run.dir.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

fn fmt_auc(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.4}"))
}

/// The results table in Markdown.
pub fn results_table(metrics: &Metrics) -> String {
    let mut t = String::from(
        "| model | OOF AUC (pooled) | OOF AUC (mean of folds) | test AUC | test 95 % CI |\n\
         |---|---|---|---|---|\n",
    );
    let order = [
        "resnet",
        "attnresnet",
        "chipnet",
        "cropnet",
        "oracle_cropnet",
        "ensemble",
    ];
    let mut names: Vec<&String> = metrics.models.keys().collect();
    names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(order.len()));
    for name in names {
        let s = &metrics.models[name];
        writeln!(
            t,
            "| {name} | {} | {} | {} | {} |",
            fmt_auc(s.oof_auc),
            fmt_auc(s.oof_auc_fold_mean),
            fmt_auc(s.test_auc),
            s.test_auc_ci95
                .map_or_else(|| "–".into(), |[a, b]| format!("{a:.3}–{b:.3}"))
        )
        .expect("writing to a String");
    }
    t
}

/// Writes `report.md`, `roc_oof.png`, `roc_test.png` (with test labels) and
/// `overlays/grid.png` into the run directory.
///
/// # Errors
/// Unwritable files or unreadable originals.
pub fn write_report(
    run: &Run,
    metrics: &Metrics,
    predictions: &[(String, ModelPredictions)],
) -> Result<PathBuf> {
    let dir = &run.dir;
    let oof_curves: Vec<Curve> = predictions
        .iter()
        .map(|(n, p)| Curve {
            name: n,
            scores: &p.oof,
            labels: &run.labels,
        })
        .collect();
    save_png(&roc_image(&oof_curves, 480), &dir.join("roc_oof.png"))?;
    let mut md = String::from("# agc run report\n\n");
    writeln!(
        md,
        "{} training images ({} positive), {} test images{}; {} folds; backbone `{}`; \
         {} s wall time.\n",
        metrics.images.train,
        metrics.images.train_positives,
        metrics.images.test,
        if metrics.images.test_labelled {
            " with known labels"
        } else {
            ""
        },
        run.folds.k,
        run.config.model.backbone,
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
    if let Some(table) = signs_table(run, predictions)? {
        md.push_str(&table);
    }
    md.push_str("\n![ROC, out-of-fold](roc_oof.png)\n");
    if let Some(labels) = &run.test_labels {
        let curves: Vec<Curve> = predictions
            .iter()
            .filter(|(_, p)| p.test.len() == labels.len())
            .map(|(n, p)| Curve {
                name: n,
                scores: &p.test,
                labels,
            })
            .collect();
        save_png(&roc_image(&curves, 480), &dir.join("roc_test.png"))?;
        md.push_str("![ROC, test](roc_test.png)\n");
    }
    if dir.join("boxes.csv").is_file() {
        let path = dir.join("overlays").join("grid.png");
        write_overlays(run, 0, 16, &path)?;
        md.push_str(
            "\nAttention of fold 0's ChipNet on the first test images (red: the crop box; \
             green: the true box where known):\n\n![attention](overlays/grid.png)\n",
        );
    }
    let path = dir.join("report.md");
    agc_data::fsutil::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// For synthetic data (the data directory's `signs.csv`): which class signs each model reads.
/// Within the benign and within the malignant images separately, the AUC of the model's score
/// for telling images with the sign from images without it: 0.5 means the model ignores the
/// sign. On the test images when their labels are known, else out of fold.
fn signs_table(run: &Run, predictions: &[(String, ModelPredictions)]) -> Result<Option<String>> {
    let path = run.config.data.join("signs.csv");
    if !path.is_file() {
        return Ok(None);
    }
    let (header, rows) = read_csv_rows(&path)?;
    let expected: Vec<&str> = ["image_name", "target"]
        .into_iter()
        .chain(agc_data::Signs::NAMES)
        .collect();
    if header != expected {
        // Not agc's synthetic-signs file: the report goes on without the table.
        tracing::warn!(
            "{}: not a synthetic signs table (expected the columns {}); skipped",
            path.display(),
            expected.join(",")
        );
        return Ok(None);
    }
    let signs: BTreeMap<&str, Vec<bool>> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[2..].iter().map(|v| v == "1").collect()))
        .collect();
    let (records, labels, on_test) = match &run.test_labels {
        Some(labels) => (&run.test, labels, true),
        None => (&run.train, &run.labels, false),
    };
    let Some(flags) = records
        .iter()
        .map(|r| signs.get(r.image_name.as_str()))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let mut t = format!(
        "\nWhich signs each model reads ({} images; `signs.csv`): within the benign (−) and the \
         malignant (+) images, the AUC of the model's score for the sign's presence; 0.5 means \
         the model ignores it.\n\n| model |",
        if on_test { "test" } else { "out-of-fold" }
    );
    for name in agc_data::Signs::NAMES {
        write!(t, " {name} − | {name} + |").expect("writing to a String");
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(2 * agc_data::Signs::NAMES.len()));
    t.push('\n');
    for (name, p) in predictions {
        let scores = if on_test { &p.test } else { &p.oof };
        if scores.len() != records.len() {
            continue;
        }
        write!(t, "| {name} |").expect("writing to a String");
        for (sign, _) in agc_data::Signs::NAMES.iter().enumerate() {
            for class in [0u8, 1] {
                let (s, has): (Vec<f32>, Vec<u8>) = (0..records.len())
                    .filter(|&i| labels[i] == class)
                    .map(|i| (scores[i], u8::from(flags[i][sign])))
                    .unzip();
                write!(t, " {} |", fmt_auc(crate::metrics::roc_auc(&s, &has)))
                    .expect("writing to a String");
            }
        }
        t.push('\n');
    }
    Ok(Some(t))
}

/// One parsed row of `attention/fold<k>.csv` with its `boxes.csv` row.
struct Overlay {
    split: String,
    name: String,
    map: Vec<f32>,
    region: [u32; 3],
    orig: [u32; 3],
    truth: Option<[u32; 4]>,
}

fn read_overlays(run: &Run, fold: usize, count: usize) -> Result<Vec<Overlay>> {
    let att_path = run.dir.join("attention").join(format!("fold{fold}.csv"));
    let box_path = run.dir.join("boxes.csv");
    for p in [&att_path, &box_path] {
        if !p.is_file() {
            return Err(TrainError::MissingStep {
                path: p.clone(),
                step: "crop".into(),
            });
        }
    }
    let parse = |path: &Path, s: &str| -> Result<f32> {
        s.parse::<f32>().map_err(|e| TrainError::Parse {
            path: path.to_path_buf(),
            message: format!("{s:?}: {e}"),
        })
    };
    let mut boxes: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in read_csv_rows(&box_path)?.1 {
        if r[0] == fold.to_string() && r.len() >= 16 {
            boxes.insert((r[1].clone(), r[2].clone()), r);
        }
    }
    let mut rows: Vec<Overlay> = Vec::new();
    let mut test_first = Vec::new();
    for r in read_csv_rows(&att_path)?.1 {
        let key = (r[0].clone(), r[1].clone());
        let Some(b) = boxes.get(&key) else { continue };
        let map = r
            .iter()
            .skip(2)
            .map(|v| parse(&att_path, v))
            .collect::<Result<Vec<f32>>>()?;
        let num = |j: usize| -> Result<u32> { Ok(parse(&box_path, &b[j])? as u32) };
        let truth = if b[11].is_empty() {
            None
        } else {
            Some([num(11)?, num(12)?, num(13)?, num(14)?])
        };
        let o = Overlay {
            split: key.0.clone(),
            name: key.1,
            map,
            region: [0, 0, 0],
            orig: [num(8)?, num(9)?, num(10)?],
            truth,
        };
        if o.split == "test" {
            test_first.push(o);
        } else {
            rows.push(o);
        }
    }
    test_first.extend(rows);
    test_first.truncate(count);
    Ok(test_first)
}

/// Draws `count` attention overlays of fold `fold` (test images first) into one grid PNG at
/// `path`: the map over the square the model saw, the crop box in red and the true box in
/// green.
///
/// # Errors
/// The crop step has not run, or an original cannot be read.
pub fn write_overlays(run: &Run, fold: usize, count: usize, path: &Path) -> Result<usize> {
    let overlays = read_overlays(run, fold, count)?;
    let mut tiles = Vec::with_capacity(overlays.len());
    for mut o in overlays {
        let file = DataDir::image_path(run.images_folder(&o.split), &o.name);
        let image = decode(&file, None)?.image;
        let (width, height) = image.dimensions();
        let side = width.min(height);
        o.region = [(width - side) / 2, (height - side) / 2, side];
        let grid = (o.map.len() as f64).sqrt() as usize;
        let mut img = heat_overlay(&image, &o.map, grid, o.region, 0.45);
        let thick = (side / 150).max(2);
        if let Some(t) = o.truth {
            let sq = true_square(t, width as usize, height as usize);
            draw_rect(
                &mut img,
                [sq.x0 as u32, sq.y0 as u32, sq.x1 as u32, sq.y1 as u32],
                [40, 220, 60],
                thick,
            );
        }
        let [left, top, crop_side] = o.orig;
        draw_rect(
            &mut img,
            [left, top, left + crop_side, top + crop_side],
            [230, 30, 30],
            thick,
        );
        let mut tile = thumbnail(&img, 256);
        draw_text(&mut tile, 4, 4, &o.name, [255, 255, 255], 1);
        tiles.push(tile);
    }
    if tiles.is_empty() {
        return Err(TrainError::Undefined(format!(
            "fold {fold} has no attention maps to draw"
        )));
    }
    let n = tiles.len();
    save_png(&grid_image(&tiles, 4, 4), path)?;
    Ok(n)
}
