//! Atomic checkpoints: a killed run never leaves a half-written checkpoint behind.
//!
//! Models and optimizer states are serialised to bytes as Burn 0.22 burnpack records (`.bpk`:
//! full precision, parameter ids kept, so optimizer moments reattach to their parameters) and
//! written with `agc_data::fsutil::write_atomic` (a `.partial` sibling, synced, renamed over
//! the target).
//!
//! Checkpoints of agc builds on Burn 0.21 (named MessagePack, `.mpk`) cannot be read: loading
//! one, or a run directory that only has them, is an error that says so.

use std::path::{Path, PathBuf};

use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::store::{ModuleRecord, RecordError};
use burn::tensor::Bytes;
use burn_store::burn_pack::MAGIC_NUMBER;

/// The extension of agc's checkpoints.
pub const EXTENSION: &str = "bpk";

/// The extension of the checkpoints of agc on Burn 0.21, which [`load`] names and refuses.
const BURN_0_21_EXTENSION: &str = "mpk";

/// Whether `path` holds a checkpoint, or was a checkpoint of agc on Burn 0.21 (then [`load`]
/// says so): whether a step that needs it has run.
pub fn exists(path: &Path) -> bool {
    path.is_file() || path.with_extension(BURN_0_21_EXTENSION).is_file()
}

/// Why a checkpoint could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The checkpoint file.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// The checkpoint could not be written.
    #[error(transparent)]
    Write(agc_data::DataError),
    /// The file is a checkpoint of an agc built on Burn 0.21, whose format Burn 0.22 cannot read.
    #[error(
        "{path}: a checkpoint written by agc on Burn 0.21 (MessagePack), which this agc (Burn \
         0.22) cannot read; train again into a new --out directory, or go on with the agc \
         build (on Burn 0.21) that wrote this run"
    )]
    Burn021 {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// The bytes are not a record of this model.
    #[error("{path}: not a checkpoint of this model: {message}")]
    Record {
        /// The checkpoint file.
        path: PathBuf,
        /// What Burn said.
        message: String,
    },
}

fn record_error(path: &Path) -> impl FnOnce(RecordError) -> CheckpointError + '_ {
    move |e| CheckpointError::Record {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Reads `path`, refusing anything that is not a burnpack file, and naming 0.21 checkpoints.
fn read_burnpack(path: &Path) -> Result<Bytes, CheckpointError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => {
            // A run directory of an agc on Burn 0.21 holds `.mpk` files instead.
            let old = path.with_extension(BURN_0_21_EXTENSION);
            return Err(if old.is_file() {
                CheckpointError::Burn021 { path: old }
            } else {
                CheckpointError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            });
        }
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !bytes.starts_with(&MAGIC_NUMBER.to_le_bytes()) {
        // Burn 0.21's named MessagePack records are maps (`BurnRecord { metadata, item }`):
        // 0x80–0x8f, 0xde or 0xdf first.
        let msgpack_map = matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf));
        return Err(if msgpack_map {
            CheckpointError::Burn021 {
                path: path.to_path_buf(),
            }
        } else {
            CheckpointError::Record {
                path: path.to_path_buf(),
                message: "not a burnpack file (no \"NRUB\" header)".into(),
            }
        });
    }
    Ok(Bytes::from_bytes_vec(bytes))
}

/// Saves `model` to `path` atomically (the path is used as given, extension included).
///
/// # Errors
/// If the record cannot be serialised or the file cannot be written.
pub fn save<M: Module>(model: &M, path: &Path) -> Result<(), CheckpointError> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(record_error(path))?;
    agc_data::fsutil::write_atomic(path, &bytes).map_err(CheckpointError::Write)
}

/// Loads a checkpoint written by [`save`] into `model` (built with the same configuration).
///
/// # Errors
/// If the file cannot be read, was written by agc on Burn 0.21, or holds no record of this
/// model (another architecture: missing, unused or mis-shaped tensors).
pub fn load<M: Module>(model: M, path: &Path) -> Result<M, CheckpointError> {
    let record = ModuleRecord::from_bytes(read_burnpack(path)?).map_err(record_error(path))?;
    model.try_load_record(record).map_err(record_error(path))
}

/// Saves an optimizer's state (its moments, keyed by parameter id) to `path` atomically.
///
/// # Errors
/// If the state cannot be serialised or the file cannot be written.
pub fn save_optimizer(optim: &ModuleOptimizer, path: &Path) -> Result<(), CheckpointError> {
    let bytes = optim.into_bytes().map_err(record_error(path))?;
    agc_data::fsutil::write_atomic(path, &bytes).map_err(CheckpointError::Write)
}

/// Loads an optimizer state written by [`save_optimizer`] into `optim`.
///
/// # Errors
/// If the file cannot be read, was written by agc on Burn 0.21, or is not an optimizer state.
pub fn load_optimizer(
    optim: ModuleOptimizer,
    path: &Path,
) -> Result<ModuleOptimizer, CheckpointError> {
    optim
        .from_bytes(read_burnpack(path)?)
        .map_err(record_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn a_saved_model_loads_back_with_the_same_outputs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = Device::flex();
        let model: Linear = LinearConfig::new(4, 2).init(&dev);
        let x = Tensor::<2>::from_floats([[1.0, 2.0, 3.0, 4.0]], &dev);
        let expected = model.forward(x.clone()).into_data();
        let path = dir.path().join("fold0/best.bpk");
        save(&model, &path).expect("save");
        assert!(!path.with_file_name("best.bpk.partial").exists());
        let fresh: Linear = LinearConfig::new(4, 2).init(&dev);
        let loaded = load(fresh, &path).expect("load");
        assert_eq!(loaded.forward(x).into_data(), expected);
    }

    #[test]
    fn another_architecture_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = Device::flex();
        let path = dir.path().join("best.bpk");
        save(&LinearConfig::new(4, 2).init(&dev), &path).expect("save");
        let err = load(LinearConfig::new(4, 3).init(&dev), &path).expect_err("other shape");
        assert!(
            matches!(err, CheckpointError::Record { .. }) && err.to_string().contains("best.bpk"),
            "{err}"
        );
    }

    #[test]
    fn a_corrupt_or_missing_checkpoint_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = Device::flex();
        let bad = dir.path().join("bad.bpk");
        std::fs::write(&bad, b"not a record").expect("write");
        let err = load(LinearConfig::new(4, 2).init(&dev), &bad).expect_err("corrupt");
        assert!(err.to_string().contains("bad.bpk"), "{err}");
        let err = load(
            LinearConfig::new(4, 2).init(&dev),
            &dir.path().join("none.bpk"),
        )
        .expect_err("missing");
        assert!(err.to_string().contains("none.bpk"), "{err}");
    }

    #[test]
    fn a_checkpoint_exists_as_burnpack_or_as_burn_0_21_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("best.bpk");
        assert!(!exists(&path));
        std::fs::write(path.with_extension("mpk"), b"\x82").expect("write");
        assert!(
            exists(&path),
            "a 0.21 checkpoint counts, so loading can name it"
        );
        save(&LinearConfig::new(4, 2).init(&Device::flex()), &path).expect("save");
        assert!(exists(&path));
    }

    #[test]
    fn a_burn_0_21_checkpoint_is_named_as_such() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = Device::flex();
        // The first bytes of a record of Burn 0.21's `NamedMpkBytesRecorder`: rmp-serde writes
        // its `BurnRecord { metadata, item }` as a map of two entries, metadata first.
        let old = b"\x82\xa8metadata\x85\xa5float\xa3f32";
        let mpk = dir.path().join("last.mpk");
        std::fs::write(&mpk, old).expect("write");
        // Named directly…
        let err = load(LinearConfig::new(4, 2).init(&dev), &mpk).expect_err("0.21");
        assert!(matches!(err, CheckpointError::Burn021 { .. }), "{err}");
        assert!(err.to_string().contains("Burn 0.21"), "{err}");
        // …or found beside the burnpack file a run directory of this agc would hold.
        let err = load(
            LinearConfig::new(4, 2).init(&dev),
            &mpk.with_extension("bpk"),
        )
        .expect_err("0.21 run directory");
        assert!(
            matches!(err, CheckpointError::Burn021 { ref path } if path == &mpk),
            "{err}"
        );
    }

    #[test]
    fn optimizer_moments_survive_a_save_and_load() {
        use burn::optim::{AdamConfig, GradientsParams};
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = Device::flex().autodiff();
        let x = Tensor::<2>::from_floats([[1.0, -2.0, 3.0, 0.5]], &dev);
        let step = |model: Linear, optim: &mut ModuleOptimizer| {
            let loss = model.forward(x.clone()).powf_scalar(2.0).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            optim.step(1e-2, model, grads)
        };
        let mut optim = AdamConfig::new().init();
        let model = step(LinearConfig::new(4, 2).init(&dev), &mut optim);
        let (model_path, optim_path) = (dir.path().join("m.bpk"), dir.path().join("o.bpk"));
        save(&model, &model_path).expect("save model");
        save_optimizer(&optim, &optim_path).expect("save optimizer");
        // Go on without a break…
        let mut kept = optim.clone();
        let straight = step(model.clone(), &mut kept);
        // …and after a reload into fresh objects.
        let fresh = load(LinearConfig::new(4, 2).init(&dev), &model_path).expect("load model");
        let mut reloaded =
            load_optimizer(AdamConfig::new().init(), &optim_path).expect("load optimizer");
        let resumed = step(fresh, &mut reloaded);
        assert_eq!(
            straight.weight.val().into_data(),
            resumed.weight.val().into_data(),
            "the same step after a reload"
        );
    }
}
