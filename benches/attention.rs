//! Attention pooling over a 7×7 map, and a whole ChipNet forward with the tiny backbone.
//!
//! `cargo bench --bench attention`. Throughput is in images.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

mod utils;

use agc::core::{AttentionPoolConfig, ChipNetConfig, ResNetConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use utils::{device, images, materialise};

fn attention_pool(c: &mut Criterion) {
    let dev = device();
    let mut group = c.benchmark_group("attention_pool/7x7/dim512/hidden512");
    group.sample_size(10);
    let pool = AttentionPoolConfig::new(512).init(&dev);
    for batch in [16, 64] {
        let maps = Tensor::<4>::random([batch, 512, 7, 7], Distribution::Default, &dev);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &maps, |b, maps| {
            b.iter(|| materialise(pool.forward(maps.clone()).pooled));
        });
    }
    group.finish();
}

fn chipnet_forward(c: &mut Criterion) {
    let dev = device();
    let model = ChipNetConfig::new(ResNetConfig::tiny())
        .with_attention_hidden(64)
        .init(&dev);
    let mut group = c.benchmark_group("chipnet/tiny/224");
    group.sample_size(10);
    let x = images(16, 224);
    group.throughput(Throughput::Elements(16));
    group.bench_function("batch/16", |b| {
        b.iter(|| materialise(model.forward(x.clone()).logit));
    });
    group.finish();
}

criterion_group!(benches, attention_pool, chipnet_forward);
criterion_main!(benches);
