//! Where a run's configuration comes from and what the command line changes in it: a
//! [`ConfigSource`] (a `--config` file over a `--preset`, a run's own `config.json`, or a
//! preset for `--data`) resolved to a [`PipelineConfig`], then [`PipelineConfig::apply`] of the
//! [`Overrides`] the user gave. The binary only parses flags into these two.

use std::path::{Path, PathBuf};

use super::PipelineConfig;
use crate::error::{Result, TrainError};
use crate::layout::RunLayout;
use crate::loss::Loss;
use crate::model::ModelKind;
use crate::train::TestFrom;

/// Where a run's configuration starts from, before the [`Overrides`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSource {
    /// A configuration file that may set only some keys; the others keep the preset's.
    pub config: Option<PathBuf>,
    /// A built-in configuration ([`PipelineConfig::PRESETS`]); `seed` when not given.
    pub preset: Option<String>,
    /// The data directory.
    pub data: Option<PathBuf>,
    /// The run directory, whose own `config.json` is the start when nothing else is given.
    pub out: PathBuf,
}

impl ConfigSource {
    /// The configuration to start from: `config` over `preset` (the seed's by default) for the
    /// keys it lacks; else the run's own `config.json` when neither `data` nor `preset` is
    /// given and the run has one; else `preset` for `data`. `data`, when given, replaces the
    /// configuration's.
    ///
    /// # Errors
    /// An unknown preset, an unreadable or invalid configuration file, a `config` without a
    /// data directory, or no `data` where nothing else says where the data is.
    pub fn resolve(&self) -> Result<PipelineConfig> {
        let preset = self.preset.as_deref().unwrap_or("seed");
        let saved = RunLayout::new(&self.out).config();
        let mut config = if let Some(path) = &self.config {
            let base = PipelineConfig::preset(preset, self.data.clone().unwrap_or_default())?;
            let config = PipelineConfig::read_over(path, &base)?;
            if config.data.as_os_str().is_empty() {
                return Err(TrainError::Setting {
                    setting: "data".into(),
                    value: "missing".into(),
                    message: format!(
                        "{} gives no data directory: give one there or with --data",
                        path.display()
                    ),
                });
            }
            config
        } else if self.data.is_none() && self.preset.is_none() && saved.is_file() {
            PipelineConfig::read(&saved)?
        } else {
            let Some(data) = &self.data else {
                return Err(TrainError::Setting {
                    setting: "--data".into(),
                    value: "missing".into(),
                    message: "give the data directory (or --config, or an --out that holds a \
                              run)"
                        .into(),
                });
            };
            PipelineConfig::preset(preset, data.clone())?
        };
        if let Some(d) = &self.data {
            config.data.clone_from(d);
        }
        Ok(config)
    }
}

/// Settings given on the command line (or by any caller) over a configuration: each `Some`
/// (or `true`) replaces the configuration's value; the schedule settings apply to every model.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Folder of the preprocessed caches.
    pub cache: Option<PathBuf>,
    /// Backbone name (`model.backbone`).
    pub backbone: Option<String>,
    /// Pretrained backbone weights.
    pub weights: Option<PathBuf>,
    /// Load weights with tensors the backbone has no place for.
    pub allow_unused_weights: bool,
    /// Side of the images the models see.
    pub image_size: Option<u32>,
    /// Side of the images ChipNet sees.
    pub chipnet_image_size: Option<u32>,
    /// ChipNet's chip side.
    pub chip: Option<usize>,
    /// Side of ChipNet's attention scoring kernels.
    pub attention_kernel: Option<usize>,
    /// Keep ChipNet's attention off a black field.
    pub field_mask: bool,
    /// Weight of ChipNet's contrast prior.
    pub contrast_prior: Option<f32>,
    /// Cross-validation folds.
    pub folds: Option<usize>,
    /// The seed.
    pub seed: Option<u64>,
    /// Do not feed the metadata to the MetaResNets.
    pub no_metadata: bool,
    /// Keep each patient's images in one fold.
    pub group_by_patient: bool,
    /// Leave out images that cannot be read.
    pub skip_bad_images: bool,
    /// The models the pipeline trains; the ensemble keeps only members among them.
    pub models: Option<Vec<ModelKind>>,
    /// Context around every square box.
    pub box_margin: Option<f64>,
    /// Adam learning rate of every model's backbone and head.
    pub lr: Option<f64>,
    /// Images per training batch.
    pub batch_size: Option<usize>,
    /// Images per inference batch.
    pub eval_batch_size: Option<usize>,
    /// Most epochs per fold.
    pub epochs: Option<usize>,
    /// Early-stopping patience.
    pub patience: Option<usize>,
    /// Rounds of test-time augmentation.
    pub tta: Option<usize>,
    /// Where test predictions come from.
    pub test_from: Option<TestFrom>,
    /// The loss.
    pub loss: Option<Loss>,
}

impl PipelineConfig {
    /// Applies `o` over this configuration. Returns what changed beyond the settings named:
    /// the ensemble members dropped because `o.models` leaves them out (an ensemble of one
    /// model is that model again, so it goes too), as a sentence.
    pub fn apply(&mut self, o: &Overrides) -> Option<String> {
        set(&mut self.cache_dir, o.cache.clone().map(Some));
        set(&mut self.model.backbone, o.backbone.clone());
        set(&mut self.model.weights, o.weights.clone().map(Some));
        set(&mut self.image_size, o.image_size);
        set(&mut self.chipnet_image_size, o.chipnet_image_size.map(Some));
        set(&mut self.model.chip, o.chip);
        set(&mut self.model.attention_kernel, o.attention_kernel);
        set(&mut self.model.contrast_prior, o.contrast_prior);
        set(&mut self.folds, o.folds);
        set(&mut self.seed, o.seed);
        set(&mut self.boxes.margin, o.box_margin);
        self.model.allow_unused_weights |= o.allow_unused_weights;
        self.model.field_mask |= o.field_mask;
        self.metadata &= !o.no_metadata;
        self.group_by_patient |= o.group_by_patient;
        self.skip_bad_images |= o.skip_bad_images;
        self.schedules.for_each(|s| {
            set(&mut s.lr_backbone, o.lr);
            set(&mut s.lr_head, o.lr);
            set(&mut s.batch_size, o.batch_size);
            set(&mut s.eval_batch_size, o.eval_batch_size);
            set(&mut s.max_epochs, o.epochs);
            set(&mut s.patience, o.patience);
            set(&mut s.tta, o.tta);
            set(&mut s.test_from, o.test_from);
            set(&mut s.loss, o.loss);
        });
        let models = o.models.as_ref()?;
        self.models.clone_from(models);
        self.keep_trained_members()
    }

    /// The ensemble keeps the members that will be trained: `models` without CropNet means no
    /// CropNet in the ensemble, not a failure at the end; an ensemble of one model is that
    /// model again, so it goes. Says what it dropped.
    fn keep_trained_members(&mut self) -> Option<String> {
        let before = self.ensemble.len();
        let models = &self.models;
        self.ensemble
            .retain(|m| models.contains(&m.model) || m.model == ModelKind::OracleCropnet);
        if self.ensemble.len() == 1 {
            self.ensemble.clear();
        }
        if self.ensemble.len() == before {
            return None;
        }
        let kept: Vec<&str> = self.ensemble.iter().map(|m| m.model.name()).collect();
        Some(format!(
            "--models {}: the ensemble keeps {}",
            super::config::names(&self.models),
            if kept.is_empty() {
                "no members (no ensemble)".to_string()
            } else {
                kept.join(" and ")
            }
        ))
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// The configuration of a run from where it starts and what the caller changes; see
/// [`ConfigSource::resolve`] and [`PipelineConfig::apply`]. What `apply` says is logged.
///
/// # Errors
/// As [`ConfigSource::resolve`].
pub fn resolve(source: &ConfigSource, overrides: &Overrides) -> Result<PipelineConfig> {
    let mut config = source.resolve()?;
    if let Some(note) = config.apply(overrides) {
        tracing::info!("{note}");
    }
    Ok(config)
}

/// Whether `path` holds a run's configuration already (a run that was started).
pub fn is_started(out: &Path) -> bool {
    RunLayout::new(out).config().is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ensemble::EnsembleMember;

    #[test]
    fn overrides_replace_what_they_name_and_nothing_else() {
        let base = PipelineConfig::cpu("data".into());
        let mut config = base.clone();
        assert_eq!(config.apply(&Overrides::default()), None);
        assert_eq!(config, base, "no override changes nothing");
        let o = Overrides {
            lr: Some(3e-4),
            batch_size: Some(8),
            box_margin: Some(0.1),
            no_metadata: true,
            test_from: Some(TestFrom::LastEpochs),
            loss: Some(Loss::Bce),
            chipnet_image_size: Some(160),
            ..Overrides::default()
        };
        assert_eq!(config.apply(&o), None);
        for kind in ModelKind::ALL {
            let s = config.schedules.of(kind);
            assert_eq!((s.lr_backbone, s.lr_head, s.batch_size), (3e-4, 3e-4, 8));
            assert_eq!((s.test_from, s.loss), (TestFrom::LastEpochs, Loss::Bce));
            assert_eq!(s.patience, base.schedules.of(kind).patience);
        }
        assert!((config.boxes.margin - 0.1).abs() < 1e-12);
        assert!(!config.metadata);
        assert_eq!(config.chipnet_image_size, Some(160));
        assert_eq!(config.image_size, base.image_size);
        // A flag that is not given leaves a setting the configuration turned on.
        let mut metadata_off = config.clone();
        metadata_off.apply(&Overrides::default());
        assert!(!metadata_off.metadata);
    }

    #[test]
    fn models_without_a_member_drop_it_from_the_ensemble_and_say_so() {
        let mut config = PipelineConfig::new("data".into());
        let note = config.apply(&Overrides {
            models: Some(vec![ModelKind::Resnet, ModelKind::Chipnet]),
            ..Overrides::default()
        });
        assert!(config.ensemble.is_empty(), "one member left: no ensemble");
        assert_eq!(
            note.as_deref(),
            Some("--models resnet,chipnet: the ensemble keeps no members (no ensemble)")
        );
        let mut config = PipelineConfig::new("data".into());
        config
            .ensemble
            .push(EnsembleMember::new(ModelKind::Chipnet, 0.2));
        let note = config.apply(&Overrides {
            models: Some(vec![ModelKind::Resnet, ModelKind::Chipnet]),
            ..Overrides::default()
        });
        assert_eq!(
            note.as_deref(),
            Some("--models resnet,chipnet: the ensemble keeps resnet and chipnet")
        );
    }

    #[test]
    fn a_source_needs_data_somewhere_and_a_run_keeps_its_own_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("run");
        let nothing = ConfigSource {
            out: out.clone(),
            ..ConfigSource::default()
        };
        let err = nothing.resolve().expect_err("no data");
        assert!(
            matches!(err, TrainError::Setting { ref setting, .. } if setting == "--data"),
            "{err}"
        );
        let data = ConfigSource {
            data: Some("photos".into()),
            preset: Some("cpu".into()),
            ..nothing.clone()
        };
        let config = data.resolve().expect("a preset for the data");
        assert_eq!(config, PipelineConfig::cpu("photos".into()));
        std::fs::create_dir_all(&out).expect("mkdir");
        agc_data::fsutil::write_json(&RunLayout::new(&out).config(), &config).expect("save");
        assert!(is_started(&out));
        assert_eq!(nothing.resolve().expect("the run's own"), config);
        let partial = dir.path().join("partial.json");
        std::fs::write(&partial, r#"{"folds": 4}"#).expect("write");
        let err = ConfigSource {
            config: Some(partial.clone()),
            ..nothing.clone()
        }
        .resolve()
        .expect_err("no data in it");
        assert!(err.to_string().contains("gives no data directory"), "{err}");
        let over = ConfigSource {
            config: Some(partial),
            ..data
        }
        .resolve()
        .expect("over the preset");
        assert_eq!((over.folds, over.image_size), (4, config.image_size));
    }
}
