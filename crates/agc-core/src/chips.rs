//! Cutting an image into a grid of chips, and laying chip embeddings back out as a map.

use burn::prelude::*;

/// A grid of square chips over an image: `chip`×`chip` windows every `stride` pixels.
///
/// With `stride == chip` (the default) the chips tile the image exactly; a smaller stride gives
/// overlapping chips. A 224×224 image with 32-pixel chips is the 7×7 grid of the SIIM-ISIC
/// ChipNet.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub struct ChipGrid {
    /// Side of a chip in pixels.
    pub chip: usize,
    /// Step between neighbouring chips in pixels; `None` means `chip` (no overlap).
    #[config(default = "None")]
    pub stride: Option<usize>,
}

impl ChipGrid {
    /// The step between chips.
    pub fn step(&self) -> usize {
        self.stride.unwrap_or(self.chip)
    }

    /// Chips along one side of length `side`, or `None` where the chips do not cover it exactly
    /// (`side < chip`, or `side − chip` not a multiple of the stride), or the grid is degenerate
    /// (a zero chip, or a stride of zero or larger than the chip).
    pub fn count(&self, side: usize) -> Option<usize> {
        let step = self.step();
        let valid = self.chip > 0 && step > 0 && step <= self.chip && side >= self.chip;
        (valid && (side - self.chip).is_multiple_of(step)).then(|| (side - self.chip) / step + 1)
    }

    /// The grid's `[rows, cols]` over a `height`×`width` image.
    ///
    /// # Panics
    /// If the chips do not cover the image exactly (see [`ChipGrid::count`]).
    pub fn dims(&self, height: usize, width: usize) -> [usize; 2] {
        let along = |side: usize, name: &str| {
            self.count(side).unwrap_or_else(|| {
                panic!(
                    "chips of {} px every {} px do not cover an image {name} of {side} px exactly",
                    self.chip,
                    self.step()
                )
            })
        };
        [along(height, "height"), along(width, "width")]
    }

    /// Cuts every image into its chips, row-major within each image.
    ///
    /// Chip `(i, j)` of image `b` is row `b·rows·cols + i·cols + j` of the output, and equals
    /// `images[b, :, i·stride .. i·stride + chip, j·stride .. j·stride + chip]`.
    ///
    /// # Shapes
    /// - `images`: `[batch, channels, height, width]`
    /// - output: `[batch · rows · cols, channels, chip, chip]`
    ///
    /// # Panics
    /// If the chips do not cover the image exactly.
    pub fn tile(&self, images: Tensor<4>) -> Tensor<4> {
        let [batch, channels, height, width] = images.dims();
        let [rows, cols] = self.dims(height, width);
        let c = self.chip;
        let chips = if self.step() == c {
            // Exact tiling: a reshape exposes the chip grid, a permute brings it forward.
            images
                .reshape([batch, channels, rows, c, cols, c])
                .permute([0, 2, 4, 1, 3, 5])
        } else {
            // Overlapping chips: sliding windows along each axis, `[b, ch, rows, cols, c, c]`.
            images
                .unfold::<5, _>(2, c, self.step())
                .unfold::<6, _>(3, c, self.step())
                .permute([0, 2, 3, 1, 4, 5])
        };
        chips.reshape([batch * rows * cols, channels, c, c])
    }

    /// Lays per-chip embeddings back out on the grid, the inverse arrangement of
    /// [`ChipGrid::tile`].
    ///
    /// # Shapes
    /// - `embeddings`: `[batch · rows · cols, dim]`
    /// - output: `[batch, dim, rows, cols]`
    ///
    /// # Panics
    /// If the number of embeddings is not `batch · rows · cols`.
    pub fn untile(embeddings: Tensor<2>, batch: usize, [rows, cols]: [usize; 2]) -> Tensor<4> {
        let [n, dim] = embeddings.dims();
        assert_eq!(
            n,
            batch * rows * cols,
            "expected {batch}·{rows}·{cols} chip embeddings, got {n}"
        );
        embeddings
            .reshape([batch, rows, cols, dim])
            .permute([0, 3, 1, 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::device;
    use burn::tensor::Distribution;
    use proptest::prelude::*;

    /// The chips cut one at a time with `slice`, in the documented order.
    fn naive_tile(grid: &ChipGrid, images: &Tensor<4>) -> Tensor<4> {
        let [batch, _, height, width] = images.dims();
        let [rows, cols] = grid.dims(height, width);
        let (c, s) = (grid.chip, grid.step());
        let mut chips = Vec::new();
        for b in 0..batch {
            for i in 0..rows {
                for j in 0..cols {
                    chips.push(images.clone().slice(s![
                        b..=b,
                        ..,
                        i * s..i * s + c,
                        j * s..j * s + c
                    ]));
                }
            }
        }
        Tensor::cat(chips, 0)
    }

    fn check_against_naive(grid: ChipGrid, shape: [usize; 4]) {
        let dev = device();
        let images = Tensor::<4>::random(shape, Distribution::Default, &dev);
        let tiled = grid.tile(images.clone());
        tiled
            .into_data()
            .assert_eq(&naive_tile(&grid, &images).into_data(), true);
    }

    #[test]
    fn seven_by_seven_grid_of_32_px_chips_matches_slicing() {
        check_against_naive(ChipGrid::new(32), [2, 3, 224, 224]);
    }

    #[test]
    fn overlapping_chips_match_slicing() {
        let grid = ChipGrid::new(32).with_stride(Some(16));
        assert_eq!(grid.dims(224, 224), [13, 13]);
        check_against_naive(grid, [2, 3, 224, 224]);
    }

    #[test]
    fn untile_puts_each_chip_embedding_at_its_grid_position() {
        let dev = device();
        let grid = ChipGrid::new(4);
        // Each chip's embedding is [mean of the chip, chip index].
        let images = Tensor::<4>::random([2, 1, 12, 8], Distribution::Default, &dev);
        let chips = grid.tile(images.clone());
        let n = chips.dims()[0];
        let means = chips.flatten::<2>(1, 3).mean_dim(1);
        let index = Tensor::<1, Int>::arange(0..n as i64, &dev)
            .float()
            .reshape([n, 1]);
        let map = ChipGrid::untile(Tensor::cat(vec![means, index], 1), 2, [3, 2]);
        assert_eq!(map.dims(), [2, 2, 3, 2]);
        for (b, i, j) in [(0, 0, 0), (0, 2, 1), (1, 1, 0), (1, 2, 1)] {
            let expected = images
                .clone()
                .slice(s![b..=b, .., i * 4..i * 4 + 4, j * 4..j * 4 + 4])
                .mean()
                .into_scalar::<f32>();
            let got = map
                .clone()
                .slice(s![b..=b, 0..1, i..=i, j..=j])
                .into_scalar::<f32>();
            assert!(
                (got - expected).abs() < 1e-6,
                "({b},{i},{j}): {got} vs {expected}"
            );
            let idx = map
                .clone()
                .slice(s![b..=b, 1..2, i..=i, j..=j])
                .into_scalar::<f32>();
            assert_eq!(idx as usize, b * 6 + i * 2 + j);
        }
    }

    #[test]
    fn count_rejects_grids_that_do_not_cover_the_side() {
        assert_eq!(ChipGrid::new(32).count(224), Some(7));
        assert_eq!(ChipGrid::new(30).count(224), None);
        assert_eq!(ChipGrid::new(32).count(16), None);
        assert_eq!(ChipGrid::new(32).with_stride(Some(0)).count(224), None);
        assert_eq!(ChipGrid::new(16).with_stride(Some(32)).count(224), None);
        assert_eq!(ChipGrid::new(0).count(224), None);
    }

    #[test]
    #[should_panic(expected = "do not cover an image width of 100 px")]
    fn tiling_an_uncovered_image_panics_with_the_sizes() {
        let dev = device();
        let images = Tensor::<4>::zeros([1, 3, 96, 100], &dev);
        let _ = ChipGrid::new(32).tile(images);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn tile_equals_naive_slicing_for_any_covering_grid(
            chip in 1usize..6,
            stride_div in 1usize..4,
            rows in 1usize..5,
            cols in 1usize..5,
            batch in 1usize..3,
            channels in 1usize..3,
        ) {
            let stride = chip.div_ceil(stride_div);
            let grid = ChipGrid::new(chip).with_stride(Some(stride));
            let height = chip + (rows - 1) * stride;
            let width = chip + (cols - 1) * stride;
            prop_assert_eq!(grid.dims(height, width), [rows, cols]);
            check_against_naive(grid, [batch, channels, height, width]);
        }

        #[test]
        fn untile_inverts_the_chip_order(batch in 1usize..3, rows in 1usize..5, cols in 1usize..5) {
            let dev = device();
            let n = batch * rows * cols;
            let ids = Tensor::<1, Int>::arange(0..n as i64, &dev).float().reshape([n, 1]);
            let map = ChipGrid::untile(ids, batch, [rows, cols]);
            let values = map.into_data().try_to_vec::<f32>().expect("f32 data");
            // [batch, 1, rows, cols] in row-major order is exactly the chip order.
            let expected: Vec<f32> = (0..n).map(|k| k as f32).collect();
            prop_assert_eq!(values, expected);
        }
    }
}
