//! A run directory, typed: its configuration, its artefacts, and the steps that make them.
//!
//! ```text
//! RUN/config.json                   the resolved configuration (written once data is checked)
//! RUN/folds.csv                     image_name,fold
//! RUN/metadata_encoder.json         the fitted metadata encoding
//! RUN/skipped.csv                   split,image_name,reason: images left out (--skip-bad-images)
//! RUN/models/<model>/fold<k>/       state.json, best.bpk, last.bpk, optim.{backbone,head}.bpk,
//!                                   predictions.json
//! RUN/models/<model>/oof.csv        image_name,fold,target,prediction (every training image)
//! RUN/models/<model>/test.csv       image_name,prediction (mean over folds)
//! RUN/models/<model>/folds.json     each fold's best epoch, AUC, epochs and seconds
//! RUN/attention/fold<k>.csv         split,image_name,a0..a{G²-1}: every attention map
//! RUN/boxes.csv                     one row per image and fold: box, threshold, fallback, IoU
//! RUN/crops/fold<k>/{train,test}.npy  the crop caches CropNet trains on
//! RUN/crops/oracle/{train,test}.npy   crops by the true boxes (when the data has them)
//! RUN/ensemble/{oof,test}.csv, RUN/submission.csv, RUN/metrics.json, RUN/report.md,
//! RUN/report.html                   the self-contained browser report
//! RUN/steps.json                    seconds each finished step took
//! RUN/locks/                        claims of the steps and folds (see [`lock`])
//! ```
//!
//! Every path is asked of [`RunLayout`], which holds these names once.
//!
//! One module per step: [`prepare`](mod@prepare) (check everything, caches, folds, encoder, then
//! `config.json`), [`models`] (train a model fold by fold), [`crop`] (attention → boxes →
//! crops), [`ensemble`], and [`orchestrate`] which calls them in order; [`boxes`] redraws the
//! crop step's boxes from the saved maps at other thresholds. [`Run::open`] only reads. Every
//! step skips what is complete, so the same command resumes a killed run, and every step claims
//! what it writes, so several processes can share a run.

pub mod boxes;
pub mod config;
pub mod crop;
pub mod ensemble;
pub mod lock;
pub mod models;
pub mod orchestrate;
pub mod overrides;
pub mod prepare;
pub mod trained;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agc_data::{
    DataDir, DataDirOptions, Folds, ImageCache, MetadataEncoder, Record, Reporter, Split,
    read_labels,
};
use serde::{Deserialize, Serialize};

pub use boxes::{BoxSplit, ThresholdStats};
pub use config::{PipelineConfig, Schedules};
pub use ensemble::Ensemble;
pub use orchestrate::run_all;
pub use overrides::{ConfigSource, Overrides, resolve};
pub use prepare::prepare;
pub use trained::{BestCheckpoints, TrainedRun};

use crate::artefacts::{FoldRow, read_rows};
use crate::ensemble::EnsembleMember;
use crate::error::{Result, TrainError, read_json};
use crate::layout::RunLayout;
use crate::model::ModelKind;
use crate::scores::{ModelPredictions, ModelScore};
use crate::train::Images;

/// An opened run: the data, caches, folds and metadata, ready for the steps. Opening reads
/// and never writes; [`prepare()`] makes what it reads.
pub struct Run {
    /// The run directory.
    pub dir: PathBuf,
    /// Every path in it.
    pub layout: RunLayout,
    /// Its configuration.
    pub config: PipelineConfig,
    /// Training records, in `train.csv` order, without the skipped images.
    pub train: Vec<Record>,
    /// Test records, in `test.csv` order, without the skipped images.
    pub test: Vec<Record>,
    /// Test labels, when the data directory has `test_labels.csv` (synthetic data); never used
    /// for training or for choosing anything.
    pub test_labels: Option<Vec<u8>>,
    /// The folds (over [`Run::train`]).
    pub folds: Folds,
    /// Training labels (of [`Run::train`]).
    pub labels: Vec<u8>,
    /// The metadata encoder (fitted on the training records).
    pub encoder: MetadataEncoder,
    /// Images left out because they could not be read.
    pub skipped: usize,
    data: DataDir,
    train_images: Images,
    test_images: Option<Images>,
    /// ChipNet's training and test images, when it sees another size than the others.
    chipnet_images: Option<(Images, Option<Images>)>,
    /// Cache row of each record of `train` (and `test`): the caches keep a row for a skipped
    /// image, the records do not.
    train_rows: Vec<usize>,
    test_rows: Vec<usize>,
    progress: Reporter,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The seconds each finished step took (`RUN/steps.json`), summed into `wall_seconds`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct StepTimes(pub std::collections::BTreeMap<String, f64>);

pub(crate) fn open_data(config: &PipelineConfig) -> Result<DataDir> {
    Ok(DataDir::open(
        &config.data,
        &DataDirOptions {
            train_images: config.train_images.clone(),
            test_images: config.test_images.clone(),
            with_test: config.data.join("test.csv").is_file(),
        },
    )?)
}

/// The metadata vectors of `records` (empty vectors without metadata).
pub(crate) fn encode(
    config: &PipelineConfig,
    encoder: &MetadataEncoder,
    records: &[Record],
) -> Vec<Vec<f32>> {
    records
        .iter()
        .map(|r| {
            if config.metadata {
                encoder.encode(r)
            } else {
                Vec::new()
            }
        })
        .collect()
}

impl Run {
    /// Prepares the run in `dir` for `config` ([`prepare()`]) and opens it: what every command
    /// that is given a configuration does.
    ///
    /// # Errors
    /// As [`prepare()`] and [`Run::open`].
    pub fn start(dir: &Path, config: &PipelineConfig, progress: &Reporter) -> Result<Self> {
        prepare(dir, config, progress)?;
        Self::open(dir, progress)
    }

    /// Opens the prepared run in `dir`: reads its configuration, folds and encoder, and maps
    /// its caches. Writes nothing.
    ///
    /// # Errors
    /// A directory that holds no prepared run, data or caches that changed since, unreadable
    /// files.
    pub fn open(dir: &Path, progress: &Reporter) -> Result<Self> {
        let TrainedRun {
            layout,
            config,
            encoder,
        } = TrainedRun::open(dir)?;
        let data = open_data(&config)?;
        let sized = |size| SizedImages::open(&config, &encoder, &data, size);
        let main = sized(config.image_size)?;
        let chipnet_images = match config.cache_sizes().get(1) {
            Some(&size) => {
                let chipnet = sized(size)?;
                if chipnet.train_rows != main.train_rows || chipnet.test_rows != main.test_rows {
                    return Err(TrainError::Parse {
                        path: config.cache_dir_of(size),
                        message: format!(
                            "these caches leave out other images than those in {}: delete \
                             both folders and run the same command again to rebuild them",
                            config.cache_dir().display()
                        ),
                    });
                }
                Some((chipnet.train, chipnet.test))
            }
            None => None,
        };
        let SizedImages {
            train: train_images,
            train_rows,
            test: test_images,
            test_rows,
        } = main;
        let train: Vec<Record> = train_rows.iter().map(|&i| data.train[i].clone()).collect();
        let labels: Vec<u8> = train.iter().map(|r| r.target.unwrap_or(0)).collect();
        let folds = read_folds(&layout.folds(), &train, config.folds)?;
        let test: Vec<Record> = test_rows.iter().map(|&i| data.test[i].clone()).collect();
        let labels_path = config.data.join("test_labels.csv");
        let test_labels = if labels_path.is_file() && !test.is_empty() {
            let by_name: HashMap<String, u8> = read_labels(&labels_path)?.into_iter().collect();
            test.iter()
                .map(|r| by_name.get(&r.image_name).copied())
                .collect()
        } else {
            None
        };
        let skipped = data.train.len() - train.len() + data.test.len() - test.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            layout,
            train,
            test,
            test_labels,
            folds,
            labels,
            encoder,
            skipped,
            data,
            train_images,
            test_images,
            chipnet_images,
            train_rows,
            test_rows,
            config,
            progress: std::sync::Arc::clone(progress),
        })
    }

    /// The training and test images `kind` sees (of [`PipelineConfig::image_size_of`]).
    pub(crate) fn images_of(&self, kind: ModelKind) -> (&Images, Option<&Images>) {
        match (&self.chipnet_images, kind) {
            (Some((train, test)), ModelKind::Chipnet) => (train, test.as_ref()),
            _ => (&self.train_images, self.test_images.as_ref()),
        }
    }

    pub(crate) fn meta_dim(&self) -> usize {
        trained::meta_dim(&self.config, &self.encoder)
    }

    /// Each model's best checkpoint on every fold.
    pub fn checkpoints(&self) -> BestCheckpoints<'_> {
        BestCheckpoints::new(&self.layout, &self.config, self.meta_dim())
    }

    /// Changes the ensemble's members and weights (or asks for fitted weights) for
    /// [`Run::ensemble`]; the saved configuration is not changed.
    pub fn set_ensemble(&mut self, members: Vec<EnsembleMember>, fit: bool) {
        self.config.ensemble = members;
        self.config.fit_ensemble = fit;
    }

    /// Whether every training and test record has a true lesion box.
    pub fn has_true_boxes(&self) -> bool {
        self.train
            .iter()
            .chain(&self.test)
            .all(|r| r.lesion_box.is_some())
    }

    /// The folder of the original `train` or `test` images.
    pub fn images_folder(&self, split: Split) -> &Path {
        if split == Split::Train {
            &self.data.train_images
        } else {
            &self.data.test_images
        }
    }

    /// Scores of one model's predictions.
    pub fn score(&self, p: &ModelPredictions) -> ModelScore {
        ModelScore::of(
            p,
            &self.folds,
            &self.labels,
            self.test_labels.as_deref(),
            self.config.seed,
        )
    }

    /// Adds `seconds` to step `name` in `steps.json`.
    pub(crate) fn record_step(&self, name: &str, seconds: f64) -> Result<()> {
        let path = self.layout.steps();
        let _claim = lock::claim(&self.layout.lock("steps"), "recording step times")?;
        let mut times: StepTimes = if path.is_file() {
            read_json(&path)?
        } else {
            StepTimes::default()
        };
        times.0.insert(name.to_string(), seconds);
        Ok(agc_data::fsutil::write_json(&path, &times)?)
    }

    /// Seconds of the finished steps, summed.
    pub(crate) fn step_seconds(&self) -> Result<f64> {
        let path = self.layout.steps();
        if !path.is_file() {
            return Ok(0.0);
        }
        let times: StepTimes = read_json(&path)?;
        Ok(times.0.values().sum())
    }
}

/// The rows of `cache` that hold an image, checked against the records it was built from.
/// A split pair of images of one size, with the cache rows of the readable ones.
struct SizedImages {
    train: Images,
    train_rows: Vec<usize>,
    test: Option<Images>,
    test_rows: Vec<usize>,
}

impl SizedImages {
    /// The caches of `size`-pixel images of `data`, with their metadata and training labels.
    fn open(
        config: &PipelineConfig,
        encoder: &MetadataEncoder,
        data: &DataDir,
        size: u32,
    ) -> Result<Self> {
        let cache_dir = config.cache_dir_of(size);
        let path = cache_dir.join("train.npy");
        let train_cache = Arc::new(ImageCache::open(&path)?);
        let train_rows = kept_rows(&train_cache, &data.train, &path)?;
        let all_labels = data
            .train
            .iter()
            .map(|r| f32::from(r.target.unwrap_or(0)))
            .collect();
        let train = Images::new(
            train_cache,
            encode(config, encoder, &data.train),
            all_labels,
        )?;
        let (test, test_rows) = if data.test.is_empty() {
            (None, Vec::new())
        } else {
            let path = cache_dir.join("test.npy");
            let cache = Arc::new(ImageCache::open(&path)?);
            let rows = kept_rows(&cache, &data.test, &path)?;
            let images = Images::new(
                cache,
                encode(config, encoder, &data.test),
                vec![0.0; data.test.len()],
            )?;
            (Some(images), rows)
        };
        Ok(Self {
            train,
            train_rows,
            test,
            test_rows,
        })
    }
}

fn kept_rows(cache: &ImageCache, records: &[Record], path: &Path) -> Result<Vec<usize>> {
    let index = cache.index();
    if index.len() != records.len()
        || index
            .iter()
            .zip(records)
            .any(|(e, r)| e.image_name != r.image_name)
    {
        return Err(TrainError::Parse {
            path: path.to_path_buf(),
            message: "the cache does not hold the data's images in order: was the CSV changed? \
                      Run the same command again to rebuild the cache"
                .into(),
        });
    }
    Ok((0..index.len()).filter(|&i| index[i].is_ok()).collect())
}

fn read_folds(path: &Path, train: &[Record], k: usize) -> Result<Folds> {
    let rows: Vec<FoldRow> = read_rows(path)?;
    let bad = |message: String| TrainError::Parse {
        path: path.to_path_buf(),
        message,
    };
    if rows.len() != train.len() {
        return Err(bad(format!(
            "{} rows for {} training images: was train.csv changed?",
            rows.len(),
            train.len()
        )));
    }
    let mut fold_of = Vec::with_capacity(rows.len());
    for (i, (row, record)) in rows.iter().zip(train).enumerate() {
        if row.image_name != record.image_name {
            return Err(bad(format!(
                "line {}: expected image {:?}, found {:?}",
                i + 2,
                record.image_name,
                row.image_name
            )));
        }
        if row.fold >= k {
            return Err(bad(format!(
                "line {}: fold {} is not below {k}",
                i + 2,
                row.fold
            )));
        }
        fold_of.push(row.fold);
    }
    Ok(Folds { k, fold_of })
}

/// The true box `[x0, y0, x1, y1)` squared as attention boxes are ([`agc_core::Rect::square_around`]:
/// side = the longer side plus `margin` of it on each side, same centre) and moved, not shrunk,
/// to lie inside a `width`×`height` image.
pub fn true_square(bbox: [u32; 4], width: usize, height: usize, margin: f64) -> agc_core::Rect {
    let [x0, y0, x1, y1] = bbox.map(|v| v as usize);
    let tight = agc_core::Rect {
        x0,
        y0,
        x1: x1.max(x0),
        y1: y1.max(y0),
    };
    tight.square_around(
        [height, width],
        &agc_core::BoxConfig::new().with_margin(margin),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use agc_core::{BoxConfig, Rect};

    #[test]
    fn true_boxes_are_squared_by_the_attention_boxes_rule_margin_included() {
        // A 40×20 box in a 1000×600 image: side 40, and 20 % on each side with margin 0.2.
        assert_eq!(
            true_square([100, 200, 140, 220], 1000, 600, 0.0),
            Rect::square(100, 190, 40)
        );
        let wide = true_square([100, 200, 140, 220], 1000, 600, 0.2);
        assert_eq!(wide.width(), 56);
        assert_eq!(
            wide,
            Rect {
                x0: 100,
                y0: 200,
                x1: 140,
                y1: 220
            }
            .square_around([600, 1000], &BoxConfig::new().with_margin(0.2))
        );
        // Centred on the box, to half a pixel.
        assert!((wide.x0 + wide.x1).abs_diff(240) <= 1 && (wide.y0 + wide.y1).abs_diff(420) <= 1);
        // Near an edge it moves inside rather than shrinking; it never outgrows the image.
        assert_eq!(
            true_square([0, 0, 30, 30], 100, 80, 0.5),
            Rect::square(0, 0, 60)
        );
        assert_eq!(true_square([0, 0, 90, 70], 100, 80, 0.5).width(), 80);
    }
}
