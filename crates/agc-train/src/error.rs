//! The errors of agc-train: each names the file, the model or the value at fault.

use std::path::{Path, PathBuf};

use crate::checkpoint::CheckpointError;

/// Everything that can stop training, cropping, ensembling or reporting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A setting (a configuration key or a command-line flag) has a value that cannot be used.
    #[error("{setting} {value}: {message}")]
    Setting {
        /// The setting, as the configuration or the command line names it.
        setting: String,
        /// Its value, as given.
        value: String,
        /// Why it cannot be used, and what would do.
        message: String,
    },
    /// Settings checked together before anything is written: every problem found, each naming
    /// its setting and value.
    #[error("configuration: {}", .0.join("; "))]
    Settings(Vec<String>),
    /// A folder holds something this command must not overwrite or mix with.
    #[error("{} {message}", path.display())]
    Occupied {
        /// The folder or file.
        path: PathBuf,
        /// What it holds, and what to do instead.
        message: String,
    },
    /// The data cannot make this run or be scored: too few images, positives, patient ids or
    /// true boxes; images missing or unreadable.
    #[error("{0}")]
    Dataset(String),
    /// There is no device to work on.
    #[error("no device to work on")]
    NoDevice,
    /// Data-parallel training stopped on this device because another device failed (whose own
    /// error says why).
    #[error("stopped because another device failed")]
    StoppedByAnotherDevice,
    /// Reading or writing data failed.
    #[error(transparent)]
    Data(#[from] agc_data::DataError),
    /// Pretrained weights could not be loaded.
    #[error(transparent)]
    Weights(#[from] agc_core::WeightsError),
    /// A checkpoint could not be saved or loaded.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON or CSV file of a run could not be parsed.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A step needs the output of an earlier one that is not there.
    #[error("{path} is missing: run `{step}` first")]
    MissingStep {
        /// The artefact that is missing.
        path: PathBuf,
        /// The step that writes it.
        step: String,
    },
    /// A metric is undefined (a fold or a label set with one class).
    #[error("{0}")]
    Undefined(String),
    /// A plot could not be written.
    #[error(transparent)]
    Plot(#[from] crate::plot::PlotError),
    /// Another process holds the claim on a step or fold.
    #[error(
        "{what} is claimed by {holder} ({path}); wait for it to finish, or work on another \
             fold or run"
    )]
    Busy {
        /// What was to be done.
        what: String,
        /// Who holds it, as the holder wrote it.
        holder: String,
        /// The lock file.
        path: PathBuf,
    },
    /// Training across several devices failed (a device's thread failed or panicked).
    #[error("multi-device training: {0}")]
    Devices(String),
}

/// A `Result` with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a JSON file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
