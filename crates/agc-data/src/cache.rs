//! Image caches: many images cut and resized to S×S, stored as one `.npy` array `[N, S, S, 3]`
//! of `uint8` (the SIIM-ISIC seed's format, readable with `np.load(..., mmap_mode="r")`), with an
//! index CSV of each image's geometry in its original.
//!
//! [`build_caches`] makes the preprocessing caches (centre squares, every size from one decode
//! of each original) and the crop caches (given squares, every fold's from one decode);
//! [`build_cache`] makes one. They use all cores, show a progress bar, never write the
//! originals, and each cache resumes on its own:
//!
//! - the array is filled in `<cache>.npy.partial`, chunk by chunk; after each chunk,
//!   `<cache>.npy.progress.json` records what is done (written atomically), so a killed run
//!   loses at most one chunk and the same call goes on from there;
//! - an image that cannot be decoded does not stop the build: the others are written, and the call
//!   then fails with one [`DataError::BadImages`] listing every bad image; the next call (after
//!   fixing them, or with `skip_bad`) decodes only what is not done yet;
//! - a call that fails with no image in the array (every image bad, or an error before the first
//!   chunk) removes `<cache>.npy.partial` and its progress record: nothing is left to resume;
//! - when all is done, the index is written, the array renamed into place and, last,
//!   `<cache>.npy.manifest.json` records a fingerprint of the inputs (names, paths, file sizes
//!   and modification times, and the options). A later call with the same fingerprint does
//!   nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result, io};
use crate::fsutil::{partial_path, sidecar, write_atomic, write_json};
use agc_core::{CentreCrop, Rect};

use crate::imageio::{crop_resize, decode_with, square_in};
use crate::npy;
use crate::progress::{Reporter, silent};

/// One image to put in a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheJob {
    /// The image's name (the CSV's `image_name`).
    pub name: String,
    /// The original image file (read only).
    pub path: PathBuf,
    /// The square to cut, in original pixels (after EXIF orientation); `None` for the centre
    /// square.
    pub square: Option<Rect>,
}

/// Options of [`build_cache`].
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Side S of the cached images.
    pub size: u32,
    /// Large JPEGs are decoded at a reduced DCT scale (1/2 or 1/4, never 1/8: see
    /// [`crate::imageio::MIN_DCT_SCALE`]) that keeps the square's side at least this many times
    /// S; 0 decodes at full resolution.
    pub min_decode_factor: f64,
    /// Skip images that cannot be decoded (their slot is zeros and the index marks them) instead
    /// of failing, after all the others are cached, with [`DataError::BadImages`].
    pub skip_bad: bool,
    /// Images per resumable chunk.
    pub chunk: usize,
    /// Where the build reports its progress (one step per image).
    pub progress: Reporter,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            size: 224,
            min_decode_factor: 2.0,
            skip_bad: false,
            chunk: 256,
            progress: silent(),
        }
    }
}

/// One row of a cache's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The image's name.
    pub image_name: String,
    /// Width of the original.
    pub width: u32,
    /// Height of the original.
    pub height: u32,
    /// Left edge of the square in the original.
    pub crop_x: u32,
    /// Top edge of the square in the original.
    pub crop_y: u32,
    /// Side of the square in the original.
    pub crop_side: u32,
    /// Empty when the image is in the cache; otherwise why it was skipped.
    pub skipped: String,
}

impl IndexEntry {
    /// The row of an image cut from `crop`.
    pub fn new(name: &str, crop: &CentreCrop) -> Self {
        Self {
            image_name: name.to_string(),
            width: crop.width as u32,
            height: crop.height as u32,
            crop_x: crop.x as u32,
            crop_y: crop.y as u32,
            crop_side: crop.side as u32,
            skipped: String::new(),
        }
    }

    /// The square's geometry in the original.
    pub fn geometry(&self) -> CentreCrop {
        CentreCrop {
            width: self.width as usize,
            height: self.height as usize,
            x: self.crop_x as usize,
            y: self.crop_y as usize,
            side: self.crop_side as usize,
        }
    }

    fn skipped(name: &str, why: String) -> Self {
        Self {
            image_name: name.to_string(),
            width: 0,
            height: 0,
            crop_x: 0,
            crop_y: 0,
            crop_side: 0,
            skipped: why,
        }
    }

    /// Whether the image is in the cache.
    pub fn is_ok(&self) -> bool {
        self.skipped.is_empty()
    }
}

/// What [`build_cache`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheReport {
    /// The cache was complete with the same inputs: nothing was done.
    pub up_to_date: bool,
    /// Images decoded and written by this call.
    pub written: usize,
    /// Images a previous, interrupted call had already written.
    pub resumed: usize,
    /// Images skipped (with `skip_bad`), with the reason.
    pub skipped: Vec<(String, String)>,
    /// Images whose square was smaller than S (upsampled).
    pub upscaled: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    fingerprint: String,
    done: BTreeMap<usize, IndexEntry>,
}

impl Progress {
    /// The record of an earlier call, if both it and the array it describes survive and it was
    /// made for the same inputs, without the images it skipped (they are tried again); else an
    /// empty record. The progress fingerprint leaves out `skip_bad`, so that a call with
    /// `skip_bad` after a failed one keeps what that one wrote.
    fn resume(path: &Path, partial_exists: bool, fingerprint: String) -> Self {
        let mut progress = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Self>(&b).ok())
            .filter(|p| partial_exists && p.fingerprint == fingerprint)
            .unwrap_or(Self {
                fingerprint,
                done: BTreeMap::new(),
            });
        progress.done.retain(|_, entry| entry.is_ok());
        progress
    }

    /// Images in the partial array that a later call keeps (not the skipped ones).
    fn kept(&self) -> usize {
        self.done.values().filter(|e| e.is_ok()).count()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    fingerprint: String,
    count: usize,
    size: u32,
}

/// The index CSV of a cache: `train_224.npy` → `train_224.index.csv`.
pub fn index_path(cache: &Path) -> PathBuf {
    cache.with_extension("index.csv")
}

/// Builds (or completes, or confirms) the cache `path` (`.npy`) from `jobs`: [`build_caches`]
/// with one cache.
///
/// # Errors
/// As [`build_caches`].
pub fn build_cache(jobs: &[CacheJob], path: &Path, options: &CacheOptions) -> Result<CacheReport> {
    let target = CacheTarget {
        path,
        jobs,
        size: options.size,
    };
    let mut reports = build_caches(&[target], options)?;
    Ok(reports.remove(0))
}

/// One of the caches [`build_caches`] builds together: its file, its images (each with its
/// square) and its side S, which replaces `options.size`.
#[derive(Debug, Clone, Copy)]
pub struct CacheTarget<'a> {
    /// The cache file (`.npy`).
    pub path: &'a Path,
    /// Its images, in the order of the array; job `i` of every target is cut from the same
    /// original.
    pub jobs: &'a [CacheJob],
    /// Side S of its images.
    pub size: u32,
}

/// Builds (or completes, or confirms) several caches cut from the same originals, decoding each
/// original once for all of them ([`prepare_cuts`]: at the DCT scale the most demanding of its
/// squares needs) instead of once per cache. The preprocessing caches of two sizes, and the
/// crop caches of every fold, are each one such call. Each cache resumes, fails and commits on
/// its own, as the module describes; a cache already up to date is left alone (its squares
/// still count in the choice of scale, so the others come out the same whether it is built in
/// this call or was before).
///
/// # Errors
/// Images that cannot be decoded or a square outside its image (unless `skip_bad`): all the
/// others are decoded and kept first, the caches without bad images are finished, and one
/// [`DataError::BadImages`] lists every bad image of the first cache that has any. An empty job
/// list, targets whose jobs name other originals, or a cache file that cannot be written, name
/// the file.
pub fn build_caches(
    targets: &[CacheTarget<'_>],
    options: &CacheOptions,
) -> Result<Vec<CacheReport>> {
    check_request(targets, options)?;
    let mut reports = vec![CacheReport::default(); targets.len()];
    let mut builds = Vec::new();
    for (t, target) in targets.iter().enumerate() {
        match Build::start(t, target, options)? {
            Some(build) => builds.push(build),
            None => reports[t].up_to_date = true,
        }
    }
    if builds.is_empty() {
        return Ok(reports);
    }
    let names: Vec<String> = builds
        .iter()
        .map(|b| b.target.path.display().to_string())
        .collect();
    let jobs = targets[0].jobs;
    let bar = options
        .progress
        .start(&format!("caching {}", names.join(", ")), jobs.len() as u64);
    let todo: Vec<usize> = (0..jobs.len())
        .filter(|&i| builds.iter().any(|b| !b.progress.done.contains_key(&i)))
        .collect();
    bar.advance((jobs.len() - todo.len()) as u64);
    for chunk in todo.chunks(options.chunk) {
        let results: Vec<_> = chunk
            .par_iter()
            .map(|&i| (i, cut_for(targets, &builds, i, options.min_decode_factor)))
            .collect();
        for (i, cuts) in results {
            for (build, cut) in builds.iter_mut().zip(cuts) {
                if let Some(cut) = cut {
                    build.record(i, cut, options.skip_bad)?;
                }
            }
            bar.advance(1);
        }
        for build in &mut builds {
            build.checkpoint()?;
        }
        release_freed_memory();
    }
    drop(bar);
    let mut first_error = None;
    for build in builds {
        let t = build.index;
        match build.finish() {
            Ok(report) => reports[t] = report,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(reports), Err)
}

/// Gives the memory that malloc holds free back to the system: [`build_caches`] calls it
/// between two chunks, when every photograph of the chunk has been decoded and dropped, and
/// `agc predict` between its chunks. A photograph's decode allocates tens of megabytes in pieces
/// (zune-jpeg's planes, the RGB image, the resized cuts) on every thread; glibc keeps what is
/// freed in each thread's arena, where pieces freed in another order than they were allocated
/// are not all reused, so the resident memory of a long run of decodes rose with the number of
/// photographs (docs/performance.md, "Cost with the data"). `malloc_trim` returns every free
/// page of every arena. Does nothing off glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_freed_memory() {
    // SAFETY: malloc_trim takes an integer and only gives free pages back (under each arena's
    // lock); it never touches memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives the memory that malloc holds free back to the system (glibc only: nothing here).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed_memory() {}

/// What became of one image in one cache: its pixels and index row, or why it has none.
type CutResult = std::result::Result<Prepared, String>;

/// Image `i` cut for every build that still needs it (`None` for the others), from one decode
/// whose scale every target's square decides.
fn cut_for(
    targets: &[CacheTarget<'_>],
    builds: &[Build<'_>],
    i: usize,
    min_decode_factor: f64,
) -> Vec<Option<CutResult>> {
    let job = &targets[0].jobs[i];
    let cuts: Vec<Cut> = targets
        .iter()
        .map(|t| Cut {
            square: t.jobs[i].square,
            size: t.size,
        })
        .collect();
    let needs = |b: &Build<'_>| !b.progress.done.contains_key(&i);
    match prepare_cuts(&job.name, &job.path, &cuts, min_decode_factor) {
        Ok(all) => {
            let mut all: Vec<Option<Result<_>>> = all.into_iter().map(Some).collect();
            builds
                .iter()
                .map(|b| {
                    let cut = all[b.index].take().filter(|_| needs(b));
                    cut.map(|c| c.map_err(|e| e.to_string()))
                })
                .collect()
        }
        Err(e) => builds
            .iter()
            .map(|b| needs(b).then(|| Err(e.to_string())))
            .collect(),
    }
}

/// One cache being built by [`build_caches`]: its partial array, its progress record and what
/// has gone wrong so far.
struct Build<'a> {
    /// Its place among the targets, and the target.
    index: usize,
    target: CacheTarget<'a>,
    fingerprint: String,
    partial: PartialCache,
    progress: Progress,
    progress_path: PathBuf,
    discard: Discard,
    report: CacheReport,
    bad: Vec<(usize, String)>,
}

impl<'a> Build<'a> {
    /// The build of `target`, resumed where an earlier call left it; `None` when the cache is
    /// already complete with the same inputs.
    fn start(t: usize, target: &CacheTarget<'a>, options: &CacheOptions) -> Result<Option<Self>> {
        let path = target.path;
        let options = CacheOptions {
            size: target.size,
            ..options.clone()
        };
        let complete = fingerprint(target.jobs, &options, true);
        let manifest_path = sidecar(path, ".manifest.json");
        if path.is_file()
            && let Ok(bytes) = std::fs::read(&manifest_path)
            && let Ok(m) = serde_json::from_slice::<Manifest>(&bytes)
            && m.fingerprint == complete
        {
            return Ok(None);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let partial_exists = partial_path(path).is_file();
        let progress_path = sidecar(path, ".progress.json");
        // Whatever ends the build early, the partial array is removed unless it holds an image.
        let mut discard = Discard {
            files: [partial_path(path), progress_path.clone()],
            keep: false,
        };
        let partial = PartialCache::open(path, target.jobs.len(), target.size as usize)?;
        let progress_fingerprint = fingerprint(target.jobs, &options, false);
        let progress = Progress::resume(&progress_path, partial_exists, progress_fingerprint);
        discard.keep = progress.kept() > 0;
        partial.prepare(!progress.done.is_empty())?;
        let report = CacheReport {
            resumed: progress.done.len(),
            ..CacheReport::default()
        };
        Ok(Some(Self {
            index: t,
            target: *target,
            fingerprint: complete,
            partial,
            progress,
            progress_path,
            discard,
            report,
            bad: Vec::new(),
        }))
    }

    /// Writes image `i`'s cut (or notes why there is none).
    fn record(&mut self, i: usize, cut: CutResult, skip_bad: bool) -> Result<()> {
        let entry = match cut {
            Ok((pixels, entry)) => {
                self.partial.write(i, &pixels)?;
                self.report.upscaled += usize::from(entry.crop_side < self.target.size);
                self.report.written += 1;
                entry
            }
            Err(e) if skip_bad => {
                let job = &self.target.jobs[i];
                tracing::warn!("skipping {}: {e}", job.path.display());
                self.report.skipped.push((job.name.clone(), e.clone()));
                self.partial.write(i, &vec![0u8; self.partial.item])?;
                IndexEntry::skipped(&job.name, e)
            }
            Err(e) => {
                tracing::warn!("{}: {e}", self.target.jobs[i].name);
                self.bad.push((i, e));
                return Ok(());
            }
        };
        self.progress.done.insert(i, entry);
        Ok(())
    }

    /// Syncs the array and records the progress: a kill after this loses nothing before it.
    fn checkpoint(&mut self) -> Result<()> {
        self.partial.sync()?;
        write_json(&self.progress_path, &self.progress)?;
        self.discard.keep = self.progress.kept() > 0;
        Ok(())
    }

    /// The index, then the array, then the manifest that marks the cache complete; or the
    /// bad images, listed in job order.
    fn finish(mut self) -> Result<CacheReport> {
        if !self.bad.is_empty() {
            self.bad.sort_by_key(|(i, _)| *i);
            return Err(DataError::BadImages {
                cache: self.target.path.to_path_buf(),
                kept: self.progress.kept(),
                images: self
                    .bad
                    .into_iter()
                    .map(|(i, why)| (self.target.jobs[i].name.clone(), why))
                    .collect(),
            });
        }
        let path = self.target.path;
        write_index(&index_path(path), self.progress.done.values())?;
        self.partial.commit(path)?;
        write_json(
            &sidecar(path, ".manifest.json"),
            &Manifest {
                fingerprint: self.fingerprint,
                count: self.target.jobs.len(),
                size: self.target.size,
            },
        )?;
        std::fs::remove_file(&self.progress_path).ok();
        self.discard.keep = true;
        Ok(self.report)
    }
}

/// Refuses an empty job list, a zero size or chunk, and targets whose job `i` is not the same
/// original.
fn check_request(targets: &[CacheTarget<'_>], options: &CacheOptions) -> Result<()> {
    let Some(first) = targets.first() else {
        return Err(DataError::Invalid {
            name: "cache",
            message: "no cache to build".into(),
        });
    };
    if options.chunk == 0 || targets.iter().any(|t| t.size == 0) {
        return Err(DataError::Invalid {
            name: "cache",
            message: "size and chunk must be positive".into(),
        });
    }
    for target in targets {
        if target.jobs.is_empty() {
            return Err(DataError::Invalid {
                name: "cache",
                message: format!("{}: no images to cache", target.path.display()),
            });
        }
        let same = |(a, b): (&CacheJob, &CacheJob)| a.name == b.name && a.path == b.path;
        if target.jobs.len() != first.jobs.len() || !target.jobs.iter().zip(first.jobs).all(same) {
            return Err(DataError::Invalid {
                name: "cache",
                message: format!(
                    "{} is built with {} from other originals",
                    target.path.display(),
                    first.path.display()
                ),
            });
        }
    }
    Ok(())
}

/// The partial array and its progress record, removed when dropped unless `keep`: a call that
/// fails before any image is in the array leaves nothing behind (the array is preallocated to
/// its full size), while one that fails with images written keeps them for the next call.
struct Discard {
    files: [PathBuf; 2],
    keep: bool,
}

impl Drop for Discard {
    fn drop(&mut self) {
        if !self.keep {
            for file in &self.files {
                std::fs::remove_file(file).ok();
            }
        }
    }
}

/// The array being filled: `<cache>.npy.partial`, written at each image's offset.
struct PartialCache {
    file: std::fs::File,
    path: PathBuf,
    header: Vec<u8>,
    item: usize,
    len: usize,
}

impl PartialCache {
    fn open(cache: &Path, len: usize, size: usize) -> Result<Self> {
        let path = partial_path(cache);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(Self {
            file,
            path,
            header: npy::header_u8(&[len, size, size, 3]),
            item: size * size * 3,
            len,
        })
    }

    /// Sizes the file and writes the header; `keep` keeps the images already written.
    fn prepare(&self, keep: bool) -> Result<()> {
        if !keep {
            self.file.set_len(0).map_err(io(&self.path))?;
        }
        self.file
            .set_len((self.header.len() + self.len * self.item) as u64)
            .map_err(io(&self.path))?;
        self.file
            .write_all_at(&self.header, 0)
            .map_err(io(&self.path))
    }

    fn write(&self, i: usize, pixels: &[u8]) -> Result<()> {
        let offset = (self.header.len() + i * self.item) as u64;
        self.file
            .write_all_at(pixels, offset)
            .map_err(io(&self.path))
    }

    fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(io(&self.path))
    }

    fn commit(self, cache: &Path) -> Result<()> {
        self.sync()?;
        drop(self.file);
        std::fs::rename(&self.path, cache).map_err(io(cache))
    }
}

/// Prepares one image as [`build_cache`] does: decodes the original (at the DCT scale that
/// keeps the square at `min_decode_factor × size`), cuts the job's square (or the centre
/// square) and resizes it to `size`. Returns the `size·size·3` RGB bytes and the index row.
///
/// # Errors
/// An unreadable image, or a square outside it (the error names the file).
pub fn prepare_image(job: &CacheJob, options: &CacheOptions) -> Result<Prepared> {
    let cut = Cut {
        square: job.square,
        size: options.size,
    };
    prepare_cuts(&job.name, &job.path, &[cut], options.min_decode_factor)?.remove(0)
}

/// An image prepared for a cache: its `S·S·3` RGB bytes and its index row.
pub type Prepared = (Vec<u8>, IndexEntry);

/// One image cut from an original: a square (the centre square when `None`), resized to `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// The square in original pixels (after EXIF orientation), or the centre square.
    pub square: Option<Rect>,
    /// Side of the resized image.
    pub size: u32,
}

/// Decodes the original `path` once, at the smallest DCT scale that keeps every cut's square at
/// `min_decode_factor` times its `size` (0: full size), and cuts each of `cuts` from it, as
/// [`build_caches`] does for the caches it builds together (and `agc predict` for an image's
/// inputs). Returns each cut's RGB bytes and index row, or why that cut failed.
///
/// # Errors
/// An image that cannot be read (the error names the file): no cut can be made. A square that
/// is not square, or outside the image, fails its own cut only.
pub fn prepare_cuts(
    name: &str,
    path: &Path,
    cuts: &[Cut],
    min_decode_factor: f64,
) -> Result<Vec<Result<Prepared>>> {
    let bad = |message: String| DataError::Image {
        path: path.to_path_buf(),
        message,
    };
    let not_square = |cut: &Cut| cut.square.filter(|s| s.width() != s.height());
    // Decode at the smallest DCT scale that keeps each square at min_decode_factor × S.
    let min_short = |w: u32, h: u32| {
        let short = w.min(h);
        let want = |cut: &Cut| {
            let side = cut.square.map_or(short, |s| {
                u32::try_from(s.width()).unwrap_or(u32::MAX).max(1)
            });
            let want = f64::from(cut.size) * min_decode_factor * f64::from(short) / f64::from(side);
            want.ceil() as u32
        };
        let wanted = cuts
            .iter()
            .filter(|c| not_square(c).is_none())
            .map(want)
            .max();
        wanted.filter(|_| min_decode_factor > 0.0)
    };
    let refused = |square: Rect| Err(bad(format!("the crop {square:?} is not a square")));
    if cuts.iter().all(|c| not_square(c).is_some()) {
        return Ok(cuts.iter().filter_map(not_square).map(refused).collect());
    }
    let decoded = decode_with(path, min_short)?;
    Ok(cuts
        .iter()
        .map(|cut| {
            if let Some(square) = not_square(cut) {
                return refused(square);
            }
            let geometry = square_in(&decoded, cut.square);
            let pixels =
                crop_resize(&decoded, &geometry, cut.size).map_err(|e| bad(e.to_string()))?;
            Ok((pixels, IndexEntry::new(name, &geometry)))
        })
        .collect())
}

fn write_index<'a>(path: &Path, entries: impl Iterator<Item = &'a IndexEntry>) -> Result<()> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for e in entries {
        writer.serialize(e).map_err(|e| DataError::Csv {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    let bytes = writer.into_inner().map_err(|e| DataError::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// Reads a cache's index CSV.
///
/// # Errors
/// If the file cannot be read or parsed.
pub fn read_index(path: &Path) -> Result<Vec<IndexEntry>> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| DataError::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    reader
        .deserialize()
        .map(|r| {
            r.map_err(|e| DataError::Csv {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
        })
        .collect()
}

/// FNV-1a over everything that decides a cache's content; `skip_bad` too if `with_skip`.
fn fingerprint(jobs: &[CacheJob], options: &CacheOptions, with_skip: bool) -> String {
    let mut h = Fnv::default();
    // v2: centre squares placed as torchvision places them, DCT scaling stopped at 1/4, EXIF
    // orientation applied: a cache of v1 is rebuilt, not mixed with new images.
    h.write(b"agc-cache-v2");
    h.write(&options.size.to_le_bytes());
    h.write(&options.min_decode_factor.to_le_bytes());
    if with_skip {
        h.write(&[u8::from(options.skip_bad)]);
    }
    for job in jobs {
        h.write(job.name.as_bytes());
        h.write(&[0]);
        h.write(job.path.as_os_str().as_encoded_bytes());
        h.write(&[0]);
        if let Some(square) = job.square {
            // As `[x, y, side]` in u32s, as squares were written before they were `Rect`s: the
            // caches made then stay valid.
            for v in [square.x0, square.y0, square.width()] {
                h.write(&(v as u32).to_le_bytes());
            }
        }
        let meta = std::fs::metadata(&job.path).ok();
        h.write(
            &meta
                .as_ref()
                .map_or(0, std::fs::Metadata::len)
                .to_le_bytes(),
        );
        let mtime = meta
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        h.write(&mtime.to_le_bytes());
    }
    format!("{:016x}", h.0)
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A finished cache, memory-mapped (or held in memory, [`ImageCache::from_pixels`]): image `i`
/// is `S·S·3` bytes of RGB in row-major order.
#[derive(Debug)]
pub struct ImageCache {
    map: Storage,
    offset: usize,
    len: usize,
    size: usize,
    index: Vec<IndexEntry>,
}

impl ImageCache {
    /// Opens a cache written by [`build_cache`] (or any `[N, S, S, 3]` `uint8` `.npy` beside an
    /// index CSV with N rows).
    ///
    /// # Errors
    /// If a file is missing, the array is not `[N, S, S, 3]` `uint8`, it is shorter than its
    /// shape, or the index has another number of rows.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(io(path))?;
        let map = mmap::map(&file).map_err(io(path))?;
        let (shape, offset) = npy::parse_header_u8(&map, path)?;
        let bad = |message: String| DataError::Cache {
            path: path.to_path_buf(),
            message,
        };
        let [len, h, w, c] = shape[..] else {
            return Err(bad(format!("shape {shape:?} is not [N, S, S, 3]")));
        };
        if h != w || c != 3 {
            return Err(bad(format!("shape {shape:?} is not [N, S, S, 3]")));
        }
        if map.len() < offset + len * h * w * 3 {
            return Err(bad(format!("file is shorter than its shape {shape:?}")));
        }
        let index_file = index_path(path);
        let index = read_index(&index_file)?;
        if index.len() != len {
            // Name the index too: either file may be the one that is wrong.
            return Err(bad(format!(
                "its index {} has {} rows for {len} images",
                index_file.display(),
                index.len()
            )));
        }
        Ok(Self {
            map: Storage::Mapped(map),
            offset,
            len,
            size: h,
            index,
        })
    }

    /// A cache held in memory: `pixels` holds `index.len()` images of `size·size·3` bytes, as
    /// [`prepare_image`] makes them (for images that are scored once and not kept).
    ///
    /// # Errors
    /// If `pixels` does not hold exactly that many bytes.
    pub fn from_pixels(pixels: Vec<u8>, size: usize, index: Vec<IndexEntry>) -> Result<Self> {
        let len = index.len();
        if pixels.len() != len * size * size * 3 {
            return Err(DataError::Invalid {
                name: "pixels",
                message: format!("{} bytes for {len} images of {size}×{size}×3", pixels.len()),
            });
        }
        Ok(Self {
            map: Storage::Memory(pixels),
            offset: 0,
            len,
            size,
            index,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache holds no image.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Side S of the images.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The index rows, in cache order.
    pub fn index(&self) -> &[IndexEntry] {
        &self.index
    }

    /// Image `i` as `S·S·3` RGB bytes.
    ///
    /// # Panics
    /// If `i >= len`.
    pub fn image(&self, i: usize) -> &[u8] {
        assert!(i < self.len, "image {i} of a cache of {}", self.len);
        let item = self.size * self.size * 3;
        let bytes: &[u8] = match &self.map {
            Storage::Mapped(m) => m,
            Storage::Memory(v) => v,
        };
        &bytes[self.offset + i * item..self.offset + (i + 1) * item]
    }
}

/// Where a cache's bytes live.
#[derive(Debug)]
enum Storage {
    Mapped(Mmap),
    Memory(Vec<u8>),
}

mod mmap {
    //! The one place that maps a file.
    #![allow(unsafe_code)]

    /// Maps a file read-only.
    pub fn map(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
        // SAFETY: the map is read-only, and agc never truncates or rewrites a finished cache in
        // place (a rebuild writes a new file and renames it over the old one, which leaves this
        // mapping on the old inode).
        unsafe { memmap2::Mmap::map(file) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    /// `n` PNG originals of varied sizes, the i-th filled with grey level 10·i.
    fn originals(dir: &Path, n: usize) -> Vec<CacheJob> {
        (0..n)
            .map(|i| {
                let path = dir.join(format!("img{i}.png"));
                let v = (10 * i) as u8;
                RgbImage::from_pixel(60 + 7 * i as u32, 40 + 3 * i as u32, image::Rgb([v, v, v]))
                    .save(&path)
                    .expect("save");
                CacheJob {
                    name: format!("img{i}"),
                    path,
                    square: None,
                }
            })
            .collect()
    }

    fn options() -> CacheOptions {
        CacheOptions {
            size: 16,
            chunk: 2,
            progress: silent(),
            ..CacheOptions::default()
        }
    }

    #[test]
    fn progress_is_reported_through_the_callback_one_step_per_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs = originals(dir.path(), 5);
        let recorder = crate::progress::tests::Recorder::default();
        let tasks = std::sync::Arc::clone(&recorder.0);
        let options = CacheOptions {
            progress: std::sync::Arc::new(recorder),
            ..options()
        };
        build_cache(&jobs, &dir.path().join("c.npy"), &options).expect("builds");
        let tasks = tasks.lock().expect("lock");
        assert_eq!(tasks.len(), 1);
        assert!(tasks[0].0.contains("c.npy"), "{:?}", tasks[0]);
        assert_eq!((tasks[0].1, tasks[0].2), (5, 5));
    }

    #[test]
    fn builds_a_numpy_cache_with_an_index_and_does_nothing_the_second_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs = originals(dir.path(), 5);
        let cache_path = dir.path().join("cache/train_16.npy");
        let report = build_cache(&jobs, &cache_path, &options()).expect("builds");
        assert_eq!((report.written, report.up_to_date), (5, false));
        let cache = ImageCache::open(&cache_path).expect("opens");
        assert_eq!((cache.len(), cache.size()), (5, 16));
        for i in 0..5 {
            assert!(
                cache.image(i).iter().all(|&v| v == (10 * i) as u8),
                "image {i}"
            );
        }
        let e = &cache.index()[3];
        assert_eq!(
            (
                e.image_name.as_str(),
                e.width,
                e.height,
                e.crop_x,
                e.crop_y,
                e.crop_side
            ),
            ("img3", 81, 49, 16, 0, 49)
        );
        let (shape, _) = npy::read_u8(&cache_path).expect("plain npy");
        assert_eq!(shape, [5, 16, 16, 3]);

        let again = build_cache(&jobs, &cache_path, &options()).expect("second run");
        assert!(again.up_to_date && again.written == 0);
        // A changed original invalidates the cache.
        std::thread::sleep(std::time::Duration::from_millis(20));
        RgbImage::from_pixel(61, 40, image::Rgb([200, 200, 200]))
            .save(&jobs[0].path)
            .expect("save");
        let rebuilt = build_cache(&jobs, &cache_path, &options()).expect("rebuild");
        assert_eq!(rebuilt.written, 5);
        assert!(
            ImageCache::open(&cache_path)
                .expect("opens")
                .image(0)
                .iter()
                .all(|&v| v == 200)
        );
    }

    #[test]
    fn an_interrupted_build_resumes_and_gives_the_same_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs = originals(dir.path(), 6);
        let cache_path = dir.path().join("c.npy");
        build_cache(&jobs, &cache_path, &options()).expect("builds");
        let complete = std::fs::read(&cache_path).expect("read");

        // Recreate the state a kill after two of three chunks leaves: the partial array with
        // chunks 0 and 1 written (chunk 2 zeroed), and the progress file, but no final cache.
        let fingerprint = fingerprint(&jobs, &options(), false);
        let index = read_index(&index_path(&cache_path)).expect("index");
        let done = (0..4).map(|i| (i, index[i].clone())).collect();
        let progress = Progress { fingerprint, done };
        let item = 16 * 16 * 3;
        let mut partial = complete.clone();
        let data_start = partial.len() - 6 * item;
        partial[data_start + 4 * item..].fill(0);
        std::fs::write(partial_path(&cache_path), &partial).expect("write partial");
        std::fs::write(
            sidecar(&cache_path, ".progress.json"),
            serde_json::to_vec(&progress).expect("json"),
        )
        .expect("write");
        std::fs::remove_file(&cache_path).expect("rm");
        std::fs::remove_file(sidecar(&cache_path, ".manifest.json")).expect("rm");

        let report = build_cache(&jobs, &cache_path, &options()).expect("resumes");
        assert_eq!((report.resumed, report.written), (4, 2));
        assert_eq!(std::fs::read(&cache_path).expect("read"), complete);
        assert!(!sidecar(&cache_path, ".progress.json").exists());
    }

    #[test]
    fn every_bad_image_is_listed_in_one_error_and_skip_bad_then_resumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut jobs = originals(dir.path(), 5);
        std::fs::write(&jobs[1].path, b"corrupt").expect("write");
        jobs.push(CacheJob {
            name: "gone".into(),
            path: dir.path().join("gone.jpg"),
            square: None,
        });
        // Past the first chunk, so the build must go on after the first bad image.
        jobs[4].square = Some(Rect::square(1000, 0, 10));
        let cache_path = dir.path().join("c.npy");
        let err = build_cache(&jobs, &cache_path, &options()).expect_err("bad images");
        let message = err.to_string();
        match &err {
            DataError::BadImages {
                cache,
                images,
                kept,
            } => {
                assert_eq!(cache, &cache_path);
                assert_eq!(*kept, 3, "the good images are kept for the next call");
                let names: Vec<&str> = images.iter().map(|(n, _)| n.as_str()).collect();
                assert_eq!(names, ["img1", "img4", "gone"]);
            }
            other => panic!("expected BadImages, got {other}"),
        }
        for needle in [
            "c.npy",
            "3 image(s)",
            "img1.png",
            "img4.png",
            "gone.jpg",
            "skip_bad",
            "3 image(s) that could be read are kept in",
            "c.npy.partial",
        ] {
            assert!(message.contains(needle), "{needle:?} in {message}");
        }
        assert!(!cache_path.exists(), "no cache after a failed build");

        let skip = CacheOptions {
            skip_bad: true,
            ..options()
        };
        let report = build_cache(&jobs, &cache_path, &skip).expect("skips");
        assert_eq!(
            (report.resumed, report.written),
            (3, 0),
            "the good images of the failed call are kept"
        );
        let names: Vec<&str> = report.skipped.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["img1", "img4", "gone"]);
        let cache = ImageCache::open(&cache_path).expect("opens");
        assert!(!cache.index()[1].is_ok() && cache.index()[1].skipped.contains("img1.png"));
        assert!(cache.index()[2].is_ok() && cache.image(2).iter().all(|&v| v == 20));
        assert!(cache.image(1).iter().all(|&v| v == 0));
    }

    #[test]
    fn a_long_list_of_bad_images_shows_twenty_and_counts_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs: Vec<CacheJob> = (0..23)
            .map(|i| CacheJob {
                name: format!("missing{i}"),
                path: dir.path().join(format!("missing{i}.jpg")),
                square: None,
            })
            .collect();
        let err = build_cache(&jobs, &dir.path().join("c.npy"), &options())
            .expect_err("all missing")
            .to_string();
        assert!(
            err.contains("23 image(s)") && err.contains("and 3 more"),
            "{err}"
        );
        assert!(
            err.contains("missing19.jpg") && !err.contains("missing20.jpg"),
            "{err}"
        );
        // No image was written, so nothing is kept: not the preallocated array, not its record.
        assert!(!err.contains("kept in"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn crops_cut_the_given_square_from_the_original() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("orig.png");
        // Black image with a white 100×100 square at (300, 50).
        RgbImage::from_fn(800, 400, |x, y| {
            let inside = (300..400).contains(&x) && (50..150).contains(&y);
            image::Rgb(if inside { [255; 3] } else { [0; 3] })
        })
        .save(&path)
        .expect("save");
        let jobs = [CacheJob {
            name: "orig".into(),
            path,
            square: Some(Rect::square(300, 50, 100)),
        }];
        let cache_path = dir.path().join("crops.npy");
        build_cache(&jobs, &cache_path, &options()).expect("crops");
        let cache = ImageCache::open(&cache_path).expect("opens");
        assert!(
            cache.image(0).iter().all(|&v| v == 255),
            "the crop is all white"
        );
        assert_eq!(
            cache.index()[0].geometry(),
            CentreCrop {
                width: 800,
                height: 400,
                x: 300,
                y: 50,
                side: 100
            }
        );
        let outside = [CacheJob {
            square: Some(Rect::square(750, 0, 100)),
            ..jobs[0].clone()
        }];
        let err =
            build_cache(&outside, &dir.path().join("bad.npy"), &options()).expect_err("outside");
        assert!(err.to_string().contains("orig.png"), "{err}");
        let oblong = CacheJob {
            square: Some(Rect {
                x0: 300,
                y0: 50,
                x1: 400,
                y1: 100,
            }),
            ..jobs[0].clone()
        };
        let err = prepare_image(&oblong, &options()).expect_err("not a square");
        assert!(
            err.to_string().contains("orig.png") && err.to_string().contains("not a square"),
            "{err}"
        );
    }

    /// A textured 512×384 JPEG, whose centre square at 16 px decodes at 1/4 and whose 40-px
    /// squares need the full size: the scale of its decode shows in the pixels.
    fn textured_jpeg(dir: &Path, name: &str) -> CacheJob {
        let path = dir.join(format!("{name}.jpg"));
        RgbImage::from_fn(512, 384, |x, y| {
            let hash = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)) % 200;
            let v = (hash as u8).wrapping_add((x / 3) as u8);
            image::Rgb([v, v / 2 + 40, 255 - v])
        })
        .save(&path)
        .expect("save jpeg");
        CacheJob {
            name: name.into(),
            path,
            square: None,
        }
    }

    #[test]
    fn caches_built_together_decode_each_original_once_at_the_most_demanding_scale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let centre: Vec<CacheJob> = (0..3)
            .map(|i| textured_jpeg(dir.path(), &format!("img{i}")))
            .collect();
        let crops: Vec<CacheJob> = centre
            .iter()
            .map(|job| CacheJob {
                square: Some(Rect::square(100, 120, 40)),
                ..job.clone()
            })
            .collect();
        let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
        let targets = [
            CacheTarget {
                path: &a,
                jobs: &centre,
                size: 16,
            },
            CacheTarget {
                path: &b,
                jobs: &crops,
                size: 24,
            },
        ];
        let reports = build_caches(&targets, &options()).expect("builds");
        assert_eq!((reports[0].written, reports[1].written), (3, 3));
        // The centre squares come from the full-size decode the crops needed, not from the
        // 1/4-scale decode they would get alone (which does differ here).
        let together = ImageCache::open(&a).expect("opens");
        let full = CacheOptions {
            min_decode_factor: 0.0,
            ..options()
        };
        for (i, job) in centre.iter().enumerate() {
            let (at_full, _) = prepare_image(job, &full).expect("full size");
            let (alone, _) = prepare_image(job, &options()).expect("alone");
            assert_eq!(together.image(i), at_full.as_slice(), "image {i}");
            assert_ne!(alone, at_full, "the fixture tells the scales apart");
        }
        // A cache rebuilt beside an up-to-date sibling comes out as it did with it.
        let before = std::fs::read(&b).expect("read");
        std::fs::remove_file(&b).expect("remove");
        let reports = build_caches(&targets, &options()).expect("rebuilds");
        assert!(reports[0].up_to_date && reports[1].written == 3);
        assert_eq!(std::fs::read(&b).expect("read"), before);
    }

    #[test]
    fn a_bad_square_fails_its_own_cache_and_the_others_are_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs = originals(dir.path(), 3);
        let mut crops = jobs.clone();
        crops[1].square = Some(Rect::square(1000, 0, 20));
        let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
        let targets = [
            CacheTarget {
                path: &a,
                jobs: &jobs,
                size: 16,
            },
            CacheTarget {
                path: &b,
                jobs: &crops,
                size: 16,
            },
        ];
        let err = build_caches(&targets, &options()).expect_err("a square outside img1");
        match &err {
            DataError::BadImages { cache, images, .. } => {
                assert_eq!(cache, &b);
                assert_eq!(images.len(), 1, "{images:?}");
                assert_eq!(images[0].0, "img1");
            }
            other => panic!("{other}"),
        }
        assert_eq!(ImageCache::open(&a).expect("a is finished").len(), 3);
        assert!(!b.exists(), "b is not finished");

        // Targets that name other originals are refused before anything is decoded.
        let mut other = jobs.clone();
        other.swap(0, 1);
        let c = dir.path().join("c.npy");
        let mismatched = [
            CacheTarget {
                path: &c,
                jobs: &jobs,
                size: 16,
            },
            CacheTarget {
                path: &b,
                jobs: &other,
                size: 16,
            },
        ];
        let err = build_caches(&mismatched, &options()).expect_err("other originals");
        assert!(err.to_string().contains("other originals"), "{err}");
        assert!(!c.exists());
    }
}
