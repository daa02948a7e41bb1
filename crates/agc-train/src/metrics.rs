//! ROC AUC (ties as average ranks, like scikit-learn's `roc_auc_score`), its bootstrap
//! confidence interval, and accuracy.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The area under the ROC curve of `scores` for binary `labels` (1 = positive), or `None` when
/// the labels hold a single class (the AUC is undefined) or the lengths differ.
///
/// Computed as the Mann–Whitney statistic with tied scores given their average rank, which is
/// scikit-learn's `roc_auc_score` for binary labels (a tie between a positive and a negative
/// counts one half). NaN scores rank as the lowest.
pub fn roc_auc(scores: &[f32], labels: &[u8]) -> Option<f64> {
    if scores.len() != labels.len() {
        return None;
    }
    let positives = labels.iter().filter(|&&l| l == 1).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let key = |i: usize| {
        if scores[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            scores[i]
        }
    };
    order.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0f64;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && key(order[end]).total_cmp(&key(order[start])).is_eq() {
            end += 1;
        }
        let average_rank = (start + 1 + end) as f64 / 2.0;
        let tied_positives = order[start..end]
            .iter()
            .filter(|&&i| labels[i] == 1)
            .count();
        rank_sum += average_rank * tied_positives as f64;
        start = end;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// A bootstrap confidence interval of the AUC.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AucInterval {
    /// The AUC of the whole sample.
    pub auc: f64,
    /// Lower bound (the `(1 − level) / 2` quantile of the resampled AUCs).
    pub low: f64,
    /// Upper bound.
    pub high: f64,
    /// Resamples that had both classes (the others are left out).
    pub resamples: usize,
}

/// The AUC with a percentile bootstrap interval at `level` (such as 0.95) from `rounds`
/// resamples with replacement, seeded; `None` where [`roc_auc`] is.
pub fn bootstrap_auc(
    scores: &[f32],
    labels: &[u8],
    rounds: usize,
    level: f64,
    seed: u64,
) -> Option<AucInterval> {
    let auc = roc_auc(scores, labels)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = scores.len();
    let (mut s, mut l) = (vec![0.0f32; n], vec![0u8; n]);
    let mut aucs: Vec<f64> = (0..rounds)
        .filter_map(|_| {
            for k in 0..n {
                let i = rng.random_range(0..n);
                s[k] = scores[i];
                l[k] = labels[i];
            }
            roc_auc(&s, &l)
        })
        .collect();
    if aucs.is_empty() {
        return Some(AucInterval {
            auc,
            low: auc,
            high: auc,
            resamples: 0,
        });
    }
    aucs.sort_by(f64::total_cmp);
    let quantile =
        |q: f64| aucs[((q * (aucs.len() - 1) as f64).round() as usize).min(aucs.len() - 1)];
    let tail = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
    Some(AucInterval {
        auc,
        low: quantile(tail),
        high: quantile(1.0 - tail),
        resamples: aucs.len(),
    })
}

/// The fraction of images whose probability is on the right side of `threshold`; `None` for
/// no images or mismatched lengths.
pub fn accuracy(probabilities: &[f32], labels: &[u8], threshold: f32) -> Option<f64> {
    if probabilities.is_empty() || probabilities.len() != labels.len() {
        return None;
    }
    let right = probabilities
        .iter()
        .zip(labels)
        .filter(|&(&p, &l)| (p >= threshold) == (l == 1))
        .count();
    Some(right as f64 / labels.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition: the fraction of (positive, negative) pairs ranked right, ties one half.
    fn pairwise(scores: &[f32], labels: &[u8]) -> f64 {
        let (mut total, mut pairs) = (0.0, 0.0);
        for (i, &li) in labels.iter().enumerate() {
            for (j, &lj) in labels.iter().enumerate() {
                if li == 1 && lj == 0 {
                    pairs += 1.0;
                    total += match scores[i].total_cmp(&scores[j]) {
                        std::cmp::Ordering::Greater => 1.0,
                        std::cmp::Ordering::Equal => 0.5,
                        std::cmp::Ordering::Less => 0.0,
                    };
                }
            }
        }
        total / pairs
    }

    #[test]
    fn matches_scikit_learn_on_known_cases() {
        // sklearn.metrics.roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
        assert_eq!(roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]), Some(0.75));
        // With a tie between a positive and a negative: 3.5 of 4 pairs.
        assert_eq!(roc_auc(&[0.1, 0.5, 0.5, 0.9], &[0, 0, 1, 1]), Some(0.875));
        // All scores equal: 0.5.
        assert_eq!(roc_auc(&[0.3; 4], &[0, 1, 0, 1]), Some(0.5));
        // Perfectly wrong.
        assert_eq!(roc_auc(&[0.9, 0.8, 0.1], &[0, 0, 1]), Some(0.0));
    }

    #[test]
    fn undefined_without_both_classes() {
        assert_eq!(roc_auc(&[0.1, 0.2], &[1, 1]), None);
        assert_eq!(roc_auc(&[0.1, 0.2], &[0]), None);
        assert!(bootstrap_auc(&[0.1, 0.2], &[0, 0], 10, 0.95, 0).is_none());
    }

    #[test]
    fn bootstrap_interval_brackets_the_auc_and_narrows_with_more_data() {
        let make = |n: usize| {
            let labels: Vec<u8> = (0..n).map(|i| u8::from(i % 4 == 0)).collect();
            let scores: Vec<f32> = (0..n)
                .map(|i| f32::from(labels[i]) * 0.3 + ((i * 37) % 100) as f32 / 100.0)
                .collect();
            (scores, labels)
        };
        let (s, l) = make(80);
        let small = bootstrap_auc(&s, &l, 500, 0.95, 1).expect("both classes");
        assert!(
            small.low <= small.auc && small.auc <= small.high,
            "{small:?}"
        );
        assert!(small.resamples > 490);
        let (s, l) = make(2000);
        let large = bootstrap_auc(&s, &l, 500, 0.95, 1).expect("both classes");
        assert!(
            large.high - large.low < (small.high - small.low) / 2.0,
            "{small:?} vs {large:?}"
        );
        assert_eq!(
            bootstrap_auc(&s, &l, 50, 0.95, 7),
            bootstrap_auc(&s, &l, 50, 0.95, 7)
        );
    }

    #[test]
    fn accuracy_counts_the_right_side_of_the_threshold() {
        assert_eq!(
            accuracy(&[0.9, 0.2, 0.6, 0.4], &[1, 0, 0, 1], 0.5),
            Some(0.5)
        );
        assert_eq!(accuracy(&[], &[], 0.5), None);
    }

    proptest! {
        #[test]
        fn rank_auc_equals_the_pairwise_definition(
            data in proptest::collection::vec((0u8..6, any::<bool>()), 2..60)
        ) {
            // Few distinct scores, so ties are common.
            let scores: Vec<f32> = data.iter().map(|&(s, _)| f32::from(s) / 5.0).collect();
            let labels: Vec<u8> = data.iter().map(|&(_, l)| u8::from(l)).collect();
            prop_assume!(labels.contains(&0) && labels.contains(&1));
            let auc = roc_auc(&scores, &labels).expect("both classes");
            prop_assert!((auc - pairwise(&scores, &labels)).abs() < 1e-12);
        }
    }
}
