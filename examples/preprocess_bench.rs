//! Times agc's whole preprocessing step on a folder of JPEGs: `build_cache` with its defaults
//! (DCT-scaled decode, centre square crop, antialiased bilinear resize to 224, all cores, a
//! `[N, 224, 224, 3]` uint8 `.npy` written to disk), three times into fresh outputs, and prints
//! the best wall time as one machine-readable line:
//!
//!     cargo run --release --example preprocess_bench -- DIR
//!
//!     agc images=12 best_seconds=1.234 images_per_second=9.72
//!
//! `scripts/bench_preprocess.py` generates the JPEGs, times PIL on the same files and runs this
//! example for the comparison.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agc::data::{CacheJob, CacheOptions, build_cache};
use anyhow::{Context, bail, ensure};

const RUNS: usize = 3;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        bail!("usage: preprocess_bench DIR  (a folder of *.jpg)");
    };
    let jobs = jpeg_jobs(Path::new(&dir))?;

    let out = std::env::temp_dir().join(format!("agc-preprocess-bench-{}", std::process::id()));
    let options = CacheOptions {
        progress: agc_data::progress::silent(),
        ..CacheOptions::default()
    };
    let timed = best_of(RUNS, &jobs, &out, &options);
    // Clean up also when a run failed; its error is the one worth reporting.
    let removed = std::fs::remove_dir_all(&out);
    let best = timed?;
    removed.with_context(|| format!("{}: cannot remove", out.display()))?;

    let seconds = best.as_secs_f64();
    println!(
        "agc images={} best_seconds={seconds:.3} images_per_second={:.2}",
        jobs.len(),
        jobs.len() as f64 / seconds
    );
    Ok(())
}

/// The shortest wall time of `runs` builds of the cache, each into a fresh path under `out`.
fn best_of(
    runs: usize,
    jobs: &[CacheJob],
    out: &Path,
    options: &CacheOptions,
) -> anyhow::Result<Duration> {
    let mut best = Duration::MAX;
    for run in 0..runs {
        // A new path per run: the same path would be found up to date and skipped.
        let cache = out.join(format!("run{run}_{}.npy", options.size));
        let start = Instant::now();
        let report = build_cache(jobs, &cache, options)
            .with_context(|| format!("{}: cannot build the cache", cache.display()))?;
        let elapsed = start.elapsed();
        ensure!(
            report.written == jobs.len(),
            "run {run} wrote {} of {} images",
            report.written,
            jobs.len()
        );
        best = best.min(elapsed);
    }
    Ok(best)
}

/// The `*.jpg` / `*.jpeg` files of `dir`, sorted by path, as centre-square cache jobs.
fn jpeg_jobs(dir: &Path) -> anyhow::Result<Vec<CacheJob>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: cannot list", dir.display()))?;
    paths.retain(|p| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
    });
    paths.sort();
    ensure!(!paths.is_empty(), "{}: no *.jpg files", dir.display());
    Ok(paths
        .into_iter()
        .map(|path| CacheJob {
            name: path
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
            path,
            square: None,
        })
        .collect())
}
