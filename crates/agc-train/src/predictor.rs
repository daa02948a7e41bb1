//! Applying a trained run to new photographs: every fold's model of each kind, averaged, with
//! the run's test-time augmentation; each fold's ChipNet attention becomes a box in the
//! **original** photograph, and that fold's CropNet scores the crop; the run's ensemble
//! combines them.
//!
//! [`Predictor::load`] reads a run once; [`Predictor::score`] scores images (files of any size
//! and aspect, or decoded pixel buffers) on any device; [`Predictor::score_to_dir`] streams a
//! long list through in chunks of bounded memory, writing `predictions.csv` and resuming after
//! a kill. A run's own test images, scored in `test.csv` order, get the run's test predictions
//! back (test-time augmentation is seeded by the image's position in the list, as in the run).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agc_core::{AttentionBox, CentreCrop, Rect, box_in_original};
use agc_data::{
    CacheOptions, Cut, DataDir, Decoded, ImageCache, IndexEntry, MetadataEncoder, Prepared, Record,
    Reporter, crop_resize, decode, prepare_cuts, read_score_inputs, square_in,
};
use burn::prelude::Device;
use rayon::prelude::*;

use crate::artefacts::{PredictionRow, read_rows, write_rows};
use crate::ensemble::{EnsembleMember, weighted_average};
use crate::error::{Result, TrainError, io};
use crate::model::{ModelKind, Net};
use crate::report::draw_overlay;
use crate::run::lock;
use crate::run::models::fold_seed;
use crate::run::{PipelineConfig, TrainedRun};
use crate::train::{Images, Predictions, predict_reporting};

/// Where an image's pixels come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// An image file (JPEG or PNG), decoded as the run's preprocessing decodes.
    File(PathBuf),
    /// Pixels already decoded, at full size.
    Pixels(Arc<Decoded>),
}

/// One image to score.
#[derive(Debug, Clone)]
pub struct Input {
    /// Its name in the output (the file stem, or a CSV's `image_name`).
    pub name: String,
    /// Its pixels.
    pub source: Source,
    /// Sex, age and site where known (unknown otherwise, as the run's encoder does for values
    /// it never saw).
    pub metadata: Option<Record>,
}

impl Input {
    /// An image file, named by its stem, without metadata.
    pub fn file(path: &Path) -> Self {
        Self {
            name: path
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
            source: Source::File(path.to_path_buf()),
            metadata: None,
        }
    }

    /// Decoded RGB pixels at the photograph's full size.
    pub fn pixels(name: &str, image: image::RgbImage) -> Self {
        let (width, height) = image.dimensions();
        Self {
            name: name.to_string(),
            source: Source::Pixels(Arc::new(Decoded {
                image,
                width,
                height,
            })),
            metadata: None,
        }
    }
}

/// Where scoring spent its time (wall-clock seconds, summed over calls).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Decoding the originals, cutting the squares and resizing them (all cores).
    pub decoding: f64,
    /// The models' forward passes (every fold, every TTA round).
    pub models: f64,
    /// Everything [`Predictor::score`] did, the two above included.
    pub total: f64,
}

/// One scored image: its output row, and what an overlay draws.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredImage {
    /// The scores, box and notes as written to `predictions.csv`.
    pub row: PredictionRow,
    /// The folds' mean attention map (row-major, square), when the run has a ChipNet.
    pub map: Vec<f32>,
    /// Where the square the models saw lies in the original.
    pub centre: Option<CentreCrop>,
    /// The attention box in the original.
    pub crop: Option<Rect>,
    /// Why the image could not be scored.
    pub error: Option<String>,
}

/// A trained run, loaded once to score new images.
#[derive(Debug)]
pub struct Predictor {
    timings: std::sync::Mutex<Timings>,
    config: PipelineConfig,
    encoder: MetadataEncoder,
    nets: Vec<(ModelKind, Vec<Net>)>,
    ensemble: Vec<EnsembleMember>,
    device: Device,
    progress: Reporter,
}

impl Predictor {
    /// Loads every fold's best checkpoint of each model of the run in `run` onto `device`, the
    /// metadata encoder and the ensemble's weights (fitted ones from `metrics.json` when the run
    /// has them).
    ///
    /// # Errors
    /// A directory that holds no run, or a model whose folds are not all trained (with the
    /// command that trains it).
    pub fn load(run: &Path, device: &Device, progress: &Reporter) -> Result<Self> {
        let run = TrainedRun::open(run)?;
        let checkpoints = run.checkpoints();
        let mut nets = Vec::new();
        for kind in run.config.pipeline_models(false) {
            if kind != ModelKind::OracleCropnet {
                nets.push((kind, checkpoints.load_all(kind, device)?));
            }
        }
        let trained: Vec<ModelKind> = nets.iter().map(|n| n.0).collect();
        // The weights the run used (metrics.json), else the configured ones.
        let used = run.metrics()?.map(|m| m.ensemble_members());
        let TrainedRun {
            config, encoder, ..
        } = run;
        let mut ensemble = used
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| config.ensemble.clone());
        ensemble.retain(|m| trained.contains(&m.model) && m.weight > 0.0);
        let total: f64 = ensemble.iter().map(|m| m.weight).sum();
        for m in &mut ensemble {
            m.weight /= total;
        }
        Ok(Self {
            timings: std::sync::Mutex::default(),
            config,
            encoder,
            nets,
            ensemble,
            device: device.clone(),
            progress: Arc::clone(progress),
        })
    }

    /// Scores `n` images per batch instead of the run's `eval_batch_size` (less memory on a
    /// GPU, or more speed). The scores change by float rounding at most: test-time augmentation
    /// is seeded per image.
    ///
    /// # Errors
    /// If `n` is 0.
    pub fn with_batch_size(mut self, n: usize) -> Result<Self> {
        if n == 0 {
            return Err(TrainError::Setting {
                setting: "--batch-size".into(),
                value: "0".into(),
                message: "must be at least 1".into(),
            });
        }
        self.config.schedules.for_each(|s| s.eval_batch_size = n);
        Ok(self)
    }

    /// The models this run scores with, in order.
    pub fn models(&self) -> Vec<ModelKind> {
        self.nets.iter().map(|n| n.0).collect()
    }

    /// The ensemble's members and normalised weights.
    pub fn ensemble(&self) -> &[EnsembleMember] {
        &self.ensemble
    }

    /// The `cuts` of an input (each a square, or the centre square, resized), from one decode
    /// of its file, as the run's caches of several sizes or folds are cut
    /// ([`agc_data::prepare_cuts`]).
    fn prepare(input: &Input, cuts: &[Cut]) -> Result<Vec<Prepared>> {
        match &input.source {
            Source::File(path) => {
                let factor = CacheOptions::default().min_decode_factor;
                let cut = prepare_cuts(&input.name, path, cuts, factor)?;
                Ok(cut.into_iter().collect::<agc_data::Result<_>>()?)
            }
            Source::Pixels(decoded) => cuts
                .iter()
                .map(|cut| {
                    let crop = square_in(decoded, cut.square);
                    let pixels = crop_resize(decoded, &crop, cut.size)?;
                    Ok((pixels, IndexEntry::new(&input.name, &crop)))
                })
                .collect(),
        }
    }

    /// Images of `pixels` (one `size·size·3` buffer per image) with their metadata vectors.
    fn images(prepared: Vec<Prepared>, size: u32, meta: &[Vec<f32>]) -> Result<Images> {
        let size = size as usize;
        let (pixels, index): (Vec<Vec<u8>>, Vec<IndexEntry>) = prepared.into_iter().unzip();
        let n = index.len();
        let cache = ImageCache::from_pixels(pixels.concat(), size, index)?;
        Images::new(Arc::new(cache), meta.to_vec(), vec![0.0; n])
    }

    /// The mean over `nets` (the folds of `kind`) of their probabilities for `images`, and each
    /// fold's attention maps; row `i` is augmented as the `first + i`-th image of the list.
    fn fold_means(
        &self,
        kind: ModelKind,
        nets: &[Net],
        images: &Images,
        first: usize,
    ) -> (Vec<f32>, Vec<Vec<f32>>, usize) {
        let mut mean = vec![0f32; images.cache.len()];
        let mut maps = Vec::new();
        let mut grid = 0;
        for (f, net) in nets.iter().enumerate() {
            let p = self.fold_prediction(kind, f, net, images, first);
            for (m, v) in mean.iter_mut().zip(&p.probabilities) {
                *m += v / nets.len() as f32;
            }
            grid = p.grid;
            maps.push(p.attention);
        }
        (mean, maps, grid)
    }

    /// Fold `f`'s predictions for `images`, with fold `f`'s TTA seed, as in the run.
    fn fold_prediction(
        &self,
        kind: ModelKind,
        f: usize,
        net: &Net,
        images: &Images,
        first: usize,
    ) -> Predictions {
        let schedule = self.config.schedules.of(kind);
        let rows: Vec<usize> = (0..images.cache.len()).collect();
        let task = self
            .progress
            .start(&format!("{kind} fold {f}"), rows.len() as u64);
        let started = std::time::Instant::now();
        let p = predict_reporting(
            net,
            images,
            &rows,
            [schedule.eval_batch_size, schedule.tta],
            [fold_seed(self.config.seed, kind, f), first as u64],
            &self.device,
            &*task,
        );
        self.time(|t| t.models += started.elapsed().as_secs_f64());
        p
    }

    /// Scores `inputs`, seeding test-time augmentation as if they were images `first..` of a
    /// longer list. An image that cannot be read gets a [`ScoredImage`] with `error` set and no
    /// scores; the others are scored.
    ///
    /// # Errors
    /// A failure of the models or of a crop after its image was read.
    pub fn score(&self, inputs: &[Input], first: usize) -> Result<Vec<ScoredImage>> {
        let started = std::time::Instant::now();
        let result = self.score_timed(inputs, first);
        self.time(|t| t.total += started.elapsed().as_secs_f64());
        result
    }

    /// Where scoring has spent its time so far.
    pub fn timings(&self) -> Timings {
        *self
            .timings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn time(&self, f: impl FnOnce(&mut Timings)) {
        f(&mut self
            .timings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    fn score_timed(&self, inputs: &[Input], first: usize) -> Result<Vec<ScoredImage>> {
        let started = std::time::Instant::now();
        let size = self.config.image_size;
        // ChipNet's own size, when it sees another one than the other models, from the same
        // decode.
        let chip_size = Some(self.config.image_size_of(ModelKind::Chipnet))
            .filter(|&s| s != size && self.nets.iter().any(|n| n.0 == ModelKind::Chipnet));
        let cuts: Vec<Cut> = std::iter::once(size)
            .chain(chip_size)
            .map(|size| Cut { square: None, size })
            .collect();
        let prepared: Vec<Result<Vec<Prepared>>> = inputs
            .par_iter()
            .map(|input| Self::prepare(input, &cuts))
            .collect();
        self.time(|t| t.decoding += started.elapsed().as_secs_f64());
        let mut out: Vec<ScoredImage> = inputs
            .iter()
            .zip(&prepared)
            .map(|(input, p)| ScoredImage {
                row: empty_row(&input.name),
                map: Vec::new(),
                centre: None,
                crop: None,
                error: p.as_ref().err().map(ToString::to_string),
            })
            .collect();
        let ok: Vec<usize> = (0..inputs.len()).filter(|&i| prepared[i].is_ok()).collect();
        if ok.is_empty() {
            return Ok(out);
        }
        let mut good: Vec<Prepared> = Vec::new();
        let mut chip_good: Vec<Prepared> = Vec::new();
        for cut in prepared.into_iter().filter_map(Result::ok) {
            let mut cut = cut.into_iter();
            good.extend(cut.next());
            chip_good.extend(cut.next());
        }
        let readable: Vec<&Input> = ok.iter().map(|&i| &inputs[i]).collect();
        let meta = self.metadata(&readable);
        let centres: Vec<CentreCrop> = good.iter().map(|(_, e)| e.geometry()).collect();
        let images = Self::images(good, size, &meta)?;
        let chip_images = chip_size
            .map(|chip_size| Self::images(chip_good, chip_size, &meta))
            .transpose()?;
        let mut scores: HashMap<ModelKind, Vec<f32>> = HashMap::new();
        let mut attention = FoldMaps::default();
        for (kind, nets) in &self.nets {
            if *kind == ModelKind::Cropnet {
                continue;
            }
            let seen = match (&chip_images, kind) {
                (Some(chip_images), ModelKind::Chipnet) => chip_images,
                _ => &images,
            };
            let (mean, maps, grid) = self.fold_means(*kind, nets, seen, first);
            if *kind == ModelKind::Chipnet {
                attention = FoldMaps { maps, grid };
            }
            scores.insert(*kind, mean);
        }
        drop((images, chip_images));
        if let Some((_, nets)) = self.nets.iter().find(|n| n.0 == ModelKind::Cropnet) {
            let crops = CropInputs {
                inputs: &readable,
                centres: &centres,
                meta: &meta,
                attention: &attention,
            };
            scores.insert(ModelKind::Cropnet, self.cropnet_means(nets, &crops, first)?);
        }
        let ensemble = self.ensemble_of(&scores);
        for (j, &i) in ok.iter().enumerate() {
            self.fill(&mut out[i], centres[j], |k| scores.get(&k).map(|v| v[j]));
            out[i].row.ensemble = ensemble.as_ref().map(|e| e[j]);
            self.note_unseen(&mut out[i].row, &inputs[i]);
            if !attention.maps.is_empty() {
                let map = attention.mean(j);
                let (found, orig) = self.square(&map, &centres[j], attention.grid);
                let s = &mut out[i];
                s.row.box_x = Some(orig.x0);
                s.row.box_y = Some(orig.y0);
                s.row.box_side = Some(orig.width());
                s.row.threshold = Some(found.threshold);
                s.row.fallback = found.fallback;
                s.crop = Some(orig);
                s.map = map;
            }
        }
        Ok(out)
    }

    /// The mean over CropNet's folds of their probabilities, each fold on the crops its own
    /// fold's ChipNet chose, as in the run.
    fn cropnet_means(
        &self,
        nets: &[Net],
        crops: &CropInputs<'_>,
        first: usize,
    ) -> Result<Vec<f32>> {
        let size = self.config.image_size;
        let mut mean = vec![0f32; crops.inputs.len()];
        // Every fold's crop of an image from one decode, as the crop step cuts them.
        let started = std::time::Instant::now();
        let cut: Vec<Vec<Prepared>> = crops
            .inputs
            .par_iter()
            .enumerate()
            .map(|(j, input)| {
                let cuts: Vec<Cut> = (0..nets.len())
                    .map(|f| {
                        let map = crops.attention.map(f, j);
                        let (_, orig) = self.square(map, &crops.centres[j], crops.attention.grid);
                        Cut {
                            square: Some(orig),
                            size,
                        }
                    })
                    .collect();
                Self::prepare(input, &cuts)
            })
            .collect::<Result<_>>()?;
        self.time(|t| t.decoding += started.elapsed().as_secs_f64());
        let mut by_fold: Vec<Vec<Prepared>> = vec![Vec::new(); nets.len()];
        for image in cut {
            for (fold, c) in by_fold.iter_mut().zip(image) {
                fold.push(c);
            }
        }
        for ((f, net), cut) in nets.iter().enumerate().zip(by_fold) {
            let crop_images = Self::images(cut, size, crops.meta)?;
            let p = self.fold_prediction(ModelKind::Cropnet, f, net, &crop_images, first);
            for (m, v) in mean.iter_mut().zip(&p.probabilities) {
                *m += v / nets.len() as f32;
            }
        }
        Ok(mean)
    }

    /// The metadata values of `inputs` that the run never saw in training, so that its models
    /// score them as unknown (a typo such as `mael` scores as an empty cell): each value with
    /// its column and how many inputs have it, sorted by column and value. Empty for a run
    /// without metadata, which reads none.
    pub fn unseen_metadata(&self, inputs: &[Input]) -> Vec<UnseenMetadata> {
        if !self.config.metadata {
            return Vec::new();
        }
        let mut counts: BTreeMap<(&'static str, String), usize> = BTreeMap::new();
        for record in inputs.iter().filter_map(|i| i.metadata.as_ref()) {
            for value in self.encoder.unseen_values(record) {
                *counts.entry(value).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .map(|((column, value), rows)| UnseenMetadata {
                column,
                value,
                rows,
            })
            .collect()
    }

    /// Adds to `row`'s note the metadata values of `input` that the run never saw.
    fn note_unseen(&self, row: &mut PredictionRow, input: &Input) {
        let Some(record) = input.metadata.as_ref().filter(|_| self.config.metadata) else {
            return;
        };
        let unseen = self.encoder.unseen_values(record);
        if unseen.is_empty() {
            return;
        }
        let values: Vec<String> = unseen.iter().map(|(c, v)| format!("{c} {v:?}")).collect();
        let note = format!("{UNSEEN}: {}", values.join(", "));
        if row.note.is_empty() {
            row.note = note;
        } else {
            row.note = format!("{}; {note}", row.note);
        }
    }

    /// The metadata vectors of `inputs` (unknown where not given; empty without metadata).
    fn metadata(&self, inputs: &[&Input]) -> Vec<Vec<f32>> {
        inputs
            .iter()
            .map(|input| {
                if !self.config.metadata {
                    return Vec::new();
                }
                let unknown = Record {
                    image_name: input.name.clone(),
                    patient_id: None,
                    sex: None,
                    age: None,
                    site: None,
                    target: None,
                    lesion_box: None,
                };
                self.encoder
                    .encode(input.metadata.as_ref().unwrap_or(&unknown))
            })
            .collect()
    }

    /// The box of `map` in ChipNet's input and in the original, as the run's crop step finds it.
    fn square(&self, map: &[f32], centre: &CentreCrop, grid: usize) -> (AttentionBox, Rect) {
        let size = self.config.image_size_of(ModelKind::Chipnet) as usize;
        box_in_original(map, grid, size, centre, &self.config.boxes)
    }

    /// The run's ensemble of `scores` (each model's probabilities for the same images), as the
    /// run combines its own ([`weighted_average`]); `None` without an ensemble.
    fn ensemble_of(&self, scores: &HashMap<ModelKind, Vec<f32>>) -> Option<Vec<f32>> {
        if self.ensemble.is_empty() {
            return None;
        }
        let members: Vec<&[f32]> = self
            .ensemble
            .iter()
            .map(|m| scores.get(&m.model).map(Vec::as_slice))
            .collect::<Option<_>>()?;
        let weights: Vec<f64> = self.ensemble.iter().map(|m| m.weight).collect();
        Some(weighted_average(&members, &weights))
    }

    /// Fills `s`'s model scores (`get` gives each model's), size and notes.
    fn fill(
        &self,
        s: &mut ScoredImage,
        centre: CentreCrop,
        get: impl Fn(ModelKind) -> Option<f32>,
    ) {
        let size = self
            .config
            .cache_sizes()
            .into_iter()
            .max()
            .unwrap_or_default() as usize;
        s.row.width = Some(centre.width as u32);
        s.row.height = Some(centre.height as u32);
        s.row.resnet = get(ModelKind::Resnet);
        s.row.chipnet = get(ModelKind::Chipnet);
        s.row.attnresnet = get(ModelKind::Attnresnet);
        s.row.cropnet = get(ModelKind::Cropnet);
        if centre.side < size {
            s.row.note = format!(
                "upscaled: the centre square is {} px, the models see {size}",
                centre.side
            );
        }
        s.centre = Some(centre);
    }
}

/// What CropNet's folds crop: the readable inputs of a chunk, where each one's square lies in
/// its original, their metadata vectors and each fold's ChipNet maps.
struct CropInputs<'a> {
    inputs: &'a [&'a Input],
    centres: &'a [CentreCrop],
    meta: &'a [Vec<f32>],
    attention: &'a FoldMaps,
}

/// Each fold's ChipNet attention maps of a chunk, `grid × grid` cells per image.
#[derive(Debug, Default)]
struct FoldMaps {
    maps: Vec<Vec<f32>>,
    grid: usize,
}

impl FoldMaps {
    /// Fold `f`'s map of image `j`.
    fn map(&self, f: usize, j: usize) -> &[f32] {
        let cells = self.grid * self.grid;
        &self.maps[f][j * cells..(j + 1) * cells]
    }

    /// The folds' mean map of image `j`.
    fn mean(&self, j: usize) -> Vec<f32> {
        let mut mean = vec![0f32; self.grid * self.grid];
        for f in 0..self.maps.len() {
            for (m, v) in mean.iter_mut().zip(self.map(f, j)) {
                *m += v / self.maps.len() as f32;
            }
        }
        mean
    }
}

/// How [`Predictor::score_to_dir`] works through a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PredictOptions {
    /// Images per chunk: what is held in memory at once, and what a kill can cost.
    pub chunk: usize,
    /// Leave out images that cannot be read (their rows say why) instead of stopping.
    pub skip_bad: bool,
    /// Write `overlays/<image>.png`: the attention map, the box, the scores.
    pub overlays: bool,
}

impl Default for PredictOptions {
    fn default() -> Self {
        Self {
            chunk: 256,
            skip_bad: false,
            overlays: false,
        }
    }
}

/// What [`Predictor::score_to_dir`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreSummary {
    /// `predictions.csv`.
    pub path: PathBuf,
    /// Images scored.
    pub scored: usize,
    /// Images scored by an earlier, interrupted call.
    pub resumed: usize,
    /// Images left out, with why.
    pub skipped: Vec<(String, String)>,
    /// Metadata values the run never saw in training (scored as unknown), over all inputs.
    pub unseen: Vec<UnseenMetadata>,
}

/// A metadata value that a run never saw in training, and how many inputs have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnseenMetadata {
    /// Its column (`sex`, `age_approx`, `anatom_site_general_challenge`).
    pub column: &'static str,
    /// The value, lower-cased as read.
    pub value: String,
    /// How many inputs have it.
    pub rows: usize,
}

/// One line naming every unseen value, its column and how many rows have it.
pub fn describe_unseen(unseen: &[UnseenMetadata]) -> String {
    let values: Vec<String> = unseen
        .iter()
        .map(|u| {
            format!(
                "{} {:?} ({} row{})",
                u.column,
                u.value,
                u.rows,
                if u.rows == 1 { "" } else { "s" }
            )
        })
        .collect();
    format!("{UNSEEN} (as an empty cell): {}", values.join(", "))
}

/// What the warning and the notes about unseen metadata values say.
const UNSEEN: &str = "metadata never seen in training, scored as unknown";

impl Predictor {
    /// Scores `inputs` into `out/predictions.csv` (one [`PredictionRow`] per input, in order),
    /// `options.chunk` images at a time: each finished chunk is saved in `out/parts/`, so a
    /// killed call resumes where it stopped, and memory stays bounded whatever the list's
    /// length. With `options.overlays`, also `out/overlays/<image>.png`.
    ///
    /// # Errors
    /// Another process scoring into `out` (named); an `out` holding the predictions of other
    /// images; an unreadable image without `options.skip_bad` (every one of its chunk named);
    /// unwritable files.
    pub fn score_to_dir(
        &self,
        inputs: &[Input],
        out: &Path,
        options: &PredictOptions,
    ) -> Result<ScoreSummary> {
        let path = out.join("predictions.csv");
        let _claim =
            lock::claim_or_refuse(&out.join("locks/predict.lock"), "scoring into this folder")?;
        let unseen = self.unseen_metadata(inputs);
        if !unseen.is_empty() {
            tracing::warn!("{}", describe_unseen(&unseen));
        }
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        if path.is_file() {
            let rows: Vec<PredictionRow> = read_rows(&path)?;
            if rows
                .iter()
                .map(|r| r.image_name.as_str())
                .eq(names.iter().copied())
            {
                let mut s = summary(path, &rows, inputs.len());
                s.unseen = unseen;
                return Ok(s);
            }
            return Err(TrainError::Occupied {
                path,
                message: "holds the predictions of other images: choose another --out".into(),
            });
        }
        let chunk = options.chunk.max(1);
        let parts = out.join("parts");
        let task = self.progress.start("scoring", inputs.len() as u64);
        let mut rows: Vec<PredictionRow> = Vec::with_capacity(inputs.len());
        let mut resumed = 0;
        for (c, batch) in inputs.chunks(chunk).enumerate() {
            let first = c * chunk;
            let part = parts.join(format!("{first:09}-{:09}.csv", first + batch.len()));
            if part.is_file() {
                let done: Vec<PredictionRow> = read_rows(&part)?;
                if done
                    .iter()
                    .map(|r| r.image_name.as_str())
                    .eq(names[first..first + batch.len()].iter().copied())
                {
                    resumed += done.len();
                    task.advance(done.len() as u64);
                    rows.extend(done);
                    continue;
                }
            }
            let done = self.score_chunk(batch, first, out, options)?;
            agc_data::release_freed_memory();
            write_rows(&part, &done)?;
            task.advance(done.len() as u64);
            rows.extend(done);
        }
        drop(task);
        write_rows(&path, &rows)?;
        let _ = std::fs::remove_dir_all(&parts);
        let mut s = summary(path, &rows, inputs.len() - resumed);
        s.resumed = resumed;
        s.unseen = unseen;
        Ok(s)
    }

    /// The rows of one chunk, `first..` of the list, with overlays where asked.
    ///
    /// # Errors
    /// An unreadable image without `options.skip_bad` (every one of the chunk named), or as
    /// [`Self::score`].
    fn score_chunk(
        &self,
        batch: &[Input],
        first: usize,
        out: &Path,
        options: &PredictOptions,
    ) -> Result<Vec<PredictionRow>> {
        let scored = self.score(batch, first)?;
        let bad: Vec<String> = scored
            .iter()
            .filter_map(|s| {
                s.error
                    .as_ref()
                    .map(|e| format!("{}: {e}", s.row.image_name))
            })
            .collect();
        if !bad.is_empty() && !options.skip_bad {
            return Err(TrainError::Dataset(format!(
                "{} images cannot be read:\n  {}\npass --skip-bad-images to leave them out (the \
                 images before them are saved and will not be scored again)",
                bad.len(),
                bad.join("\n  ")
            )));
        }
        let mut done = Vec::with_capacity(scored.len());
        for (input, s) in batch.iter().zip(scored) {
            let mut row = s.row;
            if let Some(e) = &s.error {
                row.note = format!("left out: {e}");
            } else if options.overlays {
                Self::write_overlay(input, &row, &s.map, s.centre, s.crop, out)?;
            }
            done.push(row);
        }
        Ok(done)
    }

    fn write_overlay(
        input: &Input,
        row: &PredictionRow,
        map: &[f32],
        centre: Option<CentreCrop>,
        crop: Option<Rect>,
        out: &Path,
    ) -> Result<()> {
        let (Some(centre), Some(crop)) = (centre, crop) else {
            return Ok(());
        };
        let image = match &input.source {
            Source::File(path) => decode(path, None)?.image,
            Source::Pixels(d) => d.image.clone(),
        };
        let score = row.ensemble.or(row.cropnet).or(row.resnet).or(row.chipnet);
        let label = score.map_or_else(
            || row.image_name.clone(),
            |p| format!("{} {p:.3}", row.image_name),
        );
        let tile = draw_overlay(&image, map, centre, crop, None, &label);
        let path = out
            .join("overlays")
            .join(format!("{}.png", safe_name(&row.image_name)));
        Ok(crate::plot::save_png(&tile, &path)?)
    }
}

/// A file name for an image name: path separators and other awkward characters replaced.
fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn summary(path: PathBuf, rows: &[PredictionRow], scored: usize) -> ScoreSummary {
    let skipped: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r.note.starts_with("left out"))
        .map(|r| (r.image_name.clone(), r.note.clone()))
        .collect();
    ScoreSummary {
        path,
        scored: scored - skipped.len().min(scored),
        resumed: 0,
        skipped,
        unseen: Vec::new(),
    }
}

/// The images named by `paths`, in order: image files; folders (their JPEG and PNG files,
/// sorted by name); and CSV files with an `image_name` column and, optionally, `sex`,
/// `age_approx` and `anatom_site_general_challenge` (the images are looked up in the folder
/// named after the CSV, `test.csv` → `test/`, else beside it).
///
/// # Errors
/// A path that does not exist, a CSV without `image_name`, with an `image_name` that is not a
/// plain file name (a path, `..`, empty) or with a bad age, an empty list, or two images of the
/// same name.
pub fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(io(path))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            files.sort();
            inputs.extend(files.iter().map(|p| Input::file(p)));
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            inputs.extend(csv_inputs(path)?);
        } else if path.is_file() {
            inputs.push(Input::file(path));
        } else {
            return Err(TrainError::Io {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            });
        }
    }
    if inputs.is_empty() {
        return Err(TrainError::Dataset(format!(
            "no JPEG or PNG images in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = inputs.iter().find(|i| !seen.insert(i.name.clone())) {
        return Err(TrainError::Dataset(format!(
            "two images are named {:?}: each output row is keyed by the image's name",
            dup.name
        )));
    }
    Ok(inputs)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| agc_data::data_dir::IMAGE_EXTENSIONS.contains(&e))
}

/// The images of a CSV with an `image_name` column, read by agc-data's metadata reader (sex,
/// age and site where the file has them), looked up in the folder named after the CSV
/// (`test.csv` → `test/`), else beside it.
fn csv_inputs(path: &Path) -> Result<Vec<Input>> {
    let records = read_score_inputs(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let named = dir.join(path.file_stem().unwrap_or_default());
    let folder = if named.is_dir() {
        named
    } else {
        dir.to_path_buf()
    };
    Ok(records
        .into_iter()
        .map(|record| Input {
            name: record.image_name.clone(),
            source: Source::File(DataDir::image_path(&folder, &record.image_name)),
            metadata: Some(record),
        })
        .collect())
}

fn empty_row(name: &str) -> PredictionRow {
    PredictionRow {
        image_name: name.to_string(),
        width: None,
        height: None,
        resnet: None,
        chipnet: None,
        attnresnet: None,
        cropnet: None,
        ensemble: None,
        box_x: None,
        box_y: None,
        box_side: None,
        threshold: None,
        fallback: None,
        note: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, sex: Option<&str>, site: Option<&str>) -> Record {
        Record {
            image_name: name.into(),
            patient_id: None,
            sex: sex.map(Into::into),
            age: None,
            site: site.map(Into::into),
            target: None,
            lesion_box: None,
        }
    }

    /// A predictor of a run with metadata whose training saw `male`/`female` and `torso`, and
    /// no models: scoring fills sizes and notes only.
    fn modelless_predictor() -> Predictor {
        let seen = [
            record("a", Some("male"), Some("torso")),
            record("b", Some("female"), None),
        ];
        Predictor {
            timings: std::sync::Mutex::default(),
            config: PipelineConfig::demo("data".into()),
            encoder: MetadataEncoder::fit(&seen),
            nets: Vec::new(),
            ensemble: Vec::new(),
            device: Device::flex(),
            progress: agc_data::progress::silent(),
        }
    }

    #[test]
    fn the_ensemble_and_the_mean_map_combine_as_the_run_does() {
        let mut predictor = modelless_predictor();
        assert_eq!(predictor.ensemble_of(&HashMap::new()), None, "no ensemble");
        predictor.ensemble = vec![
            EnsembleMember::new(ModelKind::Resnet, 0.25),
            EnsembleMember::new(ModelKind::Cropnet, 0.75),
        ];
        let scores = HashMap::from([
            (ModelKind::Resnet, vec![0.2, 0.6]),
            (ModelKind::Cropnet, vec![0.4, 1.0]),
        ]);
        let e = predictor.ensemble_of(&scores).expect("both members scored");
        assert_eq!(
            e,
            weighted_average(&[&[0.2, 0.6], &[0.4, 1.0]], &[0.25, 0.75])
        );
        assert!(
            (e[0] - 0.35).abs() < 1e-7 && (e[1] - 0.9).abs() < 1e-7,
            "{e:?}"
        );
        let one = HashMap::from([(ModelKind::Resnet, vec![0.2, 0.6])]);
        assert_eq!(predictor.ensemble_of(&one), None, "a member without scores");
        // Two folds' 2×2 maps of two images: image 1's mean map.
        let maps = FoldMaps {
            maps: vec![
                vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
                vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0],
            ],
            grid: 2,
        };
        assert_eq!(maps.map(1, 1), [0.0, 0.5, 0.5, 0.0]);
        assert_eq!(maps.mean(1), [0.5, 0.25, 0.25, 0.0]);
    }

    #[test]
    fn unseen_metadata_is_counted_named_and_noted_on_its_rows() {
        let predictor = modelless_predictor();
        let input = |name: &str, side, sex, site| Input {
            metadata: Some(record(name, sex, site)),
            ..Input::pixels(name, image::RgbImage::new(side, side))
        };
        let inputs = [
            input("x1", 50, Some("alien"), Some("moon")),
            input("x2", 200, Some("alien"), Some("torso")),
            input("x3", 200, Some("male"), None),
        ];
        let unseen = predictor.unseen_metadata(&inputs);
        let line = describe_unseen(&unseen);
        assert_eq!(
            line,
            "metadata never seen in training, scored as unknown (as an empty cell): \
             anatom_site_general_challenge \"moon\" (1 row), sex \"alien\" (2 rows)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let summary = predictor
            .score_to_dir(&inputs, dir.path(), &PredictOptions::default())
            .expect("scores");
        assert_eq!(summary.unseen, unseen);
        let rows: Vec<PredictionRow> = read_rows(&summary.path).expect("predictions.csv");
        let notes: Vec<&str> = rows.iter().map(|r| r.note.as_str()).collect();
        assert_eq!(
            notes,
            [
                "upscaled: the centre square is 50 px, the models see 112; metadata never seen \
                 in training, scored as unknown: sex \"alien\", anatom_site_general_challenge \
                 \"moon\"",
                "metadata never seen in training, scored as unknown: sex \"alien\"",
                "",
            ]
        );
    }

    #[test]
    fn a_csv_image_name_that_is_a_path_is_refused_naming_the_line_and_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A file the name would reach, outside the CSV's images folder.
        std::fs::create_dir_all(dir.path().join("escape")).expect("mkdir");
        std::fs::write(dir.path().join("escape/target.jpg"), b"not read").expect("write");
        std::fs::create_dir_all(dir.path().join("in/test")).expect("mkdir");
        let csv = dir.path().join("in/test.csv");
        std::fs::write(&csv, "image_name,sex\nISIC_1,male\n../escape/target,male\n").expect("csv");
        let err = collect_inputs(&[csv]).expect_err("a path").to_string();
        assert!(
            err.contains("test.csv")
                && err.contains("row 2")
                && err.contains("\"../escape/target\"")
                && err.contains("path separator"),
            "{err}"
        );
    }
}
