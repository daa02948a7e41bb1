//! Preprocesses images as the cache does (DCT-scaled decode, centre square, antialiased bilinear
//! resize) and writes each as a `[S, S, 3]` uint8 `.npy`, for comparing agc with PIL outside
//! the tests (`scripts/measure_preprocess_parity.py` runs it):
//!
//!     cargo run --release -p agc-data --example preprocess_npy -- OUT_DIR IMAGE...
//!
//! For `IMAGE` = `a.jpg` it writes `OUT_DIR/a.224.npy` (the cache's default decode factor 2)
//! and `OUT_DIR/a.224.full.npy` (decoded at full resolution).

use std::path::{Path, PathBuf};

use agc_data::{npy, preprocess_image};
use anyhow::{Context, bail};

const SIZE: u32 = 224;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(out) = args.next().map(PathBuf::from) else {
        bail!("usage: preprocess_npy OUT_DIR IMAGE...");
    };
    std::fs::create_dir_all(&out).with_context(|| format!("{}", out.display()))?;
    for image in args.map(PathBuf::from) {
        let stem = image
            .file_stem()
            .with_context(|| format!("{}: no file name", image.display()))?
            .to_string_lossy()
            .into_owned();
        for (factor, suffix) in [(2.0, ""), (0.0, ".full")] {
            let (pixels, crop) = preprocess_image(&image, SIZE, factor)?;
            let path = out.join(format!("{stem}.{SIZE}{suffix}.npy"));
            write(&path, &pixels)?;
            println!("{} {crop:?} -> {}", image.display(), path.display());
        }
    }
    Ok(())
}

fn write(path: &Path, pixels: &[u8]) -> anyhow::Result<()> {
    let side = SIZE as usize;
    npy::write_u8(path, &[side, side, 3], pixels)?;
    Ok(())
}
