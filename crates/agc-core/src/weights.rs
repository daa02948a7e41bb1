//! Loading torchvision ResNet weights (`.pth` or `.safetensors`) into a [`ResNet`].
//!
//! torchvision names the projection shortcut `downsample.0` (convolution) and `downsample.1`
//! (batch norm); agc names them `downsample.conv` and `downsample.bn`. PyTorch's `Linear` weight
//! is transposed and its batch-norm `weight`/`bias` become Burn's `gamma`/`beta`, both by
//! burn-store's PyTorch adapter. A `module.` prefix (from `DataParallel`) is stripped.

use std::path::{Path, PathBuf};

use burn_store::{
    ApplyError, ApplyResult, KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore,
};

use crate::resnet::ResNet;

/// Why weights could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// The file does not exist.
    #[error("{path}: no such weight file")]
    NotFound {
        /// The file asked for.
        path: PathBuf,
    },
    /// The extension names no format agc reads.
    #[error("{path}: unknown weight format; expected .pth, .pt, .bin, .ckpt or .safetensors")]
    UnknownFormat {
        /// The file asked for.
        path: PathBuf,
    },
    /// The file could not be read or parsed.
    #[error("{path}: cannot read weights: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        message: String,
    },
    /// Tensors the model needs are not in the file.
    #[error("{path}: {} tensor(s) the model needs are missing, first {first:?}; all: {keys:?}", keys.len())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The first missing key (model naming).
        first: String,
        /// Every missing key.
        keys: Vec<String>,
    },
    /// A tensor has another shape in the file than in the model.
    #[error(
        "{path}: tensor {key:?} has shape {found:?} in the file, the model expects {expected:?}"
    )]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor (model naming).
        key: String,
        /// Shape in the model.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// The file holds tensors the model has no place for, other than a head the model does not
    /// load: usually a deeper ResNet's file (ResNet-34 into a ResNet-18). Allowed with
    /// [`LoadOptions::allow_unused`].
    #[error(
        "{path}: {count} tensor(s) in the file are not used by the model (a deeper or different \
         ResNet?), first {first:?}; set allow_unused to load anyway"
    )]
    Unused {
        /// The file.
        path: PathBuf,
        /// How many tensors went unused.
        count: usize,
        /// The first unused keys in sorted order (model naming), at most five.
        first: Vec<String>,
    },
    /// Another per-tensor failure (data type, conversion).
    #[error("{path}: tensor {key:?}: {message}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        key: String,
        /// What went wrong.
        message: String,
    },
}

/// How to read a torchvision checkpoint.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Read the state dict under this key of a `.pth` checkpoint (such as `"state_dict"` or
    /// `"model"`), for checkpoints saved as `{"state_dict": ..., "epoch": ...}`.
    pub top_level_key: Option<String>,
    /// Leave the model's `fc` head as it is and ignore the file's `fc.*` tensors, for a head of
    /// another size (1000 ImageNet classes into a one-logit model).
    pub skip_head: bool,
    /// Load even if the file holds tensors the model has no place for (beyond a head the model
    /// does not load); they are listed in [`LoadReport::unused`]. Off by default: a ResNet-34
    /// file loaded into a ResNet-18 is an error, not a silent partial load.
    pub allow_unused: bool,
}

/// How many unused keys [`WeightsError::Unused`] names.
const UNUSED_NAMED: usize = 5;

/// What a successful load did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Tensors of the model that were set from the file.
    pub applied: usize,
    /// Tensors in the file that the model has no place for (such as `fc.*` for a backbone),
    /// without batch-norm bookkeeping (`num_batches_tracked`). Anything beyond the head is an
    /// error unless [`LoadOptions::allow_unused`].
    pub unused: Vec<String>,
}

impl ResNet {
    /// Loads a torchvision ResNet state dict from `path` (`.pth`/`.pt`/`.bin`/`.ckpt` PyTorch
    /// pickles or `.safetensors`).
    ///
    /// A model built without a head (`num_classes: None`), or loaded with
    /// [`LoadOptions::skip_head`], loads the backbone and ignores the file's `fc.*`. On error
    /// the model is left unchanged.
    ///
    /// # Errors
    /// A missing or unreadable file, an unknown extension, a tensor the model needs that the
    /// file lacks, or a tensor of another shape: each error names the file and the tensor.
    /// Tensors of the file the model does not use, other than `fc.*` for a model without a
    /// loaded head, are [`WeightsError::Unused`] unless [`LoadOptions::allow_unused`].
    pub fn load_torchvision(
        &mut self,
        path: impl AsRef<Path>,
        options: &LoadOptions,
    ) -> Result<LoadReport, WeightsError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(WeightsError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let mut model = self.clone();
        let head = if options.skip_head {
            model.fc.take()
        } else {
            None
        };
        let read = |e: &dyn std::fmt::Display| WeightsError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let result = match Format::of(path)? {
            Format::Pytorch => {
                let mut store = PytorchStore::from_file(path)
                    .remap(torchvision_remapper())
                    .validate(false)
                    .allow_partial(true);
                if let Some(key) = &options.top_level_key {
                    store = store.with_top_level_key(key.clone());
                }
                model.load_from(&mut store).map_err(|e| read(&e))?
            }
            Format::Safetensors => {
                let mut store = SafetensorsStore::from_file(path)
                    .with_from_adapter(PyTorchToBurnAdapter)
                    .skip_enum_variants(true)
                    .remap(torchvision_remapper())
                    .validate(false)
                    .allow_partial(true);
                model.load_from(&mut store).map_err(|e| read(&e))?
            }
        };
        let report = check(path, &result)?;
        if !options.allow_unused {
            let mut unexpected: Vec<&String> = report
                .unused
                .iter()
                .filter(|key| model.fc.is_some() || !key.starts_with("fc."))
                .collect();
            unexpected.sort();
            if !unexpected.is_empty() {
                return Err(WeightsError::Unused {
                    path: path.to_path_buf(),
                    count: unexpected.len(),
                    first: unexpected
                        .iter()
                        .take(UNUSED_NAMED)
                        .map(|k| (*k).clone())
                        .collect(),
                });
            }
        }
        if options.skip_head {
            model.fc = head;
        }
        *self = model;
        Ok(report)
    }
}

enum Format {
    Pytorch,
    Safetensors,
}

impl Format {
    fn of(path: &Path) -> Result<Self, WeightsError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("pth" | "pt" | "bin" | "ckpt" | "tar") => Ok(Self::Pytorch),
            Some("safetensors") => Ok(Self::Safetensors),
            _ => Err(WeightsError::UnknownFormat {
                path: path.to_path_buf(),
            }),
        }
    }
}

/// torchvision key → agc field: the two `downsample` children, and a `DataParallel` prefix.
fn torchvision_remapper() -> KeyRemapper {
    KeyRemapper::new()
        .add_pattern(r"^module\.", "")
        .and_then(|r| r.add_pattern(r"\.downsample\.0\.", ".downsample.conv."))
        .and_then(|r| r.add_pattern(r"\.downsample\.1\.", ".downsample.bn."))
        .expect("the patterns are valid regular expressions")
}

/// Turns burn-store's result into agc's error or report.
fn check(path: &Path, result: &ApplyResult) -> Result<LoadReport, WeightsError> {
    if let Some(error) = result.errors.first() {
        return Err(match error.clone() {
            ApplyError::ShapeMismatch {
                path: key,
                expected,
                found,
            } => WeightsError::ShapeMismatch {
                path: path.to_path_buf(),
                key,
                expected: expected.to_vec(),
                found: found.to_vec(),
            },
            ApplyError::DTypeMismatch {
                path: key,
                expected,
                found,
            } => WeightsError::Tensor {
                path: path.to_path_buf(),
                key,
                message: format!("data type {found:?} in the file, the model expects {expected:?}"),
            },
            ApplyError::AdapterError { path: key, message }
            | ApplyError::LoadError { path: key, message } => WeightsError::Tensor {
                path: path.to_path_buf(),
                key,
                message,
            },
        });
    }
    if !result.missing.is_empty() {
        let keys: Vec<String> = result.missing.iter().map(|(key, _)| key.clone()).collect();
        return Err(WeightsError::Missing {
            path: path.to_path_buf(),
            first: keys[0].clone(),
            keys,
        });
    }
    // burn-store lists PyTorch's batch-norm `weight`/`bias` as unused even when it applied them
    // as `gamma`/`beta`; drop those, and the batch-norm step counters.
    let applied_as = |key: &str| {
        let gamma = key.strip_suffix(".weight").map(|k| format!("{k}.gamma"));
        let beta = key.strip_suffix(".bias").map(|k| format!("{k}.beta"));
        [gamma, beta]
            .into_iter()
            .flatten()
            .any(|k| result.applied.iter().any(|a| strip_variants(a) == k))
    };
    let unused = result
        .unused
        .iter()
        .filter(|key| !key.ends_with("num_batches_tracked") && !applied_as(key))
        .cloned()
        .collect();
    Ok(LoadReport {
        applied: result.applied.len(),
        unused,
    })
}

/// A model path without enum variant segments (`layer1.0.Basic.bn1` → `layer1.0.bn1`).
fn strip_variants(path: &str) -> String {
    path.split('.')
        .filter(|s| !s.starts_with(|c: char| c.is_ascii_uppercase()))
        .collect::<Vec<_>>()
        .join(".")
}
