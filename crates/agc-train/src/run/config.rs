//! The configuration of a run (`RUN/config.json`): the seed's defaults and the demo's preset,
//! reading with unknown keys refused, validation before anything is written, and the settings
//! in which two configurations differ.

use std::path::{Path, PathBuf};

use agc_core::BoxConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ensemble::EnsembleMember;
use crate::error::{Result, TrainError, io};
use crate::model::{ModelKind, ModelSpec};
use crate::train::TrainConfig;

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

    /// The schedule of `kind`, to change.
    pub fn of_mut(&mut self, kind: ModelKind) -> &mut TrainConfig {
        match kind {
            ModelKind::Resnet => &mut self.resnet,
            ModelKind::Chipnet => &mut self.chipnet,
            ModelKind::Attnresnet => &mut self.attnresnet,
            ModelKind::Cropnet | ModelKind::OracleCropnet => &mut self.cropnet,
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

    /// These schedules with the batch sizes (training and inference) of `other`: the only
    /// settings a prepared run may change when it resumes, since they decide how much memory a
    /// step needs, as after a GPU ran out of it.
    #[must_use]
    pub fn with_batch_sizes_of(mut self, other: &Self) -> Self {
        for (s, o) in [
            (&mut self.resnet, &other.resnet),
            (&mut self.chipnet, &other.chipnet),
            (&mut self.attnresnet, &other.attnresnet),
            (&mut self.cropnet, &other.cropnet),
        ] {
            s.batch_size = o.batch_size;
            s.eval_batch_size = o.eval_batch_size;
        }
        self
    }
}

/// Everything a run does, saved as `RUN/config.json`.
// Its switches are independent settings of the method, not a state machine.
#[allow(clippy::struct_excessive_bools)]
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
    /// Side S of the images the models see (ChipNet's unless `chipnet_image_size` is set).
    pub image_size: u32,
    /// Side of the images ChipNet sees, when not `image_size`. A larger one gives ChipNet a
    /// finer attention grid at the same chip size, so that the boxes of small lesions can
    /// shrink to their size, while the whole-image and crop classifiers keep the cheaper
    /// `image_size` (CropNet's crops are cut from the originals either way).
    #[serde(default)]
    pub chipnet_image_size: Option<u32>,
    /// Folds of the cross-validation.
    pub folds: usize,
    /// Keep each patient's images in one fold (needs `patient_id`).
    pub group_by_patient: bool,
    /// Seed of folds, initialisation, sampling and augmentation.
    pub seed: u64,
    /// Feed the metadata (sex, age, site) to the MetaResNets.
    pub metadata: bool,
    /// Leave out the images that cannot be decoded (listed in `RUN/skipped.csv`) instead of
    /// stopping.
    #[serde(default)]
    pub skip_bad_images: bool,
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
    pub ensemble: Vec<EnsembleMember>,
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
            chipnet_image_size: None,
            folds: 5,
            group_by_patient: false,
            seed: 42,
            metadata: true,
            skip_bad_images: false,
            model: ModelSpec::default(),
            schedules: Schedules::default(),
            boxes: BoxConfig::new(),
            models: vec![ModelKind::Resnet, ModelKind::Chipnet, ModelKind::Cropnet],
            ensemble: vec![
                EnsembleMember::new(ModelKind::Resnet, 0.5),
                EnsembleMember::new(ModelKind::Cropnet, 0.5),
            ],
            fit_ensemble: false,
        }
    }

    /// The demo's pipeline, sized for two CPU cores (about 5 minutes for 1 000 images on Burn
    /// 0.22.1, docs/results.md): tiny backbones trained from scratch (so higher learning rates
    /// than the seed's fine-tuning ones), 112-pixel images cut into the paper's 7×7 grid
    /// (16-pixel chips), 3 folds, one round of test-time augmentation; ChipNet, which learns
    /// slowest and on which the crops depend, trains 10 epochs without early stopping (its best
    /// epoch is kept), the others up to 6 with patience 3.
    pub fn demo(data: PathBuf) -> Self {
        let mut config = Self::new(data);
        config.image_size = 112;
        config.folds = 3;
        config.seed = 1;
        config.model.backbone = "tiny".into();
        config.model.chip = 16;
        config.model.attention_hidden = 64;
        config.model.meta_hidden = [32, 16];
        config.model.dropout = 0.3;
        config.model.attention_dropout = 0.3;
        // ChipNet first: its attention is what the demo is about, so it shows first in the log.
        config.models = vec![ModelKind::Chipnet, ModelKind::Resnet, ModelKind::Cropnet];
        config.schedules.for_each(|s| {
            s.max_epochs = 6;
            s.patience = 3;
            s.batch_size = 32;
            s.lr_backbone = 2e-3;
            s.lr_head = 2e-3;
            s.tta = 1;
        });
        config.schedules.chipnet.max_epochs = 10;
        config.schedules.chipnet.patience = 10;
        config
    }

    /// The CPU preset (`--preset cpu`, `agc demo`), chosen once for both synthetic families
    /// (docs/results.md): the demo's schedule on backbones twice as wide (`small`: `[1,1,1,1]`,
    /// width 16), and a ChipNet whose attention can find a lesion before it has learnt any
    /// class evidence: it sees 224-pixel images in 8-pixel chips (a 28×28 grid, so that small
    /// lesions get boxes of their size) while the classifiers see 112 pixels, with 1×1 scoring
    /// kernels, the field mask and a contrast prior of weight 2, for 3 epochs (its maps gain
    /// little from more, and each epoch at 224 px costs four at 112); boxes thresholded at
    /// mean + 1.25·std. The classifiers (ResNet, CropNet, the oracle CropNet) train up to 12
    /// epochs with patience 4 (at 6 their validation AUC was still rising) at Adam 1e-3 in
    /// batches of 16: chosen from the recipe curves of docs/results.md (oracle crops of both
    /// families, 3 seeds each), where it beat the 2e-3 at batch 32 this preset had on both
    /// families; width 32 or 64 and 160-pixel crops did not pay for their time, and a 10 %
    /// box margin, level on the curves, cost CropNet 0.06 out of fold in a whole pipeline, so
    /// boxes keep none. Three rounds of test-time augmentation (the seed's), which the speed of
    /// agc's CPU kernels paid for; more ChipNet epochs were tried too and lost out of fold on the
    /// dermoscopy family. About 9 minutes for 1 000 images on two cores (docs/results.md).
    pub fn cpu(data: PathBuf) -> Self {
        let mut config = Self::demo(data);
        config.model.backbone = "small".into();
        config.chipnet_image_size = Some(224);
        config.model.chip = 8;
        config.model.attention_kernel = 1;
        config.model.field_mask = true;
        config.model.contrast_prior = 2.0;
        for s in [&mut config.schedules.resnet, &mut config.schedules.cropnet] {
            s.max_epochs = 12;
            s.patience = 4;
            s.lr_backbone = 1e-3;
            s.lr_head = 1e-3;
            s.batch_size = 16;
        }
        config.schedules.chipnet.max_epochs = 3;
        config.schedules.chipnet.patience = 3;
        config.schedules.for_each(|s| s.tta = 3);
        // The threshold that serves both families best on the 28×28 map: the largest median
        // IoU of the worse family, over the training images' boxes (docs/results.md).
        config.boxes.k = 1.25;
        config
    }

    /// A built-in configuration by name: `seed` ([`Self::new`]), `demo` or `cpu`.
    ///
    /// # Errors
    /// An unknown name, listing the presets.
    pub fn preset(name: &str, data: PathBuf) -> Result<Self> {
        match name {
            "seed" => Ok(Self::new(data)),
            "demo" => Ok(Self::demo(data)),
            "cpu" => Ok(Self::cpu(data)),
            other => Err(TrainError::Setting {
                setting: "preset".into(),
                value: format!("{other:?}"),
                message: format!(
                    "no such preset; the presets are {}",
                    Self::PRESETS.join(", ")
                ),
            }),
        }
    }

    /// The names [`Self::preset`] knows.
    pub const PRESETS: [&'static str; 3] = ["seed", "demo", "cpu"];

    /// Side of the images `kind` sees: `chipnet_image_size` for ChipNet when set, else
    /// `image_size`.
    pub fn image_size_of(&self, kind: ModelKind) -> u32 {
        match (kind, self.chipnet_image_size) {
            (ModelKind::Chipnet, Some(size)) => size,
            _ => self.image_size,
        }
    }

    /// The image sizes the run caches: `image_size`, then ChipNet's when it differs.
    pub fn cache_sizes(&self) -> Vec<u32> {
        let chipnet = self.image_size_of(ModelKind::Chipnet);
        if chipnet == self.image_size {
            vec![self.image_size]
        } else {
            vec![self.image_size, chipnet]
        }
    }

    /// The preprocessed caches' folder (of `image_size`).
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir_of(self.image_size)
    }

    /// The folder of the caches of `size`-pixel images: `DATA/agc-cache-<size>`; with a
    /// `cache_dir` given, that folder for `image_size` and `agc-cache-<size>` inside it for
    /// ChipNet's other size.
    pub fn cache_dir_of(&self, size: u32) -> PathBuf {
        match &self.cache_dir {
            Some(dir) if size == self.image_size => dir.clone(),
            Some(dir) => dir.join(format!("agc-cache-{size}")),
            None => self.data.join(format!("agc-cache-{size}")),
        }
    }

    /// Reads a complete configuration file (a run's `config.json`). Every key must be one agc
    /// knows: a misspelt `"epohcs"` would otherwise be ignored silently.
    ///
    /// # Errors
    /// An unreadable file, invalid JSON, unknown keys (each named, before anything else is
    /// checked), a missing key or a wrong value type.
    pub fn read(path: &Path) -> Result<Self> {
        Self::parse(path, None)
    }

    /// Reads a configuration file that may set only some keys (a hand-written `--config`):
    /// the keys it lacks keep `base`'s values; objects merge key by key, lists and values are
    /// replaced whole.
    ///
    /// # Errors
    /// As [`Self::read`], but for missing keys.
    pub fn read_over(path: &Path, base: &Self) -> Result<Self> {
        Self::parse(path, Some(base))
    }

    fn parse(path: &Path, base: Option<&Self>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let bad = |message: String| TrainError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let given: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        // Unknown keys first, against the shape of a complete configuration, so that a typo is
        // named whatever else is wrong (serde would stop at the first missing key).
        let shape = match base {
            Some(base) => serde_json::to_value(base),
            None => serde_json::to_value(Self::new(PathBuf::new())),
        }
        .map_err(|e| bad(e.to_string()))?;
        refuse_unknown_keys(&given, &shape).map_err(&bad)?;
        let value = match base {
            Some(_) => merged(shape, given.clone()),
            None => given.clone(),
        };
        let config: Self = serde_json::from_value(value)
            .map_err(|e| bad(format!("not a pipeline configuration: {e}")))?;
        // Again against what was read: keys under a value the defaults leave empty.
        let known = serde_json::to_value(&config).map_err(|e| bad(e.to_string()))?;
        refuse_unknown_keys(&given, &known).map_err(&bad)?;
        Ok(config)
    }

    /// The models the pipeline trains, in order: the configured ones, ChipNet before CropNet
    /// when CropNet needs it, and the oracle CropNet when the data has true boxes.
    pub fn pipeline_models(&self, has_true_boxes: bool) -> Vec<ModelKind> {
        let mut kinds = self.models.clone();
        if let Some(i) = kinds.iter().position(|&k| k == ModelKind::Cropnet)
            && !kinds.contains(&ModelKind::Chipnet)
        {
            kinds.insert(i, ModelKind::Chipnet);
        }
        if has_true_boxes && !kinds.contains(&ModelKind::OracleCropnet) {
            kinds.push(ModelKind::OracleCropnet);
        }
        kinds
    }

    /// Checks every setting that can be checked without the data, all at once, so that a bad
    /// value stops the run before anything is written or trained rather than after hours.
    ///
    /// # Errors
    /// [`TrainError::Settings`] listing every problem, each naming the setting and its value.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        let mut bad = |p: String| problems.push(p);
        if self.image_size < 16 {
            bad(format!(
                "image_size {}: the models need images of at least 16 pixels",
                self.image_size
            ));
        }
        if let Some(size) = self.chipnet_image_size.filter(|&s| s < 16) {
            bad(format!(
                "chipnet_image_size {size}: ChipNet needs images of at least 16 pixels"
            ));
        }
        if self.folds < 2 {
            bad(format!(
                "folds {}: cross-validation needs at least 2 folds",
                self.folds
            ));
        }
        self.model_problems(&mut bad);
        if self.models.is_empty() {
            bad("models is empty: name at least one model to train".into());
        }
        for (i, k) in self.models.iter().enumerate() {
            if self.models[..i].contains(k) {
                bad(format!("models lists {k} twice"));
            }
        }
        let kinds = self.pipeline_models(false);
        if kinds.contains(&ModelKind::Chipnet) {
            let size = self.image_size_of(ModelKind::Chipnet) as usize;
            let chip = self.model.chip;
            if chip < 8 || chip > size || !size.is_multiple_of(chip) {
                // A valid pair either way: this chip (at least 8) with a fitting size, or this
                // size with a fitting chip.
                let valid_chip = chip.max(8);
                let (setting, flag) = if self.chipnet_image_size.is_some() {
                    ("chipnet_image_size", "--chipnet-image-size")
                } else {
                    ("image_size", "--image-size")
                };
                bad(format!(
                    "chip {chip} with {setting} {size}: ChipNet cuts each image into whole \
                     chips of at least 8 pixels, so the image size must be a multiple of the \
                     chip (e.g. {flag} {} with --chip {valid_chip}, or --chip {})",
                    (size / valid_chip).max(1) * valid_chip,
                    largest_chip_dividing(size)
                ));
            }
        }
        for kind in kinds
            .iter()
            .copied()
            .filter(|&k| k != ModelKind::OracleCropnet)
        {
            if let Err(e) = self.schedules.of(kind).check() {
                bad(format!("schedules.{}: {}", schedule_name(kind), e));
            }
        }
        self.ensemble_problems(&mut bad);
        let b = &self.boxes;
        if !(b.k.is_finite() && b.margin.is_finite() && b.margin >= 0.0) {
            bad(format!(
                "boxes: k {} must be finite and margin {} non-negative",
                b.k, b.margin
            ));
        }
        if !(b.uniform_tolerance.is_finite() && b.uniform_tolerance >= 0.0) {
            bad(format!(
                "boxes.uniform_tolerance {} must be non-negative",
                b.uniform_tolerance
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TrainError::Settings(problems))
        }
    }

    /// Problems of the ensemble's members and weights.
    fn ensemble_problems(&self, bad: &mut impl FnMut(String)) {
        for &EnsembleMember {
            model: kind,
            weight: w,
        } in &self.ensemble
        {
            if !self.models.contains(&kind) && kind != ModelKind::OracleCropnet {
                bad(format!(
                    "ensemble member {kind} is not among the models ({}): the ensemble would \
                     fail after everything else has trained; add it to models or drop it from \
                     the ensemble",
                    names(&self.models)
                ));
            }
            if !(w.is_finite() && w >= 0.0) {
                bad(format!(
                    "ensemble weight of {kind} is {w}: must be non-negative"
                ));
            }
        }
        if !self.fit_ensemble
            && !self.ensemble.is_empty()
            && self.ensemble.iter().map(|m| m.weight).sum::<f64>() <= 0.0
        {
            bad("ensemble weights are all zero".into());
        }
    }

    /// Problems of the architecture settings.
    fn model_problems(&self, bad: &mut impl FnMut(String)) {
        if let Err(e) = self.model.backbone_config() {
            bad(e.to_string());
        }
        if let Some(w) = &self.model.weights
            && !w.is_file()
        {
            bad(format!("weights {}: no such file", w.display()));
        }
        for (name, p) in [
            ("dropout", self.model.dropout),
            ("attention_dropout", self.model.attention_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                bad(format!("{name} {p}: must be at least 0 and below 1"));
            }
        }
        if self.model.attention_hidden == 0 || self.model.meta_hidden.contains(&0) {
            bad(format!(
                "attention_hidden {} and meta_hidden {:?} must be positive",
                self.model.attention_hidden, self.model.meta_hidden
            ));
        }
        if self.model.attention_kernel.is_multiple_of(2) || self.model.attention_kernel > 7 {
            bad(format!(
                "attention_kernel {}: must be odd and at most 7 (3 is the seed's, 1 scores \
                 each chip alone)",
                self.model.attention_kernel
            ));
        }
        if !(self.model.contrast_prior.is_finite() && self.model.contrast_prior >= 0.0) {
            bad(format!(
                "contrast_prior {}: must be a weight of 0 or more",
                self.model.contrast_prior
            ));
        }
    }

    /// Loads the backbone weights once on `device`, so that a wrong file (another
    /// architecture, a corrupt file) fails before the run starts rather than at its first fold.
    ///
    /// # Errors
    /// Weights that cannot be loaded into the backbone.
    pub fn check_weights(&self, device: &burn::prelude::Device) -> Result<()> {
        if self.model.weights.is_some() {
            self.model.init(ModelKind::Resnet, 0, device)?;
        }
        Ok(())
    }

    /// The settings in which `self` (saved) and `given` differ, one line each:
    /// `schedules.resnet.max_epochs: saved 6, given 20`.
    pub fn differences(&self, given: &Self) -> Vec<String> {
        let (Ok(saved), Ok(given)) = (serde_json::to_value(self), serde_json::to_value(given))
        else {
            return vec!["(the configurations cannot be compared)".into()];
        };
        let mut out = Vec::new();
        diff(&saved, &given, "", &mut out);
        out
    }
}

fn schedule_name(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Cropnet | ModelKind::OracleCropnet => "cropnet",
        k => k.name(),
    }
}

/// The models' names, comma-separated, as `--models` takes them.
pub(super) fn names(kinds: &[ModelKind]) -> String {
    kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
}

fn largest_chip_dividing(size: usize) -> usize {
    (8..=size.min(64))
        .rev()
        .find(|c| size.is_multiple_of(*c))
        .unwrap_or(8)
}

/// An error naming every key of `given` that `known` lacks.
fn refuse_unknown_keys(given: &Value, known: &Value) -> std::result::Result<(), String> {
    let mut unknown = Vec::new();
    unknown_keys(given, known, "", &mut unknown);
    if unknown.is_empty() {
        return Ok(());
    }
    Err(format!(
        "unknown key{} {} (agc would ignore {}; check the spelling against a run's config.json)",
        if unknown.len() == 1 { "" } else { "s" },
        unknown.join(", "),
        if unknown.len() == 1 { "it" } else { "them" },
    ))
}

/// `given` laid over `base`: objects merge key by key, anything else in `given` replaces.
fn merged(base: Value, given: Value) -> Value {
    match (base, given) {
        (Value::Object(mut base), Value::Object(given)) => {
            for (key, value) in given {
                let under = base.remove(&key).unwrap_or(Value::Null);
                base.insert(key, merged(under, value));
            }
            Value::Object(base)
        }
        (_, given) => given,
    }
}

/// Keys of `given` (a parsed file) that `known` (a complete configuration) lacks.
fn unknown_keys(given: &Value, known: &Value, at: &str, out: &mut Vec<String>) {
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => {
            for (key, value) in g {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match k.get(key) {
                    Some(known) => unknown_keys(value, known, &path, out),
                    None => out.push(format!("{path:?}")),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            for (i, (g, k)) in g.iter().zip(k).enumerate() {
                unknown_keys(g, k, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn diff(saved: &Value, given: &Value, at: &str, out: &mut Vec<String>) {
    if saved == given {
        return;
    }
    if let (Value::Object(s), Value::Object(g)) = (saved, given) {
        let mut keys: Vec<&String> = s.keys().chain(g.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            diff(
                s.get(key).unwrap_or(&Value::Null),
                g.get(key).unwrap_or(&Value::Null),
                &path,
                out,
            );
        }
    } else {
        out.push(format!("{at}: saved {saved}, given {given}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PipelineConfig {
        PipelineConfig::demo("data".into())
    }

    #[test]
    fn the_presets_are_valid() {
        for name in PipelineConfig::PRESETS {
            PipelineConfig::preset(name, "d".into())
                .expect("a preset")
                .validate()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let err = PipelineConfig::preset("gpu", "d".into()).expect_err("unknown");
        assert!(err.to_string().contains("seed, demo, cpu"), "{err}");
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let mut c = config();
        c.image_size = 80;
        c.model.chip = 32;
        c.folds = 1;
        c.model.dropout = 1.5;
        c.model.attention_kernel = 2;
        c.model.contrast_prior = f32::NAN;
        c.models = vec![ModelKind::Resnet, ModelKind::Chipnet];
        let err = c.validate().expect_err("bad").to_string();
        for part in [
            "chip 32 with image_size 80",
            "folds 1",
            "dropout 1.5",
            "attention_kernel 2",
            "contrast_prior NaN",
            "member cropnet",
        ] {
            assert!(err.contains(part), "{part:?} not in {err}");
        }
        // A chip below 8 pixels is refused, and the suggestion is a valid pair.
        let mut c = config();
        c.image_size = 112;
        c.model.chip = 4;
        let err = c.validate().expect_err("4-px chips").to_string();
        assert!(
            err.contains("chip 4 with image_size 112")
                && err.contains("--image-size 112 with --chip 8")
                && !err.contains("--chip 4"),
            "{err}"
        );
        let mut c = config();
        c.image_size = 0;
        assert!(
            c.validate()
                .expect_err("0")
                .to_string()
                .contains("image_size 0")
        );
        let mut c = config();
        c.schedules.cropnet.batch_size = 1;
        let err = c.validate().expect_err("batch").to_string();
        assert!(
            err.contains("schedules.cropnet") && err.contains("batch_size"),
            "{err}"
        );
    }

    #[test]
    fn a_zero_width_a_learning_rate_not_above_zero_and_a_negative_margin_are_named() {
        for (lr, shown) in [
            (0.0, "lr_backbone 0:"),
            (-1e-3, "lr_backbone -0.001"),
            (f64::NAN, "lr_backbone NaN"),
        ] {
            let mut c = config();
            c.schedules.resnet.lr_backbone = lr;
            let err = c.validate().expect_err("bad lr").to_string();
            assert!(err.contains(&format!("schedules.resnet: {shown}")), "{err}");
        }
        let mut c = config();
        c.schedules.cropnet.lr_head = f64::INFINITY;
        c.model.backbone = "w0".into();
        c.boxes.margin = -0.1;
        let err = c.validate().expect_err("bad settings").to_string();
        for part in ["lr_head inf", "backbone \"w0\"", "margin -0.1"] {
            assert!(err.contains(part), "{part:?} not in {err}");
        }
        let mut c = config();
        c.model.backbone = "w64".into();
        c.validate().expect("any positive width");
    }

    #[test]
    fn chipnet_may_see_its_own_image_size() {
        let mut c = config();
        c.image_size = 112;
        c.model.chip = 8;
        assert_eq!(c.cache_sizes(), [112]);
        c.chipnet_image_size = Some(224);
        assert_eq!(c.image_size_of(ModelKind::Chipnet), 224);
        assert_eq!(c.image_size_of(ModelKind::Resnet), 112);
        assert_eq!(c.image_size_of(ModelKind::Cropnet), 112);
        assert_eq!(c.cache_sizes(), [112, 224]);
        assert_eq!(c.cache_dir_of(224), Path::new("data/agc-cache-224"));
        c.cache_dir = Some("caches".into());
        assert_eq!(c.cache_dir(), Path::new("caches"));
        assert_eq!(c.cache_dir_of(224), Path::new("caches/agc-cache-224"));
        c.validate().expect("224 px in 8-px chips");
        // The chip must divide ChipNet's size, and the error names that setting.
        c.chipnet_image_size = Some(220);
        let err = c.validate().expect_err("220 / 8").to_string();
        assert!(
            err.contains("chip 8 with chipnet_image_size 220")
                && err.contains("--chipnet-image-size 216 with --chip 8"),
            "{err}"
        );
        c.chipnet_image_size = Some(8);
        let err = c.validate().expect_err("8 px").to_string();
        assert!(err.contains("chipnet_image_size 8"), "{err}");
        // A configuration written before the setting existed reads as "the same size".
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.json");
        let mut value = serde_json::to_value(config()).expect("json");
        value
            .as_object_mut()
            .expect("object")
            .remove("chipnet_image_size");
        std::fs::write(&path, value.to_string()).expect("write");
        assert_eq!(PipelineConfig::read(&path).expect("read"), config());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.json");
        let mut value = serde_json::to_value(config()).expect("json");
        value["epochs"] = 99.into();
        value["schedules"]["resnet"]["lr_backbon"] = 0.1.into();
        std::fs::write(&path, value.to_string()).expect("write");
        let err = PipelineConfig::read(&path)
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("\"epochs\""), "{err}");
        assert!(err.contains("\"schedules.resnet.lr_backbon\""), "{err}");
        std::fs::write(&path, serde_json::to_string(&config()).expect("json")).expect("write");
        assert_eq!(PipelineConfig::read(&path).expect("good"), config());
    }

    #[test]
    fn a_typo_is_named_before_a_missing_key_and_a_partial_file_keeps_the_base() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.json");
        std::fs::write(
            &path,
            r#"{"imagesize": 96, "schedules": {"resnet": {"lr": 1}}}"#,
        )
        .expect("write");
        for err in [
            PipelineConfig::read(&path).expect_err("typo"),
            PipelineConfig::read_over(&path, &config()).expect_err("typo"),
        ] {
            let err = err.to_string();
            assert!(
                err.contains("c.json")
                    && err.contains("unknown keys \"imagesize\", \"schedules.resnet.lr\"")
                    && !err.contains("missing field"),
                "{err}"
            );
        }

        std::fs::write(
            &path,
            r#"{"image_size": 96, "schedules": {"resnet": {"max_epochs": 2}}}"#,
        )
        .expect("write");
        let err = PipelineConfig::read(&path)
            .expect_err("incomplete")
            .to_string();
        assert!(err.contains("missing field"), "{err}");
        let read = PipelineConfig::read_over(&path, &config()).expect("partial");
        let mut want = config();
        want.image_size = 96;
        want.schedules.resnet.max_epochs = 2;
        assert_eq!(read, want);
    }

    #[test]
    fn differences_name_each_setting() {
        let saved = config();
        let mut given = config();
        given.schedules.resnet.max_epochs = 20;
        given.data = "other".into();
        let d = saved.differences(&given);
        assert_eq!(
            d,
            [
                "data: saved \"data\", given \"other\"",
                "schedules.resnet.max_epochs: saved 6, given 20"
            ]
        );
        assert!(saved.differences(&saved).is_empty());
    }

    #[test]
    fn cropnet_brings_chipnet_and_the_oracle_comes_with_true_boxes() {
        let mut c = config();
        c.models = vec![ModelKind::Resnet, ModelKind::Cropnet];
        assert_eq!(
            c.pipeline_models(true),
            [
                ModelKind::Resnet,
                ModelKind::Chipnet,
                ModelKind::Cropnet,
                ModelKind::OracleCropnet
            ]
        );
    }
}
