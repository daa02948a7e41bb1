//! The cross-validated pipeline over a run directory: preprocessing caches, folds, one model per
//! fold, the crop step, ensembles, metrics.
//!
//! ```text
//! RUN/config.json                   the resolved configuration
//! RUN/folds.csv                     image_name,fold
//! RUN/metadata_encoder.json         the fitted metadata encoding
//! RUN/models/<model>/fold<k>/       state.json, best.bpk, last.bpk, optim.{backbone,head}.bpk,
//!                                   predictions.json
//! RUN/models/<model>/oof.csv        image_name,fold,target,prediction (every training image)
//! RUN/models/<model>/test.csv       image_name,prediction (mean over folds)
//! RUN/attention/fold<k>.csv         split,image_name,a0..a{G²-1}: every attention map
//! RUN/boxes.csv                     one row per image and fold: box, threshold, fallback, IoU
//! RUN/crops/fold<k>/{train,test}.npy  the crop caches CropNet trains on
//! RUN/crops/oracle/{train,test}.npy   crops by the true boxes (when the data has them)
//! RUN/ensemble/{oof,test}.csv, RUN/submission.csv, RUN/metrics.json
//! ```
//!
//! Every step skips what is already complete, so the same command resumes a killed run.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agc_core::{BoxConfig, CentreCrop, Rect, attention_box};
use agc_data::{
    CacheJob, CacheOptions, DataDir, DataDirOptions, Folds, ImageCache, MetadataEncoder, Record,
    Split, build_cache, read_labels,
};
use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::ensemble::{fit_weights, weighted_average};
use crate::error::{Result, TrainError, read_json};
use crate::metrics::{bootstrap_auc, roc_auc};
use crate::model::{ModelKind, ModelSpec, Net};
use crate::train::{FoldTask, Images, TrainConfig, predict_reporting, progress_bar, train_fold};

/// The training schedules of the models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedules {
    /// The whole-image MetaResNet.
    pub resnet: TrainConfig,
    /// ChipNet.
    pub chipnet: TrainConfig,
    /// AttnResNet.
    pub attnresnet: TrainConfig,
    /// CropNet and the oracle CropNet.
    pub cropnet: TrainConfig,
}

impl Default for Schedules {
    fn default() -> Self {
        Self {
            resnet: TrainConfig::seed_defaults(ModelKind::Resnet),
            chipnet: TrainConfig::seed_defaults(ModelKind::Chipnet),
            attnresnet: TrainConfig::seed_defaults(ModelKind::Attnresnet),
            cropnet: TrainConfig::seed_defaults(ModelKind::Cropnet),
        }
    }
}

impl Schedules {
    /// The schedule of `kind`.
    pub fn of(&self, kind: ModelKind) -> &TrainConfig {
        match kind {
            ModelKind::Resnet => &self.resnet,
            ModelKind::Chipnet => &self.chipnet,
            ModelKind::Attnresnet => &self.attnresnet,
            ModelKind::Cropnet | ModelKind::OracleCropnet => &self.cropnet,
        }
    }

    /// Applies `f` to every schedule (for command-line overrides).
    pub fn for_each(&mut self, mut f: impl FnMut(&mut TrainConfig)) {
        for c in [
            &mut self.resnet,
            &mut self.chipnet,
            &mut self.attnresnet,
            &mut self.cropnet,
        ] {
            f(c);
        }
    }
}

/// Everything a run does, saved as `RUN/config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineConfig {
    /// The data directory (`train.csv`, `test.csv`, `train/`, `test/`).
    pub data: PathBuf,
    /// Training images, if not `DATA/train`.
    pub train_images: Option<PathBuf>,
    /// Test images, if not `DATA/test`.
    pub test_images: Option<PathBuf>,
    /// Where the preprocessed caches go (default `DATA/agc-cache-<size>`).
    pub cache_dir: Option<PathBuf>,
    /// Side S of the images the models see.
    pub image_size: u32,
    /// Folds of the cross-validation.
    pub folds: usize,
    /// Keep each patient's images in one fold (needs `patient_id`).
    pub group_by_patient: bool,
    /// Seed of folds, initialisation, sampling and augmentation.
    pub seed: u64,
    /// Feed the metadata (sex, age, site) to the MetaResNets.
    pub metadata: bool,
    /// The models' architecture.
    pub model: ModelSpec,
    /// The models' training schedules.
    pub schedules: Schedules,
    /// From attention map to box.
    pub boxes: BoxConfig,
    /// Models the `pipeline` command trains (the oracle CropNet is added when the data has true
    /// boxes).
    pub models: Vec<ModelKind>,
    /// Ensemble members and weights (normalised to sum to 1).
    pub ensemble: Vec<(ModelKind, f64)>,
    /// Fit the ensemble weights on the out-of-fold predictions instead.
    pub fit_ensemble: bool,
}

impl PipelineConfig {
    /// The seed's pipeline over `data`: ResNet-18 backbones, 224 px, 5 folds, resnet + chipnet
    /// + cropnet, a 0.5/0.5 ensemble of resnet and cropnet.
    pub fn new(data: PathBuf) -> Self {
        Self {
            data,
            train_images: None,
            test_images: None,
            cache_dir: None,
            image_size: 224,
            folds: 5,
            group_by_patient: false,
            seed: 42,
            metadata: true,
            model: ModelSpec::default(),
            schedules: Schedules::default(),
            boxes: BoxConfig::new(),
            models: vec![ModelKind::Resnet, ModelKind::Chipnet, ModelKind::Cropnet],
            ensemble: vec![(ModelKind::Resnet, 0.5), (ModelKind::Cropnet, 0.5)],
            fit_ensemble: false,
        }
    }

    /// The preprocessed caches' folder.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.data.join(format!("agc-cache-{}", self.image_size)))
    }
}

/// Builds (or completes) the preprocessed caches of a data directory: `train.npy` and, when the
/// data has a `test.csv`, `test.npy`.
///
/// # Errors
/// Missing or malformed metadata, a missing or corrupt image (named), an unwritable cache.
pub fn preprocess(config: &PipelineConfig, progress: bool) -> Result<()> {
    build_caches(config, &open_data(config)?, progress)
}

/// [`preprocess`] for data already opened.
fn build_caches(config: &PipelineConfig, data: &DataDir, progress: bool) -> Result<()> {
    let dir = config.cache_dir();
    for (split, name, records) in [
        (Split::Train, "train", &data.train),
        (Split::Test, "test", &data.test),
    ] {
        if records.is_empty() {
            continue;
        }
        let missing = data.missing_images(split);
        if let Some(first) = missing.first() {
            return Err(TrainError::Config(format!(
                "{} of {} {name} images are missing, the first: {}",
                missing.len(),
                records.len(),
                first.display()
            )));
        }
        let report = build_cache(
            &data.jobs(split),
            &dir.join(format!("{name}.npy")),
            &cache_options(config, progress),
        )?;
        if !report.up_to_date {
            tracing::info!(
                "{}: {} images cached",
                dir.join(format!("{name}.npy")).display(),
                report.written + report.resumed
            );
        }
    }
    Ok(())
}

fn cache_options(config: &PipelineConfig, progress: bool) -> CacheOptions {
    CacheOptions {
        size: config.image_size,
        progress,
        ..CacheOptions::default()
    }
}

fn open_data(config: &PipelineConfig) -> Result<DataDir> {
    Ok(DataDir::open(
        &config.data,
        &DataDirOptions {
            train_images: config.train_images.clone(),
            test_images: config.test_images.clone(),
            with_test: config.data.join("test.csv").is_file(),
        },
    )?)
}

/// A model's out-of-fold and test predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPredictions {
    /// One per training image, in `train.csv` order.
    pub oof: Vec<f32>,
    /// One per test image, in `test.csv` order (mean over the folds' models).
    pub test: Vec<f32>,
}

/// An opened run: the data, caches, folds and metadata, ready for the steps.
pub struct Run {
    /// The run directory.
    pub dir: PathBuf,
    /// Its configuration.
    pub config: PipelineConfig,
    /// Training records, in `train.csv` order (= cache rows).
    pub train: Vec<Record>,
    /// Test records (= cache rows).
    pub test: Vec<Record>,
    /// Test labels, when the data directory has `test_labels.csv` (synthetic data); never used
    /// for training or for choosing anything.
    pub test_labels: Option<Vec<u8>>,
    /// The folds.
    pub folds: Folds,
    /// Training labels.
    pub labels: Vec<u8>,
    /// The metadata encoder (fitted on the training records).
    pub encoder: MetadataEncoder,
    data: DataDir,
    train_images: Images,
    test_images: Option<Images>,
    progress: bool,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    Ok(agc_data::fsutil::write_atomic(path, text.as_bytes())?)
}

pub(crate) fn read_csv_rows(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| TrainError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let header = reader
        .headers()
        .map_err(|e| TrainError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
        .iter()
        .map(String::from)
        .collect();
    let mut rows = Vec::new();
    for r in reader.records() {
        let r = r.map_err(|e| TrainError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        rows.push(r.iter().map(String::from).collect());
    }
    Ok((header, rows))
}

impl Run {
    /// Opens (or starts) the run in `dir`: checks `config.json` against `config`, builds the
    /// caches if needed, makes or reads the folds and the metadata encoder.
    ///
    /// # Errors
    /// A run directory made with another configuration, bad data, or unwritable files.
    pub fn open(dir: &Path, config: PipelineConfig, progress: bool) -> Result<Self> {
        let config_path = dir.join("config.json");
        if config_path.is_file() {
            let saved: PipelineConfig = read_json(&config_path)?;
            if saved != config {
                return Err(TrainError::Config(format!(
                    "{} holds a run made with another configuration; resume it with the same \
                     flags, or choose a new --out (saved: {})",
                    config_path.display(),
                    serde_json::to_string(&saved).unwrap_or_default()
                )));
            }
        } else {
            agc_data::fsutil::write_json(&config_path, &config)?;
        }
        let data = open_data(&config)?;
        build_caches(&config, &data, progress)?;
        let labels: Vec<u8> = data.train.iter().map(|r| r.target.unwrap_or(0)).collect();
        // Folds.
        let folds_path = dir.join("folds.csv");
        let folds = if folds_path.is_file() {
            read_folds(&folds_path, &data.train, config.folds)?
        } else {
            let folds = if config.group_by_patient {
                let patients: Vec<Option<String>> =
                    data.train.iter().map(|r| r.patient_id.clone()).collect();
                Folds::grouped(&labels, &patients, config.folds, config.seed)?
            } else {
                Folds::stratified(&labels, config.folds, config.seed)?
            };
            let mut text = String::from("image_name,fold\n");
            for (r, f) in data.train.iter().zip(&folds.fold_of) {
                writeln!(text, "{},{f}", r.image_name).expect("writing to a String");
            }
            write_text(&folds_path, &text)?;
            folds
        };
        // Metadata.
        let encoder_path = dir.join("metadata_encoder.json");
        let encoder = if encoder_path.is_file() {
            MetadataEncoder::load(&encoder_path)?
        } else {
            let e = MetadataEncoder::fit(&data.train);
            e.save(&encoder_path)?;
            e
        };
        let encode = |records: &[Record]| -> Vec<Vec<f32>> {
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
        };
        let cache_dir = config.cache_dir();
        let train_cache = Arc::new(ImageCache::open(&cache_dir.join("train.npy"))?);
        let train_images = Images::new(
            train_cache,
            encode(&data.train),
            labels.iter().map(|&y| f32::from(y)).collect(),
        )?;
        let test_images = if data.test.is_empty() {
            None
        } else {
            let cache = Arc::new(ImageCache::open(&cache_dir.join("test.npy"))?);
            Some(Images::new(
                cache,
                encode(&data.test),
                vec![0.0; data.test.len()],
            )?)
        };
        let labels_path = config.data.join("test_labels.csv");
        let test_labels = if labels_path.is_file() && !data.test.is_empty() {
            let by_name: HashMap<String, u8> = read_labels(&labels_path)?.into_iter().collect();
            let labels: Option<Vec<u8>> = data
                .test
                .iter()
                .map(|r| by_name.get(&r.image_name).copied())
                .collect();
            labels
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            train: data.train.clone(),
            test: data.test.clone(),
            test_labels,
            folds,
            labels,
            encoder,
            data,
            train_images,
            test_images,
            config,
            progress,
        })
    }

    fn meta_dim(&self) -> usize {
        if self.config.metadata {
            self.encoder.dim()
        } else {
            0
        }
    }

    /// Changes the ensemble's members and weights (or asks for fitted weights) for
    /// [`Run::ensemble`]; the saved configuration is not changed.
    pub fn set_ensemble(&mut self, members: Vec<(ModelKind, f64)>, fit: bool) {
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

    fn model_dir(&self, kind: ModelKind) -> PathBuf {
        self.dir.join("models").join(kind.name())
    }

    /// Trains `kind` on every fold (resuming where it stopped) and writes its out-of-fold and
    /// test predictions. Several `devices` train each fold data-parallel ([`train_fold`]).
    ///
    /// # Errors
    /// A missing crop step (for CropNet), bad data, or a failed fold.
    pub fn train(&self, kind: ModelKind, devices: &[Device]) -> Result<ModelPredictions> {
        if let Some(p) = self.predictions(kind)? {
            return Ok(p);
        }
        let dir = self.model_dir(kind);
        let mut oof = vec![f32::NAN; self.train.len()];
        let mut test = vec![0f32; self.test.len()];
        let mut summary = Vec::new();
        for f in 0..self.folds.k {
            let (images, test_images) = match kind {
                ModelKind::Cropnet => self.crop_images(&format!("fold{f}"), "crop")?,
                ModelKind::OracleCropnet => self.crop_images("oracle", "crop --oracle")?,
                _ => (self.train_images.clone(), self.test_images.clone()),
            };
            let task = FoldTask {
                kind,
                spec: &self.config.model,
                config: self.config.schedules.of(kind),
                meta_dim: self.meta_dim(),
                images: &images,
                train_rows: self.folds.train(f),
                valid_rows: self.folds.valid(f),
                test: test_images.as_ref(),
                dir: dir.join(format!("fold{f}")),
                seed: self.config.seed ^ ((f as u64 + 1) << 32) ^ kind_salt(kind),
                progress: self.progress,
            };
            let outcome = train_fold(&task, devices)?;
            for (&row, &p) in task.valid_rows.iter().zip(&outcome.predictions.valid) {
                oof[row] = p;
            }
            for (t, &p) in test.iter_mut().zip(&outcome.predictions.test) {
                *t += p / self.folds.k as f32;
            }
            summary.push(serde_json::json!({
                "fold": f,
                "best_epoch": outcome.state.best_epoch.map(|e| e + 1),
                "best_valid_auc": outcome.state.best_auc,
                "epochs": outcome.state.history.len(),
                "stop_reason": outcome.state.stop_reason,
                "seconds": outcome.state.history.iter().map(|h| h.seconds).sum::<f64>(),
            }));
        }
        agc_data::fsutil::write_json(&dir.join("folds.json"), &summary)?;
        let predictions = ModelPredictions { oof, test };
        self.write_predictions(&dir, &predictions, false)?;
        Ok(predictions)
    }

    /// Writes `oof.csv` and `test.csv` into `dir`, and `submission.csv` into the run when
    /// `submission` is set and there is a test set.
    fn write_predictions(
        &self,
        dir: &Path,
        predictions: &ModelPredictions,
        submission: bool,
    ) -> Result<()> {
        let mut oof = String::from("image_name,fold,target,prediction\n");
        for (i, r) in self.train.iter().enumerate() {
            writeln!(
                oof,
                "{},{},{},{}",
                r.image_name, self.folds.fold_of[i], self.labels[i], predictions.oof[i]
            )
            .expect("writing to a String");
        }
        write_text(&dir.join("oof.csv"), &oof)?;
        let mut test = String::from("image_name,prediction\n");
        let mut kaggle = String::from("image_name,target\n");
        for (r, p) in self.test.iter().zip(&predictions.test) {
            writeln!(test, "{},{p}", r.image_name).expect("writing to a String");
            writeln!(kaggle, "{},{p}", r.image_name).expect("writing to a String");
        }
        write_text(&dir.join("test.csv"), &test)?;
        if submission && !self.test.is_empty() {
            write_text(&self.dir.join("submission.csv"), &kaggle)?;
        }
        Ok(())
    }

    /// The saved predictions of `kind`, if it has been trained.
    ///
    /// # Errors
    /// A prediction file that does not match the run's images.
    pub fn predictions(&self, kind: ModelKind) -> Result<Option<ModelPredictions>> {
        self.read_predictions(&self.model_dir(kind))
    }

    fn read_predictions(&self, dir: &Path) -> Result<Option<ModelPredictions>> {
        let (oof_path, test_path) = (dir.join("oof.csv"), dir.join("test.csv"));
        if !oof_path.is_file() || !test_path.is_file() {
            return Ok(None);
        }
        let column = |path: &Path, records: &[Record]| -> Result<Vec<f32>> {
            let (header, rows) = read_csv_rows(path)?;
            let col = header
                .iter()
                .position(|h| h == "prediction")
                .ok_or_else(|| TrainError::Parse {
                    path: path.to_path_buf(),
                    message: "no prediction column".into(),
                })?;
            if rows.len() != records.len()
                || rows
                    .iter()
                    .zip(records)
                    .any(|(r, rec)| r[0] != rec.image_name)
            {
                return Err(TrainError::Parse {
                    path: path.to_path_buf(),
                    message: "its images are not the run's images: was the data changed?".into(),
                });
            }
            rows.iter()
                .enumerate()
                .map(|(i, r)| {
                    r[col].parse::<f32>().map_err(|e| TrainError::Parse {
                        path: path.to_path_buf(),
                        message: format!("row {}: {e}", i + 1),
                    })
                })
                .collect()
        };
        Ok(Some(ModelPredictions {
            oof: column(&oof_path, &self.train)?,
            test: column(&test_path, &self.test)?,
        }))
    }

    fn crop_images(&self, name: &str, step: &str) -> Result<(Images, Option<Images>)> {
        let dir = self.dir.join("crops").join(name);
        let open = |split: &str, base: &Images| -> Result<Images> {
            let path = dir.join(format!("{split}.npy"));
            if !path.is_file() {
                return Err(TrainError::MissingStep {
                    path,
                    step: step.to_string(),
                });
            }
            let cache = Arc::new(ImageCache::open(&path)?);
            Images::new(cache, base.meta.to_vec(), base.targets.to_vec())
        };
        let train = open("train", &self.train_images)?;
        let test = self
            .test_images
            .as_ref()
            .map(|t| open("test", t))
            .transpose()?;
        Ok((train, test))
    }

    /// The crop step: each fold's ChipNet maps every training and test image, the maps become
    /// boxes in the originals, and the originals are cropped into the fold's crop cache.
    /// Writes `attention/fold<k>.csv`, `boxes.csv` and `crops/fold<k>/`.
    ///
    /// # Errors
    /// ChipNet not trained, unreadable originals, unwritable caches.
    pub fn crop(&self, device: &Device) -> Result<()> {
        let boxes_path = self.dir.join("boxes.csv");
        if boxes_path.is_file() {
            // Written last: every fold's crop cache is complete.
            return Ok(());
        }
        let mut boxes = String::from(
            "fold,split,image_name,threshold,fallback,box_x,box_y,box_side,orig_x,orig_y,\
             orig_side,true_x0,true_y0,true_x1,true_y1,iou\n",
        );
        for f in 0..self.folds.k {
            self.crop_fold(f, &mut boxes, device)?;
        }
        write_text(&boxes_path, &boxes)
    }

    /// Fold `f` of the crop step: its attention maps, its rows of `boxes.csv`, its crop cache.
    fn crop_fold(&self, f: usize, boxes: &mut String, device: &Device) -> Result<()> {
        let chip_dir = self.model_dir(ModelKind::Chipnet);
        let size = self.config.image_size as usize;
        let best = chip_dir.join(format!("fold{f}/best.{}", checkpoint::EXTENSION));
        if !checkpoint::exists(&best) {
            return Err(TrainError::MissingStep {
                path: best,
                step: "train --model chipnet".into(),
            });
        }
        let net: Net = self
            .config
            .model
            .init(ModelKind::Chipnet, self.meta_dim(), device)?;
        let net = checkpoint::load(net, &best)?;
        let mut attention_csv = String::new();
        let crop_dir = self.dir.join("crops").join(format!("fold{f}"));
        let splits = [
            ("train", Some(&self.train_images), &self.train),
            ("test", self.test_images.as_ref(), &self.test),
        ];
        for (split, images, records) in splits {
            let Some(images) = images else { continue };
            let rows: Vec<usize> = (0..records.len()).collect();
            let schedule = self.config.schedules.of(ModelKind::Chipnet);
            let bar = progress_bar(
                self.progress,
                rows.len() as u64,
                &format!("fold {f}: attention maps of the {split} images"),
            );
            let batch = schedule.eval_batch_size;
            let maps = predict_reporting(&net, images, &rows, [batch, 0], 0, device, &bar);
            bar.finish_and_clear();
            let g = maps.grid;
            if attention_csv.is_empty() {
                attention_csv.push_str("split,image_name");
                for i in 0..g * g {
                    write!(attention_csv, ",a{i}").expect("writing to a String");
                }
                attention_csv.push('\n');
            }
            let index = images.cache.index();
            let mut jobs = Vec::with_capacity(records.len());
            for (i, record) in records.iter().enumerate() {
                let map = &maps.attention[i * g * g..(i + 1) * g * g];
                write!(attention_csv, "{split},{}", record.image_name)
                    .expect("writing to a String");
                for v in map {
                    write!(attention_csv, ",{v}").expect("writing to a String");
                }
                attention_csv.push('\n');
                let found = attention_box(map, [g, g], [size, size], &self.config.boxes);
                let entry = &index[i];
                let centre = CentreCrop {
                    width: entry.width as usize,
                    height: entry.height as usize,
                    x: entry.crop_x as usize,
                    y: entry.crop_y as usize,
                    side: entry.crop_side as usize,
                };
                let orig = centre.map_box(found.square, size);
                let truth = record
                    .lesion_box
                    .map(|b| true_square(b, centre.width, centre.height));
                let iou = truth.map(|t| orig.iou(&t));
                writeln!(
                    boxes,
                    "{f},{split},{},{},{},{},{},{},{},{},{},{},{}",
                    record.image_name,
                    found.threshold,
                    found.fallback.map_or("", |b| b.as_str()),
                    found.square.x0,
                    found.square.y0,
                    found.square.width(),
                    orig.x0,
                    orig.y0,
                    orig.width(),
                    record.lesion_box.map_or(",,,".into(), |b| format!(
                        "{},{},{},{}",
                        b[0], b[1], b[2], b[3]
                    )),
                    iou.map_or(String::new(), |v| format!("{v:.4}")),
                )
                .expect("writing to a String");
                jobs.push(CacheJob {
                    name: record.image_name.clone(),
                    path: DataDir::image_path(self.images_folder(split), &record.image_name),
                    square: Some([orig.x0 as u32, orig.y0 as u32, orig.width() as u32]),
                });
            }
            build_cache(
                &jobs,
                &crop_dir.join(format!("{split}.npy")),
                &cache_options(&self.config, self.progress),
            )?;
        }
        write_text(
            &self.dir.join("attention").join(format!("fold{f}.csv")),
            &attention_csv,
        )?;
        Ok(())
    }

    /// The folder of the original `train` or `test` images.
    pub(crate) fn images_folder(&self, split: &str) -> &Path {
        if split == "train" {
            &self.data.train_images
        } else {
            &self.data.test_images
        }
    }

    /// Crops every image by its true lesion box (squared, kept inside the image) into
    /// `crops/oracle/`, for the oracle CropNet.
    ///
    /// # Errors
    /// Records without a true box, unreadable originals, unwritable caches.
    pub fn oracle_crops(&self) -> Result<()> {
        if !self.has_true_boxes() {
            return Err(TrainError::Config(
                "the oracle CropNet needs true lesion boxes (lesion_x0.. columns) for every \
                 image"
                    .into(),
            ));
        }
        let dir = self.dir.join("crops").join("oracle");
        let splits = [
            ("train", Some(&self.train_images), &self.train),
            ("test", self.test_images.as_ref(), &self.test),
        ];
        for (split, images, records) in splits {
            let Some(images) = images else { continue };
            let jobs: Vec<CacheJob> = records
                .iter()
                .zip(images.cache.index())
                .filter_map(|(r, e)| {
                    let t = true_square(r.lesion_box?, e.width as usize, e.height as usize);
                    Some(CacheJob {
                        name: r.image_name.clone(),
                        path: DataDir::image_path(self.images_folder(split), &r.image_name),
                        square: Some([t.x0 as u32, t.y0 as u32, t.width() as u32]),
                    })
                })
                .collect();
            build_cache(
                &jobs,
                &dir.join(format!("{split}.npy")),
                &cache_options(&self.config, self.progress),
            )?;
        }
        Ok(())
    }

    /// The ensemble of the configured members: weights as given, or fitted on the out-of-fold
    /// predictions. Writes `ensemble/{oof,test}.csv` and `submission.csv`.
    ///
    /// # Errors
    /// A member that has not been trained, or weights that cannot be fitted.
    pub fn ensemble(&self) -> Result<(Vec<(ModelKind, f64)>, ModelPredictions)> {
        let mut members = Vec::new();
        for &(kind, w) in &self.config.ensemble {
            let p = self
                .predictions(kind)?
                .ok_or_else(|| TrainError::MissingStep {
                    path: self.model_dir(kind).join("oof.csv"),
                    step: format!("train --model {kind}"),
                })?;
            members.push((kind, w, p));
        }
        if members.is_empty() {
            return Err(TrainError::Config("the ensemble has no members".into()));
        }
        let oofs: Vec<&[f32]> = members.iter().map(|m| m.2.oof.as_slice()).collect();
        let weights: Vec<f64> = if self.config.fit_ensemble {
            fit_weights(&oofs, &self.labels, 20)
                .ok_or_else(|| {
                    TrainError::Undefined("ensemble weights: the OOF AUC is undefined".into())
                })?
                .0
        } else {
            members.iter().map(|m| m.1).collect()
        };
        if weights.iter().any(|&w| w < 0.0) || weights.iter().sum::<f64>() <= 0.0 {
            return Err(TrainError::Config(format!(
                "ensemble weights must be non-negative and not all zero, got {weights:?}"
            )));
        }
        let tests: Vec<&[f32]> = members.iter().map(|m| m.2.test.as_slice()).collect();
        let combined = ModelPredictions {
            oof: weighted_average(&oofs, &weights),
            test: if self.test.is_empty() {
                Vec::new()
            } else {
                weighted_average(&tests, &weights)
            },
        };
        self.write_predictions(&self.dir.join("ensemble"), &combined, true)?;
        let total: f64 = weights.iter().sum();
        Ok((
            members
                .iter()
                .zip(&weights)
                .map(|(m, w)| (m.0, w / total))
                .collect(),
            combined,
        ))
    }

    /// Scores of one model's predictions.
    pub fn score(&self, p: &ModelPredictions) -> ModelScore {
        let fold_aucs: Vec<f64> = (0..self.folds.k)
            .filter_map(|f| {
                let rows = self.folds.valid(f);
                let s: Vec<f32> = rows.iter().map(|&r| p.oof[r]).collect();
                let y: Vec<u8> = rows.iter().map(|&r| self.labels[r]).collect();
                roc_auc(&s, &y)
            })
            .collect();
        let (test_auc, test_ci) = match &self.test_labels {
            Some(y) if p.test.len() == y.len() => (
                roc_auc(&p.test, y),
                bootstrap_auc(&p.test, y, 1000, 0.95, self.config.seed).map(|c| [c.low, c.high]),
            ),
            _ => (None, None),
        };
        ModelScore {
            oof_auc: roc_auc(&p.oof, &self.labels),
            oof_auc_fold_mean: (!fold_aucs.is_empty())
                .then(|| fold_aucs.iter().sum::<f64>() / fold_aucs.len() as f64),
            test_auc,
            test_auc_ci95: test_ci,
        }
    }

    /// IoU and fallback statistics of `boxes.csv`, if the crop step has run.
    ///
    /// # Errors
    /// A malformed `boxes.csv`.
    pub fn attention_stats(&self) -> Result<Option<AttentionStats>> {
        let path = self.dir.join("boxes.csv");
        if !path.is_file() {
            return Ok(None);
        }
        let (header, rows) = read_csv_rows(&path)?;
        let col = |name: &str| header.iter().position(|h| h == name);
        let (Some(fb), Some(iou_col), Some(split)) = (col("fallback"), col("iou"), col("split"))
        else {
            return Err(TrainError::Parse {
                path,
                message: "missing fallback, iou or split column".into(),
            });
        };
        let fallbacks = rows.iter().filter(|r| !r[fb].is_empty()).count();
        let median = |pick: &dyn Fn(&Vec<String>) -> bool| -> Option<f64> {
            let mut v: Vec<f64> = rows
                .iter()
                .filter(|r| pick(r))
                .filter_map(|r| r[iou_col].parse::<f64>().ok())
                .collect();
            if v.is_empty() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            let n = v.len();
            Some(if n % 2 == 1 {
                v[n / 2]
            } else {
                f64::midpoint(v[n / 2 - 1], v[n / 2])
            })
        };
        Ok(Some(AttentionStats {
            boxes: rows.len(),
            iou_median: median(&|_| true),
            iou_median_test: median(&|r| r[split] == "test"),
            fallback_rate: if rows.is_empty() {
                0.0
            } else {
                fallbacks as f64 / rows.len() as f64
            },
        }))
    }
}

/// Runs every step that is not complete yet: the configured models (the oracle CropNet too
/// when the data has true boxes), the crop step before CropNet, the ensemble, `metrics.json`
/// and the report. Models train on every device in `devices` (data-parallel when there are
/// several); the crop step runs on the first.
///
/// # Errors
/// The first step that fails.
pub fn run_all(
    run: &Run,
    devices: &[Device],
    started: std::time::Instant,
) -> Result<crate::report::Metrics> {
    let Some(device) = devices.first() else {
        return Err(TrainError::Config("no device to run on".into()));
    };
    let mut kinds = run.config.models.clone();
    if kinds.contains(&ModelKind::Cropnet) && !kinds.contains(&ModelKind::Chipnet) {
        kinds.insert(0, ModelKind::Chipnet);
    }
    if run.has_true_boxes() && !kinds.contains(&ModelKind::OracleCropnet) {
        kinds.push(ModelKind::OracleCropnet);
    }
    let mut predictions = Vec::new();
    for kind in kinds {
        match kind {
            ModelKind::Cropnet => run.crop(device)?,
            ModelKind::OracleCropnet => run.oracle_crops()?,
            _ => {}
        }
        tracing::info!("training {kind}");
        predictions.push((kind.name().to_string(), run.train(kind, devices)?));
    }
    let weights = if run.config.ensemble.is_empty() {
        Vec::new()
    } else {
        let (weights, ensemble) = run.ensemble()?;
        predictions.push(("ensemble".to_string(), ensemble));
        weights
    };
    let metrics =
        crate::report::write_metrics(run, &predictions, &weights, started.elapsed().as_secs_f64())?;
    crate::report::write_report(run, &metrics, &predictions)?;
    Ok(metrics)
}

fn kind_salt(kind: ModelKind) -> u64 {
    match kind {
        ModelKind::Resnet => 0x1000,
        ModelKind::Chipnet => 0x2000,
        ModelKind::Attnresnet => 0x3000,
        ModelKind::Cropnet => 0x4000,
        ModelKind::OracleCropnet => 0x5000,
    }
}

/// The true box `[x0, y0, x1, y1)` squared (side = the longer side, same centre) and moved,
/// not shrunk, to lie inside a `width`×`height` image.
pub fn true_square(bbox: [u32; 4], width: usize, height: usize) -> Rect {
    let [x0, y0, x1, y1] = bbox.map(|v| v as usize);
    let side = (x1 - x0).max(y1 - y0).clamp(1, width.min(height));
    // (x0 + x1) is twice the centre: the arithmetic stays in integers.
    let left = ((x0 + x1).saturating_sub(side) / 2).min(width - side);
    let top = ((y0 + y1).saturating_sub(side) / 2).min(height - side);
    Rect::square(left, top, side)
}

fn read_folds(path: &Path, train: &[Record], k: usize) -> Result<Folds> {
    let (_, rows) = read_csv_rows(path)?;
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
        if row.len() < 2 || row[0] != record.image_name {
            return Err(bad(format!(
                "row {}: expected image {:?}",
                i + 1,
                record.image_name
            )));
        }
        let f: usize = row[1]
            .parse()
            .ok()
            .filter(|&f| f < k)
            .ok_or_else(|| bad(format!("row {}: fold {:?} is not below {k}", i + 1, row[1])))?;
        fold_of.push(f);
    }
    Ok(Folds { k, fold_of })
}

/// AUCs of one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelScore {
    /// AUC of all out-of-fold predictions together.
    pub oof_auc: Option<f64>,
    /// Mean of the per-fold validation AUCs (the seed's figure).
    pub oof_auc_fold_mean: Option<f64>,
    /// AUC on the test labels, where known.
    pub test_auc: Option<f64>,
    /// Bootstrap 95 % interval of the test AUC.
    pub test_auc_ci95: Option<[f64; 2]>,
}

/// How well the attention boxes found the lesions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AttentionStats {
    /// Rows of `boxes.csv` (images × folds).
    pub boxes: usize,
    /// Median IoU of the attention box with the true box (both squared), over every row.
    pub iou_median: Option<f64>,
    /// The same over the test images only.
    pub iou_median_test: Option<f64>,
    /// Share of maps that fell back to the whole image.
    pub fallback_rate: f64,
}

/// Reads `oof.csv`-style or `test.csv`-style predictions (`image_name,prediction`) and scores
/// them against `labels` (`image_name,target`): for `agc evaluate`.
///
/// # Errors
/// Unreadable files, an image without a label, or an undefined AUC.
pub fn evaluate_file(predictions: &Path, labels: &Path) -> Result<(usize, f64)> {
    let by_name: HashMap<String, u8> = read_labels(labels)?.into_iter().collect();
    let (header, rows) = read_csv_rows(predictions)?;
    let col = header
        .iter()
        .position(|h| h == "prediction" || h == "target")
        .ok_or_else(|| TrainError::Parse {
            path: predictions.to_path_buf(),
            message: "no prediction (or target) column".into(),
        })?;
    let mut scores = Vec::with_capacity(rows.len());
    let mut ys = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let y = by_name.get(&r[0]).ok_or_else(|| TrainError::Parse {
            path: labels.to_path_buf(),
            message: format!("no label for image {:?}", r[0]),
        })?;
        let s: f32 = r[col].parse().map_err(|e| TrainError::Parse {
            path: predictions.to_path_buf(),
            message: format!("row {}: {e}", i + 1),
        })?;
        scores.push(s);
        ys.push(*y);
    }
    let auc = roc_auc(&scores, &ys).ok_or_else(|| {
        TrainError::Undefined(format!(
            "{}: the labels hold one class only, so the AUC is undefined",
            labels.display()
        ))
    })?;
    Ok((rows.len(), auc))
}
