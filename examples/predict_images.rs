//! Applies a trained run to new images with the library: load the run once, then score image
//! files or pixel buffers already in memory, on any device.
//!
//!     cargo run --release --example predict_images -- RUN IMAGE_OR_FOLDER...
//!
//! Without arguments it first trains a tiny run on a small synthetic data set (well under a
//! minute on two cores), then scores that run's test folder and one image held in memory.
//! `agc predict` is the same library call with chunking, resumption and overlays
//! (`Predictor::score_to_dir`).

use std::path::PathBuf;

use agc::Device;
use agc::data::progress::silent;
use agc::data::{SynthConfig, decode, generate};
use agc::train::ModelKind;
use agc::train::predictor::{Input, Predictor, collect_inputs};
use agc::train::run::{PipelineConfig, Run, run_all};
use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let _tmp;
    let (run, images) = if let [run, images @ ..] = &args[..] {
        (run.clone(), images.to_vec())
    } else {
        let dir = tempfile::tempdir()?;
        let run = train_tiny_run(dir.path())?;
        let images = vec![dir.path().join("data/test")];
        _tmp = dir;
        (run, images)
    };

    let device = Device::flex();
    let predictor = Predictor::load(&run, &device, &silent())?;
    println!(
        "run {}: models {:?}, ensemble {:?}",
        run.display(),
        predictor.models(),
        predictor.ensemble()
    );
    let inputs = collect_inputs(&images)?;
    let mut scored = predictor.score(&inputs, 0)?;
    // The first photograph again, as a pixel buffer an application already holds, scored as
    // the first of its own list (test-time augmentation is seeded by the place in the list).
    if let Some(agc::train::predictor::Source::File(path)) = inputs.first().map(|i| &i.source) {
        let decoded = decode(path, None).context("decoding the first image")?;
        let copy = Input::pixels("(its pixels, from memory)", decoded.image);
        let again = predictor.score(&[copy], 0)?;
        scored.insert(1, again.into_iter().next().context("one image, one score")?);
    }
    for s in scored {
        let r = &s.row;
        match &s.error {
            Some(e) => println!("{}: cannot be read: {e}", r.image_name),
            None => println!(
                "{}: resnet {}, cropnet {}, ensemble {}; box x {} y {} side {} in {}×{}",
                r.image_name,
                fmt(r.resnet),
                fmt(r.cropnet),
                fmt(r.ensemble),
                r.box_x.unwrap_or(0),
                r.box_y.unwrap_or(0),
                r.box_side.unwrap_or(0),
                r.width.unwrap_or(0),
                r.height.unwrap_or(0)
            ),
        }
    }
    Ok(())
}

fn fmt(v: Option<f32>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.3}"))
}

/// A tiny run on 24 + 8 synthetic images: tiny backbones, 64-pixel inputs, 2 folds, 2 epochs.
fn train_tiny_run(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let data = dir.join("data");
    let synth = SynthConfig {
        train: 24,
        test: 8,
        positive_rate: 0.4,
        min_side: 160,
        max_side: 240,
        seed: 3,
        ..SynthConfig::default()
    };
    generate(&synth, &data, &agc::data::Silent)?;
    let mut config = PipelineConfig::demo(data);
    config.image_size = 64;
    config.folds = 2;
    config.models = vec![ModelKind::Resnet, ModelKind::Chipnet, ModelKind::Cropnet];
    config.schedules.for_each(|s| {
        s.max_epochs = 2;
        s.patience = 2;
        s.batch_size = 8;
    });
    let run = dir.join("run");
    println!("training a tiny run in {} ...", run.display());
    let opened = Run::start(&run, &config, &silent())?;
    run_all(&opened, &[Device::flex().autodiff()])?;
    Ok(run)
}
