//! Augmentation of one 224×224 image: the training pipeline (hair, flips, rotation, jitter),
//! the TTA pipeline, and rotation alone.
//!
//! `cargo bench --bench augment`. Throughput is in images.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use agc::data::{AugmentConfig, Augmenter, rotate};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn augment(c: &mut Criterion) {
    let image: Vec<u8> = (0..224 * 224 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let mut group = c.benchmark_group("augment/224");
    group.throughput(Throughput::Elements(1));
    for (name, config) in [
        ("train", AugmentConfig::train()),
        ("tta", AugmentConfig::tta()),
    ] {
        let augmenter = Augmenter::new(config, 224, 0);
        let mut seed = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                seed += 1;
                augmenter.apply(&image, seed)
            });
        });
    }
    group.bench_function("rotate", |b| b.iter(|| rotate(&image, 224, 33.0)));
    group.finish();
}

criterion_group!(benches, augment);
criterion_main!(benches);
