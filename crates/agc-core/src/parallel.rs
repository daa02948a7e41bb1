//! Work split into one contiguous range of items (images, planes) per rayon thread, the way agc's
//! CPU kernels (`conv`, `norm`, `pool`) share a batch out: each thread owns its own part of the
//! output, so nothing races, and sums taken per thread and then added in thread order depend on
//! the number of threads only.

use std::ops::Range;

/// `items` split into one contiguous range per rayon thread (fewer when there are fewer items;
/// one empty range for none).
pub(crate) fn thread_ranges(items: usize) -> Vec<Range<usize>> {
    let tasks = rayon::current_num_threads().min(items).max(1);
    (0..tasks)
        .map(|t| (t * items / tasks)..((t + 1) * items / tasks))
        .collect()
}

/// Splits `data`, `run` elements per item, into the parts of each range of items.
pub(crate) fn split_runs<'a, T>(
    mut data: &'a mut [T],
    ranges: &[Range<usize>],
    run: usize,
) -> Vec<&'a mut [T]> {
    ranges
        .iter()
        .map(|r| {
            let (head, tail) = std::mem::take(&mut data).split_at_mut(r.len() * run);
            data = tail;
            head
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_item_once_in_order() {
        for items in [0, 1, 2, 3, 7, 100] {
            let ranges = thread_ranges(items);
            assert!(!ranges.is_empty());
            assert!(ranges.len() <= rayon::current_num_threads().max(1));
            assert_eq!(ranges.first().unwrap().start, 0);
            assert_eq!(ranges.last().unwrap().end, items);
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
            let mut data: Vec<usize> = (0..items * 3).collect();
            let parts = split_runs(&mut data, &ranges, 3);
            for (r, part) in ranges.iter().zip(parts) {
                assert_eq!(part.len(), r.len() * 3);
                assert_eq!(
                    part.first().copied(),
                    (!r.is_empty()).then_some(r.start * 3)
                );
            }
        }
    }
}
