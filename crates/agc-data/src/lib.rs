//! Data for agc: ISIC-layout datasets, the preprocessing cache, augmentations, folds, samplers,
//! batchers and the synthetic lesion generator.
//!
//! Not written yet: this crate is laid down with the workspace and filled by the agc-data issue.
