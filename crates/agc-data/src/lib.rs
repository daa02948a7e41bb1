//! Data for agc: ISIC-layout datasets, the preprocessing cache, augmentations, folds, samplers,
//! batchers and the synthetic lesion generator.
//!
//! agc-data knows no model. Everything that touches files returns [`Result`] with a
//! [`DataError`] that names the file (and row or value); outputs are written atomically and
//! originals are never written to.

pub mod error;
pub mod fsutil;
pub mod imageio;
pub mod metadata;
pub mod npy;

pub use error::{DataError, Result};
pub use imageio::{CropGeometry, Decoded, crop_resize, decode, preprocess_image};
pub use metadata::{MetadataEncoder, Record, Split, read_labels, read_metadata};
