//! Data-parallel training steps: one thread and one model copy per device, gradients averaged
//! across the devices before every step.

use agc_core::initialize_params;
use agc_data::ImageBatch;
use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::error::{Result, TrainError};
use crate::loss::Loss;
use crate::model::Net;

use super::optim::Optimizers;

/// The batch of device `peer` at `step`, made on `device`.
pub(super) type ShardFn<'a> = dyn Fn(usize, usize, &Device) -> ImageBatch + Sync + 'a;

/// The work of [`data_parallel_steps`]: how many steps, each device's batches, and what to do
/// after each step (on the first device's thread).
pub(super) struct Shards<'a> {
    pub(super) steps: usize,
    pub(super) batch: &'a ShardFn<'a>,
    pub(super) on_step: &'a (dyn Fn() + Sync),
}

/// What one device did in a data-parallel epoch.
pub(super) struct Replica {
    pub(super) net: Net,
    pub(super) optim: Optimizers,
    /// Sum over its steps of the shard's mean loss times the shard's size.
    pub(super) loss_sum: f64,
    /// Images it trained on.
    pub(super) seen: usize,
}

/// The all-reduce (mean) of data-parallel training, between threads of one process: every
/// device hands in the gradients of a parameter group and takes back the mean over all devices,
/// on its own device. The last device to arrive computes the mean.
///
/// Burn 0.22's own all-reduce (`DistributedContext`, inside `backward`) runs on CUDA (NCCL)
/// only and refuses Flex; this one runs on every device, which is what lets the CPU test it.
pub(super) struct GradientExchange {
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
        let stopped = || TrainError::StoppedByAnotherDevice;
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
pub(super) fn data_parallel_steps(
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
        let first_error = outcomes
            .iter()
            .position(|o| matches!(o, Err(e) if !matches!(e, TrainError::StoppedByAnotherDevice)));
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
