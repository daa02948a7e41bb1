//! The crop step's boxes at other thresholds, from a run's saved attention maps alone: what
//! `agc boxes` prints to choose the box threshold `k` without training anything again.
//!
//! Every map of `attention/fold<k>.csv` is boxed by the crop step's own code
//! (`crop::box_row`: [`agc_core::box_in_original`], scored against the true box squared by
//! [`true_square`](super::true_square) with the run's margin), once per `k`, and the rows are
//! summarised as `boxes.csv` is ([`AttentionStats::of`]). At the run's own `k` the figures are
//! those of its `boxes.csv`. By default only the training images are read, so a threshold
//! chosen with them never sees a test label.

use std::collections::HashMap;

use agc_core::{BoxConfig, CentreCrop};
use agc_data::Split;

use super::Run;
use super::crop::{BoxRule, box_row};
use crate::artefacts::read_attention;
use crate::error::{Result, TrainError};
use crate::model::ModelKind;
use crate::scores::AttentionStats;

/// An image's true box, where known, and where its ChipNet image lies in the original.
type Truth = (Option<[u32; 4]>, CentreCrop);

/// Which images' boxes [`Run::box_thresholds`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxSplit {
    /// The training images, each under every fold's ChipNet (out of fold and in fold alike,
    /// as `boxes.csv` holds them).
    Train,
    /// The test images.
    Test,
    /// Both.
    All,
}

impl BoxSplit {
    /// Whether a row of `split` is measured.
    fn takes(self, split: Split) -> bool {
        match self {
            Self::Train => split == Split::Train,
            Self::Test => split == Split::Test,
            Self::All => true,
        }
    }
}

/// The boxes at one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdStats {
    /// The threshold: mean + `k`·std of the upsampled map.
    pub k: f64,
    /// What `boxes.csv` would say of these boxes (over the chosen images only).
    pub stats: AttentionStats,
}

impl Run {
    /// Each image of `split`'s true box (where known) and where the square ChipNet saw lies in
    /// its original, by split and name.
    fn truths(&self, split: BoxSplit) -> HashMap<(Split, &str), Truth> {
        let mut images = HashMap::new();
        for (name, cache, records, rows) in self.chipnet_splits() {
            let Some(cache) = cache.filter(|_| split.takes(name)) else {
                continue;
            };
            let index = cache.cache.index();
            for (r, &row) in records.iter().zip(rows) {
                let geometry = index[row].geometry();
                images.insert((name, r.image_name.as_str()), (r.lesion_box, geometry));
            }
        }
        images
    }

    /// The boxes of the saved attention maps of the images of `split`, drawn at each threshold
    /// of `ks` with the run's other box settings, summarised as `boxes.csv` is: at the run's
    /// own `k` the figures are [`AttentionStats::of`] the `boxes.csv` rows of `split`.
    ///
    /// # Errors
    /// A threshold that is not finite, no attention maps (the crop step has not run), a
    /// malformed map file, or a map of an image the run does not hold.
    pub fn box_thresholds(&self, ks: &[f64], split: BoxSplit) -> Result<Vec<ThresholdStats>> {
        if let Some(k) = ks.iter().find(|k| !k.is_finite()) {
            return Err(TrainError::Setting {
                setting: "--k".into(),
                value: k.to_string(),
                message: "a box threshold must be finite".into(),
            });
        }
        let size = self.config.image_size_of(ModelKind::Chipnet) as usize;
        let images = self.truths(split);
        let configs: Vec<BoxConfig> = ks
            .iter()
            .map(|&k| BoxConfig {
                k,
                ..self.config.boxes.clone()
            })
            .collect();
        let mut rows = vec![Vec::new(); ks.len()];
        for f in 0..self.folds.k {
            let path = self.layout.attention(f);
            if !path.is_file() {
                return Err(TrainError::MissingStep {
                    path,
                    step: "agc crop".into(),
                });
            }
            let bad = |message: String| TrainError::Parse {
                path: path.clone(),
                message,
            };
            for (line, map) in read_attention(&path)?.iter().enumerate() {
                if !split.takes(map.split) {
                    continue;
                }
                let line = line + 2;
                let grid = map.map.len().isqrt();
                if grid * grid != map.map.len() {
                    return Err(bad(format!(
                        "line {line}: a map of {} cells is not square",
                        map.map.len()
                    )));
                }
                let Some((truth, centre)) = images.get(&(map.split, map.image_name.as_str()))
                else {
                    return Err(bad(format!(
                        "line {line}: {} image {:?} is not in the run (was the data changed?)",
                        map.split, map.image_name
                    )));
                };
                for (config, rows) in configs.iter().zip(&mut rows) {
                    let rule = BoxRule { grid, size, config };
                    rows.push(box_row(f, map, *truth, centre, &rule));
                }
            }
        }
        Ok(ks
            .iter()
            .zip(&rows)
            .map(|(&k, rows)| ThresholdStats {
                k,
                stats: AttentionStats::of(rows),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_takes_its_own_rows() {
        assert!(BoxSplit::Train.takes(Split::Train) && !BoxSplit::Train.takes(Split::Test));
        assert!(BoxSplit::Test.takes(Split::Test) && !BoxSplit::Test.takes(Split::Train));
        assert!(BoxSplit::All.takes(Split::Train) && BoxSplit::All.takes(Split::Test));
    }
}
