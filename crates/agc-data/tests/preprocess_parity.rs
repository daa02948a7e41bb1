//! agc's preprocessing (JPEG DCT-scaled decode → centre square → antialiased bilinear resize to
//! 224) matches torchvision's PIL pipeline (full decode → centre square → `resize(BILINEAR)`).
//!
//! References: `scripts/make_preprocess_fixtures.py` (Pillow 13, numpy 2.4). The bar is
//! a mean absolute error of at most 2 grey levels.

use std::path::PathBuf;

use agc_data::{npy, preprocess_image};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn mean_abs_error(name: &str, min_decode_factor: f64) -> f64 {
    let (pixels, crop) = preprocess_image(&fixture(&format!("{name}.jpg")), 224, min_decode_factor)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(crop.side, crop.width.min(crop.height));
    let (shape, reference) = npy::read_u8(&fixture(&format!("{name}.224.npy"))).expect("reference");
    assert_eq!(shape, [224, 224, 3]);
    let total: u64 = pixels
        .iter()
        .zip(&reference)
        .map(|(a, b)| u64::from(a.abs_diff(*b)))
        .sum();
    total as f64 / pixels.len() as f64
}

#[test]
fn dct_scaled_preprocessing_matches_pil_within_two_grey_levels() {
    for name in ["landscape", "portrait", "square", "small"] {
        let mae = mean_abs_error(name, 2.0);
        eprintln!("{name}: MAE {mae:.3} grey levels (DCT-scaled decode)");
        assert!(mae <= 2.0, "{name}: MAE {mae:.3}");
    }
}

#[test]
fn full_resolution_preprocessing_matches_pil_closely() {
    for name in ["landscape", "portrait", "square", "small"] {
        let mae = mean_abs_error(name, 0.0);
        eprintln!("{name}: MAE {mae:.3} grey levels (full decode)");
        assert!(mae <= 1.0, "{name}: MAE {mae:.3}");
    }
}
