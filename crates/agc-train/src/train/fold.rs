//! The epoch loop of one fold ([`FoldRun`]: sample, step, validate, checkpoint, stop),
//! resumption from the saved state, and the fold's out-of-fold and test predictions.

use std::sync::Arc;
use std::time::Instant;

use agc_data::{Augmenter, CacheDataset, Task, balanced_epoch, sample_seed};
use burn::data::dataset::Dataset;
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint;
use crate::error::{Result, TrainError, read_json};
use crate::layout::FoldLayout;
use crate::metrics::roc_auc;
use crate::model::Net;

use super::first_use::FirstUse;
use super::optim::Optimizers;
use super::parallel::{Shards, data_parallel_steps};
use super::predict::{batch_of, batches, predict};
use super::{EpochRecord, FoldOutcome, FoldPredictions, FoldState, FoldTask, TestFrom};

pub(super) fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    sample_seed(seed, epoch as u64, u64::MAX)
}

/// Trains (or resumes, or just reloads) one model on one fold.
///
/// Files in `task.dir`: `state.json` (the history and where training stands), `last.bpk` and
/// `optim.backbone.bpk`/`optim.head.bpk` (weights and both optimizers' moments after the last
/// finished epoch, burnpack records), `best.bpk` (the best validation AUC), and
/// `predictions.json` once the fold is done. Every file is written atomically; `state.json` is
/// written last, so a kill between files costs at most the epoch in progress, which is re-run
/// identically.
///
/// With several `devices` the fold trains data-parallel: each device
/// trains its own copy of the model on an even share of every batch of `batch_size` images,
/// the gradients are all-reduced (mean) before every step so the copies stay equal, and
/// validation, test predictions and checkpoints run on the first device. Dropout draws on each
/// device concurrently, so a run on several devices is resumable but not bit-for-bit
/// reproducible.
///
/// # Errors
/// Bad configuration, a training set without both classes, a validation set whose AUC is
/// undefined, a `batch_size` that does not split across the devices, or a file that cannot be
/// read or written.
pub fn train_fold(task: &FoldTask<'_>, devices: &[Device]) -> Result<FoldOutcome> {
    let device = check_devices(task, devices)?;
    let files = FoldLayout::new(task.dir.as_path());
    let state = FoldState::read_or_new(&files.state())?;
    if state.finished && files.predictions().is_file() {
        let predictions: FoldPredictions = read_json(&files.predictions())?;
        return Ok(FoldOutcome { state, predictions });
    }
    let mut run = FoldRun::resume(task, devices, device, files, state)?;
    while !run.state.finished {
        let trained = run.run_epoch()?;
        let validation = run.validate();
        let record = run.record(trained, validation);
        run.save_checkpoint(record)?;
        if let Some(reason) = run.should_stop() {
            return run.finish(reason);
        }
        run.save_state()?;
    }
    // Finished before, but predictions.json went missing: make it again.
    let predictions = run.write_predictions()?;
    Ok(FoldOutcome {
        state: run.state,
        predictions,
    })
}

/// The configuration checked, and the first of `devices`: the one that validates, predicts and
/// checkpoints.
fn check_devices<'d>(task: &FoldTask<'_>, devices: &'d [Device]) -> Result<&'d Device> {
    let config = task.config;
    config.check()?;
    let Some(device) = devices.first() else {
        return Err(TrainError::NoDevice);
    };
    if !config.batch_size.is_multiple_of(devices.len()) || config.batch_size / devices.len() < 2 {
        return Err(TrainError::Setting {
            setting: "batch_size".into(),
            value: config.batch_size.to_string(),
            message: format!(
                "cannot be split evenly across {} devices with at least 2 images on each \
                 (batch norm)",
                devices.len()
            ),
        });
    }
    Ok(device)
}

/// One fold in training: what it trains on, the model and its optimizers, and the progress
/// saved in `state.json`. Every epoch is a function of the state after the previous one and of
/// seeds derived from the fold's seed and the epoch, so a run resumed from the saved state
/// goes on exactly as one that was never stopped.
struct FoldRun<'r, 'a> {
    task: &'r FoldTask<'a>,
    /// Every device that trains; several train data-parallel.
    devices: &'r [Device],
    /// The first device, which validates, predicts and checkpoints.
    device: &'r Device,
    files: FoldLayout,
    /// The label of every row of `task.images`.
    labels: Vec<u8>,
    /// The labels of `task.valid_rows`, in order.
    valid_labels: Vec<u8>,
    /// Training augmentation, if the configuration asks for it.
    augmenter: Option<Arc<Augmenter>>,
    /// The model; `None` only while [`Self::run_epoch`] steps it (Burn's optimizers take the
    /// model by value), and for good after an epoch that failed.
    net: Option<Net>,
    optim: Optimizers,
    state: FoldState,
}

/// What an epoch's training steps leave for its record.
#[derive(Clone, Copy)]
struct TrainedEpoch {
    /// 0-based epoch.
    epoch: usize,
    /// When the epoch began.
    started: Instant,
    /// Mean loss over the images trained on.
    train_loss: f64,
    /// The backbone's learning rate of the epoch.
    lr_backbone: f64,
}

/// The validation after an epoch, on the plain images of the fold's validation rows.
struct Validation {
    loss: f64,
    auc: f64,
    /// Out-of-fold and test predictions after this epoch (`test_from = last_epochs` only).
    predictions: Option<FoldPredictions>,
}

/// The losses of an epoch's batches: the sum of each batch's mean loss times its size, and the
/// images.
#[derive(Default)]
struct LossSum {
    total: f64,
    images: usize,
}

impl LossSum {
    fn mean(&self) -> f64 {
        if self.images > 0 {
            self.total / self.images as f64
        } else {
            f64::NAN
        }
    }
}

impl<'r, 'a> FoldRun<'r, 'a> {
    /// The fold where `state` left it: the model initialised from the fold's seed on `device`
    /// (the first of `devices`), then the weights and optimizers' moments of the last finished
    /// epoch loaded over it if there is one.
    ///
    /// # Errors
    /// Validation rows of one class only (their AUC is undefined), a model that cannot be
    /// built, or checkpoints that cannot be read.
    fn resume(
        task: &'r FoldTask<'a>,
        devices: &'r [Device],
        device: &'r Device,
        files: FoldLayout,
        state: FoldState,
    ) -> Result<Self> {
        let labels = task.images.labels();
        let valid_labels: Vec<u8> = task.valid_rows.iter().map(|&r| labels[r]).collect();
        if !valid_labels.contains(&0) || !valid_labels.contains(&1) {
            return Err(TrainError::Undefined(format!(
                "{}: the validation rows hold only one class, so their AUC is undefined; use \
                 fewer folds or more positives",
                task.dir.display()
            )));
        }
        device.seed(epoch_seed(task.seed, usize::MAX));
        let mut net: Net = task.spec.init(task.kind, task.meta_dim, device)?;
        let mut optim = Optimizers::new(task.config);
        if !state.history.is_empty() {
            net = checkpoint::load(net, &files.last())?;
            optim = optim.load(files.dir(), "optim")?;
            tracing::info!(
                "{}: resuming after epoch {}",
                task.dir.display(),
                state.history.len()
            );
        }
        let augmenter = task.config.augment.clone().map(|a| {
            Arc::new(Augmenter::new(
                a,
                task.images.cache.size() as u32,
                task.seed,
            ))
        });
        Ok(Self {
            task,
            devices,
            device,
            files,
            labels,
            valid_labels,
            augmenter,
            net: Some(net),
            optim,
            state,
        })
    }

    fn net(&self) -> &Net {
        self.net
            .as_ref()
            .expect("the model is back in place after every epoch that succeeded")
    }

    /// Trains the next epoch: seeds every device by the epoch, samples the epoch's rows and
    /// steps through them in batches of `batch_size` at the epoch's learning rates (decayed
    /// once per epoch), on one device or data-parallel on all of them.
    ///
    /// # Errors
    /// Fewer training images than one batch, a training loss that is not finite, a device that
    /// fails, or training rows of one class only (balanced sampling).
    fn run_epoch(&mut self) -> Result<TrainedEpoch> {
        let config = self.task.config;
        let epoch = self.state.history.len();
        let started = Instant::now();
        for (i, d) in self.devices.iter().enumerate() {
            d.seed(epoch_seed(self.task.seed ^ i as u64, epoch));
        }
        let dataset = self.epoch_dataset(epoch)?;
        let decay = config.lr_decay.powi(epoch as i32);
        let lrs = [config.lr_backbone * decay, config.lr_head * decay];
        let steps = dataset.len() / config.batch_size;
        if steps == 0 {
            return Err(TrainError::Setting {
                setting: "batch_size".into(),
                value: config.batch_size.to_string(),
                message: format!(
                    "{}: the fold trains on {} images, fewer than one batch; lower --batch-size \
                     (a prepared run takes a new one when it resumes) or use fewer folds",
                    self.task.dir.display(),
                    dataset.len()
                ),
            });
        }
        let bar = self.task.progress.start(
            &format!("{} epoch {}", self.task.dir.display(), epoch + 1),
            steps as u64,
        );
        let net = self
            .net
            .take()
            .expect("the model is in place between epochs");
        let first = FirstUse::begin("the first training step", self.devices);
        let (net, losses) = if self.devices.len() > 1 {
            self.data_parallel_epoch(&net, &dataset, steps, lrs, (&*bar, &first))?
        } else {
            self.one_device_epoch(net, &dataset, lrs, (&*bar, &first))
        };
        self.net = Some(net);
        drop(bar);
        if !losses.total.is_finite() {
            return Err(TrainError::Undefined(format!(
                "{}: epoch {}: the training loss is {}; lower the learning rates",
                self.task.dir.display(),
                epoch + 1,
                losses.total
            )));
        }
        Ok(TrainedEpoch {
            epoch,
            started,
            train_loss: losses.mean(),
            lr_backbone: lrs[0],
        })
    }

    /// The training images of `epoch`: the training rows balanced or shuffled, seeded by the
    /// epoch, augmented if the configuration asks for it.
    fn epoch_dataset(&self, epoch: usize) -> Result<CacheDataset> {
        let task = self.task;
        let rows = if task.config.balanced {
            balanced_epoch(&self.labels, &task.train_rows, task.seed, epoch as u64)?
        } else {
            let mut rows = task.train_rows.clone();
            rows.shuffle(&mut ChaCha8Rng::seed_from_u64(epoch_seed(task.seed, epoch)));
            rows
        };
        let mut dataset = task.images.dataset(rows);
        if let Some(a) = &self.augmenter {
            dataset = dataset.with_augment(Arc::clone(a), task.seed, epoch as u64);
        }
        Ok(dataset)
    }

    /// The steps of an epoch on the one device, in order, until a short last batch (batch norm
    /// over a handful of images only adds noise) or a loss that is not finite.
    fn one_device_epoch(
        &mut self,
        mut net: Net,
        dataset: &CacheDataset,
        lrs: [f64; 2],
        (bar, first): (&dyn Task, &FirstUse),
    ) -> (Net, LossSum) {
        let (loss, batch_size) = (&self.task.config.loss, self.task.config.batch_size);
        let mut losses = LossSum::default();
        for batch in batches(dataset, batch_size, self.device) {
            let n = batch.rows.len();
            if n < batch_size {
                break;
            }
            let (stepped, value) = self.optim.step(net, loss, batch, lrs);
            net = stepped;
            losses.total += value * n as f64;
            losses.images += n;
            first.end();
            if !value.is_finite() {
                break;
            }
            bar.advance(1);
        }
        (net, losses)
    }

    /// The `steps` steps of an epoch data-parallel: each batch of `batch_size` split evenly
    /// across the devices, the gradients averaged before every step. The first device's copy
    /// of the model and optimizers goes on.
    ///
    /// # Errors
    /// A device that fails.
    fn data_parallel_epoch(
        &mut self,
        net: &Net,
        dataset: &CacheDataset,
        steps: usize,
        lrs: [f64; 2],
        (bar, first): (&dyn Task, &FirstUse),
    ) -> Result<(Net, LossSum)> {
        let config = self.task.config;
        let per_device = config.batch_size / self.devices.len();
        let shard = |step: usize, peer: usize, device: &Device| {
            let start = step * config.batch_size + peer * per_device;
            batch_of(dataset, start..start + per_device, device)
        };
        let on_step = || {
            first.end();
            bar.advance(1);
        };
        let shards = Shards {
            steps,
            batch: &shard,
            on_step: &on_step,
        };
        let mut replicas =
            data_parallel_steps(net, &self.optim, self.devices, &config.loss, lrs, &shards)?;
        let losses = LossSum {
            total: replicas.iter().map(|r| r.loss_sum).sum(),
            images: replicas.iter().map(|r| r.seen).sum(),
        };
        let first = replicas.swap_remove(0);
        self.optim = first.optim;
        Ok((first.net, losses))
    }

    /// Validates the model on the plain images of the validation rows: their loss (the
    /// training loss on the predicted probabilities) and AUC, and with `test_from =
    /// last_epochs` the fold's predictions after this epoch.
    fn validate(&self) -> Validation {
        let (task, config) = (self.task, self.task.config);
        let eval = self.net().valid();
        let valid = predict(
            &eval,
            task.images,
            &task.valid_rows,
            config.eval_batch_size,
            0,
            task.seed,
            self.device,
        );
        let auc = roc_auc(&valid.probabilities, &self.valid_labels).unwrap_or(f64::NAN);
        let predictions = (config.test_from == TestFrom::LastEpochs)
            .then(|| fold_predictions(&eval, task, self.device));
        Validation {
            loss: config
                .loss
                .mean_of_probabilities(&valid.probabilities, &self.valid_labels),
            auc,
            predictions,
        }
    }

    /// The record of an epoch, logged.
    fn record(&self, trained: TrainedEpoch, validation: Validation) -> EpochRecord {
        let record = EpochRecord {
            epoch: trained.epoch,
            train_loss: trained.train_loss,
            valid_loss: validation.loss,
            valid_auc: validation.auc,
            lr_backbone: trained.lr_backbone,
            seconds: trained.started.elapsed().as_secs_f64(),
            predictions: validation.predictions,
        };
        tracing::info!(
            "{} epoch {}: train loss {:.4}, valid loss {:.4}, valid AUC {:.4} ({:.0} s)",
            self.task.dir.display(),
            record.epoch + 1,
            record.train_loss,
            record.valid_loss,
            record.valid_auc,
            record.seconds
        );
        record
    }

    /// Saves the model as `best.bpk` if its validation AUC is the best yet, and always as
    /// `last.bpk` with both optimizers' moments, then adds `record` to the history (saved
    /// with the state, after the checkpoints).
    ///
    /// # Errors
    /// A checkpoint that cannot be written.
    fn save_checkpoint(&mut self, record: EpochRecord) -> Result<()> {
        if self.state.best_auc.is_none_or(|b| record.valid_auc > b) {
            checkpoint::save(self.net(), &self.files.best())?;
            self.state.best_auc = Some(record.valid_auc);
            self.state.best_epoch = Some(record.epoch);
        }
        checkpoint::save(self.net(), &self.files.last())?;
        self.optim.save(self.files.dir(), "optim")?;
        self.state.history.push(record);
        Ok(())
    }

    /// Why training ends after the last recorded epoch, if it does: `patience` epochs without
    /// a better validation AUC (patience 0 never stops early), or `max_epochs` epochs.
    fn should_stop(&self) -> Option<String> {
        let (config, state) = (self.task.config, &self.state);
        let epoch = state.history.last()?.epoch;
        // Saturating: a hand-edited state.json whose best epoch lies past its history stops
        // nothing rather than wrapping around.
        let since_best = epoch.saturating_sub(state.best_epoch.unwrap_or(epoch));
        if since_best >= config.patience.max(1) && config.patience > 0 {
            Some(format!(
                "no better validation AUC for {} epochs (best {:.4} at epoch {})",
                since_best,
                state.best_auc.unwrap_or(f64::NAN),
                state.best_epoch.unwrap_or(0) + 1
            ))
        } else if state.history.len() >= config.max_epochs {
            Some(format!("reached max_epochs = {}", config.max_epochs))
        } else {
            None
        }
    }

    /// Ends training for `reason`: the fold's predictions, then the state that says it is
    /// finished (a kill in between makes the predictions again).
    ///
    /// # Errors
    /// A checkpoint that cannot be read or a file that cannot be written.
    fn finish(mut self, reason: String) -> Result<FoldOutcome> {
        self.state.finished = true;
        self.state.stop_reason = reason;
        let predictions = self.write_predictions()?;
        self.save_state()?;
        Ok(FoldOutcome {
            state: self.state,
            predictions,
        })
    }

    /// Writes `state.json`.
    fn save_state(&self) -> Result<()> {
        agc_data::fsutil::write_json(&self.files.state(), &self.state)?;
        Ok(())
    }

    /// Makes the fold's out-of-fold and test predictions as `test_from` says and writes them
    /// to `predictions.json`.
    ///
    /// # Errors
    /// `best.bpk` that cannot be read, no per-epoch predictions to average, or a file that
    /// cannot be written.
    fn write_predictions(&self) -> Result<FoldPredictions> {
        let predictions = self.final_predictions()?;
        agc_data::fsutil::write_json(&self.files.predictions(), &predictions)?;
        Ok(predictions)
    }

    fn final_predictions(&self) -> Result<FoldPredictions> {
        let task = self.task;
        match task.config.test_from {
            TestFrom::Best => {
                let net: Net = task.spec.init(task.kind, task.meta_dim, self.device)?;
                let net = checkpoint::load(net, &self.files.best())?;
                Ok(fold_predictions(&net, task, self.device))
            }
            TestFrom::LastEpochs => {
                let last: Vec<&FoldPredictions> = self
                    .state
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
