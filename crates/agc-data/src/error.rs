//! The errors of agc-data: each names the file, and the row, column or value where there is one.

use std::path::PathBuf;

/// Everything that can go wrong reading, preprocessing or generating data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// A CSV file lacks a required column.
    #[error("{path}: missing column {column:?} (found: {found})")]
    MissingColumn {
        /// The CSV file.
        path: PathBuf,
        /// The column that is required.
        column: String,
        /// The header that was found, comma-separated.
        found: String,
    },
    /// A CSV cell holds a value that cannot be used.
    #[error("{path}: row {row}: column {column:?}: {message} (value {value:?})")]
    BadValue {
        /// The CSV file.
        path: PathBuf,
        /// The 1-based data row (the header is row 0).
        row: usize,
        /// The column.
        column: String,
        /// The cell's value.
        value: String,
        /// What is wrong with it.
        message: String,
    },
    /// Two rows share an `image_name`.
    #[error("{path}: row {row}: duplicate image_name {name:?} (first seen in row {first_row})")]
    DuplicateImage {
        /// The CSV file.
        path: PathBuf,
        /// The 1-based data row of the duplicate.
        row: usize,
        /// The first row with that name.
        first_row: usize,
        /// The image name.
        name: String,
    },
    /// A CSV file is malformed (unbalanced quotes, ragged rows, invalid UTF-8).
    #[error("{path}: {message}")]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// An image is missing, truncated, corrupt or of an unsupported kind.
    #[error("{path}: cannot decode image: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What the decoder said.
        message: String,
    },
    /// Images of a cache could not be decoded or cut; every one is listed. The images that
    /// could be were written and are kept for the next call; with none, nothing is left.
    #[error(
        "{cache}: {} image(s) cannot be used:{}\nfix or remove them, or leave them out \
         (agc --skip-bad-images; CacheOptions::skip_bad in the library){}",
        images.len(),
        list_bad(images),
        kept_note(cache, *kept)
    )]
    BadImages {
        /// The cache being built.
        cache: PathBuf,
        /// Images that were written to the partial cache and are kept for the next call.
        kept: usize,
        /// Each bad image's name and why it is bad, in job order.
        images: Vec<(String, String)>,
    },
    /// A cache file is not what it claims to be.
    #[error("{path}: invalid cache: {message}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A JSON file (encoder vocabulary, manifest) could not be read or written.
    #[error("{path}: {message}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// Folds cannot be made as asked.
    #[error("folds: {0}")]
    Folds(String),
    /// An option is out of range.
    #[error("invalid option {name}: {message}")]
    Invalid {
        /// The option.
        name: &'static str,
        /// Why.
        message: String,
    },
}

/// Results of agc-data.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// How many bad images [`DataError::BadImages`] shows.
const BAD_SHOWN: usize = 20;

/// The bad images, one a line, at most [`BAD_SHOWN`] and a count of the rest.
fn list_bad(images: &[(String, String)]) -> String {
    let mut lines: Vec<String> = images
        .iter()
        .take(BAD_SHOWN)
        .map(|(name, why)| format!("\n  {name}: {why}"))
        .collect();
    if images.len() > BAD_SHOWN {
        lines.push(format!("\n  … and {} more", images.len() - BAD_SHOWN));
    }
    lines.concat()
}

/// Where the images that could be read wait for the next call, if any did.
fn kept_note(cache: &std::path::Path, kept: usize) -> String {
    if kept == 0 {
        String::new()
    } else {
        format!(
            "\n{kept} image(s) that could be read are kept in {} for the next call \
             (delete it to start over)",
            crate::fsutil::partial_path(cache).display()
        )
    }
}

/// Attaches a path to an I/O error.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io { path, source }
}
