//! The centre square (agc-core's `CentreCrop::centre_square`, which the cache cuts and boxes
//! are mapped through) is placed as torchvision's `center_crop` places it: `crop_left = int(round((w - side) / 2.0))` with
//! Python's `round`, which rounds halves to even (torchvision 0.29,
//! `torchvision/transforms/functional.py`, `center_crop`).

use agc_core::CentreCrop;
use proptest::prelude::*;

/// Python's `int(round(spare / 2.0))`: a float halved, rounded half to even.
fn python_round_half(spare: u32) -> u32 {
    (f64::from(spare) / 2.0).round_ties_even() as u32
}

fn check(width: u32, height: u32) -> Result<(), TestCaseError> {
    let crop = CentreCrop::centre_square(width as usize, height as usize);
    let side = width.min(height);
    let (x, y) = (crop.x as u32, crop.y as u32);
    prop_assert_eq!(crop.side as u32, side);
    prop_assert_eq!(x, python_round_half(width - side), "{}×{}", width, height);
    prop_assert_eq!(y, python_round_half(height - side), "{}×{}", width, height);
    prop_assert!(x + side <= width && y + side <= height);
    Ok(())
}

#[test]
fn torchvision_places_odd_spares_by_half_to_even() {
    // Offsets torchvision 0.29's center_crop gave for a 4×4 crop of 4×w tensors, spare = w − 4:
    // spare 1 → 0, 3 → 2, 5 → 2, 7 → 4, 9 → 4, 11 → 6.
    for (spare, offset) in [(1, 0), (3, 2), (5, 2), (7, 4), (9, 4), (11, 6)] {
        assert_eq!(
            CentreCrop::centre_square(4 + spare as usize, 4).x,
            offset as usize,
            "spare {spare}"
        );
        assert_eq!(
            CentreCrop::centre_square(4, 4 + spare as usize).y,
            offset as usize
        );
    }
}

#[test]
fn every_small_size_agrees() {
    for width in 1..=64 {
        for height in 1..=64 {
            check(width, height).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn large_sizes_agree(width in 1u32..20_000, height in 1u32..20_000) {
        check(width, height)?;
    }
}
