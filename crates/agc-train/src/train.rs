//! Training one model on one fold: class-balanced epochs, Adam with a learning rate for the
//! backbone and one for the rest, a per-epoch decay, validation AUC every epoch, early stopping,
//! best and last checkpoints, resumption, and out-of-fold and test predictions with test-time
//! augmentation.
//!
//! The loop is written out rather than run through Burn's `Learner`: Burn 0.21 has no parameter
//! groups, steps its learning-rate schedulers per iteration, computes AUC per batch, and does not
//! checkpoint its early-stopping state (see `shared/BURN-0.21.md` §3). Here every epoch is a pure
//! function of the state saved after the previous one (weights, both optimizers' moments, the
//! history) and of seeds derived from the run seed, the fold and the epoch, so a run killed at
//! any point resumes from its last finished epoch and ends with the same predictions as one that
//! was never stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agc_data::{
    AugmentConfig, Augmenter, CacheDataset, ImageBatch, ImageBatcher, ImageCache, ImageItem,
    balanced_epoch, sample_seed,
};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::{ModuleVisitor, Param};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::error::{Result, TrainError, read_json};
use crate::loss::Loss;
use crate::metrics::roc_auc;
use crate::model::{ModelKind, ModelSpec, Net};

/// Which weights make the test (and out-of-fold) predictions of a fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TestFrom {
    /// The checkpoint with the best validation AUC.
    #[default]
    Best,
    /// The average of the predictions after each of the last `patience` epochs (the seed's
    /// choice).
    LastEpochs,
}

/// The learning schedule of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Most epochs per fold.
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation AUC.
    pub patience: usize,
    /// Images per training batch.
    pub batch_size: usize,
    /// Images per inference batch.
    pub eval_batch_size: usize,
    /// Adam learning rate of the ResNet backbone.
    pub lr_backbone: f64,
    /// Adam learning rate of everything else (metadata branch, attention head, classifier).
    pub lr_head: f64,
    /// Both learning rates are multiplied by this after every epoch.
    pub lr_decay: f64,
    /// Adam's epsilon (PyTorch's default 1e-8; Burn's is 1e-5).
    pub adam_epsilon: f32,
    /// The training loss.
    pub loss: Loss,
    /// Class-balanced oversampling of the positives in every training epoch.
    pub balanced: bool,
    /// Training augmentation (hair, flips, rotation, colour jitter); `None` trains on the
    /// images as they are.
    pub augment: Option<AugmentConfig>,
    /// Rounds of test-time augmentation (flips and jitter) averaged for the out-of-fold and
    /// test predictions; 0 predicts on the plain images.
    pub tta: usize,
    /// Which weights predict the test set.
    pub test_from: TestFrom,
}

impl TrainConfig {
    /// The seed's schedule for `kind`: MetaResNet/CropNet backbone 1e-5 and head 5e-5,
    /// ChipNet/AttnResNet backbone 5e-5 and head 1e-4, ×0.95 per epoch, focal loss, up to 20
    /// epochs with patience 3, 3 rounds of TTA.
    pub fn seed_defaults(kind: ModelKind) -> Self {
        let (lr_backbone, lr_head) = if kind.has_attention() {
            (5e-5, 1e-4)
        } else {
            (1e-5, 5e-5)
        };
        Self {
            max_epochs: 20,
            patience: 3,
            batch_size: 32,
            eval_batch_size: 64,
            lr_backbone,
            lr_head,
            lr_decay: 0.95,
            adam_epsilon: 1e-8,
            loss: Loss::default(),
            balanced: true,
            augment: Some(AugmentConfig::train()),
            tta: 3,
            test_from: TestFrom::Best,
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        let bad = |what: &str| Err(TrainError::Config(what.to_string()));
        if self.max_epochs == 0 {
            return bad("max_epochs must be at least 1");
        }
        if self.batch_size < 2 || self.eval_batch_size == 0 {
            return bad(
                "batch_size must be at least 2 (batch norm) and eval_batch_size at least 1",
            );
        }
        if !(self.lr_backbone >= 0.0 && self.lr_head >= 0.0 && self.lr_decay > 0.0) {
            return bad("learning rates must be non-negative and lr_decay positive");
        }
        if self.test_from == TestFrom::LastEpochs && self.patience == 0 {
            return bad(
                "test_from = last_epochs averages the last `patience` epochs: set patience",
            );
        }
        Ok(())
    }
}

/// A set of cached images with their metadata vectors and labels, indexed by cache row.
#[derive(Debug, Clone)]
pub struct Images {
    /// The image cache.
    pub cache: Arc<ImageCache>,
    /// One metadata vector per cache row (empty vectors for no metadata).
    pub meta: Arc<Vec<Vec<f32>>>,
    /// One label per cache row (0 where unknown).
    pub targets: Arc<Vec<f32>>,
}

impl Images {
    /// # Errors
    /// If `meta` or `targets` do not have one entry per cache row.
    pub fn new(cache: Arc<ImageCache>, meta: Vec<Vec<f32>>, targets: Vec<f32>) -> Result<Self> {
        if meta.len() != cache.len() || targets.len() != cache.len() {
            return Err(TrainError::Config(format!(
                "{} metadata rows and {} labels for a cache of {} images",
                meta.len(),
                targets.len(),
                cache.len()
            )));
        }
        Ok(Self {
            cache,
            meta: Arc::new(meta),
            targets: Arc::new(targets),
        })
    }

    fn labels(&self) -> Vec<u8> {
        self.targets.iter().map(|&t| u8::from(t > 0.5)).collect()
    }

    fn dataset(&self, rows: Vec<usize>) -> CacheDataset {
        CacheDataset::new(
            Arc::clone(&self.cache),
            rows,
            Arc::clone(&self.meta),
            Arc::clone(&self.targets),
        )
    }
}

/// Predictions of one model for a list of cache rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Predictions {
    /// Probability of the positive class, one per row.
    pub probabilities: Vec<f32>,
    /// Attention maps, `grid · grid` values per row in row-major order; empty for a model
    /// without attention.
    pub attention: Vec<f32>,
    /// Side of the attention grid (0 without attention).
    pub grid: usize,
}

/// Splits `dataset` into batches in order, preparing the items of a batch in parallel.
fn batches(
    dataset: &CacheDataset,
    batch_size: usize,
    device: &Device,
) -> impl Iterator<Item = ImageBatch> {
    let n = dataset.len();
    (0..n.div_ceil(batch_size)).map(move |b| {
        batch_of(
            dataset,
            b * batch_size..((b + 1) * batch_size).min(n),
            device,
        )
    })
}

/// The items `range` of `dataset` as one batch on `device`, prepared in parallel.
fn batch_of(dataset: &CacheDataset, range: std::ops::Range<usize>, device: &Device) -> ImageBatch {
    let items: Vec<ImageItem> = range
        .into_par_iter()
        .map(|i| dataset.get(i).expect("index below the dataset's length"))
        .collect();
    ImageBatcher.batch(items, device)
}

/// Predicts `rows` of `images` with `net` in inference mode (batch-norm running statistics, no
/// dropout, no autodiff graph, whatever mode `net` and `device` are in). With `tta > 0` the
/// probabilities are the mean over `tta` rounds of test-time augmentation seeded by `seed`;
/// attention maps always come from the plain images.
pub fn predict(
    net: &Net,
    images: &Images,
    rows: &[usize],
    batch_size: usize,
    tta: usize,
    seed: u64,
    device: &Device,
) -> Predictions {
    predict_reporting(
        net,
        images,
        rows,
        [batch_size, tta],
        seed,
        device,
        &ProgressBar::hidden(),
    )
}

/// [`predict`] (`sizes` = batch size, TTA rounds) advancing `bar` by one per image and round.
pub(crate) fn predict_reporting(
    net: &Net,
    images: &Images,
    rows: &[usize],
    [batch_size, tta]: [usize; 2],
    seed: u64,
    device: &Device,
    bar: &ProgressBar,
) -> Predictions {
    let net = &net.valid();
    let device = &device.clone().without_autodiff();
    let mut out = Predictions::default();
    let plain = images.dataset(rows.to_vec());
    let mut sums = vec![0f32; rows.len()];
    let mut k = 0;
    for batch in batches(&plain, batch_size, device) {
        bar.inc(batch.rows.len() as u64);
        let o = net.forward(batch.images, batch.meta);
        if let Some(att) = o.attention {
            let [_, g, _] = att.dims();
            out.grid = g;
            out.attention
                .extend(att.into_data().convert::<f32>().iter::<f32>());
        }
        if tta == 0 {
            for p in sigmoid(o.logit).into_data().convert::<f32>().iter::<f32>() {
                sums[k] = p;
                k += 1;
            }
        }
    }
    if tta > 0 {
        let tta_augmenter = Arc::new(Augmenter::new(
            AugmentConfig::tta(),
            images.cache.size() as u32,
            seed,
        ));
        for round in 0..tta {
            let augmented =
                plain
                    .clone()
                    .with_augment(Arc::clone(&tta_augmenter), seed, round as u64);
            let mut k = 0;
            for batch in batches(&augmented, batch_size, device) {
                bar.inc(batch.rows.len() as u64);
                let logit = net.forward(batch.images, batch.meta).logit;
                for p in sigmoid(logit).into_data().convert::<f32>().iter::<f32>() {
                    sums[k] += p / tta as f32;
                    k += 1;
                }
            }
        }
    }
    out.probabilities = sums;
    out
}

/// One epoch's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 0-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation loss (on the plain images).
    pub valid_loss: f64,
    /// Validation ROC AUC (on the plain images).
    pub valid_auc: f64,
    /// Backbone learning rate of the epoch.
    pub lr_backbone: f64,
    /// Seconds the epoch took.
    pub seconds: f64,
    /// Out-of-fold and test predictions after this epoch (`test_from = last_epochs` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<FoldPredictions>,
}

/// Out-of-fold and test predictions of a fold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldPredictions {
    /// Probabilities of the fold's validation rows, in the order of [`FoldTask::valid_rows`].
    pub valid: Vec<f32>,
    /// Probabilities of the test rows (empty without a test set).
    pub test: Vec<f32>,
}

/// The saved progress of a fold (`state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FoldState {
    /// Finished epochs, in order.
    pub history: Vec<EpochRecord>,
    /// The epoch of `best.bpk`.
    pub best_epoch: Option<usize>,
    /// Its validation AUC.
    pub best_auc: Option<f64>,
    /// Set when training ended (early stop or the last epoch); predictions are in
    /// `predictions.json`.
    pub finished: bool,
    /// Why training ended.
    #[serde(default)]
    pub stop_reason: String,
}

/// Everything [`train_fold`] needs.
#[derive(Debug, Clone)]
pub struct FoldTask<'a> {
    /// The model to train.
    pub kind: ModelKind,
    /// How to build it.
    pub spec: &'a ModelSpec,
    /// How to train it.
    pub config: &'a TrainConfig,
    /// Length of the metadata vectors.
    pub meta_dim: usize,
    /// The training images (all folds).
    pub images: &'a Images,
    /// Rows of `images` to train on.
    pub train_rows: Vec<usize>,
    /// Rows of `images` to validate on (the out-of-fold rows).
    pub valid_rows: Vec<usize>,
    /// The test images, if any.
    pub test: Option<&'a Images>,
    /// Where the fold's checkpoints and state go.
    pub dir: PathBuf,
    /// Seed of the fold (initialisation, sampling, augmentation, dropout).
    pub seed: u64,
    /// Show progress bars.
    pub progress: bool,
}

/// What a finished fold gives.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldOutcome {
    /// The saved state, history included.
    pub state: FoldState,
    /// Out-of-fold and test predictions.
    pub predictions: FoldPredictions,
}

#[derive(Clone)]
struct Optimizers {
    backbone: ModuleOptimizer,
    head: ModuleOptimizer,
}

impl Optimizers {
    fn new(config: &TrainConfig) -> Self {
        let adam = AdamConfig::new().with_epsilon(config.adam_epsilon);
        Self {
            backbone: adam.init(),
            head: adam.init(),
        }
    }

    /// One training step on `batch`: the loss, its gradients, the backbone's parameters moved
    /// at `lrs[0]` and the rest at `lrs[1]`. Returns the model and the batch's loss.
    fn step(&mut self, net: Net, loss: &Loss, batch: ImageBatch, lrs: [f64; 2]) -> (Net, f64) {
        match self.step_with(net, loss, batch, lrs, |g, _| {
            Ok::<_, std::convert::Infallible>(g)
        }) {
            Ok(stepped) => stepped,
            Err(never) => match never {},
        }
    }

    /// [`Self::step`] with the gradients of each group passed through `reduce` (with the model
    /// they belong to) before the optimizers see them: the all-reduce of data-parallel training.
    fn step_with<E>(
        &mut self,
        net: Net,
        loss: &Loss,
        batch: ImageBatch,
        lrs: [f64; 2],
        reduce: impl Fn(GradientsParams, &Net) -> std::result::Result<GradientsParams, E>,
    ) -> std::result::Result<(Net, f64), E> {
        let out = net.forward(batch.images, batch.meta);
        let loss = loss.forward(out.logit, batch.targets);
        let value = f64::from(loss.clone().into_scalar::<f32>());
        let mut grads = loss.backward();
        let backbone = reduce(
            GradientsParams::from_module(&mut grads, net.backbone()),
            &net,
        )?;
        let head = reduce(GradientsParams::from_grads(grads, &net), &net)?;
        let net = self.backbone.step(lrs[0], net, backbone);
        let net = self.head.step(lrs[1], net, head);
        Ok((net, value))
    }

    /// Saves both optimizers' moments: `{stem}.backbone.bpk` and `{stem}.head.bpk` in `dir`.
    fn save(&self, dir: &Path, stem: &str) -> Result<()> {
        let [backbone, head] = Self::paths(dir, stem);
        checkpoint::save_optimizer(&self.backbone, &backbone)?;
        checkpoint::save_optimizer(&self.head, &head)?;
        Ok(())
    }

    fn load(self, dir: &Path, stem: &str) -> Result<Self> {
        let [backbone, head] = Self::paths(dir, stem);
        Ok(Self {
            backbone: checkpoint::load_optimizer(self.backbone, &backbone)?,
            head: checkpoint::load_optimizer(self.head, &head)?,
        })
    }

    fn paths(dir: &Path, stem: &str) -> [PathBuf; 2] {
        let ext = checkpoint::EXTENSION;
        [
            dir.join(format!("{stem}.backbone.{ext}")),
            dir.join(format!("{stem}.head.{ext}")),
        ]
    }
}

/// Initialises every parameter of `module` in place. Burn initialises parameters lazily, and a
/// clone of an uninitialised parameter initialises on its own: copies forked from a fresh model
/// would each start from different random weights.
fn initialize_params<M: Module>(module: &M) {
    struct Touch;
    impl ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// The batch of device `peer` at `step`, made on `device`.
type ShardFn<'a> = dyn Fn(usize, usize, &Device) -> ImageBatch + Sync + 'a;

/// The work of [`data_parallel_steps`]: how many steps, each device's batches, and what to do
/// after each step (on the first device's thread).
struct Shards<'a> {
    steps: usize,
    batch: &'a ShardFn<'a>,
    on_step: &'a (dyn Fn() + Sync),
}

/// What one device did in a data-parallel epoch.
struct Replica {
    net: Net,
    optim: Optimizers,
    /// Sum over its steps of the shard's mean loss times the shard's size.
    loss_sum: f64,
    /// Images it trained on.
    seen: usize,
}

/// What a device that stopped because another one failed reports.
const STOPPED_BY_ANOTHER: &str = "stopped: another device failed";

/// The all-reduce (mean) of data-parallel training, between threads of one process: every
/// device hands in the gradients of a parameter group and takes back the mean over all devices,
/// on its own device. The last device to arrive computes the mean.
///
/// Burn 0.22's own all-reduce (`DistributedContext`, inside `backward`) runs on CUDA (NCCL)
/// only and refuses Flex; this one runs on every device, which is what lets the CPU test it.
struct GradientExchange {
    /// Each peer's device, without autodiff (gradients are plain tensors).
    devices: Vec<Device>,
    state: std::sync::Mutex<ExchangeState>,
    turn: std::sync::Condvar,
}

struct ExchangeState {
    handed_in: Vec<Option<GradientsParams>>,
    means: Vec<Option<GradientsParams>>,
    arrived: usize,
    round: u64,
    aborted: bool,
}

impl GradientExchange {
    fn new(devices: &[Device]) -> Self {
        let n = devices.len();
        Self {
            devices: devices
                .iter()
                .map(|d| d.clone().without_autodiff())
                .collect(),
            state: std::sync::Mutex::new(ExchangeState {
                handed_in: (0..n).map(|_| None).collect(),
                means: (0..n).map(|_| None).collect(),
                arrived: 0,
                round: 0,
                aborted: false,
            }),
            turn: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ExchangeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends every pending and future exchange with an error: a device failed, and the others
    /// must not wait for its gradients for ever.
    fn abort(&self) {
        self.lock().aborted = true;
        self.turn.notify_all();
    }

    /// Hands in `peer`'s gradients of the parameters of `net` and returns the mean over all
    /// devices, on `peer`'s device.
    fn mean(&self, peer: usize, grads: GradientsParams, net: &Net) -> Result<GradientsParams> {
        let stopped = || TrainError::Devices(STOPPED_BY_ANOTHER.into());
        let mut state = self.lock();
        if state.aborted {
            return Err(stopped());
        }
        state.handed_in[peer] = Some(grads);
        state.arrived += 1;
        let round = state.round;
        if state.arrived == self.devices.len() {
            let mut handed_in: Vec<GradientsParams> = state
                .handed_in
                .iter_mut()
                .map(|g| g.take().expect("every device handed in"))
                .collect();
            let mut average = Average {
                handed_in: &mut handed_in,
                devices: &self.devices,
                means: (0..self.devices.len())
                    .map(|_| GradientsParams::new())
                    .collect(),
            };
            net.visit(&mut average);
            state.means = average.means.into_iter().map(Some).collect();
            state.arrived = 0;
            state.round += 1;
            self.turn.notify_all();
        } else {
            while state.round == round && !state.aborted {
                state = self
                    .turn
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if state.round == round {
                return Err(stopped());
            }
        }
        Ok(state.means[peer].take().expect("this round's mean"))
    }
}

/// Averages one parameter's gradients over the devices, for every parameter of a module.
struct Average<'a> {
    handed_in: &'a mut [GradientsParams],
    devices: &'a [Device],
    means: Vec<GradientsParams>,
}

impl ModuleVisitor for Average<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let home = &self.devices[0];
        let sum = self
            .handed_in
            .iter_mut()
            .filter_map(|g| g.remove::<D>(param.id))
            .map(|g| g.to_device(home))
            .reduce(|a, b| a + b);
        // A parameter without gradients (not in this group) is left out.
        if let Some(sum) = sum {
            let mean = sum.div_scalar(self.devices.len() as f32);
            for (means, device) in self.means.iter_mut().zip(self.devices) {
                means.register(param.id, mean.clone().to_device(device));
            }
        }
    }
}

/// `steps` data-parallel training steps on `devices`: every device trains its own copy of
/// `net` (forked onto it) on its shard of each batch, given by
/// `shards.batch(step, device index, device)`; the gradients of each learning-rate group are
/// averaged across the devices ([`GradientExchange`]) before every copy's optimizers step, so
/// all copies take the same step and stay equal. One thread per device. Returns every device's
/// copy, the first device's first.
///
/// Several GPUs in one process are what this is for; on the CPU it runs too (peers may share a
/// device), which is how it is tested.
fn data_parallel_steps(
    net: &Net,
    optim: &Optimizers,
    devices: &[Device],
    loss: &Loss,
    lrs: [f64; 2],
    shards: &Shards<'_>,
) -> Result<Vec<Replica>> {
    // The copies must start equal.
    initialize_params(net);
    let exchange = GradientExchange::new(devices);
    let exchange = &exchange;
    std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(peer, device)| {
                let mut net = net.clone().fork(device);
                let mut optim = optim.clone();
                let work = move || -> Result<Replica> {
                    let (mut loss_sum, mut seen) = (0.0, 0);
                    for step in 0..shards.steps {
                        let batch = (shards.batch)(step, peer, device);
                        let n = batch.rows.len();
                        let (stepped, value) =
                            optim.step_with(net, loss, batch, lrs, |g, net| {
                                exchange.mean(peer, g, net)
                            })?;
                        net = stepped;
                        loss_sum += value * n as f64;
                        seen += n;
                        if peer == 0 {
                            (shards.on_step)();
                        }
                    }
                    Ok(Replica {
                        net,
                        optim,
                        loss_sum,
                        seen,
                    })
                };
                scope.spawn(move || {
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                        .unwrap_or_else(|_| {
                            Err(TrainError::Devices(format!(
                                "device {peer} failed (its thread panicked)"
                            )))
                        });
                    if outcome.is_err() {
                        exchange.abort();
                    }
                    outcome
                })
            })
            .collect();
        let outcomes: Vec<Result<Replica>> = handles
            .into_iter()
            .enumerate()
            .map(|(peer, h)| {
                h.join().unwrap_or_else(|_| {
                    Err(TrainError::Devices(format!(
                        "the thread of device {peer} panicked"
                    )))
                })
            })
            .collect();
        // The first device that failed on its own says why; the others only saw the abort.
        let stopped_by_another =
            |e: &TrainError| matches!(e, TrainError::Devices(m) if m == STOPPED_BY_ANOTHER);
        let first_error = outcomes
            .iter()
            .position(|o| matches!(o, Err(e) if !stopped_by_another(e)));
        match first_error {
            Some(i) => Err(outcomes
                .into_iter()
                .nth(i)
                .and_then(Result::err)
                .expect("an error")),
            None => outcomes.into_iter().collect(),
        }
    })
}

fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    sample_seed(seed, epoch as u64, u64::MAX)
}

fn mean_loss(loss: &Loss, probabilities: &[f32], labels: &[u8]) -> f64 {
    if probabilities.is_empty() {
        return f64::NAN;
    }
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
            let (pt, bce) = if y == 1 {
                (p, -p.ln())
            } else {
                (1.0 - p, -(1.0 - p).ln())
            };
            match *loss {
                Loss::Focal { alpha, gamma } => alpha * (1.0 - pt).powf(gamma) * bce,
                Loss::Bce => bce,
            }
        })
        .sum();
    total / probabilities.len() as f64
}

/// Trains (or resumes, or just reloads) one model on one fold.
///
/// Files in `task.dir`: `state.json` (the history and where training stands), `last.bpk` and
/// `optim.backbone.bpk`/`optim.head.bpk` (weights and both optimizers' moments after the last
/// finished epoch, burnpack records), `best.bpk` (the best validation AUC), and `predictions.json` once the fold is done. Every file is written
/// atomically; `state.json` is written last, so a kill between files costs at most the epoch in
/// progress, which is re-run identically.
///
/// With several `devices` the fold trains data-parallel: each device
/// trains its own copy of the model on an even share of every batch of `batch_size` images,
/// the gradients are all-reduced (mean) before every step so the copies stay equal, and
/// validation, test predictions and checkpoints run on the first device. Dropout draws on each device concurrently, so a run on
/// several devices is resumable but not bit-for-bit reproducible.
///
/// # Errors
/// Bad configuration, a training set without both classes, a validation set whose AUC is
/// undefined, a `batch_size` that does not split across the devices, or a file that cannot be
/// read or written.
// One epoch reads best as one loop body: sample, step, validate, checkpoint, stop.
#[allow(clippy::too_many_lines)]
pub fn train_fold(task: &FoldTask<'_>, devices: &[Device]) -> Result<FoldOutcome> {
    let config = task.config;
    config.check()?;
    let Some(device) = devices.first() else {
        return Err(TrainError::Config("no device to train on".into()));
    };
    if !config.batch_size.is_multiple_of(devices.len()) || config.batch_size / devices.len() < 2 {
        return Err(TrainError::Config(format!(
            "batch_size {} cannot be split evenly across {} devices with at least 2 images on \
             each (batch norm)",
            config.batch_size,
            devices.len()
        )));
    }
    let dir = &task.dir;
    let state_path = dir.join("state.json");
    let predictions_path = dir.join("predictions.json");
    let mut state: FoldState = if state_path.is_file() {
        read_json(&state_path)?
    } else {
        FoldState::default()
    };
    if state.finished && predictions_path.is_file() {
        let predictions: FoldPredictions = read_json(&predictions_path)?;
        return Ok(FoldOutcome { state, predictions });
    }
    let labels = task.images.labels();
    let valid_labels: Vec<u8> = task.valid_rows.iter().map(|&r| labels[r]).collect();
    if !valid_labels.contains(&0) || !valid_labels.contains(&1) {
        return Err(TrainError::Undefined(format!(
            "{}: the validation rows hold only one class, so their AUC is undefined; use fewer \
             folds or more positives",
            dir.display()
        )));
    }

    device.seed(epoch_seed(task.seed, usize::MAX));
    let mut net: Net = task.spec.init(task.kind, task.meta_dim, device)?;
    let mut optim = Optimizers::new(config);
    let ext = checkpoint::EXTENSION;
    let last_path = dir.join(format!("last.{ext}"));
    let best_path = dir.join(format!("best.{ext}"));
    if !state.history.is_empty() {
        net = checkpoint::load(net, &last_path)?;
        optim = optim.load(dir, "optim")?;
        tracing::info!(
            "{}: resuming after epoch {}",
            dir.display(),
            state.history.len()
        );
    }
    let augmenter = config.augment.clone().map(|a| {
        Arc::new(Augmenter::new(
            a,
            task.images.cache.size() as u32,
            task.seed,
        ))
    });

    while !state.finished {
        let epoch = state.history.len();
        let started = std::time::Instant::now();
        for (i, d) in devices.iter().enumerate() {
            d.seed(epoch_seed(task.seed ^ i as u64, epoch));
        }
        // This epoch's rows: balanced or shuffled, seeded by the epoch.
        let rows = if config.balanced {
            balanced_epoch(&labels, &task.train_rows, task.seed, epoch as u64)?
        } else {
            let mut rows = task.train_rows.clone();
            rows.shuffle(&mut ChaCha8Rng::seed_from_u64(epoch_seed(task.seed, epoch)));
            rows
        };
        let mut dataset = task.images.dataset(rows);
        if let Some(a) = &augmenter {
            dataset = dataset.with_augment(Arc::clone(a), task.seed, epoch as u64);
        }
        let decay = config.lr_decay.powi(epoch as i32);
        let (lr_backbone, lr_head) = (config.lr_backbone * decay, config.lr_head * decay);
        let steps = dataset.len() / config.batch_size;
        let bar = progress_bar(
            task.progress,
            steps as u64,
            &format!("{} epoch {}", dir.display(), epoch + 1),
        );
        let mut loss_sum = 0.0;
        let mut seen = 0usize;
        let lrs = [lr_backbone, lr_head];
        if devices.len() > 1 {
            // Each batch of `batch_size` is split evenly across the devices.
            let per_device = config.batch_size / devices.len();
            let shard = |step: usize, peer: usize, device: &Device| {
                let start = step * config.batch_size + peer * per_device;
                batch_of(&dataset, start..start + per_device, device)
            };
            let on_step = || bar.inc(1);
            let shards = Shards {
                steps,
                batch: &shard,
                on_step: &on_step,
            };
            let mut replicas =
                data_parallel_steps(&net, &optim, devices, &config.loss, lrs, &shards)?;
            loss_sum = replicas.iter().map(|r| r.loss_sum).sum();
            seen = replicas.iter().map(|r| r.seen).sum();
            let first = replicas.swap_remove(0);
            (net, optim) = (first.net, first.optim);
        } else {
            for batch in batches(&dataset, config.batch_size, device) {
                let n = batch.rows.len();
                if n < config.batch_size {
                    // A short last batch: batch norm over a handful of images only adds noise.
                    break;
                }
                let (stepped, value) = optim.step(net, &config.loss, batch, lrs);
                net = stepped;
                loss_sum += value * n as f64;
                seen += n;
                if !value.is_finite() {
                    break;
                }
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        if !loss_sum.is_finite() {
            return Err(TrainError::Undefined(format!(
                "{}: epoch {}: the training loss is {loss_sum}; lower the learning rates",
                dir.display(),
                epoch + 1
            )));
        }
        // Validation on the plain images.
        let eval = net.valid();
        let valid = predict(
            &eval,
            task.images,
            &task.valid_rows,
            config.eval_batch_size,
            0,
            task.seed,
            device,
        );
        let valid_auc = roc_auc(&valid.probabilities, &valid_labels).unwrap_or(f64::NAN);
        let predictions = (config.test_from == TestFrom::LastEpochs)
            .then(|| fold_predictions(&eval, task, device));
        let record = EpochRecord {
            epoch,
            train_loss: if seen > 0 {
                loss_sum / seen as f64
            } else {
                f64::NAN
            },
            valid_loss: mean_loss(&config.loss, &valid.probabilities, &valid_labels),
            valid_auc,
            lr_backbone,
            seconds: started.elapsed().as_secs_f64(),
            predictions,
        };
        tracing::info!(
            "{} epoch {}: train loss {:.4}, valid loss {:.4}, valid AUC {:.4} ({:.0} s)",
            dir.display(),
            epoch + 1,
            record.train_loss,
            record.valid_loss,
            record.valid_auc,
            record.seconds
        );
        if state.best_auc.is_none_or(|b| valid_auc > b) {
            checkpoint::save(&net, &best_path)?;
            state.best_auc = Some(valid_auc);
            state.best_epoch = Some(epoch);
        }
        checkpoint::save(&net, &last_path)?;
        optim.save(dir, "optim")?;
        state.history.push(record);
        let since_best = epoch - state.best_epoch.unwrap_or(epoch);
        if since_best >= config.patience.max(1) && config.patience > 0 {
            state.finished = true;
            state.stop_reason = format!(
                "no better validation AUC for {} epochs (best {:.4} at epoch {})",
                since_best,
                state.best_auc.unwrap_or(f64::NAN),
                state.best_epoch.unwrap_or(0) + 1
            );
        } else if state.history.len() >= config.max_epochs {
            state.finished = true;
            state.stop_reason = format!("reached max_epochs = {}", config.max_epochs);
        }
        if state.finished {
            // Predictions before the state says finished: a kill in between re-makes them.
            let predictions = final_predictions(task, &state, &best_path, device)?;
            agc_data::fsutil::write_json(&predictions_path, &predictions)?;
            agc_data::fsutil::write_json(&state_path, &state)?;
            return Ok(FoldOutcome { state, predictions });
        }
        agc_data::fsutil::write_json(&state_path, &state)?;
    }
    // Finished before, but predictions.json went missing: make it again.
    let predictions = final_predictions(task, &state, &best_path, device)?;
    agc_data::fsutil::write_json(&predictions_path, &predictions)?;
    Ok(FoldOutcome { state, predictions })
}

fn fold_predictions(net: &Net, task: &FoldTask<'_>, device: &Device) -> FoldPredictions {
    let c = task.config;
    let valid = predict(
        net,
        task.images,
        &task.valid_rows,
        c.eval_batch_size,
        c.tta,
        task.seed,
        device,
    );
    let test = task.test.map_or_else(Vec::new, |t| {
        let rows: Vec<usize> = (0..t.cache.len()).collect();
        predict(net, t, &rows, c.eval_batch_size, c.tta, task.seed, device).probabilities
    });
    FoldPredictions {
        valid: valid.probabilities,
        test,
    }
}

fn final_predictions(
    task: &FoldTask<'_>,
    state: &FoldState,
    best_path: &Path,
    device: &Device,
) -> Result<FoldPredictions> {
    match task.config.test_from {
        TestFrom::Best => {
            let net: Net = task.spec.init(task.kind, task.meta_dim, device)?;
            let net = checkpoint::load(net, best_path)?;
            Ok(fold_predictions(&net, task, device))
        }
        TestFrom::LastEpochs => {
            let last: Vec<&FoldPredictions> = state
                .history
                .iter()
                .rev()
                .take(task.config.patience)
                .filter_map(|r| r.predictions.as_ref())
                .collect();
            let mean = |pick: fn(&FoldPredictions) -> &Vec<f32>| -> Vec<f32> {
                let n = last.len() as f32;
                let mut sum = vec![0f32; pick(last[0]).len()];
                for p in &last {
                    for (s, v) in sum.iter_mut().zip(pick(p)) {
                        *s += v / n;
                    }
                }
                sum
            };
            if last.is_empty() {
                return Err(TrainError::Undefined(format!(
                    "{}: no per-epoch predictions to average",
                    task.dir.display()
                )));
            }
            Ok(FoldPredictions {
                valid: mean(|p| &p.valid),
                test: mean(|p| &p.test),
            })
        }
    }
}

pub(crate) fn progress_bar(show: bool, len: u64, message: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<const D: usize>(param: &burn::module::Param<Tensor<D>>) -> Vec<f32> {
        param.val().into_data().try_to_vec::<f32>().expect("f32")
    }

    fn conv1(net: &Net) -> Vec<f32> {
        values(&net.backbone().conv1.weight)
    }

    /// The weights of the final linear layer (the head group).
    fn classifier(net: &Net) -> Vec<f32> {
        match net {
            Net::Meta(m) => values(&m.fc.weight),
            Net::Chip(m) => values(&m.head.fc.weight),
            Net::Attn(m) => values(&m.head.fc.weight),
        }
    }

    fn max_change(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Four images of constant colour whose values depend on `k`, half of them positive.
    fn toy_batch(k: usize, dev: &Device) -> ImageBatch {
        let f = |i: usize| ((k * 4 + i) as f32 * 0.37).sin() * 2.0;
        ImageBatch {
            images: Tensor::<4>::ones([4, 3, 64, 64], dev)
                * Tensor::<4>::from_floats([[[[f(0)]]], [[[f(1)]]], [[[f(2)]]], [[[f(3)]]]], dev),
            meta: Some(Tensor::<2>::ones([4, 3], dev) * f(4)),
            targets: Tensor::<1>::from_floats([0.0, 1.0, 1.0, 0.0], dev),
            rows: vec![0, 1, 2, 3],
        }
    }

    /// The tiny backbone with a small metadata branch (3 metadata values).
    fn tiny_spec() -> ModelSpec {
        ModelSpec {
            backbone: "tiny".into(),
            meta_hidden: [8, 4],
            ..ModelSpec::default()
        }
    }

    #[test]
    fn a_failing_device_ends_data_parallel_training_with_an_error_not_a_hang() {
        let dev = Device::flex().autodiff();
        let config = TrainConfig::seed_defaults(ModelKind::Resnet);
        let net: Net = tiny_spec().init(ModelKind::Resnet, 3, &dev).expect("init");
        let optim = Optimizers::new(&config);
        let batch = |step: usize, peer: usize, d: &Device| {
            assert!(!(peer == 1 && step == 1), "device 1 runs out of memory");
            toy_batch(step, d)
        };
        let shards = Shards {
            steps: 3,
            batch: &batch,
            on_step: &|| {},
        };
        let devices = [dev.clone(), dev];
        let outcome = data_parallel_steps(&net, &optim, &devices, &config.loss, [1e-3; 2], &shards);
        let Err(err) = outcome else {
            panic!("a device failed, yet data-parallel training succeeded")
        };
        assert!(err.to_string().contains("device 1"), "{err}");
        // Data-parallel training works again afterwards.
        let shards = Shards {
            steps: 1,
            batch: &|step, _, d| toy_batch(step, d),
            on_step: &|| {},
        };
        data_parallel_steps(&net, &optim, &devices, &config.loss, [1e-3; 2], &shards)
            .expect("a new data-parallel run after the failure");
    }

    #[test]
    fn data_parallel_copies_take_the_step_of_the_averaged_gradients() {
        let dev = Device::flex().autodiff();
        // No dropout: every forward pass is deterministic, so the copies can be compared.
        let spec = ModelSpec {
            dropout: 0.0,
            attention_dropout: 0.0,
            ..tiny_spec()
        };
        let config = TrainConfig::seed_defaults(ModelKind::Resnet);
        let lrs = [1e-3, 1e-3];
        // Fresh, so its parameters are not initialised yet: the first data-parallel call must
        // initialise them before forking (`initialize_params`), and does so in place, after which
        // every clone below starts from the same weights.
        let net: Net = spec.init(ModelKind::Resnet, 3, &dev).expect("init");
        let optim = Optimizers::new(&config);
        let devices = [dev.clone(), dev.clone()];
        let alone = |batches: &[usize]| {
            let (mut net, mut optim) = (net.clone(), optim.clone());
            for &k in batches {
                net = optim.step(net, &config.loss, toy_batch(k, &dev), lrs).0;
            }
            net
        };
        let both = |batch: &ShardFn<'_>| {
            let shards = Shards {
                steps: 2,
                batch,
                on_step: &|| {},
            };
            data_parallel_steps(&net, &optim, &devices, &config.loss, lrs, &shards)
                .expect("data-parallel steps")
        };

        // Each device on its own shards: without the all-reduce the copies would part, as
        // training on shard 0 alone and on shard 1 alone does.
        let replicas = both(&|step, peer, d| toy_batch(2 * step + peer, d));
        let apart = max_change(&conv1(&alone(&[0, 2])), &conv1(&alone(&[1, 3])));
        assert!(apart > 1e-4, "the shards give different steps ({apart})");
        assert_eq!(replicas.len(), 2);
        let moved = max_change(&conv1(&net), &conv1(&replicas[0].net));
        let moved1 = max_change(&conv1(&net), &conv1(&replicas[1].net));
        let parted = max_change(&conv1(&replicas[0].net), &conv1(&replicas[1].net)).max(
            max_change(&classifier(&replicas[0].net), &classifier(&replicas[1].net)),
        );
        assert!(
            parted == 0.0,
            "the copies parted by {parted} (moved {moved}, {moved1})"
        );
        assert!(moved > 1e-4, "the copies moved by {moved}");
        assert_eq!((replicas[0].seen, replicas[1].seen), (8, 8));
        assert!(replicas.iter().all(|r| r.loss_sum.is_finite()));

        // Both devices on the same shards: the mean of equal gradients is that gradient, so
        // the step is the one-device step.
        let same = both(&|step, _, d| toy_batch(step, d));
        let reference = alone(&[0, 1]);
        let off = max_change(&conv1(&same[0].net), &conv1(&reference)).max(max_change(
            &classifier(&same[0].net),
            &classifier(&reference),
        ));
        assert!(
            off < 1e-6,
            "data-parallel on equal shards is {off} off one device"
        );
    }

    #[test]
    fn a_step_moves_the_backbone_and_the_head_at_their_own_rates() {
        let dev = Device::flex().autodiff();
        let spec = tiny_spec();
        let config = TrainConfig::seed_defaults(ModelKind::Resnet);
        for (kind, lrs) in [
            (ModelKind::Resnet, [1e-3, 0.0]),
            (ModelKind::Resnet, [0.0, 1e-3]),
            (ModelKind::Chipnet, [1e-3, 0.0]),
        ] {
            let net: Net = spec.init(kind, 3, &dev).expect("init");
            let before = conv1(&net);
            let fc_before = classifier(&net);
            let batch = ImageBatch {
                images: Tensor::<4>::ones([4, 3, 64, 64], &dev),
                meta: Some(Tensor::<2>::ones([4, 3], &dev)),
                targets: Tensor::<1>::from_floats([0.0, 1.0, 0.0, 1.0], &dev),
                rows: vec![0, 1, 2, 3],
            };
            let batch = ImageBatch {
                images: batch.images
                    * Tensor::<4>::from_floats([[[[1.0]]], [[[-1.0]]], [[[0.5]]], [[[2.0]]]], &dev),
                ..batch
            };
            let mut optim = Optimizers::new(&config);
            let (net, value) = optim.step(net, &config.loss, batch, lrs);
            assert!(value.is_finite());
            let fc_after = classifier(&net);
            let (bb, head) = (
                max_change(&before, &conv1(&net)),
                max_change(&fc_before, &fc_after),
            );
            // Adam's first step moves every parameter with a gradient by about the learning rate.
            if lrs[0] > 0.0 {
                assert!(bb > 0.5e-3 && bb < 2e-3, "{kind}: backbone moved {bb}");
                assert!(head < 1e-9, "{kind}: head moved {head} at lr 0");
            } else {
                assert!(head > 0.5e-3 && head < 2e-3, "{kind}: head moved {head}");
                assert!(bb < 1e-9, "{kind}: backbone moved {bb} at lr 0");
            }
        }
    }
}
