//! The command line: what each subcommand takes, parsed by clap into plain data. Turning it
//! into work is main.rs's; what the settings mean is the library's
//! ([`agc::train::run::Overrides`], [`agc::train::run::ConfigSource`]).

use std::path::PathBuf;

use agc::data::{Family, SynthConfig};
use agc::train::predictor::PredictOptions;
use agc::train::run::{BoxSplit, ConfigSource, Overrides, PipelineConfig, resolve};
use agc::train::{Loss, ModelKind, TestFrom};
use clap::{Args, Parser, Subcommand, ValueEnum};

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
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Hide progress bars.
    #[arg(long, global = true)]
    pub(crate) quiet: bool,
    /// Refuse images whose header claims more pixels than this (width × height), before
    /// decoding them: a decompression bomb is then an unreadable image, listed and skippable
    /// with --skip-bad-images. The default, as Pillow's refusal, is above any camera's
    /// photograph.
    #[arg(long, global = true, default_value_t = agc::data::imageio::DEFAULT_MAX_IMAGE_PIXELS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_image_pixels: u64,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
    /// Redraw the crop step's boxes from a run's saved attention maps at other thresholds and
    /// print each one's median IoU with the true boxes, as boxes.csv computes it: a box
    /// threshold chosen on the training images, without training anything again.
    Boxes(BoxesArgs),
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
pub(crate) struct SynthArgs {
    /// Output folder.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// The family of images: skin (veil, globules, freckles) or dermoscopy (circular fields,
    /// rulers, ink, bubbles, glare; an atypical pigment network as the fine evidence).
    #[arg(long, default_value_t = Family::Skin)]
    pub(crate) family: Family,
    /// Training images.
    #[arg(long, default_value_t = 800)]
    pub(crate) train: usize,
    /// Test images.
    #[arg(long, default_value_t = 400)]
    pub(crate) test: usize,
    /// Share of positives.
    #[arg(long, default_value_t = 0.2)]
    pub(crate) positive_rate: f64,
    /// Shortest image side [default: the family's, 600 for skin, 700 for dermoscopy].
    #[arg(long)]
    pub(crate) min_side: Option<u32>,
    /// Longest image side [default: the family's, 1600 for skin, 1400 for dermoscopy].
    #[arg(long)]
    pub(crate) max_side: Option<u32>,
    /// Smallest lesion diameter, as a share of the shorter side [default: the family's, 0.04
    /// for skin, 0.05 for dermoscopy].
    #[arg(long)]
    pub(crate) lesion_min: Option<f32>,
    /// Largest lesion diameter, as a share of the shorter side [default: the family's, 0.33
    /// for skin, 0.32 for dermoscopy].
    #[arg(long)]
    pub(crate) lesion_max: Option<f32>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
}

/// Where a run is and how it is configured. Flags override `--config` (a `config.json` of an
/// earlier run or a hand-written one); an existing run resumes only with the same settings.
// Its switches are independent command-line flags.
#[allow(clippy::struct_excessive_bools)]
#[derive(Args, Debug, Clone)]
pub(crate) struct RunArgs {
    /// The data directory: train.csv, test.csv (optional), train/, test/.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// The run directory.
    #[arg(long, default_value = "runs/agc")]
    pub(crate) out: PathBuf,
    /// A configuration file (JSON, as a run's config.json) to start from; it may set only some
    /// keys, the others keep the --preset's values (the seed's by default; an unknown key is an
    /// error).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// A built-in configuration to start from: seed (the SIIM-ISIC seed's: ResNet-18, 224 px,
    /// 5 folds), demo (tiny backbones, 112 px, 3 folds) or cpu (`agc demo`'s: the demo's
    /// schedule, small backbones, ChipNet on 224-px images in 8-px chips with 1×1 attention
    /// kernels, the field mask and the contrast prior) [default: seed].
    #[arg(long)]
    pub(crate) preset: Option<String>,
    /// Folder of the preprocessed caches [default: DATA/agc-cache-SIZE; ChipNet's other size
    /// in DATA/agc-cache-SIZE, or in CACHE/agc-cache-SIZE when this is given].
    #[arg(long)]
    pub(crate) cache: Option<PathBuf>,
    /// Backbone: tiny, small, resnet18, resnet34, resnet50, resnet101, resnet152; wN for one
    /// basic block per stage at width N (w8 is tiny, w16 small, w64 torchvision's
    /// ResNet(BasicBlock, [1,1,1,1])); NAME-wN for a preset at width N [default: resnet18].
    #[arg(long)]
    pub(crate) backbone: Option<String>,
    /// ImageNet weights for the backbone (torchvision .pth or .safetensors).
    #[arg(long)]
    pub(crate) weights: Option<PathBuf>,
    /// Load --weights even if the file holds tensors the backbone has no place for (by default
    /// that is an error: a ResNet-34 file is not a ResNet-18).
    #[arg(long)]
    pub(crate) allow_unused_weights: bool,
    /// Device: cpu; cuda:N (built with --features cuda); wgpu, wgpu:N, wgpu:integrated[:N] or
    /// wgpu:cpu (built with --features wgpu: Vulkan, Metal, DX12); several GPUs of one kind
    /// (cuda:0,cuda:1) for data-parallel training.
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// Images per training batch [default: 32]. A prepared run takes a new one when it resumes
    /// (after a GPU ran out of memory, say) for the models with no epoch trained yet; a trained
    /// model keeps its own, and one trained part of the way refuses another.
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// Images per inference batch (validation, crops, test) [default: 64]; like --batch-size,
    /// a resumed run takes a new one.
    #[arg(long)]
    pub(crate) eval_batch_size: Option<usize>,
    /// Side of the images the models see [default: 224].
    #[arg(long)]
    pub(crate) image_size: Option<u32>,
    /// Side of the images ChipNet sees, when not --image-size: a finer attention grid at the
    /// same chip size, while the classifiers keep --image-size [default: --image-size;
    /// --preset cpu: 224].
    #[arg(long)]
    pub(crate) chipnet_image_size: Option<u32>,
    /// ChipNet's chip side [default: 32].
    #[arg(long)]
    pub(crate) chip: Option<usize>,
    /// Side of ChipNet's attention scoring kernels: 3 (the seed's; a chip's weight also sees
    /// its neighbours) or 1 (each chip's weight from its own embedding) [default: 3].
    #[arg(long)]
    pub(crate) attention_kernel: Option<usize>,
    /// Keep ChipNet's attention off chips of a black field (outside a dermoscope's circle,
    /// black corners or borders).
    #[arg(long)]
    pub(crate) field_mask: bool,
    /// Weight of ChipNet's contrast prior: attention starts on the chips that stand out from
    /// the rest of the image [default: 0, none].
    #[arg(long)]
    pub(crate) contrast_prior: Option<f32>,
    /// Cross-validation folds [default: 5].
    #[arg(long)]
    pub(crate) folds: Option<usize>,
    /// Most epochs per fold [default: 20].
    #[arg(long)]
    pub(crate) epochs: Option<usize>,
    /// Early-stopping patience in epochs [default: 3].
    #[arg(long)]
    pub(crate) patience: Option<usize>,
    /// Rounds of test-time augmentation [default: 3].
    #[arg(long)]
    pub(crate) tta: Option<usize>,
    /// Test predictions from the best checkpoint, or averaged over the last `patience`
    /// epochs [default: best].
    #[arg(long, value_enum)]
    pub(crate) test_from: Option<TestFromArg>,
    /// Adam learning rate of every model's backbone and head alike [default: the preset's:
    /// seed 1e-5 backbone and 5e-5 head (5e-5 and 1e-4 for ChipNet), demo 2e-3, cpu 2e-3 for
    /// ChipNet and 1e-3 for the classifiers].
    #[arg(long)]
    pub(crate) lr: Option<f64>,
    /// Context around every square box, attention boxes and true boxes (oracle crops) alike,
    /// as a fraction of its side on each side (0.1 adds 10 %) [default: 0].
    #[arg(long)]
    pub(crate) box_margin: Option<f64>,
    /// Loss [default: focal, alpha 1, gamma 2].
    #[arg(long, value_enum)]
    pub(crate) loss: Option<LossArg>,
    /// Seed [default: 42].
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Do not feed the metadata (sex, age, site) to the MetaResNets.
    #[arg(long)]
    pub(crate) no_metadata: bool,
    /// Keep each patient's images in one fold (needs patient_id).
    #[arg(long)]
    pub(crate) group_by_patient: bool,
    /// Leave out images that cannot be read (listed in RUN/skipped.csv) instead of stopping.
    #[arg(long)]
    pub(crate) skip_bad_images: bool,
    /// Models the pipeline trains, comma-separated [default: resnet,chipnet,cropnet; the
    /// oracle cropnet is added when the data has true boxes].
    #[arg(long, value_delimiter = ',')]
    pub(crate) models: Option<Vec<ModelKind>>,
}

#[derive(Args, Debug)]
pub(crate) struct TrainArgs {
    /// resnet | chipnet | attnresnet | cropnet | oracle_cropnet.
    #[arg(long)]
    pub(crate) model: ModelKind,
    /// Train this fold only (0-based), refusing if another process holds it: several
    /// processes or machines sharing the run directory can each take folds (a job array).
    #[arg(long)]
    pub(crate) fold: Option<usize>,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Args, Debug)]
pub(crate) struct CropArgs {
    /// Crop by the true lesion boxes instead (for the oracle CropNet).
    #[arg(long)]
    pub(crate) oracle: bool,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Args, Debug)]
pub(crate) struct EnsembleArgs {
    /// Members and weights, e.g. resnet=0.5,cropnet=0.5 [default: the config's].
    #[arg(long)]
    pub(crate) members: Option<String>,
    /// Fit the weights on the out-of-fold predictions (never on test labels).
    #[arg(long)]
    pub(crate) fit: bool,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Args, Debug)]
pub(crate) struct AttentionArgs {
    /// The run directory.
    #[arg(long)]
    pub(crate) run: PathBuf,
    /// Output folder [default: RUN/overlays].
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Which fold's ChipNet.
    #[arg(long, default_value_t = 0)]
    pub(crate) fold: usize,
    /// How many images (test images first).
    #[arg(long, default_value_t = 16)]
    pub(crate) count: usize,
}

#[derive(Args, Debug)]
pub(crate) struct BoxesArgs {
    /// The run directory, after the crop step (its attention/fold<k>.csv).
    #[arg(long)]
    pub(crate) run: PathBuf,
    /// Thresholds: a box around the upsampled map's pixels above mean + k·std; the run's other
    /// box settings (margin, minimum side, largest component) are kept.
    #[arg(long, num_args = 1.., default_values_t = [1.0, 1.25, 1.5, 2.0, 3.0])]
    pub(crate) k: Vec<f64>,
    /// Whose boxes: the training images (so that choosing k never sees a test label), the test
    /// images, or all.
    #[arg(long, value_enum, default_value_t = SplitArg::Train)]
    pub(crate) split: SplitArg,
}

#[derive(Args, Debug)]
pub(crate) struct PredictArgs {
    /// The trained run directory.
    #[arg(long)]
    pub(crate) run: PathBuf,
    /// Images: files, folders (their JPEG and PNG files), or CSVs with image_name and optional
    /// sex, age_approx, anatom_site_general_challenge (images in the folder named after the
    /// CSV, else beside it).
    #[arg(long, num_args = 1.., required = true)]
    pub(crate) images: Vec<PathBuf>,
    /// Output folder: predictions.csv, overlays/.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Device: cpu, cuda:N (built with --features cuda), or wgpu, wgpu:N, wgpu:integrated[:N],
    /// wgpu:cpu (built with --features wgpu).
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// Images per inference batch [default: the run's eval_batch_size].
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// Also draw overlays/<image>.png (attention map, box, score).
    #[arg(long)]
    pub(crate) overlays: bool,
    /// Leave out images that cannot be read (their rows say why) instead of stopping.
    #[arg(long)]
    pub(crate) skip_bad_images: bool,
    /// Images held in memory at once (and lost at most by a kill).
    #[arg(long, default_value_t = 256)]
    pub(crate) chunk: usize,
}

#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    /// The trained run directory.
    #[arg(long)]
    pub(crate) run: PathBuf,
    /// A new folder for model.json and the weights.
    #[arg(long)]
    pub(crate) out: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct EvaluateArgs {
    /// Predictions: image_name plus a prediction (or target) column.
    #[arg(long)]
    pub(crate) predictions: PathBuf,
    /// Labels: image_name,target.
    #[arg(long)]
    pub(crate) labels: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// The run directory (the synthetic data goes to OUT/data).
    #[arg(long, default_value = "runs/demo")]
    pub(crate) out: PathBuf,
    /// Device: cpu, cuda:N, wgpu, wgpu:N, wgpu:cpu, or several GPUs of one kind
    /// (cuda:0,cuda:1).
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// The synthetic family: skin or dermoscopy.
    #[arg(long, default_value_t = Family::Skin)]
    pub(crate) family: Family,
    /// The configuration: cpu (small backbones, the attention options) or demo (tiny
    /// backbones, the seed's attention).
    #[arg(long, default_value = "cpu")]
    pub(crate) preset: String,
}

/// `--loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LossArg {
    /// Focal loss, alpha 1, gamma 2 (the seed's).
    Focal,
    /// Binary cross-entropy.
    Bce,
}

impl From<LossArg> for Loss {
    fn from(l: LossArg) -> Self {
        match l {
            LossArg::Focal => Loss::default(),
            LossArg::Bce => Loss::Bce,
        }
    }
}

/// `--test-from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TestFromArg {
    /// The checkpoint with the best validation AUC.
    Best,
    /// The average of the predictions after each of the last `patience` epochs.
    #[value(alias = "last_epochs")]
    LastEpochs,
}

impl From<TestFromArg> for TestFrom {
    fn from(t: TestFromArg) -> Self {
        match t {
            TestFromArg::Best => TestFrom::Best,
            TestFromArg::LastEpochs => TestFrom::LastEpochs,
        }
    }
}

/// `agc boxes --split`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SplitArg {
    /// The training images, each under every fold's ChipNet.
    Train,
    /// The test images.
    Test,
    /// Both.
    All,
}

impl From<SplitArg> for BoxSplit {
    fn from(s: SplitArg) -> Self {
        match s {
            SplitArg::Train => BoxSplit::Train,
            SplitArg::Test => BoxSplit::Test,
            SplitArg::All => BoxSplit::All,
        }
    }
}

impl SynthArgs {
    /// The family's synthesis settings with the flags given over them.
    pub(crate) fn config(&self) -> SynthConfig {
        let family = SynthConfig::of_family(self.family);
        SynthConfig {
            train: self.train,
            test: self.test,
            positive_rate: self.positive_rate,
            min_side: self.min_side.unwrap_or(family.min_side),
            max_side: self.max_side.unwrap_or(family.max_side),
            lesion_min: self.lesion_min.unwrap_or(family.lesion_min),
            lesion_max: self.lesion_max.unwrap_or(family.lesion_max),
            seed: self.seed,
            ..family
        }
    }
}

impl PredictArgs {
    /// How `agc predict` works through its list.
    pub(crate) fn options(&self) -> PredictOptions {
        PredictOptions {
            chunk: self.chunk,
            skip_bad: self.skip_bad_images,
            overlays: self.overlays,
        }
    }
}

impl RunArgs {
    /// Where the run's configuration starts from.
    pub(crate) fn source(&self) -> ConfigSource {
        ConfigSource {
            config: self.config.clone(),
            preset: self.preset.clone(),
            data: self.data.clone(),
            out: self.out.clone(),
        }
    }

    /// What the flags change in it.
    pub(crate) fn overrides(&self) -> Overrides {
        Overrides {
            cache: self.cache.clone(),
            backbone: self.backbone.clone(),
            weights: self.weights.clone(),
            allow_unused_weights: self.allow_unused_weights,
            image_size: self.image_size,
            chipnet_image_size: self.chipnet_image_size,
            chip: self.chip,
            attention_kernel: self.attention_kernel,
            field_mask: self.field_mask,
            contrast_prior: self.contrast_prior,
            folds: self.folds,
            seed: self.seed,
            no_metadata: self.no_metadata,
            group_by_patient: self.group_by_patient,
            skip_bad_images: self.skip_bad_images,
            models: self.models.clone(),
            box_margin: self.box_margin,
            lr: self.lr,
            batch_size: self.batch_size,
            eval_batch_size: self.eval_batch_size,
            epochs: self.epochs,
            patience: self.patience,
            tta: self.tta,
            test_from: self.test_from.map(Into::into),
            loss: self.loss.map(Into::into),
        }
    }

    /// The run's configuration: [`Self::source`] resolved, then [`Self::overrides`] applied.
    pub(crate) fn config(&self) -> agc::train::Result<PipelineConfig> {
        resolve(&self.source(), &self.overrides())
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
    fn boxes_read_the_training_images_at_five_thresholds_unless_told() {
        let parse = |args: &[&str]| {
            let Command::Boxes(a) =
                Cli::try_parse_from(["agc", "boxes", "--run", "r"].iter().chain(args))
                    .expect("parses")
                    .command
            else {
                panic!("boxes")
            };
            (a.k, BoxSplit::from(a.split))
        };
        assert_eq!(
            parse(&[]),
            (vec![1.0, 1.25, 1.5, 2.0, 3.0], BoxSplit::Train)
        );
        assert_eq!(
            parse(&["--k", "2", "0.5", "--split", "all"]),
            (vec![2.0, 0.5], BoxSplit::All)
        );
    }

    #[test]
    fn loss_and_test_from_are_parsed_by_clap_and_bad_values_listed() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["agc", "pipeline", "--data", "d"].iter().chain(args))
        };
        let Command::Pipeline(a) = parse(&["--loss", "bce", "--test-from", "last_epochs"])
            .expect("parses")
            .command
        else {
            panic!("a pipeline")
        };
        let o = a.overrides();
        assert_eq!(
            (o.loss, o.test_from),
            (Some(Loss::Bce), Some(TestFrom::LastEpochs))
        );
        let err = parse(&["--loss", "hinge"])
            .expect_err("no such loss")
            .to_string();
        assert!(
            err.contains("hinge") && err.contains("focal") && err.contains("bce"),
            "{err}"
        );
    }
}
