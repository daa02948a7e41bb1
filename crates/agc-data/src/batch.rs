//! A Burn [`Dataset`] over an image cache, and the [`Batcher`] that makes tensors of it.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::prelude::*;

use crate::augment::{Augmenter, normalize, sample_seed};
use crate::cache::ImageCache;

/// One image ready for a batch.
#[derive(Debug, Clone)]
pub struct ImageItem {
    /// The image, `[3, S, S]` in CHW order, normalised with the ImageNet mean and std.
    pub image: Vec<f32>,
    /// The metadata vector (empty when there is none).
    pub meta: Vec<f32>,
    /// The label (0 for unlabelled images).
    pub target: f32,
    /// The image's row in the cache, to put predictions back in place.
    pub row: usize,
}

/// The images, metadata and labels of a set of cache rows, optionally augmented.
///
/// `rows` lists cache rows in the order the dataset serves them (a fold's validation rows, or
/// one epoch of [`crate::balanced_epoch`]); a row may repeat. Augmentation is seeded by the run
/// seed, the epoch and the position, so an epoch is reproducible whatever the loader's threads
/// do.
#[derive(Debug, Clone)]
pub struct CacheDataset {
    cache: Arc<ImageCache>,
    rows: Vec<usize>,
    meta: Arc<Vec<Vec<f32>>>,
    targets: Arc<Vec<f32>>,
    augment: Option<Arc<Augmenter>>,
    seed: u64,
    epoch: u64,
    first_index: u64,
}

impl CacheDataset {
    /// A dataset of `rows` of `cache`; `meta` and `targets` are indexed by cache row.
    ///
    /// # Panics
    /// If a row is outside the cache, or `meta`/`targets` do not have one entry per cache row.
    pub fn new(
        cache: Arc<ImageCache>,
        rows: Vec<usize>,
        meta: Arc<Vec<Vec<f32>>>,
        targets: Arc<Vec<f32>>,
    ) -> Self {
        assert_eq!(meta.len(), cache.len(), "one metadata vector per cache row");
        assert_eq!(targets.len(), cache.len(), "one target per cache row");
        if let Some(bad) = rows.iter().find(|&&r| r >= cache.len()) {
            panic!("row {bad} is outside a cache of {} images", cache.len());
        }
        Self {
            cache,
            rows,
            meta,
            targets,
            augment: None,
            seed: 0,
            epoch: 0,
            first_index: 0,
        }
    }

    /// Augments every image with `augment`, seeded by `seed` and `epoch`.
    #[must_use]
    pub fn with_augment(mut self, augment: Arc<Augmenter>, seed: u64, epoch: u64) -> Self {
        self.augment = Some(augment);
        self.seed = seed;
        self.epoch = epoch;
        self
    }

    /// Seeds item `i`'s augmentation as if it were item `first + i` of a longer list, so that
    /// a list scored in chunks is augmented as it would be in one piece.
    #[must_use]
    pub fn with_first_index(mut self, first: u64) -> Self {
        self.first_index = first;
        self
    }
}

impl Dataset<ImageItem> for CacheDataset {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        let row = *self.rows.get(index).ok_or_else(|| {
            DatasetError::new(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "index {index} is past a dataset of {} images",
                    self.rows.len()
                ),
            ))
        })?;
        let pixels = self.cache.image(row);
        let size = self.cache.size();
        let image = match &self.augment {
            Some(a) => normalize(
                &a.apply(
                    pixels,
                    sample_seed(self.seed, self.epoch, self.first_index + index as u64),
                ),
                size,
            ),
            None => normalize(pixels, size),
        };
        Ok(ImageItem {
            image,
            meta: self.meta[row].clone(),
            target: self.targets[row],
            row,
        })
    }

    fn len(&self) -> usize {
        self.rows.len()
    }
}

/// A batch of images on a device.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// `[batch, 3, S, S]`.
    pub images: Tensor<4>,
    /// `[batch, meta_dim]`, or `None` when the items carry no metadata.
    pub meta: Option<Tensor<2>>,
    /// `[batch]`, 0 or 1.
    pub targets: Tensor<1>,
    /// The cache row of each image.
    pub rows: Vec<usize>,
}

/// Stacks [`ImageItem`]s into an [`ImageBatch`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageBatcher;

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    /// # Panics
    /// If `items` is empty or the items differ in image size or metadata length.
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        let n = items.len();
        assert!(n > 0, "cannot batch zero items");
        let pixels = items[0].image.len();
        let size = ((pixels / 3) as f64).sqrt() as usize;
        let meta_dim = items[0].meta.len();
        let mut images = Vec::with_capacity(n * pixels);
        let mut meta = Vec::with_capacity(n * meta_dim);
        let mut targets = Vec::with_capacity(n);
        let mut rows = Vec::with_capacity(n);
        for item in items {
            assert!(
                item.image.len() == pixels && item.meta.len() == meta_dim,
                "items of one batch differ in shape"
            );
            images.extend_from_slice(&item.image);
            meta.extend_from_slice(&item.meta);
            targets.push(item.target);
            rows.push(item.row);
        }
        ImageBatch {
            images: Tensor::from_data(TensorData::new(images, [n, 3, size, size]), device),
            meta: (meta_dim > 0)
                .then(|| Tensor::from_data(TensorData::new(meta, [n, meta_dim]), device)),
            targets: Tensor::from_data(TensorData::new(targets, [n]), device),
            rows,
        }
    }
}
