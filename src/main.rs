//! `agc`: attention-guided cropping from the command line. `agc --help` lists the steps;
//! `agc demo` runs them all on a synthetic data set.

mod bars;
mod boxes;
mod cli;

use std::path::{Path, PathBuf};
use std::time::Instant;

use agc::data::{Family, Reporter, SynthConfig, generate};
use agc::devices::{DeviceArg, parse_device, run_on};
use agc::train::ModelKind;
use agc::train::ensemble::EnsembleMember;
use agc::train::export::export_run;
use agc::train::layout::{Crops, RunLayout};
use agc::train::predictor::{Predictor, collect_inputs};
use agc::train::report::{fmt_auc, results_table};
use agc::train::run::orchestrate::write_overlays;
use agc::train::run::overrides::is_started;
use agc::train::run::prepare::preprocess;
use agc::train::run::{PipelineConfig, Run, run_all};
use agc::train::scores::{Metrics, Scored, evaluate_file};
use anyhow::Result;
use burn::prelude::Device;
use clap::Parser;

use crate::cli::{AttentionArgs, Cli, Command, EnsembleArgs, PredictArgs, RunArgs, SynthArgs};

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Before any thread allocates, in the commands that train: memory freed by one training
    // step is kept for the next. Not in the others, where it only raised the peak (the crop step
    // and predict, which decode photographs on every thread: docs/performance.md).
    if matches!(
        cli.command,
        Command::Train(_) | Command::Pipeline(_) | Command::Demo(_)
    ) {
        agc::malloc::keep_freed_memory();
    }
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
        std::sync::Arc::new(bars::Bars)
    };
    let progress = &progress;
    match cli.command {
        Command::Synth(a) => synth(&a, progress),
        Command::Preprocess(a) => {
            let config = a.config()?;
            preprocess(&config, progress)?;
            for size in config.cache_sizes() {
                println!("caches in {}", config.cache_dir_of(size).display());
            }
            Ok(())
        }
        Command::Train(a) => {
            let device = parse_device(&a.run.device)?;
            let job = Job::Train {
                model: a.model,
                fold: a.fold,
                run: a.run,
            };
            job.on(&device, progress)
        }
        Command::Crop(a) => {
            let device = parse_device(&a.run.device)?;
            let job = Job::Crop {
                oracle: a.oracle,
                run: a.run,
            };
            job.on(&device, progress)
        }
        Command::Ensemble(a) => ensemble(&a, progress),
        Command::Attention(a) => attention(&a),
        Command::Boxes(a) => boxes::print(&a),
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
        Command::Pipeline(a) => {
            let device = parse_device(&a.device)?;
            Job::Pipeline { run: a }.on(&device, progress)
        }
        Command::Demo(a) => {
            let config = PipelineConfig::preset(&a.preset, a.out.join("data"))?;
            let job = Job::Demo {
                out: a.out,
                family: a.family,
                config: Box::new(config),
            };
            job.on(&parse_device(&a.device)?, progress)
        }
    }
}

fn synth(a: &SynthArgs, progress: &Reporter) -> Result<()> {
    let config = a.config();
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

/// The work that needs a device.
enum Job {
    /// `agc train`: one model, every fold or `fold` only.
    Train {
        model: ModelKind,
        fold: Option<usize>,
        run: RunArgs,
    },
    /// `agc crop`: the attention crops, or the true-box crops with `oracle`.
    Crop { oracle: bool, run: RunArgs },
    /// `agc pipeline`: every step.
    Pipeline { run: RunArgs },
    /// `agc demo`: synthetic data of `family`, then every step.
    Demo {
        out: PathBuf,
        family: Family,
        config: Box<PipelineConfig>,
    },
    /// `agc predict`.
    Predict(PredictArgs),
}

impl Job {
    fn run(self, devices: &[Device], progress: &Reporter) -> Result<()> {
        let started = Instant::now();
        let device = &devices[0];
        match self {
            Self::Train {
                model: kind,
                fold,
                run: a,
            } => {
                let run = start(&a, device, progress)?;
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
                    fmt_auc(s.oof_auc),
                    fmt_auc(s.oof_auc_fold_mean),
                    fmt_auc(s.test_auc),
                    run.layout.model_dir(kind).display()
                );
            }
            Self::Crop { oracle, run: a } => {
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
                            fmt_auc(s.iou_median),
                            100.0 * s.fallback_rate
                        );
                    }
                }
            }
            Self::Pipeline { run: a } => {
                let run = start(&a, device, progress)?;
                let metrics = run_all(&run, devices)?;
                print_results(&run, &metrics, started);
            }
            Self::Demo {
                out,
                family,
                config,
            } => demo(&out, family, &config, devices, progress)?,
            Self::Predict(a) => predict(&a, device, progress, started)?,
        }
        Ok(())
    }
}

/// Resolves the configuration, checks the weights on `device`, prepares and opens the run.
fn start(a: &RunArgs, device: &Device, progress: &Reporter) -> Result<Run> {
    let config = a.config()?;
    if !is_started(&a.out) {
        config.check_weights(device)?;
    }
    Ok(Run::start(&a.out, &config, progress)?)
}

fn print_results(run: &Run, metrics: &Metrics, started: Instant) {
    println!("\n{}", results_table(metrics).markdown());
    if let Some(a) = &metrics.attention {
        println!(
            "attention boxes: median IoU with the true boxes {} (test {}), fallbacks {:.1} %",
            fmt_auc(a.iou_median),
            fmt_auc(a.iou_median_test),
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
        Some(w) => EnsembleMember::parse_list(w).map_err(anyhow::Error::msg)?,
        None => run.config.ensemble.clone(),
    };
    run.set_ensemble(members, a.fit);
    let ensemble = run.ensemble()?;
    let s = run.score(&ensemble.predictions);
    println!("{}", ensemble.note());
    let w: Vec<String> = ensemble.weights.iter().map(ToString::to_string).collect();
    println!(
        "ensemble ({}): OOF AUC {}, test AUC {}; {} ({:.0} s)",
        w.join(", "),
        fmt_auc(s.oof_auc),
        fmt_auc(s.test_auc),
        run.no_submission().map_or_else(
            || run.layout.submission().display().to_string(),
            |why| format!("no submission.csv: {why}")
        ),
        started.elapsed().as_secs_f64()
    );
    Ok(())
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
    let auc = |s| metrics.test_auc(s);
    if let (Some(r), Some(c), Some(e)) = (
        auc(Scored::Model(ModelKind::Resnet)),
        auc(Scored::Model(ModelKind::Cropnet)),
        auc(Scored::Ensemble),
    ) {
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
    let summary = predictor.score_to_dir(&inputs, &a.out, &a.options())?;
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
    /// Runs the job on the device(s) of `--device` ([`run_on`]: each one checked first; a GPU
    /// that fails or runs out of memory is named, with the batch size to lower).
    fn on(self, device: &DeviceArg, progress: &Reporter) -> Result<()> {
        let hint = self.batch_hint();
        run_on(device, &hint, |devices| self.run(devices, progress))
    }

    /// The batch sizes this job uses, as the flags that lower them.
    fn batch_hint(&self) -> String {
        let run = match self {
            Self::Train { run, .. } | Self::Crop { run, .. } | Self::Pipeline { run } => {
                run.config().ok()
            }
            Self::Demo { config, .. } => Some((**config).clone()),
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
