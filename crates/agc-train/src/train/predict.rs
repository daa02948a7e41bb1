//! Inference: predictions with test-time augmentation, in batches prepared in parallel.

use std::sync::Arc;

use agc_data::{
    AugmentConfig, Augmenter, CacheDataset, ImageBatch, ImageBatcher, ImageItem, Progress, Task,
};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use rayon::prelude::*;

use crate::model::Net;

use super::Images;
use super::first_use::FirstUse;

/// Predictions of one model for a list of cache rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Predictions {
    /// Probability of the positive class, one per row.
    pub probabilities: Vec<f32>,
    /// Attention maps, `grid · grid` values per row in row-major order; empty for a model
    /// without attention.
    pub attention: Vec<f32>,
    /// Side of the attention grid (0 without attention).
    pub grid: usize,
}

/// Splits `dataset` into batches in order, preparing the items of a batch in parallel.
pub(super) fn batches(
    dataset: &CacheDataset,
    batch_size: usize,
    device: &Device,
) -> impl Iterator<Item = ImageBatch> {
    let n = dataset.len();
    (0..n.div_ceil(batch_size)).map(move |b| {
        batch_of(
            dataset,
            b * batch_size..((b + 1) * batch_size).min(n),
            device,
        )
    })
}

/// The items `range` of `dataset` as one batch on `device`, prepared in parallel.
pub(super) fn batch_of(
    dataset: &CacheDataset,
    range: std::ops::Range<usize>,
    device: &Device,
) -> ImageBatch {
    let items: Vec<ImageItem> = range
        .into_par_iter()
        .map(|i| dataset.get(i).expect("index below the dataset's length"))
        .collect();
    ImageBatcher.batch(items, device)
}

/// Predicts `rows` of `images` with `net` in inference mode (batch-norm running statistics, no
/// dropout, no autodiff graph, whatever mode `net` and `device` are in). With `tta > 0` the
/// probabilities are the mean over `tta` rounds of test-time augmentation seeded by `seed`;
/// attention maps always come from the plain images.
pub fn predict(
    net: &Net,
    images: &Images,
    rows: &[usize],
    batch_size: usize,
    tta: usize,
    seed: u64,
    device: &Device,
) -> Predictions {
    predict_reporting(
        net,
        images,
        rows,
        [batch_size, tta],
        [seed, 0],
        device,
        &*agc_data::Silent.start("", 0),
    )
}

/// [`predict`] (`sizes` = batch size, TTA rounds) advancing `task` by one per image and round;
/// row `i`'s augmentation is seeded as the `first + i`-th of a longer list.
pub(crate) fn predict_reporting(
    net: &Net,
    images: &Images,
    rows: &[usize],
    [batch_size, tta]: [usize; 2],
    [seed, first]: [u64; 2],
    device: &Device,
    task: &dyn Task,
) -> Predictions {
    let net = &net.valid();
    let device = &device.clone().without_autodiff();
    let mut out = Predictions::default();
    let plain = images.dataset(rows.to_vec());
    let mut sums = vec![0f32; rows.len()];
    let mut k = 0;
    let first_use = FirstUse::begin("the first prediction batch", std::slice::from_ref(device));
    for batch in batches(&plain, batch_size, device) {
        task.advance(batch.rows.len() as u64);
        let o = net.forward(batch.images, batch.meta);
        if let Some(att) = o.attention {
            let [_, g, _] = att.dims();
            out.grid = g;
            out.attention
                .extend(att.into_data().convert::<f32>().iter::<f32>());
        }
        if tta == 0 {
            for p in sigmoid(o.logit).into_data().convert::<f32>().iter::<f32>() {
                sums[k] = p;
                k += 1;
            }
            // The probabilities were read back: the batch's kernels have run.
            first_use.end();
        }
    }
    if tta > 0 {
        let tta_augmenter = Arc::new(Augmenter::new(
            AugmentConfig::tta(),
            images.cache.size() as u32,
            seed,
        ));
        for round in 0..tta {
            let augmented = plain
                .clone()
                .with_augment(Arc::clone(&tta_augmenter), seed, round as u64)
                .with_first_index(first);
            let mut k = 0;
            for batch in batches(&augmented, batch_size, device) {
                task.advance(batch.rows.len() as u64);
                let logit = net.forward(batch.images, batch.meta).logit;
                for p in sigmoid(logit).into_data().convert::<f32>().iter::<f32>() {
                    sums[k] += p / tta as f32;
                    k += 1;
                }
                first_use.end();
            }
        }
    }
    out.probabilities = sums;
    out
}
