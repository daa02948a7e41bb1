//! `agc`: attention-guided cropping from the command line. `agc --help` lists the steps;
//! `agc demo` runs them all on a synthetic data set.

use std::path::{Path, PathBuf};
use std::time::Instant;

use agc::data::{Family, Progress, Reporter, SynthConfig, Task, generate};
use agc::devices::{DeviceArg, catching_panics, is_out_of_memory, parse_device, probe};
use agc::train::export::export_run;
use agc::train::layout::{Crops, RunLayout};
use agc::train::predictor::{PredictOptions, Predictor, collect_inputs};
use agc::train::report::results_table;
use agc::train::run::orchestrate::write_overlays;
use agc::train::run::prepare::preprocess;
use agc::train::run::{PipelineConfig, Run, Schedules, run_all};
use agc::train::scores::{Metrics, evaluate_file};
use agc::train::{Loss, ModelKind, TestFrom};
use anyhow::{Context, Result, bail};
use burn::prelude::Device;
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "agc",
    version,
    about = "Attention-guided cropping: ChipNet finds the lesion, CropNet classifies the crop",
    long_about = "Attention-guided cropping for image classification. A ChipNet learns where to \
                  look, its attention map becomes a square box, the box is cut out of the \
                  original high-resolution image, and a CropNet is trained on the crops. Every \
                  step is resumable: run the same command again after a kill."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Hide progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    /// Refuse images whose header claims more pixels than this (width × height), before
    /// decoding them: a decompression bomb is then an unreadable image, listed and skippable
    /// with --skip-bad-images. The default, as Pillow's refusal, is above any camera's
    /// photograph.
    #[arg(long, global = true, default_value_t = agc::data::imageio::DEFAULT_MAX_IMAGE_PIXELS,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_image_pixels: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a synthetic lesion data set (ISIC layout, with true lesion boxes).
    Synth(SynthArgs),
    /// Decode, centre-crop and resize the images of a data directory into caches.
    Preprocess(RunArgs),
    /// Train one model on every fold (out-of-fold and test predictions).
    Train(TrainArgs),
    /// The crop step: attention maps of each fold's ChipNet → boxes → crops of the originals.
    Crop(CropArgs),
    /// Average models' predictions (given or OOF-fitted weights); writes submission.csv.
    Ensemble(EnsembleArgs),
    /// Draw attention maps and boxes over the original images (PNG).
    Attention(AttentionArgs),
    /// Score new images with a trained run: every fold's models, ChipNet's box on the original,
    /// CropNet on the crop, the ensemble; writes OUT/predictions.csv (and overlays on request).
    Predict(PredictArgs),
    /// Write a run's trained models as .safetensors (PyTorch's key names and layouts) with a
    /// model.json that says how to rebuild and feed them (scripts/check_export.py does so).
    Export(ExportArgs),
    /// Score a predictions CSV (image_name,prediction or image_name,target) against labels.
    Evaluate(EvaluateArgs),
    /// Every step, from a data directory to submission.csv, metrics.json and report.md.
    Pipeline(RunArgs),
    /// Generate a synthetic data set (--family skin or dermoscopy) and run the whole pipeline
    /// on the CPU with the CPU preset; prints the AUC of each model and the attention boxes'
    /// IoU.
    Demo(DemoArgs),
}

#[derive(Args, Debug)]
struct SynthArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// The family of images: skin (veil, globules, freckles) or dermoscopy (circular fields,
    /// rulers, ink, bubbles, glare; an atypical pigment network as the fine evidence).
    #[arg(long, default_value_t = Family::Skin)]
    family: Family,
    /// Training images.
    #[arg(long, default_value_t = 800)]
    train: usize,
    /// Test images.
    #[arg(long, default_value_t = 400)]
    test: usize,
    /// Share of positives.
    #[arg(long, default_value_t = 0.2)]
    positive_rate: f64,
    /// Shortest image side [default: the family's, 600 for skin, 700 for dermoscopy].
    #[arg(long)]
    min_side: Option<u32>,
    /// Longest image side [default: the family's, 1600 for skin, 1400 for dermoscopy].
    #[arg(long)]
    max_side: Option<u32>,
    /// Smallest lesion diameter, as a share of the shorter side [default: the family's, 0.04
    /// for skin, 0.05 for dermoscopy].
    #[arg(long)]
    lesion_min: Option<f32>,
    /// Largest lesion diameter, as a share of the shorter side [default: the family's, 0.33
    /// for skin, 0.32 for dermoscopy].
    #[arg(long)]
    lesion_max: Option<f32>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Where a run is and how it is configured. Flags override `--config` (a `config.json` of an
/// earlier run or a hand-written one); an existing run resumes only with the same settings.
// Its switches are independent command-line flags.
#[allow(clippy::struct_excessive_bools)]
#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// The data directory: train.csv, test.csv (optional), train/, test/.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The run directory.
    #[arg(long, default_value = "runs/agc")]
    out: PathBuf,
    /// A configuration file (JSON, as a run's config.json) to start from; it may set only some
    /// keys, the others keep the --preset's values (the seed's by default; an unknown key is an
    /// error).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A built-in configuration to start from: seed (the SIIM-ISIC seed's: ResNet-18, 224 px,
    /// 5 folds), demo (tiny backbones, 112 px, 3 folds) or cpu (`agc demo`'s: the demo's
    /// schedule, small backbones, ChipNet on 224-px images in 8-px chips with 1×1 attention
    /// kernels, the field mask and the contrast prior) [default: seed].
    #[arg(long)]
    preset: Option<String>,
    /// Folder of the preprocessed caches [default: DATA/agc-cache-SIZE; ChipNet's other size
    /// in DATA/agc-cache-SIZE, or in CACHE/agc-cache-SIZE when this is given].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Backbone: tiny, small, resnet18, resnet34, resnet50, resnet101, resnet152; wN for one
    /// basic block per stage at width N (w8 is tiny, w16 small, w64 torchvision's
    /// ResNet(BasicBlock, [1,1,1,1])); NAME-wN for a preset at width N [default: resnet18].
    #[arg(long)]
    backbone: Option<String>,
    /// ImageNet weights for the backbone (torchvision .pth or .safetensors).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Load --weights even if the file holds tensors the backbone has no place for (by default
    /// that is an error: a ResNet-34 file is not a ResNet-18).
    #[arg(long)]
    allow_unused_weights: bool,
    /// Device: cpu; cuda:N (built with --features cuda); wgpu, wgpu:N, wgpu:integrated[:N] or
    /// wgpu:cpu (built with --features wgpu: Vulkan, Metal, DX12); several GPUs of one kind
    /// (cuda:0,cuda:1) for data-parallel training.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Images per training batch [default: 32]. A prepared run takes a new one when it resumes
    /// (after a GPU ran out of memory, say) for the models with no epoch trained yet; a trained
    /// model keeps its own, and one trained part of the way refuses another.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Images per inference batch (validation, crops, test) [default: 64]; like --batch-size,
    /// a resumed run takes a new one.
    #[arg(long)]
    eval_batch_size: Option<usize>,
    /// Side of the images the models see [default: 224].
    #[arg(long)]
    image_size: Option<u32>,
    /// Side of the images ChipNet sees, when not --image-size: a finer attention grid at the
    /// same chip size, while the classifiers keep --image-size [default: --image-size;
    /// --preset cpu: 224].
    #[arg(long)]
    chipnet_image_size: Option<u32>,
    /// ChipNet's chip side [default: 32].
    #[arg(long)]
    chip: Option<usize>,
    /// Side of ChipNet's attention scoring kernels: 3 (the seed's; a chip's weight also sees
    /// its neighbours) or 1 (each chip's weight from its own embedding) [default: 3].
    #[arg(long)]
    attention_kernel: Option<usize>,
    /// Keep ChipNet's attention off chips of a black field (outside a dermoscope's circle,
    /// black corners or borders).
    #[arg(long)]
    field_mask: bool,
    /// Weight of ChipNet's contrast prior: attention starts on the chips that stand out from
    /// the rest of the image [default: 0, none].
    #[arg(long)]
    contrast_prior: Option<f32>,
    /// Cross-validation folds [default: 5].
    #[arg(long)]
    folds: Option<usize>,
    /// Most epochs per fold [default: 20].
    #[arg(long)]
    epochs: Option<usize>,
    /// Early-stopping patience in epochs [default: 3].
    #[arg(long)]
    patience: Option<usize>,
    /// Rounds of test-time augmentation [default: 3].
    #[arg(long)]
    tta: Option<usize>,
    /// Test predictions from the best checkpoint, or averaged over the last `patience`
    /// epochs: best | last-epochs [default: best].
    #[arg(long)]
    test_from: Option<String>,
    /// Adam learning rate of every model's backbone and head alike [default: the preset's:
    /// seed 1e-5 backbone and 5e-5 head (5e-5 and 1e-4 for ChipNet), demo 2e-3, cpu 2e-3 for
    /// ChipNet and 1e-3 for the classifiers].
    #[arg(long)]
    lr: Option<f64>,
    /// Context around every square box, attention boxes and true boxes (oracle crops) alike,
    /// as a fraction of its side on each side (0.1 adds 10 %) [default: 0].
    #[arg(long)]
    box_margin: Option<f64>,
    /// Loss: focal | bce [default: focal, alpha 1, gamma 2].
    #[arg(long)]
    loss: Option<String>,
    /// Seed [default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// Do not feed the metadata (sex, age, site) to the MetaResNets.
    #[arg(long)]
    no_metadata: bool,
    /// Keep each patient's images in one fold (needs patient_id).
    #[arg(long)]
    group_by_patient: bool,
    /// Leave out images that cannot be read (listed in RUN/skipped.csv) instead of stopping.
    #[arg(long)]
    skip_bad_images: bool,
    /// Models the pipeline trains, comma-separated [default: resnet,chipnet,cropnet; the
    /// oracle cropnet is added when the data has true boxes].
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<ModelKind>>,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// resnet | chipnet | attnresnet | cropnet | oracle_cropnet.
    #[arg(long)]
    model: ModelKind,
    /// Train this fold only (0-based), refusing if another process holds it: several
    /// processes or machines sharing the run directory can each take folds (a job array).
    #[arg(long)]
    fold: Option<usize>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct CropArgs {
    /// Crop by the true lesion boxes instead (for the oracle CropNet).
    #[arg(long)]
    oracle: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct EnsembleArgs {
    /// Members and weights, e.g. resnet=0.5,cropnet=0.5 [default: the config's].
    #[arg(long)]
    members: Option<String>,
    /// Fit the weights on the out-of-fold predictions (never on test labels).
    #[arg(long)]
    fit: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct AttentionArgs {
    /// The run directory.
    #[arg(long)]
    run: PathBuf,
    /// Output folder [default: RUN/overlays].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Which fold's ChipNet.
    #[arg(long, default_value_t = 0)]
    fold: usize,
    /// How many images (test images first).
    #[arg(long, default_value_t = 16)]
    count: usize,
}

#[derive(Args, Debug)]
struct PredictArgs {
    /// The trained run directory.
    #[arg(long)]
    run: PathBuf,
    /// Images: files, folders (their JPEG and PNG files), or CSVs with image_name and optional
    /// sex, age_approx, anatom_site_general_challenge (images in the folder named after the
    /// CSV, else beside it).
    #[arg(long, num_args = 1.., required = true)]
    images: Vec<PathBuf>,
    /// Output folder: predictions.csv, overlays/.
    #[arg(long)]
    out: PathBuf,
    /// Device: cpu, cuda:N (built with --features cuda), or wgpu, wgpu:N, wgpu:integrated[:N],
    /// wgpu:cpu (built with --features wgpu).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Images per inference batch [default: the run's eval_batch_size].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Also draw overlays/<image>.png (attention map, box, score).
    #[arg(long)]
    overlays: bool,
    /// Leave out images that cannot be read (their rows say why) instead of stopping.
    #[arg(long)]
    skip_bad_images: bool,
    /// Images held in memory at once (and lost at most by a kill).
    #[arg(long, default_value_t = 256)]
    chunk: usize,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// The trained run directory.
    #[arg(long)]
    run: PathBuf,
    /// A new folder for model.json and the weights.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct EvaluateArgs {
    /// Predictions: image_name plus a prediction (or target) column.
    #[arg(long)]
    predictions: PathBuf,
    /// Labels: image_name,target.
    #[arg(long)]
    labels: PathBuf,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// The run directory (the synthetic data goes to OUT/data).
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Device: cpu, cuda:N, wgpu, wgpu:N, wgpu:cpu, or several GPUs of one kind
    /// (cuda:0,cuda:1).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The synthetic family: skin or dermoscopy.
    #[arg(long, default_value_t = Family::Skin)]
    family: Family,
    /// The configuration: cpu (small backbones, the attention options) or demo (tiny
    /// backbones, the seed's attention).
    #[arg(long, default_value = "cpu")]
    preset: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,burn=warn,cubecl=error,wgpu_core=error,wgpu_hal=error".into()
            }),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    agc::data::imageio::set_max_image_pixels(cli.max_image_pixels);
    let progress: Reporter = if cli.quiet {
        agc::data::progress::silent()
    } else {
        std::sync::Arc::new(Bars)
    };
    let progress = &progress;
    match cli.command {
        Command::Synth(a) => synth(&a, progress),
        Command::Preprocess(a) => {
            let config = resolve(&a)?;
            preprocess(&config, progress)?;
            for size in config.cache_sizes() {
                println!("caches in {}", config.cache_dir_of(size).display());
            }
            Ok(())
        }
        Command::Train(a) => {
            Job::Train(a.model, a.fold, a.run.clone()).on(&parse_device(&a.run.device)?, progress)
        }
        Command::Crop(a) => {
            Job::Crop(a.oracle, a.run.clone()).on(&parse_device(&a.run.device)?, progress)
        }
        Command::Ensemble(a) => ensemble(&a, progress),
        Command::Attention(a) => attention(&a),
        Command::Predict(a) => {
            let device = parse_device(&a.device)?;
            Job::Predict(a).on(&device, progress)
        }
        Command::Export(a) => {
            let summary = export_run(&a.run, &a.out, &Device::flex())?;
            println!(
                "{} weight files and {}",
                summary.weights.len(),
                summary.description.display()
            );
            Ok(())
        }
        Command::Evaluate(a) => {
            let (n, auc) = evaluate_file(&a.predictions, &a.labels)?;
            println!("{n} images, ROC AUC {auc:.4}");
            Ok(())
        }
        Command::Pipeline(a) => Job::Pipeline(a.clone()).on(&parse_device(&a.device)?, progress),
        Command::Demo(a) => {
            let config = PipelineConfig::preset(&a.preset, a.out.join("data"))?;
            Job::Demo(a.out.clone(), a.family, Box::new(config))
                .on(&parse_device(&a.device)?, progress)
        }
    }
}

fn synth(a: &SynthArgs, progress: &Reporter) -> Result<()> {
    let family = SynthConfig::of_family(a.family);
    let config = SynthConfig {
        train: a.train,
        test: a.test,
        positive_rate: a.positive_rate,
        min_side: a.min_side.unwrap_or(family.min_side),
        max_side: a.max_side.unwrap_or(family.max_side),
        lesion_min: a.lesion_min.unwrap_or(family.lesion_min),
        lesion_max: a.lesion_max.unwrap_or(family.lesion_max),
        seed: a.seed,
        ..family
    };
    let report = generate(&config, &a.out, &**progress)?;
    println!(
        "{}: {} images written, {} kept; {} train and {} test positives",
        a.out.display(),
        report.written,
        report.kept,
        report.train_positives,
        report.test_positives
    );
    Ok(())
}

/// Progress drawn as bars on the terminal (stderr), one per running task.
#[derive(Debug)]
struct Bars;

struct Bar(indicatif::ProgressBar);

impl Task for Bar {
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bars {
    fn start(&self, message: &str, len: u64) -> Box<dyn Task> {
        let bar = indicatif::ProgressBar::new(len);
        let style = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
        )
        .map_or_else(
            |_| indicatif::ProgressStyle::default_bar(),
            |s| s.progress_chars("=> "),
        );
        bar.set_style(style);
        bar.set_message(message.to_string());
        Box::new(Bar(bar))
    }
}

/// The configuration of a run: `--config` (over `--preset`, the seed's by default, for the keys
/// it lacks), else the run's own `config.json` when no `--data` is given, else the defaults for
/// `--data`; then the flags.
fn resolve(a: &RunArgs) -> Result<PipelineConfig> {
    let saved = RunLayout::new(&a.out).config();
    let mut config: PipelineConfig = if let Some(path) = &a.config {
        let base = PipelineConfig::preset(
            a.preset.as_deref().unwrap_or("seed"),
            a.data.clone().unwrap_or_default(),
        )?;
        let config = PipelineConfig::read_over(path, &base)?;
        if config.data.as_os_str().is_empty() {
            bail!(
                "{}: no \"data\" directory: give one there or with --data",
                path.display()
            );
        }
        config
    } else if a.data.is_none() && a.preset.is_none() && saved.is_file() {
        PipelineConfig::read(&saved)?
    } else {
        let Some(data) = &a.data else {
            bail!("--data is required (or --config, or an --out that holds a run)");
        };
        PipelineConfig::preset(a.preset.as_deref().unwrap_or("seed"), data.clone())?
    };
    if let Some(d) = &a.data {
        config.data.clone_from(d);
    }
    if a.cache.is_some() {
        config.cache_dir.clone_from(&a.cache);
    }
    if let Some(b) = &a.backbone {
        config.model.backbone.clone_from(b);
    }
    if a.weights.is_some() {
        config.model.weights.clone_from(&a.weights);
    }
    if let Some(s) = a.image_size {
        config.image_size = s;
    }
    if a.chipnet_image_size.is_some() {
        config.chipnet_image_size = a.chipnet_image_size;
    }
    if let Some(c) = a.chip {
        config.model.chip = c;
    }
    if let Some(k) = a.attention_kernel {
        config.model.attention_kernel = k;
    }
    if a.field_mask {
        config.model.field_mask = true;
    }
    if let Some(w) = a.contrast_prior {
        config.model.contrast_prior = w;
    }
    if let Some(f) = a.folds {
        config.folds = f;
    }
    if let Some(s) = a.seed {
        config.seed = s;
    }
    if a.no_metadata {
        config.metadata = false;
    }
    if a.group_by_patient {
        config.group_by_patient = true;
    }
    if a.skip_bad_images {
        config.skip_bad_images = true;
    }
    if let Some(m) = &a.models {
        config.models.clone_from(m);
        keep_trained_members(&mut config);
    }
    if a.allow_unused_weights {
        config.model.allow_unused_weights = true;
    }
    if let Some(m) = a.box_margin {
        config.boxes.margin = m;
    }
    apply_schedule_flags(a, &mut config.schedules)?;
    Ok(config)
}

/// The flags that set every model's training schedule.
fn apply_schedule_flags(a: &RunArgs, schedules: &mut Schedules) -> Result<()> {
    let test_from = match a.test_from.as_deref() {
        None => None,
        Some("best") => Some(TestFrom::Best),
        Some("last-epochs" | "last_epochs") => Some(TestFrom::LastEpochs),
        Some(other) => bail!("--test-from {other:?}: expected best or last-epochs"),
    };
    let loss = match a.loss.as_deref() {
        None => None,
        Some("focal") => Some(Loss::default()),
        Some("bce") => Some(Loss::Bce),
        Some(other) => bail!("--loss {other:?}: expected focal or bce"),
    };
    schedules.for_each(|s| {
        if let Some(lr) = a.lr {
            s.lr_backbone = lr;
            s.lr_head = lr;
        }
        if let Some(b) = a.batch_size {
            s.batch_size = b;
        }
        if let Some(b) = a.eval_batch_size {
            s.eval_batch_size = b;
        }
        if let Some(e) = a.epochs {
            s.max_epochs = e;
        }
        if let Some(p) = a.patience {
            s.patience = p;
        }
        if let Some(t) = a.tta {
            s.tta = t;
        }
        if let Some(t) = test_from {
            s.test_from = t;
        }
        if let Some(l) = loss {
            s.loss = l;
        }
    });
    Ok(())
}

/// The ensemble keeps the members that will be trained: `--models resnet,chipnet` means no
/// CropNet, not a failure at the end; an ensemble of one model is that model again, so it goes.
fn keep_trained_members(config: &mut PipelineConfig) {
    let models = config.models.clone();
    let before = config.ensemble.len();
    config
        .ensemble
        .retain(|(k, _)| models.contains(k) || *k == ModelKind::OracleCropnet);
    if config.ensemble.len() == 1 {
        config.ensemble.clear();
    }
    if config.ensemble.len() < before {
        tracing::info!(
            "--models {}: the ensemble keeps {}",
            models
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(","),
            if config.ensemble.is_empty() {
                "no members (no ensemble)".to_string()
            } else {
                config
                    .ensemble
                    .iter()
                    .map(|(k, _)| k.name())
                    .collect::<Vec<_>>()
                    .join(" and ")
            }
        );
    }
}

/// The work that needs a device.
enum Job {
    Train(ModelKind, Option<usize>, RunArgs),
    Crop(bool, RunArgs),
    Pipeline(RunArgs),
    Demo(PathBuf, Family, Box<PipelineConfig>),
    Predict(PredictArgs),
}

impl Job {
    fn run(self, devices: &[Device], progress: &Reporter) -> Result<()> {
        let started = Instant::now();
        let device = &devices[0];
        match self {
            Self::Train(kind, fold, a) => {
                let run = start(&a, device, progress)?;
                match kind {
                    ModelKind::Cropnet if !run.layout.boxes().is_file() => {
                        bail!("cropnet trains on the crop step's crops: run `agc crop` first")
                    }
                    ModelKind::OracleCropnet => run.oracle_crops()?,
                    _ => {}
                }
                let p = match fold {
                    None => run.train(kind, devices)?,
                    Some(f) => {
                        let Some(p) = run.train_one_fold(kind, f, devices)? else {
                            let left = run.unfinished_folds(kind);
                            println!(
                                "{kind} fold {f} is trained; folds {left:?} are left (the \
                                 predictions are written when the last one finishes)"
                            );
                            return Ok(());
                        };
                        p
                    }
                };
                let s = run.score(&p);
                println!(
                    "{kind}: OOF AUC {} (mean of folds {}), test AUC {}; predictions in {}",
                    fmt(s.oof_auc),
                    fmt(s.oof_auc_fold_mean),
                    fmt(s.test_auc),
                    run.layout.model_dir(kind).display()
                );
            }
            Self::Crop(oracle, a) => {
                let run = start(&a, device, progress)?;
                if oracle {
                    run.oracle_crops()?;
                    println!(
                        "oracle crops in {}",
                        run.layout.crops(Crops::Oracle).display()
                    );
                } else {
                    run.crop(device)?;
                    if let Some(s) = run.attention_stats()? {
                        println!(
                            "{} boxes in {}; median IoU with the true boxes {}; fallbacks {:.1} %",
                            s.boxes,
                            run.layout.boxes().display(),
                            fmt(s.iou_median),
                            100.0 * s.fallback_rate
                        );
                    }
                }
            }
            Self::Pipeline(a) => {
                let run = start(&a, device, progress)?;
                let metrics = run_all(&run, devices)?;
                print_results(&run, &metrics, started);
            }
            Self::Demo(out, family, config) => demo(&out, family, &config, devices, progress)?,
            Self::Predict(a) => predict(&a, device, progress, started)?,
        }
        Ok(())
    }
}

/// Resolves the configuration, checks the weights on `device`, prepares and opens the run.
fn start(a: &RunArgs, device: &Device, progress: &Reporter) -> Result<Run> {
    let config = resolve(a)?;
    if !RunLayout::new(&a.out).config().is_file() {
        config.check_weights(device)?;
    }
    Ok(Run::start(&a.out, &config, progress)?)
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.4}"))
}

fn print_results(run: &Run, metrics: &Metrics, started: Instant) {
    println!("\n{}", results_table(metrics).markdown());
    if let Some(a) = &metrics.attention {
        println!(
            "attention boxes: median IoU with the true boxes {} (test {}), fallbacks {:.1} %",
            fmt(a.iou_median),
            fmt(a.iou_median_test),
            100.0 * a.fallback_rate
        );
    }
    println!(
        "{:.0} s in this command, {:.0} s of work in the run; report in {}",
        started.elapsed().as_secs_f64(),
        metrics.wall_seconds,
        run.layout.report_md().display()
    );
    match run.no_submission() {
        None => println!("submission in {}", run.layout.submission().display()),
        Some(why) => println!("no submission.csv: {why}"),
    }
}

fn ensemble(a: &EnsembleArgs, progress: &Reporter) -> Result<()> {
    let started = Instant::now();
    let mut run = Run::open(&a.run.out, progress)?;
    // The ensemble is not part of a run's identity: it can change without a new run.
    let members = match &a.members {
        Some(w) => parse_weights(w)?,
        None => run.config.ensemble.clone(),
    };
    run.set_ensemble(members, a.fit);
    let ensemble = run.ensemble()?;
    let s = run.score(&ensemble.predictions);
    println!("{}", ensemble.note());
    let w: Vec<String> = ensemble
        .weights
        .iter()
        .map(|(k, w)| format!("{k} {w:.2}"))
        .collect();
    println!(
        "ensemble ({}): OOF AUC {}, test AUC {}; {} ({:.0} s)",
        w.join(", "),
        fmt(s.oof_auc),
        fmt(s.test_auc),
        run.no_submission().map_or_else(
            || run.layout.submission().display().to_string(),
            |why| format!("no submission.csv: {why}")
        ),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn parse_weights(text: &str) -> Result<Vec<(ModelKind, f64)>> {
    text.split(',')
        .map(|part| {
            let (name, w) = part
                .split_once('=')
                .with_context(|| format!("{part:?}: expected model=weight"))?;
            let kind: ModelKind = name.trim().parse().map_err(anyhow::Error::msg)?;
            let w: f64 = w
                .trim()
                .parse()
                .with_context(|| format!("{part:?}: the weight is not a number"))?;
            Ok((kind, w))
        })
        .collect()
}

fn attention(a: &AttentionArgs) -> Result<()> {
    let run = Run::open(&a.run, &agc::data::progress::silent())?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| RunLayout::new(&a.run).overlays());
    let path = out.join(format!("fold{}.png", a.fold));
    let n = write_overlays(&run, a.fold, a.count, &path)?;
    println!("{n} overlays in {}", path.display());
    Ok(())
}

fn demo(
    out: &Path,
    family: Family,
    config: &PipelineConfig,
    devices: &[Device],
    progress: &Reporter,
) -> Result<()> {
    let started = Instant::now();
    let data = &config.data;
    println!(
        "agc demo: synthetic data of the {family} family in {}",
        data.display()
    );
    generate(&SynthConfig::demo_of(family), data, &**progress)?;
    let run = Run::start(out, config, progress)?;
    let metrics = run_all(&run, devices)?;
    print_results(&run, &metrics, started);
    let auc = |m: &str| metrics.models.get(m).and_then(|s| s.test_auc);
    if let (Some(r), Some(c), Some(e)) = (auc("resnet"), auc("cropnet"), auc("ensemble")) {
        println!(
            "cropnet {} resnet on the test labels ({c:.4} vs {r:.4}); the ensemble {} the \
             better of the two ({e:.4})",
            if c > r { "beats" } else { "does NOT beat" },
            if e >= r.max(c) {
                "matches or beats"
            } else {
                "falls below"
            }
        );
    }
    Ok(())
}

/// `agc predict`: scores new images with a trained run.
fn predict(a: &PredictArgs, device: &Device, progress: &Reporter, started: Instant) -> Result<()> {
    let inputs = collect_inputs(&a.images)?;
    let mut predictor = Predictor::load(&a.run, device, progress)?;
    if let Some(b) = a.batch_size {
        predictor = predictor.with_batch_size(b)?;
    }
    let options = PredictOptions {
        chunk: a.chunk,
        skip_bad: a.skip_bad_images,
        overlays: a.overlays,
    };
    let summary = predictor.score_to_dir(&inputs, &a.out, &options)?;
    let models: Vec<&str> = predictor.models().iter().map(|k| k.name()).collect();
    println!(
        "{} images scored by {}{} ({} resumed, {} left out); {} ({:.0} s)",
        summary.scored,
        models.join(", "),
        if predictor.ensemble().is_empty() {
            ""
        } else {
            " and the ensemble"
        },
        summary.resumed,
        summary.skipped.len(),
        summary.path.display(),
        started.elapsed().as_secs_f64()
    );
    for (name, why) in &summary.skipped {
        println!("  {name}: {why}");
    }
    let t = predictor.timings();
    if t.total > 0.0 {
        println!(
            "time: {:.1} s decoding and cropping, {:.1} s in the models, {:.1} s in \
             all ({:.0} % in the two)",
            t.decoding,
            t.models,
            t.total,
            100.0 * (t.decoding + t.models) / t.total
        );
    }
    Ok(())
}

impl Job {
    /// Runs the job on the device(s) of `--device`, after checking that each one computes. On
    /// GPUs, a failure inside Burn (which panics) becomes an error naming the device; one that
    /// ran out of memory says which batch size to lower.
    fn on(self, device: &DeviceArg, progress: &Reporter) -> Result<()> {
        let devices = device.devices();
        let names = device.names();
        for (d, name) in devices.iter().zip(&names) {
            probe(d).with_context(|| {
                let what = if name.starts_with("wgpu") {
                    " (the adapters wgpu found are listed below, if any; `wgpu:cpu` is a \
                     software one)"
                } else {
                    ""
                };
                format!("--device {name}: the device is not usable{what}")
            })?;
        }
        if *device == DeviceArg::Cpu {
            return self.run(&devices, progress);
        }
        let hint = self.batch_hint();
        match catching_panics(std::panic::AssertUnwindSafe(|| {
            self.run(&devices, progress)
        })) {
            Ok(result) => result,
            Err(why) if is_out_of_memory(&why) => {
                // CubeCL's report walks every kernel that was skipped; the lines that say what
                // ran out are enough.
                let mut said: Vec<&str> = why
                    .lines()
                    .map(str::trim)
                    .filter(|l| is_out_of_memory(l))
                    .collect();
                said.dedup();
                bail!(
                    "--device {}: the GPU ran out of memory ({}). Lower {hint}, then run the \
                     same command again: the run resumes from its last finished epoch (a model \
                     with epochs trained keeps its training batch size).",
                    names.join(","),
                    said.join("; ")
                )
            }
            Err(why) => bail!(
                "--device {}: the computation failed: {why}",
                names.join(",")
            ),
        }
    }

    /// The batch sizes this job uses, as the flags that lower them.
    fn batch_hint(&self) -> String {
        let run = match self {
            Self::Train(_, _, a) | Self::Crop(_, a) | Self::Pipeline(a) => resolve(a).ok(),
            Self::Demo(_, _, config) => Some((**config).clone()),
            Self::Predict(a) => {
                return match a.batch_size {
                    Some(b) => format!("--batch-size (now {b})"),
                    None => "--batch-size (now the run's eval_batch_size)".into(),
                };
            }
        };
        let (train, eval) = run.map_or((None, None), |c| {
            let s = c.schedules.of(ModelKind::Resnet);
            (Some(s.batch_size), Some(s.eval_batch_size))
        });
        let now = |v: Option<usize>| v.map_or(String::new(), |v| format!(" (now {v})"));
        format!(
            "--batch-size{} for training or --eval-batch-size{} for predictions",
            now(train),
            now(eval)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ensemble_weights_parse_and_bad_ones_are_named() {
        let w = parse_weights("resnet=0.3, cropnet=0.7").expect("parse");
        assert_eq!(w, [(ModelKind::Resnet, 0.3), (ModelKind::Cropnet, 0.7)]);
        let err = parse_weights("resnet").expect_err("no weight").to_string();
        assert!(err.contains("resnet"), "{err}");
        assert!(parse_weights("vgg=1").is_err());
    }
}
