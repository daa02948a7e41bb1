//! The epoch loop of one fold: sample, step, validate, checkpoint, stop; resumption from the
//! saved state; the fold's out-of-fold and test predictions.

use std::path::Path;
use std::sync::Arc;

use agc_data::{Augmenter, balanced_epoch, sample_seed};
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
    let files = FoldLayout::new(dir.as_path());
    let (state_path, predictions_path) = (files.state(), files.predictions());
    let mut state = FoldState::read_or_new(&state_path)?;
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
    let (last_path, best_path) = (files.last(), files.best());
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
        if steps == 0 {
            return Err(TrainError::Config(format!(
                "{}: the fold trains on {} images, fewer than one batch of {}; lower \
                 --batch-size (a prepared run takes a new one when it resumes) or use fewer folds",
                dir.display(),
                dataset.len(),
                config.batch_size
            )));
        }
        let bar = task.progress.start(
            &format!("{} epoch {}", dir.display(), epoch + 1),
            steps as u64,
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
            let on_step = || bar.advance(1);
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
                bar.advance(1);
            }
        }
        drop(bar);
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
            valid_loss: config
                .loss
                .mean_of_probabilities(&valid.probabilities, &valid_labels),
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
