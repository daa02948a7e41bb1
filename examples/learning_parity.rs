//! Learning parity with PyTorch, agc's half: the images both frameworks train on, and agc's
//! training of one `MetaResNet` on them through the library API (`train_fold`), writing its
//! per-epoch curves. `scripts/learning_parity.py` trains the same model the same way in PyTorch
//! on the same files, and `scripts/learning_parity.sh` runs both over seeds and prints the table
//! of docs/learning-parity.md.
//!
//!     cargo run --release --example learning_parity -- prepare --data DATA --out SET
//!     cargo run --release --example learning_parity -- train --set SET --images oracle \
//!         --width 16 --seed 1 --out agc-w16-s1.json
//!
//! `prepare` reads an ISIC-layout data directory with true lesion boxes (`agc synth` makes
//! one), prepares a run in `SET/run` with the library (`Run::start`: decode, centre-crop,
//! resize), cuts the oracle crops (`Run::oracle_crops`: the true box squared, `--margin` of
//! context) and writes `SET/split.json`: the labels, the paths of both image sets (whole images
//! and oracle crops, `[N, S, S, 3]` `uint8` `.npy`) and one stratified 25 % validation split.
//! `train` trains on the split's training rows and validates on the rest after every epoch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agc::Device;
use agc::data::{AugmentConfig, ImageCache, progress};
use agc::train::run::{PipelineConfig, Run};
use agc::train::{FoldTask, Images, Loss, ModelKind, ModelSpec, TestFrom, TrainConfig, train_fold};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cut the images both frameworks train on, and the validation split.
    Prepare {
        /// ISIC-layout data directory with true lesion boxes.
        #[arg(long)]
        data: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Side of the images.
        #[arg(long, default_value_t = 112)]
        size: u32,
        /// Context around the true box, as a fraction of its squared side on each side.
        #[arg(long, default_value_t = 0.1)]
        margin: f64,
        /// Seed of the split.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Train one model on one image set of a prepared folder; write its curves as JSON.
    Train(TrainArgs),
}

#[derive(Args)]
struct TrainArgs {
    /// A folder written by `prepare`.
    #[arg(long)]
    set: PathBuf,
    /// Which images: `whole` or `oracle`.
    #[arg(long, default_value = "oracle")]
    images: String,
    /// Backbone width (one basic block per stage).
    #[arg(long, default_value_t = 16)]
    width: usize,
    /// Adam learning rate (every parameter).
    #[arg(long, default_value_t = 3e-4)]
    lr: f64,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Epochs (no early stopping).
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    /// Dropout before the classifier.
    #[arg(long, default_value_t = 0.3)]
    dropout: f64,
    /// Augmentation: `symmetries` (flips and quarter turns, which the PyTorch script draws the
    /// same way) or `train` (the pipeline's: hair, flips, free rotation, colour jitter; agc
    /// only, for the recipe curves).
    #[arg(long, default_value = "symmetries")]
    augment: String,
    /// Seed of initialisation, sampling, augmentation and dropout.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The JSON file of curves to write.
    #[arg(long)]
    out: PathBuf,
}

/// `SET/split.json`, read by this example and by scripts/learning_parity.py.
#[derive(Serialize, Deserialize)]
struct Split {
    /// One label per image row.
    labels: Vec<u8>,
    /// Rows to train on.
    train: Vec<usize>,
    /// Rows to validate on.
    valid: Vec<usize>,
    /// `[N, S, S, 3]` `uint8` arrays by name (`whole`, `oracle`), relative to the split.
    images: std::collections::BTreeMap<String, PathBuf>,
}

/// One epoch of a curve; the same fields as the PyTorch script writes.
#[derive(Serialize)]
struct EpochRow {
    epoch: usize,
    train_loss: f64,
    valid_loss: f64,
    valid_auc: f64,
    seconds: f64,
}

#[derive(Serialize)]
struct Curves {
    framework: &'static str,
    images: String,
    width: usize,
    lr: f64,
    batch: usize,
    augment: String,
    seed: u64,
    epochs: Vec<EpochRow>,
}

fn prepare(data: &Path, out: &Path, size: u32, margin: f64, seed: u64) -> Result<()> {
    let mut config = PipelineConfig::cpu(data.to_path_buf());
    config.image_size = size;
    config.chipnet_image_size = None;
    config.metadata = false;
    config.folds = 4;
    config.seed = seed;
    config.models = vec![ModelKind::Resnet];
    config.ensemble = Vec::new();
    config.boxes.margin = margin;
    let run = Run::start(&out.join("run"), &config, &progress::silent())?;
    if run.skipped > 0 {
        bail!("{}: every image must decode", data.display());
    }
    run.oracle_crops()?;
    let whole = config.cache_dir().join("train.npy");
    let oracle = out
        .join("run")
        .join("crops")
        .join("oracle")
        .join("train.npy");
    let split = Split {
        labels: run.labels.clone(),
        train: run.folds.train(0),
        valid: run.folds.valid(0),
        images: [("whole".to_string(), whole), ("oracle".to_string(), oracle)]
            .into_iter()
            .map(|(k, p)| Ok((k, std::path::absolute(p)?)))
            .collect::<Result<_>>()?,
    };
    agc::data::fsutil::write_json(&out.join("split.json"), &split)?;
    println!(
        "{}: {} images ({} positive), {} to train on, {} to validate on",
        out.join("split.json").display(),
        split.labels.len(),
        split.labels.iter().filter(|&&y| y == 1).count(),
        split.train.len(),
        split.valid.len()
    );
    Ok(())
}

// Over 80 lines on purpose: the whole recipe of one benchmark run, setting by setting, beside
// the PyTorch script's (scripts/learning_parity.py) so that the two can be read side by side.
fn train(args: &TrainArgs) -> Result<()> {
    let TrainArgs {
        set,
        images,
        width,
        lr,
        batch,
        epochs,
        dropout,
        augment,
        seed,
        out,
    } = args;
    let augment_config = match augment.as_str() {
        "symmetries" => AugmentConfig::symmetries(),
        "train" => AugmentConfig::train(),
        other => bail!("--augment {other:?}: use symmetries or train"),
    };
    let split_path = set.join("split.json");
    let split: Split = serde_json::from_slice(
        &std::fs::read(&split_path).with_context(|| split_path.display().to_string())?,
    )
    .with_context(|| split_path.display().to_string())?;
    let path = split
        .images
        .get(images)
        .with_context(|| format!("{}: no image set {images:?}", split_path.display()))?;
    let cache = Arc::new(ImageCache::open(path)?);
    let n = cache.len();
    let targets = split.labels.iter().map(|&y| f32::from(y)).collect();
    let images_set = Images::new(cache, vec![Vec::new(); n], targets)?;
    let spec = ModelSpec {
        backbone: format!("w{width}"),
        dropout: *dropout,
        ..ModelSpec::default()
    };
    let config = TrainConfig {
        max_epochs: *epochs,
        patience: 0,
        batch_size: *batch,
        eval_batch_size: 64,
        lr_backbone: *lr,
        lr_head: *lr,
        lr_decay: 1.0,
        adam_epsilon: 1e-8,
        loss: Loss::default(),
        balanced: true,
        augment: Some(augment_config),
        tta: 0,
        test_from: TestFrom::Best,
    };
    let work = tempfile::tempdir()?;
    let task = FoldTask {
        kind: ModelKind::Cropnet,
        spec: &spec,
        config: &config,
        meta_dim: 0,
        images: &images_set,
        train_rows: split.train.clone(),
        valid_rows: split.valid.clone(),
        test: None,
        dir: work.path().to_path_buf(),
        seed: *seed,
        progress: progress::silent(),
    };
    let outcome = train_fold(&task, &[Device::flex().autodiff()])?;
    let curves = Curves {
        framework: "agc",
        images: images.clone(),
        width: *width,
        lr: *lr,
        batch: *batch,
        augment: augment.clone(),
        seed: *seed,
        epochs: outcome
            .state
            .history
            .iter()
            .map(|r| EpochRow {
                epoch: r.epoch,
                train_loss: r.train_loss,
                valid_loss: r.valid_loss,
                valid_auc: r.valid_auc,
                seconds: r.seconds,
            })
            .collect(),
    };
    agc::data::fsutil::write_json(out, &curves)?;
    let last = curves.epochs.last().context("no epoch trained")?;
    println!(
        "agc {images} w{width} lr {lr} batch {batch} seed {seed}: last valid AUC {:.4}, best {:.4}",
        last.valid_auc,
        outcome.state.best_auc.unwrap_or(f64::NAN)
    );
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Prepare {
            data,
            out,
            size,
            margin,
            seed,
        } => prepare(data, out, *size, *margin, *seed),
        Command::Train(args) => train(args),
    }
}
