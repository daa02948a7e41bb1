//! Atomic file writes: write a temporary sibling, flush it, rename it over the target.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, io};

/// `path` with `suffix` appended to its file name: `c.npy` + `.manifest.json` →
/// `c.npy.manifest.json`.
pub fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// The temporary sibling a file is written to before it is renamed into place.
pub fn partial_path(path: &Path) -> PathBuf {
    sidecar(path, ".partial")
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never a mix.
///
/// # Errors
/// If the directory cannot be created or the file cannot be written or renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = partial_path(path);
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Writes `value` as pretty JSON to `path`, atomically.
///
/// # Errors
/// If the value cannot be serialised or the file cannot be written.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| crate::error::DataError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, &json)
}
