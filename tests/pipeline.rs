//! The whole pipeline through the `agc` command on a tiny synthetic set with a tiny backbone:
//! every artefact of a run directory is checked, then the side commands (`attention`,
//! `evaluate`, `ensemble`) and a rerun that must change nothing.

mod common;

use std::path::Path;

use common::{agc, csv_rows, synth};

fn check_predictions(path: &Path, rows: usize, column: &str) {
    let (header, data) = csv_rows(path);
    let col = header
        .iter()
        .position(|h| h == column)
        .unwrap_or_else(|| panic!("{}: no {column} column in {header:?}", path.display()));
    assert_eq!(data.len(), rows, "{}", path.display());
    for r in &data {
        let p: f32 = r[col].parse().expect("a number");
        assert!((0.0..=1.0).contains(&p), "{}: {p}", path.display());
    }
}

/// The crop step's artefacts: attention maps (a 4×4 grid of 16-px chips in 64-px images), one
/// box per image and fold, and the crop caches.
fn check_crop_step(run: &Path) {
    let (header, maps) = csv_rows(&run.join("attention").join("fold0.csv"));
    assert_eq!(header.len(), 2 + 16);
    assert_eq!(maps.len(), 72);
    for m in &maps {
        let sum: f32 = m[2..]
            .iter()
            .map(|v| v.parse::<f32>().expect("number"))
            .sum();
        assert!((sum - 1.0).abs() < 1e-3, "an attention map sums to {sum}");
    }
    let (header, boxes) = csv_rows(&run.join("boxes.csv"));
    assert_eq!(boxes.len(), 2 * 72, "one row per image and fold");
    let col = |n: &str| header.iter().position(|h| h == n).expect(n);
    for b in &boxes {
        let side: u32 = b[col("orig_side")].parse().expect("side");
        assert!(side > 0);
        let iou: f64 = b[col("iou")]
            .parse()
            .expect("synthetic data has true boxes");
        assert!((0.0..=1.0).contains(&iou));
    }
    for f in ["fold0", "fold1", "oracle"] {
        for split in ["train", "test"] {
            let npy = run.join("crops").join(f).join(format!("{split}.npy"));
            assert!(npy.is_file(), "{}", npy.display());
            assert!(npy.with_file_name(format!("{split}.index.csv")).is_file());
        }
    }
}

/// `wall_seconds` of a run's `metrics.json`.
fn work(run: &Path) -> f64 {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).expect("metrics"))
            .expect("json");
    m["wall_seconds"].as_f64().expect("wall_seconds")
}

/// A rerun finds everything done and changes nothing.
fn rerun_is_a_no_op(args: &[&str], run: &Path) {
    let before = std::fs::read(run.join("submission.csv")).expect("submission");
    let oof = std::fs::read(run.join("models/cropnet/oof.csv")).expect("oof");
    let seconds = work(run);
    assert!(seconds > 0.0, "wall_seconds {seconds}");
    agc(&[&["pipeline"], args].concat());
    // The rerun only re-made the ensemble; the run's work is still counted (it used to
    // become 0 s after a resume).
    assert!(
        (work(run) - seconds).abs() < 0.5,
        "{} vs {seconds}",
        work(run)
    );
    assert_eq!(
        std::fs::read(run.join("submission.csv")).expect("again"),
        before
    );
    assert_eq!(
        std::fs::read(run.join("models/cropnet/oof.csv")).expect("again"),
        oof
    );
}

fn side_commands(data: &Path, run: &Path) {
    let out = agc(&[
        "attention",
        "--run",
        run.to_str().expect("utf-8"),
        "--count",
        "4",
    ]);
    assert!(out.contains("4 overlays"), "{out}");
    assert!(run.join("overlays").join("fold0.png").is_file());
    let out = agc(&[
        "evaluate",
        "--predictions",
        run.join("submission.csv").to_str().expect("utf-8"),
        "--labels",
        data.join("test_labels.csv").to_str().expect("utf-8"),
    ]);
    assert!(out.contains("24 images, ROC AUC"), "{out}");
    // The boxes redrawn from the saved maps: at the run's own k (the seed's 1.5), the median
    // IoU of the training rows of boxes.csv.
    let out = agc(&[
        "boxes",
        "--run",
        run.to_str().expect("utf-8"),
        "--k",
        "1.5",
        "3",
    ]);
    let (header, boxes) = csv_rows(&run.join("boxes.csv"));
    let col = |n: &str| header.iter().position(|h| h == n).expect(n);
    let mut iou: Vec<f64> = boxes
        .iter()
        .filter(|b| b[col("split")] == "train")
        .map(|b| b[col("iou")].parse().expect("an IoU"))
        .collect();
    iou.sort_by(f64::total_cmp);
    let median = f64::midpoint(iou[iou.len() / 2 - 1], iou[iou.len() / 2]);
    assert!(
        out.contains(&format!("| 1.5 (the run's) | {median:.4} |"))
            && out.contains("96 boxes of training images"),
        "{out}"
    );
}

#[test]
fn pipeline_writes_every_artefact_and_resumes_as_a_no_op() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let run = dir.path().join("run");
    synth(&data, 48, 24);
    let args = common::tiny_run_args(&data, &run);
    let out = agc(&[&["pipeline"], &args[..]].concat());
    assert!(out.contains("| resnet |"), "{out}");

    // Configuration, folds, metadata.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).expect("config"))
            .expect("json");
    assert_eq!(config["model"]["backbone"], "tiny");
    assert_eq!(config["folds"], 2);
    let (_, folds) = csv_rows(&run.join("folds.csv"));
    assert_eq!(folds.len(), 48);
    assert!(run.join("metadata_encoder.json").is_file());

    // Every model: checkpoints, state, OOF for every training image, test predictions.
    for model in ["resnet", "chipnet", "cropnet", "oracle_cropnet"] {
        let m = run.join("models").join(model);
        for f in 0..2 {
            for file in [
                "best.bpk",
                "last.bpk",
                "optim.backbone.bpk",
                "optim.head.bpk",
                "state.json",
                "predictions.json",
            ] {
                assert!(
                    m.join(format!("fold{f}")).join(file).is_file(),
                    "{model} {file}"
                );
            }
        }
        check_predictions(&m.join("oof.csv"), 48, "prediction");
        check_predictions(&m.join("test.csv"), 24, "prediction");
    }

    check_crop_step(&run);

    // Ensemble and submission.
    check_predictions(&run.join("ensemble").join("oof.csv"), 48, "prediction");
    let (header, sub) = csv_rows(&run.join("submission.csv"));
    assert_eq!(header, ["image_name", "target"]);
    assert_eq!(sub.len(), 24);

    // metrics.json: every model's scores, the ensemble's weights, the attention boxes.
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).expect("metrics"))
            .expect("json");
    for model in ["resnet", "chipnet", "cropnet", "oracle_cropnet", "ensemble"] {
        for key in ["oof_auc", "test_auc"] {
            let v = metrics["models"][model][key].as_f64();
            assert!(
                v.is_some_and(|v| (0.0..=1.0).contains(&v)),
                "{model} {key}: {v:?}"
            );
        }
    }
    assert!(metrics["attention"]["iou_median"].as_f64().is_some());
    assert!(metrics["attention"]["fallback_rate"].as_f64().is_some());
    assert!(metrics["wall_seconds"].as_f64().is_some_and(|s| s > 0.0));

    // Report and images.
    let report = std::fs::read_to_string(run.join("report.md")).expect("report");
    assert!(report.contains("| cropnet |") && report.contains("roc_test.png"));
    // The synthetic data's signs.csv gives the table of which signs each model reads: a row
    // per model with two AUCs (or "–" where a class lacks the sign) per sign.
    let signs = report
        .split("Which signs each model reads")
        .nth(1)
        .expect("the signs table");
    let row = signs
        .lines()
        .find(|l| l.starts_with("| resnet |"))
        .expect("a resnet row");
    assert_eq!(row.matches('|').count(), 8, "{row}");
    for png in ["roc_oof.png", "roc_test.png", "overlays/grid.png"] {
        let img = image::open(run.join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(img.width() > 100, "{png}");
    }

    side_commands(&data, &run);

    // The browser report: self-contained, with both ROC charts and the attention grid.
    let html = std::fs::read_to_string(run.join("report.html")).expect("report.html");
    assert_eq!(html.matches("<svg").count(), 2, "two ROC charts");
    assert!(html.contains("data:image/png;base64,") && !html.contains("src=\"overlays/"));

    rerun_is_a_no_op(&args, &run);

    // Fitted ensemble weights are written too, from the OOF predictions only.
    let out = agc(&[
        "ensemble",
        "--out",
        run.to_str().expect("utf-8"),
        "--members",
        "resnet=1,cropnet=1,chipnet=1",
        "--fit",
    ]);
    assert!(out.contains("ensemble (resnet"), "{out}");

    // The same run directory with other settings is refused, naming the file.
    let err = common::agc_fails(&[&["pipeline"], &args[..], &["--seed", "9"]].concat());
    assert!(
        err.contains("config.json") && err.contains("seed: saved 42, given 9"),
        "{err}"
    );
}
