//! A run as whatever applies its models sees it: where its files are, its configuration, its
//! metadata encoder and width, and each model's best checkpoint on every fold. Read once here
//! for [`Run::open`](super::Run::open), the crop step, [`Predictor`](crate::predictor::Predictor)
//! and [`export_run`](crate::export::export_run).

use std::path::{Path, PathBuf};

use agc_data::MetadataEncoder;
use burn::prelude::Device;

use super::PipelineConfig;
use crate::checkpoint;
use crate::error::{Result, TrainError, read_json};
use crate::layout::RunLayout;
use crate::model::{ModelKind, ModelSpec, Net};
use crate::scores::Metrics;

/// A prepared run's configuration and encoder, read once; [`TrainedRun::checkpoints`] loads
/// its trained models.
#[derive(Debug, Clone)]
pub struct TrainedRun {
    /// Every path of the run.
    pub layout: RunLayout,
    /// Its configuration (`config.json`).
    pub config: PipelineConfig,
    /// Its metadata encoder (`metadata_encoder.json`).
    pub encoder: MetadataEncoder,
}

impl TrainedRun {
    /// Reads the configuration and the metadata encoder of the run in `dir`.
    ///
    /// # Errors
    /// A folder that holds no run (named, with the command that makes one), unreadable files.
    pub fn open(dir: &Path) -> Result<Self> {
        let layout = RunLayout::new(dir);
        let config_path = layout.config();
        if !config_path.is_file() {
            return Err(TrainError::MissingStep {
                path: config_path,
                step: "agc pipeline --data DATA --out RUN (this folder holds no run)".into(),
            });
        }
        let config = PipelineConfig::read(&config_path)?;
        let encoder = MetadataEncoder::load(&layout.metadata_encoder())?;
        Ok(Self {
            layout,
            config,
            encoder,
        })
    }

    /// The width of the metadata vector its models take (0 for a run without metadata).
    pub fn meta_dim(&self) -> usize {
        meta_dim(&self.config, &self.encoder)
    }

    /// Each model's best checkpoint on every fold.
    pub fn checkpoints(&self) -> BestCheckpoints<'_> {
        BestCheckpoints::new(&self.layout, &self.config, self.meta_dim())
    }

    /// `metrics.json` (the fitted ensemble weights among them), once the run has written it.
    ///
    /// # Errors
    /// A malformed `metrics.json`.
    pub fn metrics(&self) -> Result<Option<Metrics>> {
        let path = self.layout.metrics();
        if path.is_file() {
            read_json(&path).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Whether the run trained an oracle CropNet (on the true boxes).
    pub fn has_oracle(&self) -> bool {
        self.layout.fold(ModelKind::OracleCropnet, 0).dir().is_dir()
    }
}

/// The width of the metadata vector the models of a run configured by `config` take: the
/// encoder's, or 0 for a run without metadata.
pub(crate) fn meta_dim(config: &PipelineConfig, encoder: &MetadataEncoder) -> usize {
    if config.metadata { encoder.dim() } else { 0 }
}

/// The best checkpoint of each model on every fold of a run, and how to load them.
#[derive(Debug, Clone, Copy)]
pub struct BestCheckpoints<'a> {
    layout: &'a RunLayout,
    spec: &'a ModelSpec,
    folds: usize,
    meta_dim: usize,
}

impl<'a> BestCheckpoints<'a> {
    /// The checkpoints of the run in `layout`, configured by `config`, whose models take
    /// `meta_dim` metadata values.
    pub(crate) fn new(layout: &'a RunLayout, config: &'a PipelineConfig, meta_dim: usize) -> Self {
        Self {
            layout,
            spec: &config.model,
            folds: config.folds,
            meta_dim,
        }
    }

    /// Where the best checkpoint of `kind` on fold `fold` is.
    pub fn path(&self, kind: ModelKind, fold: usize) -> PathBuf {
        self.layout.best_checkpoint(kind, fold)
    }

    /// The best checkpoint of `kind` on fold `fold`, loaded on `device`.
    ///
    /// # Errors
    /// A fold without a checkpoint (with the command that trains it), or an unreadable one.
    pub fn load(&self, kind: ModelKind, fold: usize, device: &Device) -> Result<Net> {
        let best = self.path(kind, fold);
        if !checkpoint::exists(&best) {
            return Err(TrainError::MissingStep {
                path: best,
                step: match kind {
                    ModelKind::Cropnet => "agc crop, then agc train --model cropnet".into(),
                    k => format!("agc train --model {k}"),
                },
            });
        }
        // The checkpoints hold every weight: the ImageNet file is not needed again.
        let spec = ModelSpec {
            weights: None,
            ..self.spec.clone()
        };
        Ok(checkpoint::load(
            spec.init(kind, self.meta_dim, device)?,
            &best,
        )?)
    }

    /// Every fold's best checkpoint of `kind`, loaded on `device`.
    ///
    /// # Errors
    /// As [`BestCheckpoints::load`], for the first fold that fails.
    pub fn load_all(&self, kind: ModelKind, device: &Device) -> Result<Vec<Net>> {
        (0..self.folds)
            .map(|f| self.load(kind, f, device))
            .collect()
    }
}
