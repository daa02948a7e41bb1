//! The first step: check the configuration and the data, build the caches, make the folds and
//! the metadata encoder, and only then write `config.json`, so that a failed first try (a typo
//! in `--data`, a read-only folder) never locks the run to its settings.

use std::path::{Path, PathBuf};
use std::time::Instant;

use agc_data::fsutil::sidecar;
use agc_data::{
    CacheOptions, CacheTarget, DataDir, Folds, ImageCache, MetadataEncoder, Record, Reporter, Split,
};

use super::config::PipelineConfig;
use super::{lock, open_data};
use crate::artefacts::{FoldRow, SkippedRow, write_rows};
use crate::error::{Result, TrainError, io};
use crate::layout::RunLayout;
use crate::model::ModelKind;
use crate::train::FoldState;

/// Cache options of a run's preprocessing and crops.
pub(crate) fn cache_options(config: &PipelineConfig, progress: &Reporter) -> CacheOptions {
    CacheOptions {
        size: config.image_size,
        skip_bad: config.skip_bad_images,
        progress: std::sync::Arc::clone(progress),
        ..CacheOptions::default()
    }
}

/// Prepares the run in `dir` for `config`: validates the configuration, checks the data
/// (columns, labels, images, patient grouping, positives per fold), builds or completes the
/// caches, makes the folds and the metadata encoder, and writes `config.json` last. A run that
/// is already prepared is only compared with `config`.
///
/// # Errors
/// Every invalid setting (all at once); a run prepared with other settings (each difference
/// named); missing or malformed data; unwritable folders.
pub fn prepare(dir: &Path, config: &PipelineConfig, progress: &Reporter) -> Result<()> {
    config.validate()?;
    let layout = RunLayout::new(dir);
    let config_path = layout.config();
    if config_path.is_file() {
        return compare(&layout, config);
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let _claim = lock::claim(&layout.lock("prepare"), "preparing the run")?;
    if config_path.is_file() {
        // Another process prepared it while this one waited.
        return compare(&layout, config);
    }
    let started = Instant::now();
    let data = open_data(config)?;
    check_data(config, &data)?;
    let skipped = build_caches(config, &data, progress)?;
    write_rows(&layout.skipped(), &skipped)?;
    let kept: Vec<Record> = data
        .train
        .iter()
        .filter(|r| {
            !skipped
                .iter()
                .any(|s| s.split == Split::Train && s.image_name == r.image_name)
        })
        .cloned()
        .collect();
    let labels: Vec<u8> = kept.iter().map(|r| r.target.unwrap_or(0)).collect();
    check_labels(config, &labels, data.train.len() - kept.len())?;
    let folds = if config.group_by_patient {
        let patients: Vec<Option<String>> = kept.iter().map(|r| r.patient_id.clone()).collect();
        Folds::grouped(&labels, &patients, config.folds, config.seed)?
    } else {
        Folds::stratified(&labels, config.folds, config.seed)?
    };
    let rows: Vec<FoldRow> = kept
        .iter()
        .zip(&folds.fold_of)
        .map(|(r, &fold)| FoldRow {
            image_name: r.image_name.clone(),
            fold,
        })
        .collect();
    write_rows(&layout.folds(), &rows)?;
    MetadataEncoder::fit(&kept).save(&layout.metadata_encoder())?;
    agc_data::fsutil::write_json(&config_path, config)?;
    let seconds = started.elapsed().as_secs_f64();
    let run = super::Run::open(dir, progress)?;
    run.record_step("prepare", seconds)
}

/// A prepared run resumes only with the settings it was prepared with, except the batch sizes
/// (as after a GPU ran out of memory): new prediction batch sizes are taken, and so are new
/// training batch sizes for the models with no epoch trained yet, and written to
/// `config.json`. A model that is trained keeps the batch size it was trained with, so that
/// `config.json` always describes how its models were trained; one trained part of the way is
/// refused, naming the folder to delete to retrain it at the new size.
fn compare(layout: &RunLayout, given: &PipelineConfig) -> Result<()> {
    let config_path = &layout.config();
    let saved = PipelineConfig::read(config_path)?;
    if &saved == given {
        return Ok(());
    }
    let batches_only = PipelineConfig {
        schedules: saved
            .schedules
            .clone()
            .with_batch_sizes_of(&given.schedules),
        ..saved.clone()
    };
    if &batches_only == given {
        let _claim = lock::claim(&layout.lock("prepare"), "changing batch sizes")?;
        let taken = batch_sizes_for_untrained(layout, &saved, given)?;
        if taken != saved {
            agc_data::fsutil::write_json(config_path, &taken)?;
        }
        return Ok(());
    }
    Err(TrainError::Occupied {
        path: config_path.clone(),
        message: format!(
            "holds a run made with other settings:\n  {}\nresume it with the saved settings \
             (the same flags, or none but --out), or choose a new --out",
            saved.differences(given).join("\n  ")
        ),
    })
}

/// `given` (which differs from `saved` in batch sizes only), except that each model with
/// trained epochs keeps its saved training batch size: said in the log when it has finished,
/// refused when it is trained part of the way (it would go on at another size).
fn batch_sizes_for_untrained(
    layout: &RunLayout,
    saved: &PipelineConfig,
    given: &PipelineConfig,
) -> Result<PipelineConfig> {
    let mut taken = given.clone();
    for kind in ModelKind::ALL {
        let (was, asked) = (
            saved.schedules.of(kind).batch_size,
            given.schedules.of(kind).batch_size,
        );
        let folds = (0..saved.folds)
            .map(|f| FoldState::read_or_new(&layout.fold(kind, f).state()))
            .collect::<Result<Vec<_>>>()?;
        let epochs: usize = folds.iter().map(|f| f.history.len()).sum();
        if was == asked || epochs == 0 {
            continue;
        }
        let model_dir = layout.model_dir(kind);
        if folds.iter().any(|f| !f.finished) {
            return Err(TrainError::Setting {
                setting: "--batch-size".into(),
                value: asked.to_string(),
                message: format!(
                    "{kind} has {epochs} epochs trained at batch size {was} and is not \
                     finished; it resumes only at {was}, so that config.json says how it was \
                     trained (give --batch-size {was}, or delete {} to train it again at \
                     {asked})",
                    model_dir.display()
                ),
            });
        }
        taken.schedules.of_mut(kind).batch_size = was;
        tracing::info!(
            "--batch-size {asked}: {kind} keeps batch size {was}, with which it was trained \
             (delete {} to train it again at {asked})",
            model_dir.display()
        );
    }
    Ok(taken)
}

/// What can be checked in the data before any image is decoded.
fn check_data(config: &PipelineConfig, data: &DataDir) -> Result<()> {
    let train_csv = config.data.join("train.csv");
    if data.train.is_empty() {
        return Err(TrainError::Dataset(format!(
            "{} has a header but no images",
            train_csv.display()
        )));
    }
    if let Some(r) = data.train.iter().find(|r| r.target.is_none()) {
        return Err(TrainError::Dataset(format!(
            "{}: image {:?} has no target (every training image needs a label 0 or 1)",
            train_csv.display(),
            r.image_name
        )));
    }
    if config.group_by_patient {
        let missing = data.train.iter().filter(|r| r.patient_id.is_none()).count();
        if missing > 0 {
            return Err(TrainError::Dataset(format!(
                "--group-by-patient needs a patient_id for every image, but {missing} of {} \
                 rows of {} have none (the first: {:?}); add the patient_id column or drop \
                 --group-by-patient",
                data.train.len(),
                train_csv.display(),
                data.train
                    .iter()
                    .find(|r| r.patient_id.is_none())
                    .map_or("", |r| r.image_name.as_str())
            )));
        }
    }
    let has_boxes = data
        .train
        .iter()
        .chain(&data.test)
        .all(|r| r.lesion_box.is_some());
    if !has_boxes
        && (config.models.contains(&ModelKind::OracleCropnet)
            || config
                .ensemble
                .iter()
                .any(|m| m.model == ModelKind::OracleCropnet))
    {
        return Err(TrainError::Dataset(
            "the oracle CropNet needs true lesion boxes (lesion_x0.. columns) for every image"
                .into(),
        ));
    }
    if !config.skip_bad_images {
        for split in [Split::Train, Split::Test] {
            let missing = data.missing_images(split);
            if !missing.is_empty() {
                let shown: Vec<String> = missing
                    .iter()
                    .take(10)
                    .map(|p| p.display().to_string())
                    .collect();
                return Err(TrainError::Dataset(format!(
                    "{} {split:?} images are missing: {}{}; fix the data or pass \
                     --skip-bad-images to leave them out",
                    missing.len(),
                    shown.join(", "),
                    if missing.len() > 10 { ", ..." } else { "" }
                )));
            }
        }
    }
    Ok(())
}

/// Labels that cannot be cross-validated.
fn check_labels(config: &PipelineConfig, labels: &[u8], skipped: usize) -> Result<()> {
    let positives = labels.iter().filter(|&&y| y == 1).count();
    let negatives = labels.len() - positives;
    let left = if skipped > 0 {
        format!(" (after leaving out {skipped} unreadable images)")
    } else {
        String::new()
    };
    if positives < config.folds || negatives < config.folds {
        return Err(TrainError::Dataset(format!(
            "{} training images{left} hold {positives} positives and {negatives} negatives: \
             each of the {} folds needs at least one of each for a validation AUC; use fewer \
             --folds or more data",
            labels.len(),
            config.folds
        )));
    }
    Ok(())
}

/// Builds (or completes) the caches of both splits at every size the run needs (the models'
/// and, when it differs, ChipNet's), each under a claim on the cache file so that two runs
/// sharing a cache never write it at once; returns the images left out.
fn build_caches(
    config: &PipelineConfig,
    data: &DataDir,
    progress: &Reporter,
) -> Result<Vec<SkippedRow>> {
    let mut skipped = Vec::new();
    let sizes = config.cache_sizes();
    for size in &sizes {
        let dir = config.cache_dir_of(*size);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    }
    for (split, records) in [(Split::Train, &data.train), (Split::Test, &data.test)] {
        let name = split.name();
        if records.is_empty() {
            continue;
        }
        // Every size from one decode of each original (agc_data::build_caches).
        let paths: Vec<PathBuf> = sizes
            .iter()
            .map(|&size| config.cache_dir_of(size).join(format!("{name}.npy")))
            .collect();
        let _claims = paths
            .iter()
            .map(|path| {
                lock::claim(
                    &sidecar(path, ".lock"),
                    &format!("building {}", path.display()),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let jobs = data.jobs(split);
        let targets: Vec<CacheTarget<'_>> = paths
            .iter()
            .zip(&sizes)
            .map(|(path, &size)| CacheTarget {
                path,
                jobs: &jobs,
                size,
            })
            .collect();
        let reports = agc_data::build_caches(&targets, &cache_options(config, progress))?;
        for (path, report) in paths.iter().zip(&reports) {
            if !report.up_to_date {
                tracing::info!(
                    "{}: {} images cached",
                    path.display(),
                    report.written + report.resumed
                );
            }
        }
        // Every size is cut from the same decode, so the first lists the unreadable ones.
        let cache = ImageCache::open(&paths[0])?;
        for entry in cache.index().iter().filter(|e| !e.is_ok()) {
            skipped.push(SkippedRow {
                split,
                image_name: entry.image_name.clone(),
                reason: entry.skipped.clone(),
            });
        }
    }
    if !skipped.is_empty() {
        tracing::warn!(
            "{} unreadable images left out (--skip-bad-images); listed in skipped.csv",
            skipped.len()
        );
    }
    Ok(skipped)
}

/// Builds the caches only (`agc preprocess`), after the same checks as [`prepare`].
///
/// # Errors
/// As [`prepare`], without the run directory.
pub fn preprocess(config: &PipelineConfig, progress: &Reporter) -> Result<()> {
    config.validate()?;
    let data = open_data(config)?;
    check_data(config, &data)?;
    build_caches(config, &data, progress).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prepared_run_takes_new_batch_sizes_and_refuses_other_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = RunLayout::new(dir.path());
        let path = layout.config();
        let saved = PipelineConfig::demo("data".into());
        agc_data::fsutil::write_json(&path, &saved).expect("write");
        compare(&layout, &saved).expect("the same settings");

        let mut smaller = saved.clone();
        smaller.schedules.for_each(|s| {
            s.batch_size = 4;
            s.eval_batch_size = 8;
        });
        compare(&layout, &smaller).expect("new batch sizes");
        assert_eq!(PipelineConfig::read(&path).expect("read"), smaller);

        let mut other = smaller.clone();
        other.seed += 1;
        other.schedules.resnet.batch_size = 2;
        let err = compare(&layout, &other)
            .expect_err("another seed")
            .to_string();
        assert!(err.contains("seed: saved"), "{err}");
        assert_eq!(PipelineConfig::read(&path).expect("read"), smaller);
    }

    /// Writes `models/<kind>/fold<f>/state.json` with `epochs` epochs.
    fn trained(dir: &Path, kind: ModelKind, f: usize, epochs: usize, finished: bool) {
        let record = |epoch| crate::train::EpochRecord {
            epoch,
            train_loss: 0.5,
            valid_loss: 0.5,
            valid_auc: 0.5,
            lr_backbone: 1e-3,
            seconds: 1.0,
            predictions: None,
        };
        let state = FoldState {
            history: (0..epochs).map(record).collect(),
            best_epoch: Some(0),
            best_auc: Some(0.5),
            finished,
            stop_reason: String::new(),
        };
        let path = RunLayout::new(dir).fold(kind, f).state();
        agc_data::fsutil::write_json(&path, &state).expect("state");
    }

    #[test]
    fn a_trained_model_keeps_its_batch_size_and_a_half_trained_one_refuses_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = RunLayout::new(dir.path());
        let path = layout.config();
        let saved = PipelineConfig::demo("data".into());
        assert_eq!(saved.folds, 3);
        agc_data::fsutil::write_json(&path, &saved).expect("write");
        for f in 0..3 {
            trained(dir.path(), ModelKind::Resnet, f, 2, true);
        }
        trained(dir.path(), ModelKind::Chipnet, 0, 1, false);
        let mut smaller = saved.clone();
        smaller.schedules.for_each(|s| {
            s.batch_size = 4;
            s.eval_batch_size = 8;
        });

        // ChipNet is trained one epoch of one fold at 32: going on at 4 would mix the two.
        let err = compare(&layout, &smaller)
            .expect_err("half trained")
            .to_string();
        assert!(
            err.contains("chipnet has 1 epochs trained at batch size 32")
                && err.contains("models/chipnet"),
            "{err}"
        );
        assert_eq!(
            PipelineConfig::read(&path).expect("read"),
            saved,
            "nothing changed"
        );

        // ResNet is trained at 32 and keeps it; the untrained models and every prediction
        // batch size take the new ones.
        std::fs::remove_dir_all(dir.path().join("models/chipnet")).expect("rm");
        compare(&layout, &smaller).expect("new batch sizes");
        let now = PipelineConfig::read(&path).expect("read");
        assert_eq!(now.schedules.resnet.batch_size, 32);
        assert_eq!(now.schedules.chipnet.batch_size, 4);
        assert_eq!(now.schedules.cropnet.batch_size, 4);
        assert!(
            [ModelKind::Resnet, ModelKind::Chipnet, ModelKind::Cropnet]
                .iter()
                .all(|&k| now.schedules.of(k).eval_batch_size == 8)
        );
        // The same command again changes nothing further.
        compare(&layout, &smaller).expect("again");
        assert_eq!(PipelineConfig::read(&path).expect("read"), now);
    }
}
