//! The two Adam optimizers of a model: one for the backbone, one for everything else, each
//! with its own learning rate, saved and loaded with the fold's checkpoints. They are agc's
//! [`Adam`] (Burn's arithmetic and records, one fused pass per parameter on the CPU).

use std::path::{Path, PathBuf};

use agc_core::adam::Adam;
use agc_data::ImageBatch;
use burn::optim::{GradientsParams, ModuleOptimizer};

use crate::checkpoint;
use crate::error::Result;
use crate::loss::Loss;
use crate::model::Net;

use super::TrainConfig;

#[derive(Clone)]
pub(super) struct Optimizers {
    backbone: ModuleOptimizer,
    head: ModuleOptimizer,
}

impl Optimizers {
    pub(super) fn new(config: &TrainConfig) -> Self {
        let adam = Adam::new(config.adam_epsilon);
        Self {
            backbone: adam.clone().init(),
            head: adam.init(),
        }
    }

    /// One training step on `batch`: the loss, its gradients, the backbone's parameters moved
    /// at `lrs[0]` and the rest at `lrs[1]`. Returns the model and the batch's loss.
    pub(super) fn step(
        &mut self,
        net: Net,
        loss: &Loss,
        batch: ImageBatch,
        lrs: [f64; 2],
    ) -> (Net, f64) {
        match self.step_with(net, loss, batch, lrs, |g, _| {
            Ok::<_, std::convert::Infallible>(g)
        }) {
            Ok(stepped) => stepped,
            Err(never) => match never {},
        }
    }

    /// [`Self::step`] with the gradients of each group passed through `reduce` (with the model
    /// they belong to) before the optimizers see them: the all-reduce of data-parallel training.
    pub(super) fn step_with<E>(
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
    pub(super) fn save(&self, dir: &Path, stem: &str) -> Result<()> {
        let [backbone, head] = Self::paths(dir, stem);
        checkpoint::save_optimizer(&self.backbone, &backbone)?;
        checkpoint::save_optimizer(&self.head, &head)?;
        Ok(())
    }

    pub(super) fn load(self, dir: &Path, stem: &str) -> Result<Self> {
        let [backbone, head] = Self::paths(dir, stem);
        Ok(Self {
            backbone: checkpoint::load_optimizer(self.backbone, &backbone)?,
            head: checkpoint::load_optimizer(self.head, &head)?,
        })
    }

    pub(super) fn paths(dir: &Path, stem: &str) -> [PathBuf; 2] {
        let ext = checkpoint::EXTENSION;
        [
            dir.join(format!("{stem}.backbone.{ext}")),
            dir.join(format!("{stem}.head.{ext}")),
        ]
    }
}
