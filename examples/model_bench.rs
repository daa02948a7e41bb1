//! Times agc's models, on the CPU or a GPU, the same workloads as `scripts/torch_model_bench.py`
//! does in PyTorch, and prints one line per workload:
//!
//!     RESULT <workload> median_ms=<x>
//!
//! `scripts/bench_models.sh` runs both and prints the ratios. On its own:
//!
//!     cargo run --release --example model_bench -- [--reps 5] [--only WORKLOAD] [--parts]
//!         [--batch 8] [--device cpu] [--burn-adam] [--system-malloc]
//!
//! `--device` takes the names of `agc --device` (`cuda:0` and `wgpu` with their features);
//! `scripts/gpu-check.sh` runs it on GPUs with `--batch 32`, which names the workloads `..._b32_...`.
//!
//! Workloads (batch 8 of 224×224 images, f32, Flex on every core rayon sees; `RAYON_NUM_THREADS`
//! sets the count):
//! - `r18_fwd_b8_224`: ResNet-18 (1000-class head) forward in inference mode;
//! - `r18_train_step_b8_224`: ResNet-18 (one logit) forward in training mode, binary
//!   cross-entropy, backward, one Adam step;
//! - `chipnet_r18_train_step_b8_224`: ChipNet with a ResNet-18 over 7×7 chips of 32 and the
//!   attention head (hidden 512), the same loss, backward and Adam step;
//! - `r50_98chips_32`: ResNet-50 embeddings of 98 chips of 32×32 (two images' grids) in
//!   inference mode.
//!
//! `--parts` also prints `PART <workload> <part> median_ms=<x>` for the parts of the training
//! steps: `forward` (forward and loss, timed up to the loss's value; an untimed backward pass
//! follows each, to consume the autodiff graph), `backward` (forward + backward, less the
//! forward) and `optimizer` (the optimizer's step alone, timed after an untimed forward and
//! backward pass in each run).
//!
//! The steps take agc's Adam (`agc::core::adam::Adam`, fused on Flex), as training does;
//! `--burn-adam` takes Burn's own (`burn::optim::Adam`) instead, to time one against the other.
//! glibc's malloc is set as `agc train` sets it (`agc::malloc::keep_freed_memory`);
//! `--system-malloc` leaves it as the system (and any `MALLOC_*_` variables) set it.
//!
//! Each timing is the median of `--reps` runs after two warm-up runs; every run ends by reading
//! its result back (Flex computes eagerly, so nothing is left pending).

use std::time::Instant;

use agc::core::{ChipNetConfig, ResNetConfig};
use agc::train::Loss;
use anyhow::{Context, bail};
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Distribution;

const SIZE: usize = 224;

/// The workloads' names for batches of `batch`.
fn workloads(batch: usize) -> [String; 4] {
    [
        format!("r18_fwd_b{batch}_224"),
        format!("r18_train_step_b{batch}_224"),
        format!("chipnet_r18_train_step_b{batch}_224"),
        "r50_98chips_32".into(),
    ]
}

struct Options {
    reps: usize,
    only: Option<String>,
    parts: bool,
    batch: usize,
    device: String,
    burn_adam: bool,
}

fn number(args: &mut impl Iterator<Item = String>, flag: &str) -> anyhow::Result<usize> {
    let n: usize = args
        .next()
        .with_context(|| format!("{flag} needs a number"))?
        .parse()
        .with_context(|| format!("{flag} needs a number"))?;
    if n == 0 {
        bail!("{flag} must be at least 1");
    }
    Ok(n)
}

fn parse_args() -> anyhow::Result<Options> {
    let mut options = Options {
        reps: 5,
        only: None,
        parts: false,
        batch: 8,
        device: "cpu".into(),
        burn_adam: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--reps" => options.reps = number(&mut args, "--reps")?,
            "--batch" => {
                options.batch = number(&mut args, "--batch")?;
                if options.batch < 2 {
                    bail!("--batch must be at least 2 (batch norm in the training steps)");
                }
            }
            "--only" => options.only = Some(args.next().context("--only needs a workload")?),
            "--device" => options.device = args.next().context("--device needs a name")?,
            "--parts" => options.parts = true,
            "--burn-adam" => options.burn_adam = true,
            // Read by main before the options, as the allocator must be set first.
            "--system-malloc" => {}
            other => bail!(
                "unknown argument {other:?} (expected --reps N, --only NAME, --parts, --batch N, \
                 --device NAME, --burn-adam, --system-malloc)"
            ),
        }
    }
    if let Some(name) = &options.only {
        let known = workloads(options.batch);
        if !known.contains(name) {
            bail!("unknown workload {name:?}; expected one of {known:?}");
        }
    }
    Ok(options)
}

/// The median of `reps` timed runs of `run`, in milliseconds, after two warm-up runs.
fn median_ms(reps: usize, mut run: impl FnMut()) -> f64 {
    median_of(reps, || {
        let start = Instant::now();
        run();
        start.elapsed().as_secs_f64() * 1e3
    })
}

/// The median of `reps` runs of `run`, which returns the milliseconds it timed, after two
/// warm-up runs.
fn median_of(reps: usize, mut run: impl FnMut() -> f64) -> f64 {
    run();
    run();
    let mut times: Vec<f64> = (0..reps).map(|_| run()).collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn images(batch: usize, size: usize, device: &Device) -> Tensor<4> {
    Tensor::random(
        [batch, 3, size, size],
        Distribution::Normal(0.0, 1.0),
        device,
    )
}

/// Labels 1, 0, 0, 1, 0, 1, 0, 0, repeated.
fn targets(batch: usize, device: &Device) -> Tensor<1> {
    let pattern = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0];
    let labels: Vec<f32> = (0..batch).map(|i| pattern[i % pattern.len()]).collect();
    Tensor::from_floats(labels.as_slice(), device)
}

/// A model that maps a batch of images to one logit per image.
trait Classifier: Module {
    fn logit(&self, images: Tensor<4>) -> Tensor<2>;
}

impl Classifier for agc::core::ResNet {
    fn logit(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
}

impl Classifier for agc::core::ChipNet {
    fn logit(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images).logit
    }
}

/// One training step: forward, loss, backward, Adam. Returns the stepped model.
fn train_step<M: Classifier>(
    model: M,
    optim: &mut ModuleOptimizer,
    x: &Tensor<4>,
    y: &Tensor<1>,
) -> M {
    let loss = Loss::Bce.forward(model.logit(x.clone()), y.clone());
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    optim.step(1e-4, model, grads)
}

/// Times the training step of `model`, and with `parts` its forward, backward and optimizer
/// parts on their own.
fn time_training<M: Classifier>(name: &str, model: M, options: &Options, device: &Device) {
    let x = images(options.batch, SIZE, device);
    let y = targets(options.batch, device);
    // Burn's default epsilon in both, so that they take the same steps.
    let mut optim = if options.burn_adam {
        AdamConfig::new().init()
    } else {
        agc::core::adam::Adam::new(1e-5).init()
    };
    let mut model = Some(model);
    let ms = median_ms(options.reps, || {
        let stepped = train_step(model.take().expect("a model"), &mut optim, &x, &y);
        device.sync().expect("the device ran the step");
        model = Some(stepped);
    });
    println!("RESULT {name} median_ms={ms:.1}");
    if !options.parts {
        return;
    }
    let model = model.expect("a model");
    // The forward pass is timed up to the loss's value; the backward pass then runs untimed, as
    // in training, so that the autodiff graph is consumed rather than left to be cleaned up in a
    // later timed run.
    let forward = median_of(options.reps, || {
        let start = Instant::now();
        let loss = Loss::Bce.forward(model.logit(x.clone()), y.clone());
        let _ = loss.clone().into_scalar::<f32>();
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let _ = GradientsParams::from_grads(loss.backward(), &model);
        device.sync().expect("the device ran the backward pass");
        ms
    });
    let forward_backward = median_ms(options.reps, || {
        let loss = Loss::Bce.forward(model.logit(x.clone()), y.clone());
        let _ = GradientsParams::from_grads(loss.backward(), &model);
        device.sync().expect("the device ran the backward pass");
    });
    println!("PART {name} forward median_ms={forward:.1}");
    println!(
        "PART {name} backward median_ms={:.1}",
        forward_backward - forward
    );
    // The optimizer's step alone: a difference of two medians would carry both their noise.
    let mut model = Some(model);
    let optimizer = median_of(options.reps, || {
        let m = model.take().expect("a model");
        let loss = Loss::Bce.forward(m.logit(x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        device.sync().expect("the device ran the backward pass");
        let start = Instant::now();
        let stepped = optim.step(1e-4, m, grads);
        device.sync().expect("the device ran the optimizer");
        let ms = start.elapsed().as_secs_f64() * 1e3;
        model = Some(stepped);
        ms
    });
    println!("PART {name} optimizer median_ms={optimizer:.1}");
}

/// The widest vector instruction set this CPU offers, as detected at run time: the CPU kernels'
/// speed, and so every ratio against PyTorch, depends on it.
fn instruction_set() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            "AVX-512F"
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            "AVX2+FMA"
        } else if is_x86_feature_detected!("avx2") {
            "AVX2"
        } else {
            "SSE (no AVX2)"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        "NEON (aarch64)"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        std::env::consts::ARCH
    }
}

fn main() -> anyhow::Result<()> {
    // As `agc train` does, unless --system-malloc.
    let system_malloc = std::env::args().any(|a| a == "--system-malloc");
    let kept = !system_malloc && agc::malloc::keep_freed_memory();
    let options = parse_args()?;
    let (plain, name) = match agc::devices::parse_device(&options.device)? {
        agc::devices::DeviceArg::Cpu => (
            Device::flex(),
            format!("Flex, {} rayon threads", rayon::current_num_threads()),
        ),
        agc::devices::DeviceArg::Gpus(gpus) => match gpus.as_slice() {
            [gpu] => (gpu.device(), gpu.name()),
            _ => bail!("--device: one device at a time"),
        },
    };
    agc::devices::probe(&plain).with_context(|| format!("--device {name}: not usable"))?;
    let train = plain.clone().autodiff();
    plain.seed(0);
    println!(
        "# agc model bench: {name}, CPU {}, batch {}, median of {} runs, {} Adam, malloc {}",
        instruction_set(),
        options.batch,
        options.reps,
        if options.burn_adam { "Burn's" } else { "agc's" },
        if kept {
            "keeping freed memory"
        } else {
            "as the system set it"
        }
    );
    let [fwd, step, chip_step, r50] = workloads(options.batch);
    let wanted = |name: &str| options.only.as_deref().is_none_or(|only| only == name);

    if wanted(&fwd) {
        let model = ResNetConfig::resnet18()
            .with_num_classes(Some(1000))
            .init(&plain);
        let x = images(options.batch, SIZE, &plain);
        let ms = median_ms(options.reps, || {
            let _ = model.forward(x.clone()).into_data();
        });
        println!("RESULT {fwd} median_ms={ms:.1}");
    }
    if wanted(&step) {
        let model = ResNetConfig::resnet18()
            .with_num_classes(Some(1))
            .init(&train);
        time_training(&step, model, &options, &train);
    }
    if wanted(&chip_step) {
        let model = ChipNetConfig::new(ResNetConfig::resnet18()).init(&train);
        time_training(&chip_step, model, &options, &train);
    }
    if wanted(&r50) {
        let model = ResNetConfig::resnet50().init(&plain);
        let chips = images(98, 32, &plain);
        let ms = median_ms(options.reps, || {
            let _ = model.embed(chips.clone()).into_data();
        });
        println!("RESULT {r50} median_ms={ms:.1}");
    }
    Ok(())
}
