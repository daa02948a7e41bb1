//! A run's trained models for other tools: each fold's weights as `.safetensors` with PyTorch's
//! conventions (torchvision's key names for the backbones, `[out, in]` linear weights, batch
//! norms' `weight`/`bias`), and `model.json`, which says how to rebuild and feed them.
//!
//! ```text
//! OUT/model.json                     architecture, preprocessing, metadata vocabulary, ensemble
//! OUT/<model>/fold<k>.safetensors    backbone.conv1.weight, backbone.layer1.0.bn1.running_mean,
//!                                    ..., fc.weight (MetaResNet), attention.conv1.weight,
//!                                    head.fc.weight (ChipNet, AttnResNet)
//! ```
//!
//! `scripts/check_export.py` rebuilds the models in PyTorch from these two files alone and
//! checks them against agc's outputs (the fixtures of `tests/export_parity.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agc_core::BoxConfig;
use burn::module::Module as _;
use burn::prelude::Device;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError, io, read_json};
use crate::model::{ModelKind, ModelSpec, Net};
use crate::run::{PipelineConfig, TrainedRun};

/// The version of `model.json`'s layout.
pub const FORMAT: &str = "agc-export-1";

fn store_error(path: &Path) -> impl Fn(burn_store::SafetensorsStoreError) -> TrainError + '_ {
    move |e| TrainError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes `net`'s weights to `path` as safetensors with PyTorch's names and layouts.
///
/// # Errors
/// An unwritable file.
pub fn save_safetensors(net: &Net, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut store = SafetensorsStore::from_file(path)
        .with_to_adapter(BurnToPyTorchAdapter)
        .skip_enum_variants(true)
        .with_key_remapping(r"\.downsample\.conv\.", ".downsample.0.")
        .with_key_remapping(r"\.downsample\.bn\.", ".downsample.1.")
        .metadata("format", FORMAT);
    net.save_into(&mut store).map_err(store_error(path))
}

/// Loads weights written by [`save_safetensors`] into `net` (built with the same
/// architecture), refusing a file that lacks any of its tensors.
///
/// # Errors
/// An unreadable file, or one that does not fit the architecture (the first problem named).
pub fn load_safetensors(mut net: Net, path: &Path) -> Result<Net> {
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter)
        .skip_enum_variants(true)
        .with_key_remapping(r"\.downsample\.0\.", ".downsample.conv.")
        .with_key_remapping(r"\.downsample\.1\.", ".downsample.bn.")
        .allow_partial(true);
    let result = net.load_from(&mut store).map_err(store_error(path))?;
    let problem = result.errors.first().map(|e| format!("{e:?}")).or_else(|| {
        result
            .missing
            .first()
            .map(|m| format!("{} tensors missing, the first {m:?}", result.missing.len()))
    });
    match problem {
        Some(message) => Err(TrainError::Parse {
            path: path.to_path_buf(),
            message,
        }),
        None => Ok(net),
    }
}

/// What [`export_run`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// `model.json`.
    pub description: PathBuf,
    /// Every weight file, model by model and fold by fold.
    pub weights: Vec<PathBuf>,
}

/// `model.json`: everything another framework needs to rebuild an export's models and feed
/// them as the run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportDescription {
    /// [`FORMAT`].
    pub format: String,
    /// The agc that wrote it.
    pub agc_version: String,
    /// Each model: its network, backbone and fold weight files.
    pub models: BTreeMap<ModelKind, ExportedModel>,
    /// The ensemble's members and weights, summing to 1 (empty without an ensemble).
    pub ensemble: BTreeMap<ModelKind, f64>,
    /// How images become the models' inputs.
    pub preprocessing: Preprocessing,
    /// The metadata vocabulary, when the MetaResNets take metadata.
    pub metadata: Option<MetadataVocabulary>,
    /// How attention maps become crop boxes.
    pub attention_box: BoxConfig,
    /// Rounds of test-time augmentation the run scored with.
    pub tta_rounds: usize,
}

/// One model of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedModel {
    /// Side of the images it sees (exports before this key: the preprocessing's).
    #[serde(default)]
    pub image_size: Option<u32>,
    /// The network around the backbone.
    pub network: Network,
    /// The backbone.
    pub backbone: BackboneDescription,
    /// What the output means.
    pub output: String,
    /// Each fold's weight file, relative to `model.json`.
    pub folds: Vec<String>,
}

/// The network around a backbone, by type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Network {
    /// ResNet, CropNet and the oracle CropNet.
    MetaResNet {
        /// The forward pass, in words.
        forward: String,
        /// Width of the metadata vector (0: none).
        #[serde(default)]
        meta_dim: usize,
        /// The metadata MLP's widths.
        meta_hidden: [usize; 2],
    },
    /// ChipNet.
    ChipNet {
        /// The forward pass, in words.
        forward: String,
        /// Chip side.
        chip: usize,
        /// Attention head width.
        attention_hidden: usize,
        /// Attention kernel side.
        attention_kernel: usize,
        /// Weight of the contrast prior.
        #[serde(default)]
        contrast_prior: f32,
        /// The field mask, when the model uses one.
        #[serde(default)]
        field_mask: Option<FieldMaskRule>,
    },
    /// AttnResNet.
    AttnResNet {
        /// The forward pass, in words.
        forward: String,
        /// Attention head width.
        attention_hidden: usize,
    },
}

/// ChipNet's field mask, with its rule in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldMaskRule {
    /// The rule.
    pub rule: String,
    /// Per-channel mean of the normalisation.
    pub mean: [f32; 3],
    /// Per-channel standard deviation of the normalisation.
    pub std: [f32; 3],
    /// Black level.
    pub level: f32,
    /// Share of black pixels that puts a chip outside.
    pub share: f32,
    /// Share of black pixels at most of a chip the contrast prior compares.
    pub clean: f32,
}

/// A backbone of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneDescription {
    /// agc's preset name (`tiny`, `w64`, `resnet18`, ...).
    pub preset: String,
    /// Block kind (`Basic`, `Bottleneck`).
    pub block: String,
    /// Blocks per stage.
    pub layers: [usize; 4],
    /// Width of the first stage.
    pub width: usize,
    /// Width of the embedding.
    pub embed_dim: usize,
    /// The weight files' key names.
    pub keys: String,
}

/// How a photograph becomes a model's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Side of the images the models see (unless a model says otherwise).
    pub image_size: u32,
    /// Where each model's own size is.
    #[serde(default)]
    pub image_size_of_each_model: String,
    /// The crop.
    pub crop: String,
    /// The resize.
    pub resize: String,
    /// The channels' layout and normalisation.
    pub channels: String,
    /// ImageNet mean.
    pub mean: [f64; 3],
    /// ImageNet standard deviation.
    pub std: [f64; 3],
}

/// The metadata vocabulary of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataVocabulary {
    /// The one-hot layout.
    pub layout: String,
    /// Known sexes.
    pub sexes: Vec<String>,
    /// Known ages.
    pub ages: Vec<String>,
    /// Known body sites.
    pub sites: Vec<String>,
}

/// Exports every trained model of the run in `run` into `out` (which must not exist yet; it
/// is written beside it and renamed when complete). Models are rebuilt on `device` to be
/// written.
///
/// # Errors
/// A folder that holds no run or an unfinished model (with the command that trains it), an
/// existing `out`, unwritable files.
pub fn export_run(run: &Path, out: &Path, device: &Device) -> Result<ExportSummary> {
    let run = TrainedRun::open(run)?;
    if out.exists() {
        return Err(TrainError::Occupied {
            path: out.to_path_buf(),
            message: "exists: export into a new folder".into(),
        });
    }
    let (config, encoder, meta_dim) = (&run.config, &run.encoder, run.meta_dim());
    let partial = agc_data::fsutil::partial_path(out);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    let mut models = BTreeMap::new();
    let mut weights = Vec::new();
    for kind in config.pipeline_models(run.has_oracle()) {
        let mut files = Vec::new();
        for (f, net) in run.checkpoints().load_all(kind, device)?.iter().enumerate() {
            let name = format!("{}/fold{f}.safetensors", kind.name());
            save_safetensors(net, &partial.join(&name))?;
            weights.push(out.join(&name));
            files.push(name);
        }
        models.insert(kind, describe(kind, config, meta_dim, files)?);
    }
    // One shape whichever the source: `{"model": weight}`, the weights summing to 1.
    let ensemble: BTreeMap<ModelKind, f64> = if let Some(metrics) = run.metrics()? {
        metrics.ensemble_weights
    } else {
        let total: f64 = config.ensemble.iter().map(|m| m.weight).sum();
        config
            .ensemble
            .iter()
            .filter(|_| total > 0.0)
            .map(|m| (m.model, m.weight / total))
            .collect()
    };
    let description = ExportDescription {
        format: FORMAT.into(),
        agc_version: env!("CARGO_PKG_VERSION").into(),
        models,
        ensemble,
        preprocessing: Preprocessing {
            image_size: config.image_size,
            image_size_of_each_model: "models.<name>.image_size (ChipNet may see a larger \
                                       image than the others)"
                .into(),
            crop: "the centre square of the photograph (side = the shorter side; offset = \
                   (long - short) / 2 rounded half to even, as torchvision's center_crop), \
                   after EXIF orientation"
                .into(),
            resize: "bilinear with antialiasing (PIL / torchvision antialias=True) to the \
                     model's image_size x image_size"
                .into(),
            channels: "RGB, values / 255, then (x - mean) / std per channel, NCHW".into(),
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        },
        metadata: config.metadata.then(|| MetadataVocabulary {
            layout: "one-hot [sex..., sex unknown, age..., age unknown, site..., site \
                     unknown]; a value not listed goes to its group's unknown slot; ages as \
                     written in `ages`"
                .into(),
            sexes: encoder.sexes.clone(),
            ages: encoder.ages.clone(),
            sites: encoder.sites.clone(),
        }),
        attention_box: config.boxes.clone(),
        tta_rounds: config.schedules.of(ModelKind::Resnet).tta,
    };
    let path = partial.join("model.json");
    agc_data::fsutil::write_json(&path, &description)?;
    std::fs::rename(&partial, out).map_err(io(out))?;
    Ok(ExportSummary {
        description: out.join("model.json"),
        weights,
    })
}

/// How to rebuild one model in another framework.
fn describe(
    kind: ModelKind,
    config: &PipelineConfig,
    meta_dim: usize,
    folds: Vec<String>,
) -> Result<ExportedModel> {
    let backbone = config.model.backbone_config()?;
    let spec = &config.model;
    let network = match kind {
        ModelKind::Resnet | ModelKind::Cropnet | ModelKind::OracleCropnet => Network::MetaResNet {
            forward: "fc(dropout(cat(backbone.embed(x), meta(m)))), meta = \
                      bn2(relu(fc2(bn1(relu(fc1(m)))))) when meta_dim > 0"
                .into(),
            meta_dim,
            meta_hidden: spec.meta_hidden,
        },
        ModelKind::Chipnet => Network::ChipNet {
            forward: "chips of chip x chip (row-major) -> backbone.embed each -> a grid map -> \
                      attention: softmax over positions of conv2(bn(relu(conv1(map)))) (k x k \
                      convs, k = attention_kernel, padding k // 2) + -1e4 on chips outside the \
                      field (field_mask) + contrast_prior x the chips' contrast \
                      (agc_core::contrast_prior) -> pooled = sum of map x weights -> head: \
                      fc(dropout(bn(relu(pooled))))"
                .into(),
            chip: spec.chip,
            attention_hidden: spec.attention_hidden,
            attention_kernel: spec.attention_kernel,
            contrast_prior: spec.contrast_prior,
            field_mask: spec.chip_field_mask().map(|mask| FieldMaskRule {
                rule: "raw = x * std + mean per channel; a pixel is black when the mean of its \
                       raw channels < level; a chip is outside when >= share of its pixels are \
                       black, and outside chips get bias -1e4 on their score (unless every chip \
                       of the image is outside); the contrast prior compares only the chips \
                       with <= clean of their pixels black (all chips if there are none) and \
                       gives the others 0"
                    .into(),
                mean: mask.mean,
                std: mask.std,
                level: mask.level,
                share: mask.share,
                clean: mask.clean,
            }),
        },
        ModelKind::Attnresnet => Network::AttnResNet {
            forward: "backbone.features(x) -> attention and head as ChipNet's".into(),
            attention_hidden: spec.attention_hidden,
        },
    };
    Ok(ExportedModel {
        image_size: Some(config.image_size_of(kind)),
        network,
        backbone: BackboneDescription {
            preset: spec.backbone.clone(),
            block: format!("{:?}", backbone.block),
            layers: backbone.layers,
            width: backbone.width,
            embed_dim: backbone.embed_dim(),
            keys: "torchvision's (conv1, bn1, layer1.0.conv1, ..., layer4.1.downsample.0)".into(),
        },
        output: "one logit; probability = sigmoid(logit); the run averages the folds' \
                 probabilities"
            .into(),
        folds,
    })
}

/// Loads an export written by [`export_run`]: every model of `model.json` with its folds'
/// weights, rebuilt on `device` (in inference mode; dropout is off).
///
/// # Errors
/// A missing or malformed `model.json`, an unknown format, or weights that do not fit.
pub fn load_export(dir: &Path, device: &Device) -> Result<Vec<(ModelKind, Vec<Net>)>> {
    let path = dir.join("model.json");
    let description: ExportDescription = read_json(&path)?;
    if description.format != FORMAT {
        return Err(TrainError::Parse {
            path,
            message: format!(
                "format {:?} is not {FORMAT}: written by another agc",
                description.format
            ),
        });
    }
    let mut out = Vec::new();
    for (kind, model) in description.models {
        let defaults = ModelSpec::default();
        let mut spec = ModelSpec {
            backbone: model.backbone.preset,
            ..defaults
        };
        let meta_dim = match model.network {
            Network::MetaResNet {
                meta_dim,
                meta_hidden,
                ..
            } => {
                spec.meta_hidden = meta_hidden;
                meta_dim
            }
            Network::ChipNet {
                chip,
                attention_hidden,
                attention_kernel,
                contrast_prior,
                field_mask,
                ..
            } => {
                spec.chip = chip;
                spec.attention_hidden = attention_hidden;
                spec.attention_kernel = attention_kernel;
                spec.contrast_prior = contrast_prior;
                spec.field_mask = field_mask.is_some();
                0
            }
            Network::AttnResNet {
                attention_hidden, ..
            } => {
                spec.attention_hidden = attention_hidden;
                0
            }
        };
        let mut nets = Vec::with_capacity(model.folds.len());
        for file in &model.folds {
            let fresh = spec.init(kind, meta_dim, device)?;
            nets.push(load_safetensors(fresh, &dir.join(file))?.valid());
        }
        out.push((kind, nets));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> serde_json::Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/export-attention/model.json");
        serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json")
    }

    #[test]
    fn model_json_is_read_into_types_and_written_back_with_the_same_keys() {
        let given = fixture();
        let description: ExportDescription =
            serde_json::from_value(given.clone()).expect("the committed export's model.json");
        let Network::ChipNet { field_mask, .. } = &description.models[&ModelKind::Chipnet].network
        else {
            panic!("chipnet is a ChipNet")
        };
        assert_eq!(field_mask.as_ref().map(|m| m.share), Some(0.75));
        assert_eq!(description.tta_rounds, 0);
        let again = serde_json::to_value(&description).expect("json");
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object().expect("object").keys().cloned().collect()
        };
        assert_eq!(keys(&again), keys(&given));
        assert_eq!(
            again["models"]["resnet"]["network"],
            given["models"]["resnet"]["network"]
        );
    }

    #[test]
    fn a_network_of_an_unknown_type_is_refused_by_name() {
        let mut given = fixture();
        given["models"]["resnet"]["network"]["type"] = "VisionTransformer".into();
        let err = serde_json::from_value::<ExportDescription>(given).expect_err("unknown type");
        assert!(err.to_string().contains("VisionTransformer"), "{err}");
    }
}
