//! The data flow end to end on a small synthetic set: generate → preprocess into a cache →
//! encode metadata → grouped stratified folds → balanced epochs → a multi-worker Burn loader.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use agc_data::{
    AugmentConfig, Augmenter, CacheDataset, CacheJob, CacheOptions, Folds, ImageBatcher,
    ImageCache, MetadataEncoder, Split, SynthConfig, balanced_epoch, build_cache, generate,
    read_metadata,
};
use burn::data::dataloader::DataLoaderBuilder;

#[test]
fn synthetic_data_flows_from_generation_to_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("synth");
    let config = SynthConfig {
        train: 60,
        test: 10,
        positive_rate: 0.25,
        min_side: 256,
        max_side: 400,
        ..SynthConfig::default()
    };
    let report = generate(&config, &data, &agc_data::Silent).expect("generate");
    assert_eq!(report.written, 70);

    // Preprocess the training images into a cache of 64×64 images.
    let records = read_metadata(&data.join("train.csv"), Split::Train).expect("train.csv");
    let jobs: Vec<CacheJob> = records
        .iter()
        .map(|r| CacheJob {
            name: r.image_name.clone(),
            path: data.join("train").join(format!("{}.jpg", r.image_name)),
            square: None,
        })
        .collect();
    let cache_path = dir.path().join("cache/train_64.npy");
    let options = CacheOptions {
        size: 64,
        progress: agc_data::progress::silent(),
        ..CacheOptions::default()
    };
    build_cache(&jobs, &cache_path, &options).expect("cache");
    let cache = Arc::new(ImageCache::open(&cache_path).expect("open cache"));
    assert_eq!((cache.len(), cache.size()), (60, 64));

    check_boxes_fall_on_the_lesions(&records, &cache);

    // Metadata and folds.
    let encoder = MetadataEncoder::fit(&records);
    let meta: Vec<Vec<f32>> = records.iter().map(|r| encoder.encode(r)).collect();
    let targets: Vec<u8> = records
        .iter()
        .map(|r| r.target.expect("train target"))
        .collect();
    let patients: Vec<Option<String>> = records.iter().map(|r| r.patient_id.clone()).collect();
    let folds = Folds::grouped(&targets, &patients, 3, 42).expect("folds");
    let mut patient_fold = BTreeMap::new();
    for (i, p) in patients.iter().enumerate() {
        let f = *patient_fold.entry(p.clone()).or_insert(folds.fold_of[i]);
        assert_eq!(f, folds.fold_of[i], "a patient spans two folds");
    }
    let train: BTreeSet<usize> = folds.train(0).into_iter().collect();
    let valid: BTreeSet<usize> = folds.valid(0).into_iter().collect();
    assert!(train.is_disjoint(&valid) && train.len() + valid.len() == 60);

    // One balanced, augmented epoch through a two-worker loader.
    let epoch = balanced_epoch(&targets, &folds.train(0), 42, 0).expect("both classes");
    let augment = Arc::new(Augmenter::new(AugmentConfig::train(), 64, 42));
    let dataset = CacheDataset::new(
        cache.clone(),
        epoch.clone(),
        Arc::new(meta),
        Arc::new(targets.iter().map(|&t| f32::from(t)).collect()),
    )
    .with_augment(augment, 42, 0);
    let loader = DataLoaderBuilder::<_, _>::new(ImageBatcher)
        .batch_size(8)
        .num_workers(2)
        .build(dataset);
    let (mut seen, mut positives) = (0, 0.0f32);
    for batch in loader.iter() {
        let batch = batch.expect("every item loads");
        let n = batch.rows.len();
        assert_eq!(batch.images.dims(), [n, 3, 64, 64]);
        assert_eq!(
            batch.meta.as_ref().expect("metadata").dims(),
            [n, encoder.dim()]
        );
        assert!(
            batch.rows.iter().all(|r| train.contains(r)),
            "a validation image in training"
        );
        positives += batch.targets.sum().into_scalar::<f32>();
        seen += n;
        let mean = batch.images.mean().into_scalar::<f32>();
        assert!(mean.abs() < 2.5, "normalised images, mean {mean}");
    }
    assert_eq!(seen, epoch.len());
    assert!(
        (positives / seen as f32 - 0.5).abs() < 1e-6,
        "balanced: {positives} of {seen}"
    );
}

/// The true boxes lie in the centre square the cache recorded, and map onto dark pixels.
fn check_boxes_fall_on_the_lesions(records: &[agc_data::Record], cache: &ImageCache) {
    let (mut inside, mut whole) = (0.0f64, 0.0f64);
    for (i, (r, e)) in records.iter().zip(cache.index()).enumerate() {
        assert_eq!(r.image_name, e.image_name);
        let [x0, y0, x1, y1] = r.lesion_box.expect("synthetic rows have boxes");
        assert!(
            x0 >= e.crop_x
                && x1 <= e.crop_x + e.crop_side
                && y0 >= e.crop_y
                && y1 <= e.crop_y + e.crop_side
        );
        let scale = 64.0 / f64::from(e.crop_side);
        let to_cache = |v: u32, o: u32| (f64::from(v - o) * scale) as usize;
        let cx = to_cache(x0, e.crop_x).midpoint(to_cache(x1, e.crop_x));
        let cy = to_cache(y0, e.crop_y).midpoint(to_cache(y1, e.crop_y));
        let img = cache.image(i);
        let px = |x: usize, y: usize| {
            img[(y * 64 + x) * 3..][..3]
                .iter()
                .map(|&v| f64::from(v))
                .sum::<f64>()
        };
        inside += px(cx.min(63), cy.min(63));
        whole += (0..64 * 64).map(|k| px(k % 64, k / 64)).sum::<f64>() / 4096.0;
    }
    assert!(
        inside < 0.8 * whole,
        "lesion centres ({inside:.0}) are not darker than the images ({whole:.0})"
    );
}
