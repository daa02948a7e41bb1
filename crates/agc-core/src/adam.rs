//! Adam in one pass over each parameter on the CPU, with Burn's Adam's arithmetic and record.
//!
//! Burn 0.22's Adam (`burn::optim::Adam`) updates a parameter through about a dozen separate
//! tensor operations (`m₁·β₁`, `g·(1 − β₁)`, their sum, `g²`, …, `θ − lr·u`), and Flex runs each
//! as its own single-threaded pass over memory: on a ResNet-18 that took two to nine times as
//! long as PyTorch's multi-tensor Adam (docs/performance.md). [`Adam`] is an [`Optimizer`] whose state *is* Burn's
//! [`AdamState`], so its records are Burn's (a run saved by either loads into the other), and
//! which on Flex, for `f32` parameters, computes the same operations in the same order, element
//! by element, in one parallel pass that updates the parameter and both moments in place
//! ([`step`]): its results are Burn's bit for bit. Elsewhere (wgpu, CUDA, other float types) it
//! is Burn's Adam.

use burn::optim::{
    AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer,
};
use burn::prelude::*;
use rayon::prelude::*;

/// Burn's default `β₁`.
const BETA_1: f32 = 0.9;
/// Burn's default `β₂`.
const BETA_2: f32 = 0.999;

/// Adam with Burn's defaults (`β₁` 0.9, `β₂` 0.999, no weight decay, no AMSGrad) and the given
/// `ε`, fused on Flex (see the module's doc).
#[derive(Clone)]
pub struct Adam {
    epsilon: f32,
    burn: burn::optim::Adam,
}

impl Adam {
    /// Adam whose `ε` is `epsilon` (Burn adds it to `√v̂`, as PyTorch does).
    pub fn new(epsilon: f32) -> Self {
        Self {
            epsilon,
            burn: AdamConfig::new().with_epsilon(epsilon).build(),
        }
    }

    /// The whole-module optimizer, as `AdamConfig::init` gives one.
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }

    /// The scalars of step `time` (from 1) at `lr`, computed as Burn computes them.
    fn factors(&self, lr: LearningRate, time: usize) -> Factors {
        let time = i32::try_from(time).unwrap_or(i32::MAX);
        let bias_correction2_sqrt = (1.0 - BETA_2.powi(time)).sqrt();
        Factors {
            lr: lr as f32,
            combined: bias_correction2_sqrt / (1.0 - BETA_1.powi(time)),
            epsilon: self.epsilon * bias_correction2_sqrt,
        }
    }
}

impl Optimizer for Adam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        #[cfg(feature = "flex")]
        if flex::applies(&tensor, &grad, state.as_ref()) {
            let time = state.as_ref().map_or(1, |s| s.momentum.time + 1);
            let (tensor, moment_1, moment_2) = flex::step(
                tensor,
                grad,
                state.map(|s| (s.momentum.moment_1, s.momentum.moment_2)),
                self.factors(lr, time),
            );
            let momentum = AdaptiveMomentumState::new(time, moment_1, moment_2);
            return (tensor, Some(AdamState::new(momentum)));
        }
        self.burn.step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <burn::optim::Adam as Optimizer>::to_device(state, device)
    }
}

/// The scalars of one step, as Burn's Adam computes them in `f32`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Factors {
    /// The learning rate, rounded to `f32` as Flex rounds a scalar.
    pub lr: f32,
    /// `√(1 − β₂ᵗ) / (1 − β₁ᵗ)`.
    pub combined: f32,
    /// `ε · √(1 − β₂ᵗ)`.
    pub epsilon: f32,
}

/// Elements per parallel task: large enough that a task's work outweighs its scheduling.
const CHUNK: usize = 1 << 14;

/// One Adam step of `param` in place, element by element with Burn's operations in Burn's order
/// (`m₁ ← m₁·β₁ + g·(1 − β₁)`, `m₂ ← m₂·β₂ + g²·(1 − β₂)`, `θ ← θ − (m₁·c / (√m₂ + ε'))·lr`),
/// so that it gives Burn's results bit for bit. `first` marks the first step, where Burn starts
/// the moments at `g·(1 − β₁)` and `g²·(1 − β₂)` (not from zeros, which would differ in the sign
/// of a zero): their old values are then not read, only written.
///
/// # Panics
/// If the slices' lengths differ.
pub fn step(
    param: &mut [f32],
    grad: &[f32],
    moment_1: &mut [f32],
    moment_2: &mut [f32],
    first: bool,
    f: Factors,
) {
    let n = param.len();
    assert!(
        grad.len() == n && moment_1.len() == n && moment_2.len() == n,
        "Adam step over {n} parameters given {} gradients and moments of {} and {}",
        grad.len(),
        moment_1.len(),
        moment_2.len()
    );
    let (decay_1, decay_2) = (1.0 - BETA_1, 1.0 - BETA_2);
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(moment_1.par_chunks_mut(CHUNK))
        .zip(moment_2.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m1), m2)| {
            for (((p, &g), m1), m2) in p.iter_mut().zip(g).zip(m1).zip(m2) {
                let (a, b) = if first {
                    (g * decay_1, (g * g) * decay_2)
                } else {
                    (*m1 * BETA_1 + g * decay_1, *m2 * BETA_2 + (g * g) * decay_2)
                };
                *m1 = a;
                *m2 = b;
                let update = (a * f.combined) / (b.sqrt() + f.epsilon);
                *p -= update * f.lr;
            }
        });
}

#[cfg(feature = "flex")]
mod flex {
    //! The backend extension: Flex runs [`super::step`] on its tensors' storage.

    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Backend, DispatchDevice, Flex, TensorMetadata, backend_extension};
    use burn::prelude::*;
    use burn::tensor::DType;

    use super::Factors;

    type Dispatch = burn::backend::Dispatch;

    /// One fused Adam step (see [`super::step`]); `factors` is `[lr, combined, epsilon]` of
    /// [`Factors`]. (Two functions rather than optional moments: burn-backend-extension 0.22.1
    /// does not unwrap an `Option` of tensors for Flex.)
    #[backend_extension(Flex)]
    pub trait FusedAdam: Backend {
        /// The first step: the stepped parameter and its new moments.
        fn fused_adam_first(
            param: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            factors: [f32; 3],
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

        /// A later step: the stepped parameter and its moments, moved.
        fn fused_adam_step(
            param: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            moment_1: FloatTensor<Self>,
            moment_2: FloatTensor<Self>,
            factors: [f32; 3],
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    }

    /// Whether a step of `tensor` can take the fused kernel: every tensor on a Flex device (not
    /// tracked by autodiff) and `f32`, the state without AMSGrad's maximum.
    pub(super) fn applies<const D: usize>(
        tensor: &Tensor<D>,
        grad: &Tensor<D>,
        state: Option<&burn::optim::AdamState<D>>,
    ) -> bool {
        let flex_f32 = |t: &Tensor<D>| {
            let device = t.device();
            !device.is_autodiff()
                && matches!(device.as_dispatch(), DispatchDevice::Flex(_))
                && t.dtype() == DType::F32
        };
        flex_f32(tensor)
            && flex_f32(grad)
            && state.is_none_or(|s| {
                let m = &s.momentum;
                m.max_moment_2.is_none() && flex_f32(&m.moment_1) && flex_f32(&m.moment_2)
            })
    }

    pub(super) fn step<const D: usize>(
        tensor: Tensor<D>,
        grad: Tensor<D>,
        moments: Option<(Tensor<D>, Tensor<D>)>,
        f: Factors,
    ) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
        let factors = [f.lr, f.combined, f.epsilon];
        let (param, grad) = (tensor.into_dispatch(), grad.into_dispatch());
        let (param, moment_1, moment_2) = match moments {
            None => <Dispatch as FusedAdam>::fused_adam_first(param, grad, factors),
            Some((a, b)) => <Dispatch as FusedAdam>::fused_adam_step(
                param,
                grad,
                a.into_dispatch(),
                b.into_dispatch(),
                factors,
            ),
        };
        (
            Tensor::from_dispatch(param),
            Tensor::from_dispatch(moment_1),
            Tensor::from_dispatch(moment_2),
        )
    }

    /// `t` contiguous from the start of its own storage, so that its whole storage is its
    /// values and can be written in place (copied first when shared, by `storage_mut`).
    fn owned(t: FlexTensor) -> FlexTensor {
        if matches!(t.layout().contiguous_offsets(), Some((0, end)) if end == t.storage::<f32>().len())
        {
            t
        } else {
            t.to_contiguous()
        }
    }

    /// The kernel on Flex tensors; `moments` is `None` at the first step.
    fn fused(
        param: FlexTensor,
        grad: &FlexTensor,
        moments: Option<(FlexTensor, FlexTensor)>,
        [lr, combined, epsilon]: [f32; 3],
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let mut param = owned(param);
        let shape = param.shape();
        let (first, (mut moment_1, mut moment_2)) = match moments {
            Some((a, b)) => (false, (owned(a), owned(b))),
            None => (
                true,
                (
                    FlexTensor::empty(shape.clone(), DType::F32),
                    FlexTensor::empty(shape, DType::F32),
                ),
            ),
        };
        super::step(
            param.storage_mut::<f32>(),
            grad.storage::<f32>(),
            moment_1.storage_mut::<f32>(),
            moment_2.storage_mut::<f32>(),
            first,
            Factors {
                lr,
                combined,
                epsilon,
            },
        );
        (param, moment_1, moment_2)
    }

    impl FusedAdam for Flex {
        fn fused_adam_first(
            param: FlexTensor,
            grad: FlexTensor,
            factors: [f32; 3],
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            fused(param, &owned(grad), None, factors)
        }

        fn fused_adam_step(
            param: FlexTensor,
            grad: FlexTensor,
            moment_1: FlexTensor,
            moment_2: FlexTensor,
            factors: [f32; 3],
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            fused(param, &owned(grad), Some((moment_1, moment_2)), factors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{autodiff_device, device};
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use burn::tensor::TensorData;

    /// The parameters of `model` as plain values, weight then bias.
    fn values(model: &Linear) -> Vec<Vec<f32>> {
        let mut out = vec![model.weight.val().into_data().try_to_vec::<f32>().unwrap()];
        if let Some(b) = &model.bias {
            out.push(b.val().into_data().try_to_vec::<f32>().unwrap());
        }
        out
    }

    /// `steps` steps of `optim` on `model`, each on a new batch (from a formula of `seed` and
    /// the step) at a decaying rate.
    fn train(mut model: Linear, optim: &mut ModuleOptimizer, steps: usize, seed: u64) -> Linear {
        let device = autodiff_device();
        for s in 0..steps {
            // A batch from a formula, not the device's shared random generator (other tests
            // draw from it concurrently).
            let k = (seed + s as u64) as f32;
            let x: Vec<f32> = (0..5 * 300).map(|i| (i as f32 * 0.37 + k).sin()).collect();
            let x = Tensor::<2>::from_data(TensorData::new(x, [5, 300]), &device);
            let loss = model.forward(x).square().mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-3 * 0.95f64.powi(s as i32), model, grads);
        }
        model
    }

    fn linear() -> Linear {
        // 300 × 200 weights: several parallel chunks, the last one partial.
        LinearConfig::new(300, 200).init(&autodiff_device())
    }

    /// `start` trained `steps` steps by Burn's Adam and by the fused one (both with ε 1e-8):
    /// the two models and the two optimizers, Burn's first.
    fn train_both(start: &Linear, steps: usize, seed: u64) -> ([Linear; 2], [ModuleOptimizer; 2]) {
        let mut burns = AdamConfig::new().with_epsilon(1e-8).init();
        let mut ours = Adam::new(1e-8).init();
        let a = train(start.clone(), &mut burns, steps, seed);
        let b = train(start.clone(), &mut ours, steps, seed);
        ([a, b], [burns, ours])
    }

    #[test]
    fn fused_adam_gives_burns_parameters_and_record_bit_for_bit() {
        let start = linear();
        let ([a, b], _) = train_both(&start, 4, 7);
        assert_ne!(values(&a), values(&start), "the steps moved nothing");
        assert_eq!(values(&a), values(&b));
        // The records, byte for byte, of a model with one parameter: a record lists its
        // parameters in the order of a hash map, which differs between two optimizers.
        let start = LinearConfig::new(300, 200)
            .with_bias(false)
            .init(&autodiff_device());
        let (_, [burns, ours]) = train_both(&start, 4, 7);
        assert_eq!(
            burns.into_bytes().unwrap().to_vec(),
            ours.into_bytes().unwrap().to_vec()
        );
    }

    #[test]
    fn records_load_across_burns_adam_and_the_fused_one() {
        let ([a, b], [burns, ours]) = train_both(&linear(), 2, 3);
        // Each resumes from the other's record and takes two more steps.
        let mut ours_from_burns = Adam::new(1e-8)
            .init()
            .from_bytes(burns.into_bytes().unwrap())
            .unwrap();
        let mut burns_from_ours = AdamConfig::new()
            .with_epsilon(1e-8)
            .init()
            .from_bytes(ours.into_bytes().unwrap())
            .unwrap();
        let a = train(a, &mut ours_from_burns, 2, 5);
        let b = train(b, &mut burns_from_ours, 2, 5);
        assert_eq!(values(&a), values(&b));
    }

    #[test]
    fn a_shared_parameter_is_copied_not_written_through() {
        // The fused step writes in place only what it alone holds: a copy of the model kept
        // elsewhere (the best epoch's, say) must not move with it.
        let start = linear();
        let kept = start.clone();
        let before = values(&kept);
        let _ = train(start, &mut Adam::new(1e-8).init(), 2, 1);
        assert_eq!(values(&kept), before);
    }

    #[test]
    fn the_step_is_adams_update() {
        // One parameter, two steps, against the formula in f64.
        let f = |t: i32, lr: f64| Adam::new(1e-8).factors(lr, t as usize);
        let (mut p, mut m1, mut m2) = ([1.0f32], [0.0f32], [0.0f32]);
        step(&mut p, &[0.5], &mut m1, &mut m2, true, f(1, 0.1));
        // After one step Adam moves by lr · g / (|g| + ε) ≈ lr.
        assert!((f64::from(p[0]) - 0.9).abs() < 1e-6, "{}", p[0]);
        step(&mut p, &[-0.5], &mut m1, &mut m2, false, f(2, 0.1));
        let (b1, b2) = (0.9f64, 0.999f64);
        let m = (1.0 - b1) * 0.5 * b1 + (1.0 - b1) * -0.5;
        let v = (1.0 - b2) * 0.25 * b2 + (1.0 - b2) * 0.25;
        let update = (m / (1.0 - b1 * b1)) / ((v / (1.0 - b2 * b2)).sqrt() + 1e-8);
        assert!((f64::from(p[0]) - (0.9 - 0.1 * update)).abs() < 1e-6);
        assert!((f64::from(m1[0]) - m).abs() < 1e-7 && (f64::from(m2[0]) - v).abs() < 1e-7);
    }

    #[cfg(feature = "flex")]
    #[test]
    fn tracked_tensors_are_left_to_burn() {
        // Not a check of another backend (none is built here): a tracked tensor is not the
        // fused kernel's.
        let t = Tensor::<1>::zeros([3], &autodiff_device());
        assert!(!flex::applies(&t, &t.clone(), None));
        let t = Tensor::<1>::zeros([3], &device());
        assert!(flex::applies(&t, &t.clone(), None));
    }
}
