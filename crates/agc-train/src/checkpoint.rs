//! Atomic model checkpoints: a killed run never leaves a half-written checkpoint behind.
//!
//! Burn's file recorders delete the old file and then write the new one; here the record is
//! serialised to bytes (named MessagePack, full precision) and written with
//! `agc_data::fsutil::write_atomic` (a `.partial` sibling, synced, renamed over the target).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};

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
    /// The bytes are not a record of this model.
    #[error("{path}: not a checkpoint of this model: {message}")]
    Record {
        /// The checkpoint file.
        path: PathBuf,
        /// What the recorder said.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Saves `model` to `path` atomically (the path is used as given, extension included).
///
/// # Errors
/// If the record cannot be serialised or the file cannot be written.
pub fn save<B: Backend, M: Module<B>>(model: &M, path: &Path) -> Result<(), CheckpointError> {
    let bytes = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(model.clone().into_record(), ())
        .map_err(|e| CheckpointError::Record {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    agc_data::fsutil::write_atomic(path, &bytes).map_err(CheckpointError::Write)
}

/// Loads a checkpoint written by [`save`] into `model` (built with the same configuration).
///
/// # Errors
/// If the file cannot be read or holds no record of this model.
pub fn load<B: Backend, M: Module<B>>(
    model: M,
    path: &Path,
    device: &B::Device,
) -> Result<M, CheckpointError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .load(bytes, device)
        .map_err(|e| CheckpointError::Record {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(model.load_record(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    type B = burn::backend::Flex;

    #[test]
    fn a_saved_model_loads_back_with_the_same_outputs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = Default::default();
        let model: Linear<B> = LinearConfig::new(4, 2).init(&dev);
        let x = Tensor::<B, 2>::from_floats([[1.0, 2.0, 3.0, 4.0]], &dev);
        let expected = model.forward(x.clone()).into_data();
        let path = dir.path().join("fold0/best.mpk");
        save(&model, &path).expect("save");
        assert!(!path.with_file_name("best.mpk.partial").exists());
        let fresh: Linear<B> = LinearConfig::new(4, 2).init(&dev);
        let loaded = load(fresh, &path, &dev).expect("load");
        assert_eq!(loaded.forward(x).into_data(), expected);
    }

    #[test]
    fn a_corrupt_or_missing_checkpoint_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = Default::default();
        let bad = dir.path().join("bad.mpk");
        std::fs::write(&bad, b"not a record").expect("write");
        let err = load(LinearConfig::new(4, 2).init::<B>(&dev), &bad, &dev).expect_err("corrupt");
        assert!(err.to_string().contains("bad.mpk"), "{err}");
        let err = load(
            LinearConfig::new(4, 2).init::<B>(&dev),
            &dir.path().join("none.mpk"),
            &dev,
        )
        .expect_err("missing");
        assert!(err.to_string().contains("none.mpk"), "{err}");
    }
}
