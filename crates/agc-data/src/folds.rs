//! Stratified K-fold cross-validation (optionally grouped by patient) and class-balanced
//! oversampling, all seeded.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};

/// The fold of every training image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folds {
    /// Number of folds.
    pub k: usize,
    /// `fold_of[i]` is the fold in which image `i` is validated.
    pub fold_of: Vec<usize>,
}

impl Folds {
    /// Stratified K-fold: the positives and the negatives are each shuffled (seeded) and dealt
    /// round-robin, so every fold gets the same share of each class (±1).
    ///
    /// # Errors
    /// If `k < 2`, there are fewer images than folds, or a fold would have no positive to
    /// validate on.
    pub fn stratified(targets: &[u8], k: usize, seed: u64) -> Result<Self> {
        check_k(targets.len(), k)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut fold_of = vec![0; targets.len()];
        let mut next = 0;
        for class in [1u8, 0] {
            let mut members: Vec<usize> = (0..targets.len())
                .filter(|&i| targets[i] == class)
                .collect();
            members.shuffle(&mut rng);
            for i in members {
                fold_of[i] = next % k;
                next += 1;
            }
        }
        let folds = Self { k, fold_of };
        folds.check(targets)?;
        Ok(folds)
    }

    /// Stratified K-fold grouped by patient: no patient is in two folds, and the positives and
    /// images are spread as evenly as the groups allow (groups, in a seeded order with the
    /// largest positive counts first, each go to the fold with the fewest positives so far, then
    /// the fewest images). Images without a patient form a group each.
    ///
    /// # Errors
    /// As [`Folds::stratified`].
    pub fn grouped(
        targets: &[u8],
        patients: &[Option<String>],
        k: usize,
        seed: u64,
    ) -> Result<Self> {
        check_k(targets.len(), k)?;
        if patients.len() != targets.len() {
            return Err(DataError::Folds(format!(
                "{} patients for {} images",
                patients.len(),
                targets.len()
            )));
        }
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut singles = Vec::new();
        for (i, p) in patients.iter().enumerate() {
            match p {
                Some(p) => groups.entry(p.as_str()).or_default().push(i),
                None => singles.push(vec![i]),
            }
        }
        let mut groups: Vec<Vec<usize>> = groups.into_values().chain(singles).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        groups.shuffle(&mut rng);
        let positives = |g: &Vec<usize>| g.iter().filter(|&&i| targets[i] == 1).count();
        // Stable sort: the shuffle breaks ties.
        groups.sort_by_key(|g| std::cmp::Reverse((positives(g), g.len())));
        let mut load = vec![(0usize, 0usize); k];
        let mut fold_of = vec![0; targets.len()];
        for g in &groups {
            let f = (0..k).min_by_key(|&f| load[f]).unwrap_or(0);
            load[f].0 += positives(g);
            load[f].1 += g.len();
            for &i in g {
                fold_of[i] = f;
            }
        }
        let folds = Self { k, fold_of };
        folds.check(targets)?;
        Ok(folds)
    }

    /// Images validated in fold `f`.
    pub fn valid(&self, f: usize) -> Vec<usize> {
        (0..self.fold_of.len())
            .filter(|&i| self.fold_of[i] == f)
            .collect()
    }

    /// Images trained on in fold `f`.
    pub fn train(&self, f: usize) -> Vec<usize> {
        (0..self.fold_of.len())
            .filter(|&i| self.fold_of[i] != f)
            .collect()
    }

    fn check(&self, targets: &[u8]) -> Result<()> {
        let total_pos = targets.iter().filter(|&&t| t == 1).count();
        let positives: Vec<(usize, usize)> = (0..self.k)
            .map(|f| {
                let valid = self.valid(f);
                (
                    valid.iter().filter(|&&i| targets[i] == 1).count(),
                    valid.len(),
                )
            })
            .collect();
        if let Some(f) = positives.iter().position(|&(pos, _)| pos == 0) {
            return Err(DataError::Folds(format!(
                "fold {f} has no positive image to validate on ({} images, {total_pos} positives in all \
                 for {} folds): AUC is undefined; use fewer folds or more positives",
                positives[f].1, self.k
            )));
        }
        if let Some(f) = positives.iter().position(|&(pos, _)| pos == total_pos) {
            return Err(DataError::Folds(format!(
                "fold {f} holds every positive image, leaving none to train on; use fewer folds or more positives"
            )));
        }
        Ok(())
    }
}

fn check_k(n: usize, k: usize) -> Result<()> {
    if k < 2 {
        return Err(DataError::Folds(format!("need at least 2 folds, got {k}")));
    }
    if n < k {
        return Err(DataError::Folds(format!(
            "{n} images cannot make {k} folds"
        )));
    }
    Ok(())
}

/// One epoch of class-balanced oversampling over `indices`: every negative once, and the
/// positives drawn (each about equally often, seeded by `seed` and `epoch`) until they are as
/// many, all shuffled, so any batch is about half positive.
///
/// # Errors
/// If `indices` holds no positive or no negative.
pub fn balanced_epoch(
    targets: &[u8],
    indices: &[usize],
    seed: u64,
    epoch: u64,
) -> Result<Vec<usize>> {
    let (pos, neg): (Vec<usize>, Vec<usize>) = indices.iter().partition(|&&i| targets[i] == 1);
    if pos.is_empty() || neg.is_empty() {
        return Err(DataError::Folds(format!(
            "balanced sampling needs both classes: {} positives and {} negatives among {} images",
            pos.len(),
            neg.len(),
            indices.len()
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut drawn = Vec::with_capacity(neg.len());
    while drawn.len() < neg.len() {
        let mut round = pos.clone();
        round.shuffle(&mut rng);
        drawn.extend(round.into_iter().take(neg.len() - drawn.len()));
    }
    let mut epoch_indices: Vec<usize> = neg.into_iter().chain(drawn).collect();
    epoch_indices.shuffle(&mut rng);
    Ok(epoch_indices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn targets(n: usize, positives: usize) -> Vec<u8> {
        (0..n)
            .map(|i| u8::from(i % (n / positives) == 0 && i / (n / positives) < positives))
            .collect()
    }

    #[test]
    fn stratified_folds_split_each_class_evenly_and_are_seeded() {
        let t = targets(100, 20);
        let folds = Folds::stratified(&t, 3, 7).expect("folds");
        for f in 0..3 {
            let v = folds.valid(f);
            let pos = v.iter().filter(|&&i| t[i] == 1).count();
            assert!(
                (6..=7).contains(&pos) && (33..=34).contains(&v.len()),
                "fold {f}: {pos}/{}",
                v.len()
            );
            assert_eq!(folds.train(f).len() + v.len(), 100);
        }
        assert_eq!(folds, Folds::stratified(&t, 3, 7).expect("folds"));
        assert_ne!(folds, Folds::stratified(&t, 3, 8).expect("folds"));
    }

    #[test]
    fn grouped_folds_keep_each_patient_in_one_fold() {
        let t = targets(120, 24);
        let patients: Vec<Option<String>> = (0..120)
            .map(|i| (i % 17 != 0).then(|| format!("p{}", i % 29)))
            .collect();
        let folds = Folds::grouped(&t, &patients, 3, 1).expect("folds");
        let mut fold_of_patient = BTreeMap::new();
        for (i, p) in patients.iter().enumerate() {
            if let Some(p) = p {
                let f = *fold_of_patient.entry(p.clone()).or_insert(folds.fold_of[i]);
                assert_eq!(f, folds.fold_of[i], "patient {p} in two folds");
            }
        }
        for f in 0..3 {
            let pos = folds.valid(f).iter().filter(|&&i| t[i] == 1).count();
            assert!((5..=11).contains(&pos), "fold {f}: {pos} positives");
        }
    }

    #[test]
    fn a_fold_without_positives_is_an_error_that_names_it() {
        let mut t = vec![0u8; 30];
        t[0] = 1;
        t[1] = 1;
        let err = Folds::stratified(&t, 3, 0)
            .expect_err("two positives, three folds")
            .to_string();
        assert!(err.contains("fold 2 has no positive"), "{err}");
        let one_patient = vec![Some("p".to_string()); 30];
        let err = Folds::grouped(&t, &one_patient, 2, 0)
            .expect_err("one patient")
            .to_string();
        assert!(err.contains("no positive"), "{err}");
        assert!(Folds::stratified(&t, 1, 0).is_err());
    }

    #[test]
    fn balanced_epoch_is_half_positive_and_uses_every_negative_once() {
        let t = targets(100, 10);
        let idx: Vec<usize> = (0..100).collect();
        let epoch = balanced_epoch(&t, &idx, 3, 0).expect("epoch");
        assert_eq!(epoch.len(), 180);
        let pos = epoch.iter().filter(|&&i| t[i] == 1).count();
        assert_eq!(pos, 90);
        let mut counts = BTreeMap::new();
        for &i in epoch.iter().filter(|&&i| t[i] == 1) {
            *counts.entry(i).or_insert(0) += 1;
        }
        assert!(counts.values().all(|&c| c == 9), "{counts:?}");
        // Any batch of 32 is roughly balanced.
        for batch in epoch.chunks(32).filter(|b| b.len() == 32) {
            let p = batch.iter().filter(|&&i| t[i] == 1).count();
            assert!((6..=26).contains(&p), "batch with {p} positives");
        }
        assert_ne!(epoch, balanced_epoch(&t, &idx, 3, 1).expect("epoch 1"));
        assert!(balanced_epoch(&t, &[1, 2, 3], 0, 0).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn folds_partition_the_images(n in 12usize..200, pos_per in 3usize..6, k in 2usize..5, seed in 0u64..1000) {
            let t: Vec<u8> = (0..n).map(|i| u8::from(i % pos_per == 0)).collect();
            prop_assume!(t.iter().filter(|&&v| v == 1).count() > k);
            let folds = Folds::stratified(&t, k, seed).expect("enough positives");
            let mut all: Vec<usize> = (0..k).flat_map(|f| folds.valid(f)).collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
        }
    }
}
