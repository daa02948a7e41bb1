//! Boxes from attention: 10 000 7×7 maps → upsample to 224² → threshold → square box.
//!
//! `cargo bench --bench boxes`. Throughput is in maps.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use agc::core::{BoxConfig, attention_box};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// 10 000 softmax-like maps with one or two hot chips, from a fixed linear congruential sequence.
fn maps() -> Vec<Vec<f32>> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..10_000)
        .map(|_| {
            let mut m: Vec<f32> = (0..49).map(|_| next()).collect();
            let hot = (next() * 49.0) as usize % 49;
            m[hot] += 5.0;
            let sum: f32 = m.iter().sum();
            m.iter().map(|v| v / sum).collect()
        })
        .collect()
}

fn boxes(c: &mut Criterion) {
    let maps = maps();
    let mut group = c.benchmark_group("boxes/7x7/224");
    group.sample_size(10);
    group.throughput(Throughput::Elements(maps.len() as u64));
    for (name, config) in [
        ("maps/10000", BoxConfig::new()),
        (
            "maps/10000/largest_component",
            BoxConfig::new().with_largest_component(true),
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                maps.iter()
                    .map(|m| attention_box(m, [7, 7], [224, 224], &config).square.x0)
                    .sum::<usize>()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, boxes);
criterion_main!(benches);
