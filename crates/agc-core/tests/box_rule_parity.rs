//! `scripts/box_ceiling.py` draws boxes by agc's rule: on every map of its fixture, Rust's
//! [`attention_box`] draws the box the script drew, so a change to either rule fails here.
//!
//! The fixture (`tests/fixtures/box_rule.json`) comes from
//! `python3 scripts/box_ceiling.py --fixture crates/agc-core/tests/fixtures/box_rule.json`
//! (numpy): seeded oracle maps (each chip weighted by its overlap with a random box), random
//! maps, a hot chip on noise and softmax-sharpened maps on 5×5 to 28×28 grids over 96- to
//! 224-px images, at several thresholds, margins and minimum sides, and the three fallbacks;
//! each with the square `[x0, y0, x1, y1]` the script drew and whether it fell back.

use agc_core::{BoxConfig, Rect, attention_box};
use serde_json::Value;

#[test]
fn the_ceiling_script_draws_every_box_as_agc_does() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/box_rule.json");
    let fixture: Value =
        serde_json::from_slice(&std::fs::read(path).expect("fixture present")).expect("json");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() > 100, "{} cases", cases.len());
    let (mut fallbacks, mut mismatches) = (0, Vec::new());
    for (i, case) in cases.iter().enumerate() {
        let int = |key: &str| usize::try_from(case[key].as_u64().expect(key)).expect(key);
        let float = |key: &str| case[key].as_f64().expect(key);
        let (grid, size) = (int("grid"), int("size"));
        // The script computed on these values as f32, as Rust does.
        #[allow(clippy::cast_possible_truncation)]
        let map: Vec<f32> = case["map"]
            .as_array()
            .expect("map")
            .iter()
            .map(|v| v.as_f64().expect("a number") as f32)
            .collect();
        let config = BoxConfig::new()
            .with_k(float("k"))
            .with_margin(float("margin"))
            .with_min_side(int("min_side"));
        let found = attention_box(&map, [grid, grid], [size, size], &config);
        let b: Vec<usize> = case["box"]
            .as_array()
            .expect("box")
            .iter()
            .map(|v| usize::try_from(v.as_u64().expect("a pixel")).expect("a pixel"))
            .collect();
        let expected = Rect {
            x0: b[0],
            y0: b[1],
            x1: b[2],
            y1: b[3],
        };
        let fell_back = case["fallback"].as_bool().expect("fallback");
        fallbacks += usize::from(fell_back);
        if (found.square, found.fallback.is_some()) != (expected, fell_back) {
            mismatches.push(format!(
                "case {i} ({grid}×{grid} over {size} px, {config:?}): agc {:?} {:?}, script \
                 {expected:?} fallback {fell_back}",
                found.square, found.fallback
            ));
        }
    }
    assert!(fallbacks >= 3, "the fixture holds the fallbacks");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
