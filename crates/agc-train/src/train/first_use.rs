//! A GPU's first training step, and its first prediction pass, compile every kernel they use
//! and autotune the matrix products (CubeCL): seconds on a real GPU, minutes on a software
//! device with a recent Mesa (docs/gpu.md). So that such a step never looks hung, the first
//! one of each kind on each GPU of the process is announced before it starts and timed when it
//! ends. Flex compiles nothing and gets no notice.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Instant;

use burn::backend::DispatchDevice;
use burn::prelude::*;

/// What ran on which devices in this process (a step, a batch), by the devices' `Debug` names.
static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Whether `device` compiles kernels on first use: any device but Flex.
fn compiles_kernels(device: &Device) -> bool {
    !matches!(
        device.clone().without_autodiff().as_dispatch(),
        DispatchDevice::Flex(_)
    )
}

/// The notice of one first use: given by [`FirstUse::begin`] when `what` runs on these GPUs for
/// the first time in the process, closed by [`FirstUse::end`].
pub(crate) struct FirstUse {
    /// What runs, for the log; `None` when there is nothing to announce.
    label: Option<String>,
    /// When it started, until [`FirstUse::end`] reports it.
    started: Mutex<Option<Instant>>,
}

impl FirstUse {
    /// Announces `what` on `devices` (`"the first training step"`) when it is the first time in
    /// this process and the devices compile kernels; otherwise a silent notice.
    pub(crate) fn begin(what: &str, devices: &[Device]) -> Self {
        let gpus: Vec<String> = devices
            .iter()
            .filter(|d| compiles_kernels(d))
            .map(|d| format!("{:?}", d.clone().without_autodiff()))
            .collect();
        let key = format!("{what} on {}", gpus.join(", "));
        let label = (!gpus.is_empty() && SEEN.lock().expect("the first-use registry").insert(key))
            .then(|| {
                let on = if gpus.len() == 1 {
                    "the GPU"
                } else {
                    "the GPUs"
                };
                format!("{what} on {on}")
            });
        if let Some(label) = &label {
            tracing::info!(
                "{label}: compiling and autotuning its GPU kernels first (seconds on a GPU, \
                 minutes on a software device; the autotune choices are kept for later runs)"
            );
        }
        Self {
            label,
            started: Mutex::new(Some(Instant::now())),
        }
    }

    /// Whether [`FirstUse::begin`] announced anything.
    #[cfg(test)]
    fn announced(&self) -> bool {
        self.label.is_some()
    }

    /// Reports how long the announced first use took, kernels included; once, whoever calls
    /// it first (every data-parallel step may).
    pub(crate) fn end(&self) {
        let Some(label) = &self.label else { return };
        let started = self.started.lock().expect("the first-use clock").take();
        if let Some(started) = started {
            tracing::info!(
                "{label}: done in {:.1} s, kernel compilation and autotuning included",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_compiles_nothing_and_is_never_announced() {
        let device = Device::flex();
        assert!(!compiles_kernels(&device));
        assert!(!compiles_kernels(&device.clone().autodiff()));
        let notice = FirstUse::begin("a test step", &[device.clone(), device]);
        assert!(!notice.announced());
        notice.end();
    }
}
