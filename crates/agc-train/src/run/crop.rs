//! The crop step: each fold's ChipNet maps every image, each map becomes a square box, the box
//! is carried to the original photograph, and the originals are cropped into the fold's crop
//! cache. Also the oracle crops, by the true lesion boxes.

use std::time::Instant;

use agc_core::{BoxConfig, CentreCrop, Rect, box_in_original};
use agc_data::{CacheJob, CacheTarget, DataDir, Record, Split, build_cache, build_caches};
use burn::prelude::Device;

use super::prepare::cache_options;
use super::{Run, lock, true_square};
use crate::artefacts::{AttentionRow, BoxRow, read_rows, write_attention, write_rows};
use crate::error::{Result, TrainError};
use crate::layout::Crops;
use crate::model::ModelKind;
use crate::scores::AttentionStats;
use crate::train::{Images, predict_reporting};

/// How a ChipNet map becomes a box: [`box_in_original`]'s settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoxRule<'a> {
    /// Side of the `grid`×`grid` map.
    pub(crate) grid: usize,
    /// Side of the images ChipNet saw.
    pub(crate) size: usize,
    /// Threshold, margin and the rest.
    pub(crate) config: &'a BoxConfig,
}

/// One image's row of `boxes.csv`: the box `rule` draws from `map` ([`box_in_original`]), and,
/// where the true box is known, the IoU in the original with the true box squared by the same
/// rule and margin ([`true_square`]), to 4 decimals. The one place a box is scored, for the crop
/// step and for [`Run::box_thresholds`](super::Run::box_thresholds) alike.
pub(crate) fn box_row(
    fold: usize,
    map: &AttentionRow,
    truth: Option<[u32; 4]>,
    centre: &CentreCrop,
    rule: &BoxRule<'_>,
) -> BoxRow {
    let (found, orig) = box_in_original(&map.map, rule.grid, rule.size, centre, rule.config);
    let iou = truth.map(|t| {
        let t = true_square(t, centre.width, centre.height, rule.config.margin);
        (orig.iou(&t) * 1e4).round() / 1e4
    });
    BoxRow {
        fold,
        split: map.split,
        image_name: map.image_name.clone(),
        threshold: found.threshold,
        fallback: found.fallback,
        box_x: found.square.x0,
        box_y: found.square.y0,
        box_side: found.square.width(),
        orig_x: orig.x0,
        orig_y: orig.y0,
        orig_side: orig.width(),
        true_x0: truth.map(|b| b[0]),
        true_y0: truth.map(|b| b[1]),
        true_x1: truth.map(|b| b[2]),
        true_y1: truth.map(|b| b[3]),
        iou,
    }
}

/// A fold's rows of `boxes.csv`, and the jobs of its crop cache of each split.
type FoldBoxes = (Vec<BoxRow>, Vec<(Split, Vec<CacheJob>)>);

/// A split, ChipNet's images of it (none for a run without test images), its readable records
/// and their cache rows.
pub(crate) type SplitInputs<'a> = (Split, Option<&'a Images>, &'a [Record], &'a [usize]);

impl Run {
    /// The training and the test split as ChipNet sees them: what the crop step maps and what
    /// [`Run::box_thresholds`](super::Run::box_thresholds) reads back.
    pub(crate) fn chipnet_splits(&self) -> [SplitInputs<'_>; 2] {
        let (train_images, test_images) = self.images_of(ModelKind::Chipnet);
        [
            (
                Split::Train,
                Some(train_images),
                &self.train,
                &self.train_rows,
            ),
            (Split::Test, test_images, &self.test, &self.test_rows),
        ]
    }

    /// The crop step: each fold's ChipNet maps every training and test image, the maps become
    /// boxes in the originals, and the originals are cropped into the fold's crop cache.
    /// Writes `attention/fold<k>.csv`, `crops/fold<k>/` and, last, `boxes.csv`.
    ///
    /// # Errors
    /// ChipNet not trained, unreadable originals, unwritable caches.
    pub fn crop(&self, device: &Device) -> Result<()> {
        let boxes_path = self.layout.boxes();
        if boxes_path.is_file() {
            // Written last: every fold's crop cache is complete.
            return Ok(());
        }
        let _claim = lock::claim(&self.layout.lock("crop"), "the crop step")?;
        if boxes_path.is_file() {
            return Ok(());
        }
        let started = Instant::now();
        let mut boxes = Vec::new();
        let mut jobs = Vec::new();
        for f in 0..self.folds.k {
            let (rows, fold_jobs) = self.fold_boxes(f, device)?;
            boxes.extend(rows);
            jobs.push(fold_jobs);
        }
        // Each original decoded once for every fold's crop (agc_data::build_caches).
        for split in [Split::Train, Split::Test] {
            let paths: Vec<_> = (0..self.folds.k)
                .map(|f| self.layout.crop_cache(Crops::Fold(f), split))
                .collect();
            let targets: Vec<CacheTarget<'_>> = jobs
                .iter()
                .zip(&paths)
                .filter_map(|(fold_jobs, path)| {
                    let (_, jobs) = fold_jobs.iter().find(|(s, _)| *s == split)?;
                    Some(CacheTarget {
                        path,
                        jobs,
                        size: self.config.image_size,
                    })
                })
                .collect();
            if !targets.is_empty() {
                build_caches(&targets, &cache_options(&self.config, &self.progress))?;
            }
        }
        write_rows(&boxes_path, &boxes)?;
        self.record_step("crop", started.elapsed().as_secs_f64())
    }

    /// Fold `f`'s part of the crop step: its attention maps (written to `attention/fold<f>.csv`),
    /// its rows of `boxes.csv`, and for each split the jobs of its crop cache, one per cache row
    /// of the images (a row whose original could not be read gets the centre square and is
    /// skipped again).
    fn fold_boxes(&self, f: usize, device: &Device) -> Result<FoldBoxes> {
        let size = self.config.image_size_of(ModelKind::Chipnet) as usize;
        let net = self.checkpoints().load(ModelKind::Chipnet, f, device)?;
        let mut attention = Vec::new();
        let mut boxes = Vec::new();
        let mut jobs_of = Vec::new();
        for (split, images, records, rows) in self.chipnet_splits() {
            let Some(images) = images else { continue };
            let bar = self.progress.start(
                &format!("fold {f}: attention maps of the {split} images"),
                rows.len() as u64,
            );
            let batch = self.config.schedules.of(ModelKind::Chipnet).eval_batch_size;
            let maps = predict_reporting(&net, images, rows, [batch, 0], [0, 0], device, &*bar);
            drop(bar);
            let g = maps.grid;
            let index = images.cache.index();
            let mut jobs: Vec<CacheJob> = index
                .iter()
                .map(|e| CacheJob {
                    name: e.image_name.clone(),
                    path: DataDir::image_path(self.images_folder(split), &e.image_name),
                    square: None,
                })
                .collect();
            for (i, (record, &row)) in records.iter().zip(rows).enumerate() {
                let map = AttentionRow {
                    split,
                    image_name: record.image_name.clone(),
                    map: maps.attention[i * g * g..(i + 1) * g * g].to_vec(),
                };
                let rule = BoxRule {
                    grid: g,
                    size,
                    config: &self.config.boxes,
                };
                let b = box_row(f, &map, record.lesion_box, &index[row].geometry(), &rule);
                jobs[row].square = Some(Rect::square(b.orig_x, b.orig_y, b.orig_side));
                attention.push(map);
                boxes.push(b);
            }
            jobs_of.push((split, jobs));
        }
        write_attention(&self.layout.attention(f), &attention)?;
        Ok((boxes, jobs_of))
    }

    /// Crops every image by its true lesion box (squared, kept inside the image) into
    /// `crops/oracle/`, for the oracle CropNet.
    ///
    /// # Errors
    /// Records without a true box, unreadable originals, unwritable caches.
    pub fn oracle_crops(&self) -> Result<()> {
        if !self.has_true_boxes() {
            return Err(TrainError::Dataset(
                "the oracle CropNet needs true lesion boxes (lesion_x0.. columns) for every \
                 image"
                    .into(),
            ));
        }
        let _claim = lock::claim(&self.layout.lock("oracle"), "the oracle crops")?;
        let splits = [
            (Split::Train, Some(&self.train_images), &self.data.train),
            (Split::Test, self.test_images.as_ref(), &self.data.test),
        ];
        for (split, images, records) in splits {
            let Some(images) = images else { continue };
            let jobs: Vec<CacheJob> = records
                .iter()
                .zip(images.cache.index())
                .map(|(r, e)| {
                    let square = r.lesion_box.filter(|_| e.is_ok()).map(|b| {
                        true_square(
                            b,
                            e.width as usize,
                            e.height as usize,
                            self.config.boxes.margin,
                        )
                    });
                    CacheJob {
                        name: r.image_name.clone(),
                        path: DataDir::image_path(self.images_folder(split), &r.image_name),
                        square,
                    }
                })
                .collect();
            build_cache(
                &jobs,
                &self.layout.crop_cache(Crops::Oracle, split),
                &cache_options(&self.config, &self.progress),
            )?;
        }
        Ok(())
    }

    /// The rows of `boxes.csv`, if the crop step has run.
    ///
    /// # Errors
    /// A malformed `boxes.csv`.
    pub fn boxes(&self) -> Result<Option<Vec<BoxRow>>> {
        let path = self.layout.boxes();
        if !path.is_file() {
            return Ok(None);
        }
        read_rows(&path).map(Some)
    }

    /// IoU and fallback statistics of `boxes.csv`, if the crop step has run.
    ///
    /// # Errors
    /// A malformed `boxes.csv`.
    pub fn attention_stats(&self) -> Result<Option<AttentionStats>> {
        Ok(self.boxes()?.map(|rows| AttentionStats::of(&rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agc_core::Fallback;

    fn map(hot: &[usize]) -> AttentionRow {
        let mut map = vec![0.01f32; 49];
        for &i in hot {
            map[i] = 1.0;
        }
        AttentionRow {
            split: Split::Test,
            image_name: "x".into(),
            map,
        }
    }

    #[test]
    fn a_box_row_carries_the_hot_chip_to_the_original_and_scores_it_against_the_squared_truth() {
        // A 448×336 photograph: its centre square is 336 px from x = 56, seen at 112 px, so one
        // of the 7×7 chips (16 px) is 48 original pixels.
        let centre = CentreCrop::centre_square(448, 336);
        let config = BoxConfig::new();
        let rule = BoxRule {
            grid: 7,
            size: 112,
            config: &config,
        };
        // The chip in row 2, column 3: x 48..64, y 32..48 in the 112-px image.
        let truth = [56 + 3 * 48, 2 * 48, 56 + 4 * 48, 3 * 48];
        let row = box_row(1, &map(&[2 * 7 + 3]), Some(truth), &centre, &rule);
        assert_eq!((row.fold, row.split, row.fallback), (1, Split::Test, None));
        let inside = |x: usize, y: usize, side: usize| {
            (x..x + side).contains(&(56 + 3 * 48 + 24)) && (y..y + side).contains(&(2 * 48 + 24))
        };
        assert!(inside(row.orig_x, row.orig_y, row.orig_side), "{row:?}");
        let expected = Rect::square(row.orig_x, row.orig_y, row.orig_side).iou(&true_square(
            truth,
            448,
            336,
            config.margin,
        ));
        assert_eq!(row.iou, Some((expected * 1e4).round() / 1e4));
        assert!(row.iou.expect("truth known") > 0.3, "{row:?}");
        assert_eq!(row.truth(), Some(truth));
        // Without a true box there is no IoU; a flat map falls back to the whole square.
        let flat = box_row(0, &map(&[]), None, &centre, &rule);
        assert_eq!((flat.fallback, flat.iou), (Some(Fallback::Uniform), None));
        assert_eq!(
            (flat.orig_x, flat.orig_y, flat.orig_side),
            (56, 0, 336),
            "the whole centre square"
        );
    }
}
