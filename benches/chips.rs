//! Chip tiler: cutting 224×224 images into 7×7 chips of 32 px and laying embeddings back out.
//!
//! `cargo bench --bench chips`. Each measurement includes making the result contiguous
//! (`into_data`), as the first convolution over the chips would; throughput is in image bytes.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

mod utils;

use agc::core::ChipGrid;
use burn::prelude::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use utils::{device, images, materialise};

fn tile(c: &mut Criterion) {
    let grid = ChipGrid::new(32);
    let mut group = c.benchmark_group("tile/224/chip32");
    for batch in [16, 64] {
        let x = images(batch, 224);
        group.throughput(Throughput::Bytes((batch * 3 * 224 * 224 * 4) as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &x, |b, x| {
            b.iter(|| materialise(grid.tile(x.clone())));
        });
    }
    group.finish();

    let overlapping = ChipGrid::new(32).with_stride(Some(16));
    let mut group = c.benchmark_group("tile/224/chip32/stride16");
    let x = images(16, 224);
    group.throughput(Throughput::Bytes((16 * 3 * 224 * 224 * 4) as u64));
    group.bench_function("batch/16", |b| {
        b.iter(|| materialise(overlapping.tile(x.clone())));
    });
    group.finish();
}

fn untile(c: &mut Criterion) {
    let mut group = c.benchmark_group("untile/7x7/dim512");
    for batch in [16, 64] {
        let emb = Tensor::<2>::ones([batch * 49, 512], &device());
        group.throughput(Throughput::Bytes((batch * 49 * 512 * 4) as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &emb, |b, emb| {
            b.iter(|| materialise(ChipGrid::untile(emb.clone(), batch, [7, 7])));
        });
    }
    group.finish();
}

criterion_group!(benches, tile, untile);
criterion_main!(benches);
