//! The steps of a run on a tiny run directory: what `prepare` checks before anything is
//! written, images left out with `skip_bad_images`, and folds claimed by other workers.

use std::path::{Path, PathBuf};

use agc_data::progress::silent;
use agc_data::{Split, SynthConfig, generate};
use agc_train::artefacts::{BoxRow, FoldRow, FoldSummary, SkippedRow, TestRow, read_rows};
use agc_train::run::{BoxSplit, PipelineConfig, Run, lock, prepare};
use agc_train::scores::AttentionStats;
use agc_train::{ModelKind, TrainError};
use burn::prelude::Device;

fn data(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let synth = SynthConfig {
        train: 24,
        test: 8,
        positive_rate: 0.5,
        min_side: 96,
        max_side: 128,
        seed: 5,
        ..SynthConfig::default()
    };
    generate(&synth, &data, &agc_data::Silent).expect("synthetic data");
    data
}

fn config(data: &Path) -> PipelineConfig {
    let mut config = PipelineConfig::demo(data.to_path_buf());
    config.image_size = 32;
    config.folds = 2;
    config.models = vec![ModelKind::Resnet];
    config.ensemble = vec![(ModelKind::Resnet, 1.0).into()];
    config.schedules.for_each(|s| {
        s.max_epochs = 1;
        s.patience = 1;
        s.batch_size = 8;
        s.tta = 0;
        s.augment = None;
    });
    config
}

fn message(e: &TrainError) -> String {
    e.to_string()
}

#[test]
fn a_failed_first_try_writes_no_configuration_and_bad_data_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = data(dir.path());
    let run = dir.path().join("run");

    // A typo in the data folder: nothing is saved, so the corrected command is not refused.
    let typo = config(&dir.path().join("dta"));
    assert!(prepare(&run, &typo, &silent()).is_err());
    assert!(!run.join("config.json").exists());

    // Grouping by patient without patient_id names the column.
    let no_patients = dir.path().join("no_patients");
    copy_data(&data, &no_patients, |line| {
        let mut cells: Vec<&str> = line.split(',').collect();
        cells.remove(1);
        cells.join(",")
    });
    let mut grouped = config(&no_patients);
    grouped.group_by_patient = true;
    let err = message(&prepare(&run, &grouped, &silent()).expect_err("no patient_id"));
    assert!(
        err.contains("patient_id") && err.contains("24 of 24"),
        "{err}"
    );
    assert!(!run.join("config.json").exists());

    // More folds than positives.
    let mut many = config(&data);
    many.folds = 20;
    let err = message(&prepare(&run, &many, &silent()).expect_err("too many folds"));
    assert!(
        err.contains("positives") && err.contains("20 folds"),
        "{err}"
    );

    // A header-only train.csv.
    let empty = dir.path().join("empty");
    copy_data(&data, &empty, |_| String::new());
    let err = message(&prepare(&run, &config(&empty), &silent()).expect_err("no rows"));
    assert!(
        err.contains("train.csv") && err.contains("no images"),
        "{err}"
    );
    assert!(!run.join("config.json").exists());

    // The corrected command goes through; another setting is then named.
    prepare(&run, &config(&data), &silent()).expect("prepared");
    assert!(run.join("config.json").is_file());
    let mut other = config(&data);
    other.seed = 3;
    let err = message(&prepare(&run, &other, &silent()).expect_err("other seed"));
    assert!(err.contains("seed: saved 1, given 3"), "{err}");
}

/// Copies a data directory, rewriting every line of `train.csv` after the header.
fn copy_data(from: &Path, to: &Path, row: impl Fn(&str) -> String) {
    for sub in ["train", "test"] {
        std::fs::create_dir_all(to.join(sub)).expect("mkdir");
        for e in std::fs::read_dir(from.join(sub)).expect("read dir") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), to.join(sub).join(e.file_name())).expect("copy");
        }
    }
    std::fs::copy(from.join("test.csv"), to.join("test.csv")).expect("copy");
    let text = std::fs::read_to_string(from.join("train.csv")).expect("read");
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    let mut out = row(header);
    if out.is_empty() {
        out = header.to_string();
    }
    out.push('\n');
    for line in lines {
        let r = row(line);
        if !r.is_empty() {
            out.push_str(&r);
            out.push('\n');
        }
    }
    std::fs::write(to.join("train.csv"), out).expect("write");
}

#[test]
fn unreadable_images_are_listed_or_left_out_and_recorded() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = data(dir.path());
    let bad_train = data.join("train/SYN_train_000003.jpg");
    let bad_test = data.join("test/SYN_test_000001.jpg");
    std::fs::write(&bad_train, b"not a jpeg").expect("corrupt");
    std::fs::write(&bad_test, b"\xff\xd8\xff truncated").expect("corrupt");
    let run = dir.path().join("run");

    let err = message(&prepare(&run, &config(&data), &silent()).expect_err("bad images"));
    assert!(err.contains("SYN_train_000003"), "{err}");
    assert!(!run.join("config.json").exists());

    let mut skip = config(&data);
    skip.skip_bad_images = true;
    skip.cache_dir = Some(dir.path().join("cache"));
    let opened = Run::start(&run, &skip, &silent()).expect("bad images left out");
    let skipped: Vec<SkippedRow> = read_rows(&run.join("skipped.csv")).expect("skipped.csv");
    let names: Vec<&str> = skipped.iter().map(|s| s.image_name.as_str()).collect();
    assert_eq!(names, ["SYN_train_000003", "SYN_test_000001"]);
    assert!(skipped.iter().all(|s| !s.reason.is_empty()));
    assert_eq!(
        (opened.train.len(), opened.test.len(), opened.skipped),
        (23, 7, 2)
    );
    let folds: Vec<FoldRow> = read_rows(&run.join("folds.csv")).expect("folds");
    assert_eq!(folds.len(), 23);
    assert!(folds.iter().all(|f| f.image_name != "SYN_train_000003"));

    let device = Device::flex().autodiff();
    let p = opened.train(ModelKind::Resnet, &[device]).expect("trains");
    assert_eq!((p.oof.len(), p.test.len()), (23, 7));
    assert!(p.oof.iter().chain(&p.test).all(|v| v.is_finite()));
    let folds: Vec<FoldSummary> = serde_json::from_slice(
        &std::fs::read(run.join("models/resnet/folds.json")).expect("folds.json"),
    )
    .expect("one summary per fold");
    assert_eq!(folds.iter().map(|f| f.fold).collect::<Vec<_>>(), [0, 1]);
    assert!(
        folds
            .iter()
            .all(|f| f.epochs == 1 && f.best_epoch == Some(1))
    );
    opened.ensemble().expect("ensemble");
    let submission: Vec<TestRow> = read_rows(&run.join("models/resnet/test.csv")).expect("test");
    assert!(submission.iter().all(|r| r.image_name != "SYN_test_000001"));
    assert!(run.join("submission.csv").is_file());
}

#[test]
fn a_fold_held_by_another_worker_is_refused_by_name_or_waited_for() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = data(dir.path());
    let run_dir = dir.path().join("run");
    let run = Run::start(&run_dir, &config(&data), &silent()).expect("run");
    let device = Device::flex().autodiff();
    let devices = [device];

    // Another worker holds fold 0.
    let lock_path = run_dir.join("locks/resnet.fold0.lock");
    let held = lock::try_claim(&lock_path, "training resnet fold 0")
        .expect("io")
        .expect("free");
    let err = run
        .train_one_fold(ModelKind::Resnet, 0, &devices)
        .expect_err("held");
    let err = message(&err);
    assert!(
        err.contains("resnet fold 0") && err.contains(&format!("process {}", std::process::id())),
        "{err}"
    );
    // Fold 1 is free; the model is not complete without fold 0.
    assert!(
        run.train_one_fold(ModelKind::Resnet, 1, &devices)
            .expect("fold 1")
            .is_none()
    );
    assert_eq!(run.unfinished_folds(ModelKind::Resnet), [0]);
    assert!(run.train_one_fold(ModelKind::Resnet, 7, &devices).is_err());

    // `train` waits for the holder, then does fold 0 itself (the holder did nothing).
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(held);
    });
    let p = run.train(ModelKind::Resnet, &devices).expect("all folds");
    release.join().expect("thread");
    assert_eq!(p.oof.len(), 24);
    assert!(run.unfinished_folds(ModelKind::Resnet).is_empty());
}

#[test]
fn cropnet_asks_for_the_crop_step_and_the_oracle_cuts_its_own_crops() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = data(dir.path());
    let mut config = config(&data);
    config.models = vec![ModelKind::Cropnet];
    config.ensemble = Vec::new();
    let run = Run::start(&dir.path().join("run"), &config, &silent()).expect("starts");
    let device = Device::flex().autodiff();
    let err = run
        .train(ModelKind::Cropnet, std::slice::from_ref(&device))
        .expect_err("no crops yet");
    assert!(
        matches!(err, TrainError::MissingStep { ref step, .. } if step == "agc crop"),
        "{err}"
    );
    assert!(err.to_string().contains("run `agc crop` first"), "{err}");
    // The true-box crops need no model, so training the oracle CropNet cuts them.
    let p = run
        .train_one_fold(ModelKind::OracleCropnet, 0, &[device])
        .expect("the oracle cuts its crops and trains");
    assert!(p.is_none(), "one of two folds");
    assert!(run.layout.crops(agc_train::layout::Crops::Oracle).is_dir());
}

#[test]
fn box_thresholds_at_the_runs_own_k_give_the_crop_steps_figures() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = data(dir.path());
    let mut config = config(&data);
    // ChipNet on its own image size with the CPU preset's attention, so that even a barely
    // trained map points somewhere; a margin, so that the true boxes are squared with it.
    config.models = vec![ModelKind::Chipnet];
    config.ensemble = Vec::new();
    config.chipnet_image_size = Some(64);
    config.model.chip = 8;
    config.model.attention_kernel = 1;
    config.model.field_mask = true;
    config.model.contrast_prior = 2.0;
    config.boxes.k = 1.25;
    config.boxes.margin = 0.1;
    let run = Run::start(&dir.path().join("run"), &config, &silent()).expect("starts");
    let err = run
        .box_thresholds(&[1.25], BoxSplit::Train)
        .expect_err("no maps yet");
    assert!(err.to_string().contains("run `agc crop` first"), "{err}");

    let device = Device::flex().autodiff();
    run.train(ModelKind::Chipnet, std::slice::from_ref(&device))
        .expect("ChipNet trains");
    run.crop(&device).expect("the crop step");
    let rows = run.boxes().expect("boxes.csv").expect("written");
    let of = |split: Split| {
        let rows: Vec<BoxRow> = rows.iter().filter(|r| r.split == split).cloned().collect();
        AttentionStats::of(&rows)
    };
    let sweep = |split| {
        run.box_thresholds(&[3.0, 1.25, 0.5], split)
            .expect("the saved maps")
    };
    let train = sweep(BoxSplit::Train);
    assert_eq!(
        train.iter().map(|t| t.k).collect::<Vec<_>>(),
        [3.0, 1.25, 0.5]
    );
    assert_eq!(train[1].stats, of(Split::Train), "the run's own k");
    assert_eq!(
        train[1].stats.boxes,
        2 * 24,
        "every training image under both folds"
    );
    assert!(train[1].stats.iou_median.is_some_and(|v| v > 0.0));
    assert_eq!(train[1].stats.iou_median_test, None, "no test image read");
    assert_eq!(sweep(BoxSplit::Test)[1].stats, of(Split::Test));
    assert_eq!(
        sweep(BoxSplit::All)[1].stats,
        run.attention_stats().expect("stats").expect("written")
    );
    // Another threshold draws other boxes.
    assert_ne!(train[0].stats, train[2].stats);
}
