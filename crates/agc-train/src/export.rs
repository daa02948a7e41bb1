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

use burn::module::Module as _;
use burn::prelude::Device;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use serde_json::json;

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
        return Err(TrainError::Config(format!(
            "{} exists: export into a new folder",
            out.display()
        )));
    }
    let (config, encoder, meta_dim) = (&run.config, &run.encoder, run.meta_dim());
    let partial = agc_data::fsutil::partial_path(out);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    let mut models = serde_json::Map::new();
    let mut weights = Vec::new();
    for kind in config.pipeline_models(run.has_oracle()) {
        let mut files = Vec::new();
        for (f, net) in run.checkpoints().load_all(kind, device)?.iter().enumerate() {
            let name = format!("{}/fold{f}.safetensors", kind.name());
            save_safetensors(net, &partial.join(&name))?;
            weights.push(out.join(&name));
            files.push(name);
        }
        models.insert(
            kind.name().into(),
            describe(kind, config, meta_dim, &files)?,
        );
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
    let description = json!({
        "format": FORMAT,
        "agc_version": env!("CARGO_PKG_VERSION"),
        "models": models,
        "ensemble": ensemble,
        "preprocessing": {
            "image_size": config.image_size,
            "image_size_of_each_model": "models.<name>.image_size (ChipNet may see a larger \
                                         image than the others)",
            "crop": "the centre square of the photograph (side = the shorter side; offset = \
                     (long - short) / 2 rounded half to even, as torchvision's center_crop), \
                     after EXIF orientation",
            "resize": "bilinear with antialiasing (PIL / torchvision antialias=True) to \
                       the model's image_size x image_size",
            "channels": "RGB, values / 255, then (x - mean) / std per channel, NCHW",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        "metadata": if config.metadata {
            json!({
                "layout": "one-hot [sex..., sex unknown, age..., age unknown, site..., site \
                           unknown]; a value not listed goes to its group's unknown slot; \
                           ages as written in `ages`",
                "sexes": encoder.sexes,
                "ages": encoder.ages,
                "sites": encoder.sites,
            })
        } else {
            serde_json::Value::Null
        },
        "attention_box": config.boxes,
        "tta_rounds": config.schedules.of(ModelKind::Resnet).tta,
    });
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
    files: &[String],
) -> Result<serde_json::Value> {
    let backbone = config.model.backbone_config()?;
    let spec = &config.model;
    let network = match kind {
        ModelKind::Resnet | ModelKind::Cropnet | ModelKind::OracleCropnet => json!({
            "type": "MetaResNet",
            "forward": "fc(dropout(cat(backbone.embed(x), meta(m)))), meta = \
                        bn2(relu(fc2(bn1(relu(fc1(m)))))) when meta_dim > 0",
            "meta_dim": meta_dim,
            "meta_hidden": spec.meta_hidden,
        }),
        ModelKind::Chipnet => json!({
            "type": "ChipNet",
            "forward": "chips of chip x chip (row-major) -> backbone.embed each -> a grid \
                        map -> attention: softmax over positions of conv2(bn(relu(conv1(map)))) \
                        (k x k convs, k = attention_kernel, padding k // 2) + -1e4 on chips \
                        outside the field (field_mask) + contrast_prior x the chips' contrast \
                        (agc_core::contrast_prior) -> pooled = sum of map x weights -> head: fc(dropout(bn(relu(pooled))))",
            "chip": spec.chip,
            "attention_hidden": spec.attention_hidden,
            "attention_kernel": spec.attention_kernel,
            "contrast_prior": spec.contrast_prior,
            "field_mask": spec.chip_field_mask().map(|mask| json!({
                "rule": "raw = x * std + mean per channel; a pixel is black when the mean of \
                         its raw channels < level; a chip is outside when >= share of its \
                         pixels are black, and outside chips get bias -1e4 on their score \
                         (unless every chip of the image is outside); the contrast prior \
                         compares only the chips with <= clean of their pixels black (all \
                         chips if there are none) and gives the others 0",
                "mean": mask.mean,
                "std": mask.std,
                "level": mask.level,
                "share": mask.share,
                "clean": mask.clean,
            })),
        }),
        ModelKind::Attnresnet => json!({
            "type": "AttnResNet",
            "forward": "backbone.features(x) -> attention and head as ChipNet's",
            "attention_hidden": spec.attention_hidden,
        }),
    };
    Ok(json!({
        "image_size": config.image_size_of(kind),
        "network": network,
        "backbone": {
            "preset": spec.backbone,
            "block": format!("{:?}", backbone.block),
            "layers": backbone.layers,
            "width": backbone.width,
            "embed_dim": backbone.embed_dim(),
            "keys": "torchvision's (conv1, bn1, layer1.0.conv1, ..., layer4.1.downsample.0)",
        },
        "output": "one logit; probability = sigmoid(logit); the run averages the folds' \
                   probabilities",
        "folds": files,
    }))
}

/// Loads an export written by [`export_run`]: every model of `model.json` with its folds'
/// weights, rebuilt on `device` (in inference mode; dropout is off).
///
/// # Errors
/// A missing or malformed `model.json`, an unknown format, or weights that do not fit.
pub fn load_export(dir: &Path, device: &Device) -> Result<Vec<(ModelKind, Vec<Net>)>> {
    let path = dir.join("model.json");
    let spec: serde_json::Value = read_json(&path)?;
    let bad = |message: String| TrainError::Parse {
        path: path.clone(),
        message,
    };
    if spec["format"] != FORMAT {
        return Err(bad(format!(
            "format {} is not {FORMAT}: written by another agc",
            spec["format"]
        )));
    }
    let models = spec["models"]
        .as_object()
        .ok_or_else(|| bad("no models".into()))?;
    let mut out = Vec::new();
    for (name, desc) in models {
        let kind: ModelKind = name.parse().map_err(bad)?;
        let net = &desc["network"];
        let number = |v: &serde_json::Value, what: &str| {
            v.as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| bad(format!("{name}: {what} is not a number")))
        };
        let defaults = ModelSpec::default();
        let model = ModelSpec {
            backbone: desc["backbone"]["preset"]
                .as_str()
                .ok_or_else(|| bad(format!("{name}: no backbone preset")))?
                .to_string(),
            chip: if net["chip"].is_null() {
                defaults.chip
            } else {
                number(&net["chip"], "chip")?
            },
            attention_hidden: if net["attention_hidden"].is_null() {
                defaults.attention_hidden
            } else {
                number(&net["attention_hidden"], "attention_hidden")?
            },
            attention_kernel: if net["attention_kernel"].is_null() {
                defaults.attention_kernel
            } else {
                number(&net["attention_kernel"], "attention_kernel")?
            },
            field_mask: net["field_mask"].is_object(),
            contrast_prior: net["contrast_prior"].as_f64().unwrap_or(0.0) as f32,
            meta_hidden: if net["meta_hidden"].is_null() {
                defaults.meta_hidden
            } else {
                [
                    number(&net["meta_hidden"][0], "meta_hidden")?,
                    number(&net["meta_hidden"][1], "meta_hidden")?,
                ]
            },
            ..defaults
        };
        let meta_dim = if net["meta_dim"].is_null() {
            0
        } else {
            number(&net["meta_dim"], "meta_dim")?
        };
        let files = desc["folds"]
            .as_array()
            .ok_or_else(|| bad(format!("{name}: no folds")))?;
        let mut nets = Vec::with_capacity(files.len());
        for file in files {
            let file = dir.join(
                file.as_str()
                    .ok_or_else(|| bad(format!("{name}: a fold is not a file name")))?,
            );
            let fresh = model.init(kind, meta_dim, device)?;
            nets.push(load_safetensors(fresh, &file)?.valid());
        }
        out.push((kind, nets));
    }
    Ok(out)
}
