//! Data for agc: ISIC-layout datasets, the preprocessing cache, augmentations, folds, samplers,
//! batchers and the synthetic lesion generator.
//!
//! agc-data knows no model. Everything that touches files returns [`Result`] with a
//! [`DataError`] that names the file (and row or value); outputs are written atomically and
//! originals are never written to.

pub mod augment;
pub mod batch;
pub mod cache;
pub mod data_dir;
pub mod error;
pub mod folds;
pub mod fsutil;
pub mod imageio;
pub mod metadata;
pub mod npy;
pub mod progress;
pub mod synth;

pub use augment::{
    AugmentConfig, AugmentDraw, Augmenter, ColorJitter, HairBank, IMAGENET_MEAN, IMAGENET_STD,
    JitterStep, flip_horizontal, flip_vertical, normalize, rotate, sample_seed,
};
pub use batch::{CacheDataset, ImageBatch, ImageBatcher, ImageItem};
pub use cache::{
    CacheJob, CacheOptions, CacheReport, CacheTarget, Cut, ImageCache, IndexEntry, Prepared,
    build_cache, build_caches, prepare_cuts, prepare_image, release_freed_memory,
};
pub use data_dir::{DataDir, DataDirOptions};
pub use error::{DataError, Result};
pub use folds::{Folds, balanced_epoch};
pub use imageio::{
    Decoded, centre_of, crop_resize, decode, decode_with, preprocess_image, square_in,
};
pub use metadata::{MetadataEncoder, Record, Split, read_labels, read_metadata, read_score_inputs};
pub use progress::{Progress, Reporter, Silent, Task};
pub use synth::{
    Family, Signs, SignsRow, SignsTable, SynthConfig, SynthReport, SynthSplit, generate, sample,
};
