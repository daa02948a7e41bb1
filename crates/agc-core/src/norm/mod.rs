//! The batch norms of agc's ResNets and attention heads, one pass per step on the CPU.
//!
//! Burn 0.22's Flex backend has no batch norm of its own: it runs Burn's generic one, which in
//! training transposes the input twice to take the channel statistics and then makes a separate
//! pass for each of `x − mean`, `÷ σ`, `× γ` and `+ β` (and about a dozen passes backward). On
//! Flex devices [`batch_norm`] instead takes the statistics in two passes over the input as it
//! lies, writes the output in one (`x · scale + shift`), and differentiates in two ([`kernel`]),
//! through a Burn backend extension with its own backward pass. It computes what
//! [`BatchNorm::forward`] computes, with the same choice between the batch's statistics
//! (autodiff device and the layer's `training` flag on) and the running ones. The running
//! variance is updated with the batch's *unbiased* variance (`n / (n − 1)` times the biased one
//! that normalises the batch), as PyTorch's `BatchNorm` does and Burn's does not: with few values
//! per channel (a ResNet's last 4×4 or 1×1 map, a metadata MLP over a batch of 16) Burn's
//! eval-mode scale differs from PyTorch's by up to `√(n / (n − 1))`, and models trained in
//! PyTorch and agc would predict differently from the same training. Other devices train
//! through the same statistics written with Burn's tensor operations ([`generic`]), and infer
//! through `BatchNorm::forward`; non-`f32` tensors too.

pub mod kernel;

use burn::nn::BatchNorm;
use burn::prelude::*;

/// `bn.forward(x)`, through the one-pass kernels where they apply (see the module's doc).
///
/// # Panics
/// As `BatchNorm::forward`: if `x` has rank below 2 or its second dimension is not the layer's
/// number of features.
pub fn batch_norm<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if flex::applies(bn, &x) {
        return flex::batch_norm(bn, x);
    }
    if x.device().is_autodiff() && bn.training.is_enabled() {
        return generic::batch_norm_train(bn, x);
    }
    bn.forward(x)
}

/// `n / (n − 1)`: the factor from the biased variance of `n` values to the unbiased one (1 for a
/// single value, whose variance is 0 either way).
fn unbiased_factor(n: usize) -> f64 {
    if n > 1 {
        n as f64 / (n as f64 - 1.0)
    } else {
        1.0
    }
}

/// Moves `state` towards `batch` by `momentum`, as Burn and PyTorch do.
fn update_running(
    state: &burn::module::RunningState<Tensor<1>>,
    batch: Tensor<1>,
    momentum: f64,
    device: &Device,
) {
    let running = state.value_sync().to_device(device);
    let running = running
        .mul_scalar(1.0 - momentum)
        .add(batch.detach().mul_scalar(momentum));
    state.update(running.detach());
}

pub mod generic {
    //! Batch norm in training on any device, with Burn's tensor operations: the batch's
    //! statistics normalise it, and the running statistics move towards the batch's mean and
    //! unbiased variance (see the module above).

    use burn::nn::BatchNorm;
    use burn::prelude::*;

    /// Batch norm of `x` `[N, C, …]` over the batch's own statistics, updating `bn`'s running
    /// statistics.
    ///
    /// # Panics
    /// If `x` has rank below 2 or its second dimension is not the layer's number of features.
    pub fn batch_norm_train<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
        let [features] = bn.gamma.shape().dims();
        let dims = x.dims();
        assert!(D >= 2, "batch norm needs a channel dimension");
        assert_eq!(
            dims[1], features,
            "batch norm of {features} features given {} channels",
            dims[1]
        );
        let n = dims.iter().product::<usize>() / features;
        let mut channel_shape = [1; D];
        channel_shape[1] = features;
        let by_channel = |t: Tensor<1>| t.reshape(channel_shape);
        // [C, N·…]: each channel's values in one row.
        let rows = x.clone().swap_dims(0, 1).reshape([features, n]);
        let mean = rows.clone().mean_dim(1);
        let var = (rows - mean.clone()).square().mean_dim(1);
        let (mean, var): (Tensor<1>, Tensor<1>) =
            (mean.reshape([features]), var.reshape([features]));
        let device = x.device();
        super::update_running(&bn.running_mean, mean.clone(), bn.momentum, &device);
        super::update_running(
            &bn.running_var,
            var.clone().mul_scalar(super::unbiased_factor(n)),
            bn.momentum,
            &device,
        );
        let normalised = (x - by_channel(mean)) / by_channel(var.add_scalar(bn.epsilon).sqrt());
        normalised * by_channel(bn.gamma.val()) + by_channel(bn.beta.val())
    }
}

#[cfg(feature = "flex")]
mod flex {
    //! The backend extension: Flex runs [`super::kernel`], autodiff on Flex records its backward.

    use super::kernel::{self, Layout};
    use burn::backend::autodiff::NodeId;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{
        Autodiff, AutodiffBackend, Backend, DispatchDevice, Flex, TensorMetadata, backend_extension,
    };
    use burn::nn::BatchNorm;
    use burn::prelude::*;
    use burn::tensor::{DType, Shape, TensorData};

    /// Batch norm in one pass per step (see [`super::kernel`]).
    #[backend_extension(Flex, Autodiff)]
    pub trait FusedBatchNorm: Backend {
        /// Batch norm of `x` `[N, C, …]` over the batch's own statistics: the output, and the
        /// per-channel mean and biased variance (not differentiated).
        fn fused_batch_norm_train(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            epsilon: f64,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

        /// `x · scale[c] + shift[c]` over channel `c` of `x` `[N, C, …]`.
        fn fused_channel_affine(
            x: FloatTensor<Self>,
            scale: FloatTensor<Self>,
            shift: FloatTensor<Self>,
        ) -> FloatTensor<Self>;
    }

    /// Whether `bn` on `x` can take the kernels: a Flex device, `f32`, rank 2 or more.
    pub(super) fn applies<const D: usize>(bn: &BatchNorm, x: &Tensor<D>) -> bool {
        let device = x.device().without_autodiff();
        let on_flex = matches!(device.as_dispatch(), DispatchDevice::Flex(_));
        on_flex && D >= 2 && x.dtype() == DType::F32 && bn.gamma.val().dtype() == DType::F32
    }

    type Dispatch = burn::backend::Dispatch;

    pub(super) fn batch_norm<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
        let [features] = bn.gamma.shape().dims();
        let channels = x.dims()[1];
        assert_eq!(
            channels, features,
            "batch norm of {features} features given {channels} channels"
        );
        let device = x.device();
        if device.is_autodiff() && bn.training.is_enabled() {
            let n = x.shape().num_elements() / features;
            let (y, mean, var) = <Dispatch as FusedBatchNorm>::fused_batch_norm_train(
                x.into_dispatch(),
                bn.gamma.val().into_dispatch(),
                bn.beta.val().into_dispatch(),
                bn.epsilon,
            );
            let (mean, var) = (
                Tensor::<1>::from_dispatch(mean),
                Tensor::<1>::from_dispatch(var),
            );
            super::update_running(&bn.running_mean, mean, bn.momentum, &device);
            let unbiased = var.mul_scalar(super::unbiased_factor(n));
            super::update_running(&bn.running_var, unbiased, bn.momentum, &device);
            Tensor::from_dispatch(y)
        } else {
            let mean = bn.running_mean.value().to_device(&device);
            let var = bn.running_var.value().to_device(&device);
            let scale = bn.gamma.val() / var.add_scalar(bn.epsilon).sqrt();
            let shift = bn.beta.val() - mean * scale.clone();
            Tensor::from_dispatch(<Dispatch as FusedBatchNorm>::fused_channel_affine(
                x.into_dispatch(),
                scale.into_dispatch(),
                shift.into_dispatch(),
            ))
        }
    }

    fn layout(shape: &Shape) -> Layout {
        let dims = shape.as_slice();
        Layout {
            batch: dims[0],
            channels: dims[1],
            pixels: dims[2..].iter().product(),
        }
    }

    fn flex_tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    fn channels(values: Vec<f32>) -> FlexTensor {
        let len = values.len();
        flex_tensor(values, [len])
    }

    impl FusedBatchNorm for Flex {
        fn fused_batch_norm_train(
            x: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            epsilon: f64,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let (shape, l) = (x.shape(), layout(&x.shape()));
            let (x, gamma, beta) = (
                x.to_contiguous(),
                gamma.to_contiguous(),
                beta.to_contiguous(),
            );
            let (mean, var) = kernel::statistics(x.storage::<f32>(), l);
            let (scale, shift) = kernel::scale_shift(
                gamma.storage::<f32>(),
                beta.storage::<f32>(),
                &mean,
                &var,
                epsilon,
            );
            let y = kernel::affine(x.storage::<f32>(), l, &scale, &shift);
            (flex_tensor(y, shape), channels(mean), channels(var))
        }

        fn fused_channel_affine(x: FlexTensor, scale: FlexTensor, shift: FlexTensor) -> FlexTensor {
            let (shape, l) = (x.shape(), layout(&x.shape()));
            let (x, scale, shift) = (
                x.to_contiguous(),
                scale.to_contiguous(),
                shift.to_contiguous(),
            );
            let y = kernel::affine(
                x.storage::<f32>(),
                l,
                scale.storage::<f32>(),
                shift.storage::<f32>(),
            );
            flex_tensor(y, shape)
        }
    }

    /// Backward of [`FusedBatchNorm::fused_batch_norm_train`]; the batch statistics come along
    /// as the forward computed them.
    #[derive(Debug)]
    struct TrainBackward;

    impl Backward<Flex, 3> for TrainBackward {
        type State = (NodeId, NodeId, FlexTensor, FlexTensor, f64);

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let [node_x, node_gamma, node_beta] = ops.parents;
            let dy: FlexTensor = grads.consume::<Flex>(&ops.node).to_contiguous();
            let (x_state, gamma_state, mean, var, epsilon) = ops.state;
            let x: FlexTensor = checkpointer.retrieve_node_output(x_state);
            let gamma: FlexTensor = checkpointer.retrieve_node_output(gamma_state);
            let (shape, l) = (x.shape(), layout(&x.shape()));
            let (x, gamma) = (x.to_contiguous(), gamma.to_contiguous());
            let (mean, var) = (mean.to_contiguous(), var.to_contiguous());
            let (dx, dgamma, dbeta) = kernel::backward(
                x.storage::<f32>(),
                l,
                gamma.storage::<f32>(),
                [mean.storage::<f32>(), var.storage::<f32>()],
                epsilon,
                dy.storage::<f32>(),
            );
            if let Some(node) = node_x {
                grads.register::<Flex>(node.id, flex_tensor(dx, shape));
            }
            if let Some(node) = node_gamma {
                grads.register::<Flex>(node.id, channels(dgamma));
            }
            if let Some(node) = node_beta {
                grads.register::<Flex>(node.id, channels(dbeta));
            }
        }
    }

    /// Backward of [`FusedBatchNorm::fused_channel_affine`].
    #[derive(Debug)]
    struct AffineBackward;

    impl Backward<Flex, 3> for AffineBackward {
        type State = (NodeId, NodeId);

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let [node_x, node_scale, node_shift] = ops.parents;
            let dy: FlexTensor = grads.consume::<Flex>(&ops.node).to_contiguous();
            let (x_state, scale_state) = ops.state;
            let x: FlexTensor = checkpointer.retrieve_node_output(x_state);
            let scale: FlexTensor = checkpointer.retrieve_node_output(scale_state);
            let (shape, l) = (x.shape(), layout(&x.shape()));
            let (x, scale) = (x.to_contiguous(), scale.to_contiguous());
            let (dx, dscale, dshift) = kernel::affine_backward(
                x.storage::<f32>(),
                l,
                scale.storage::<f32>(),
                dy.storage::<f32>(),
            );
            if let Some(node) = node_x {
                grads.register::<Flex>(node.id, flex_tensor(dx, shape));
            }
            if let Some(node) = node_scale {
                grads.register::<Flex>(node.id, channels(dscale));
            }
            if let Some(node) = node_shift {
                grads.register::<Flex>(node.id, channels(dshift));
            }
        }
    }

    impl<C: CheckpointStrategy> FusedBatchNorm for Autodiff<Flex, C> {
        fn fused_batch_norm_train(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            epsilon: f64,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            let statistic = <Self as AutodiffBackend>::from_inner;
            match TrainBackward
                .prepare::<C>([x.node(), gamma.node(), beta.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let x_state = prep.checkpoint(&x);
                    let gamma_state = prep.checkpoint(&gamma);
                    let (y, mean, var) = Flex::fused_batch_norm_train(
                        x.into_primitive(),
                        gamma.into_primitive(),
                        beta.into_primitive(),
                        epsilon,
                    );
                    let state = (x_state, gamma_state, mean.clone(), var.clone(), epsilon);
                    (prep.finish(state, y), statistic(mean), statistic(var))
                }
                OpsKind::UnTracked(prep) => {
                    let (y, mean, var) = Flex::fused_batch_norm_train(
                        x.into_primitive(),
                        gamma.into_primitive(),
                        beta.into_primitive(),
                        epsilon,
                    );
                    (prep.finish(y), statistic(mean), statistic(var))
                }
            }
        }

        fn fused_channel_affine(
            x: FloatTensor<Self>,
            scale: FloatTensor<Self>,
            shift: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            match AffineBackward
                .prepare::<C>([x.node(), scale.node(), shift.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let x_state = prep.checkpoint(&x);
                    let scale_state = prep.checkpoint(&scale);
                    let y = Flex::fused_channel_affine(
                        x.into_primitive(),
                        scale.into_primitive(),
                        shift.into_primitive(),
                    );
                    prep.finish((x_state, scale_state), y)
                }
                OpsKind::UnTracked(prep) => prep.finish(Flex::fused_channel_affine(
                    x.into_primitive(),
                    scale.into_primitive(),
                    shift.into_primitive(),
                )),
            }
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::test_util::{autodiff_device, device};
    use burn::module::{Param, RunningState};
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Distribution, Tolerance};

    fn tolerance() -> Tolerance<f32> {
        Tolerance::<f32>::absolute(1e-4).set_relative(1e-4)
    }

    /// A batch norm with these parameters and running statistics (`[γ, β, mean, var]`), built
    /// afresh: clones of a layer share its running statistics.
    fn layer(values: &[Tensor<1>; 4], frozen: bool) -> BatchNorm {
        let [gamma, beta, mean, var] = values.clone();
        let mut bn = BatchNormConfig::new(gamma.dims()[0]).init(&gamma.device());
        bn.gamma = Param::from_tensor(gamma);
        bn.beta = Param::from_tensor(beta);
        bn.running_mean = RunningState::new(mean);
        bn.running_var = RunningState::new(var);
        if frozen {
            bn.training = Param::from_bool(false);
        }
        bn
    }

    /// Output, gradients (input, γ, β) and the running statistics after the step, through
    /// [`batch_norm`] or through `BatchNorm::forward`.
    fn step(bn: &BatchNorm, x: &Tensor<4>, probe: &Tensor<4>, fused: bool) -> Vec<TensorData> {
        let x = if x.device().is_autodiff() {
            x.clone().detach().require_grad()
        } else {
            x.clone()
        };
        let y = if fused {
            batch_norm(bn, x.clone())
        } else {
            bn.forward(x.clone())
        };
        let mut out = vec![y.clone().into_data()];
        if x.device().is_autodiff() {
            let grads = (y * probe.clone()).sum().backward();
            out.push(x.grad(&grads).unwrap().into_data());
            for p in [&bn.gamma, &bn.beta] {
                out.push(p.val().grad(&grads).unwrap().into_data());
            }
        }
        out.push(bn.running_mean.value_sync().into_data());
        out.push(bn.running_var.value_sync().into_data());
        out
    }

    /// Training (batch statistics), a frozen layer on the autodiff device (running statistics,
    /// still differentiated) and inference, against Burn's `BatchNorm::forward` (its running
    /// variance corrected to PyTorch's unbiased update), for images, chips of 2×2 and 1×1 pixels
    /// and a batch of one; in training also the generic path of other devices.
    #[test]
    fn fused_batch_norm_matches_burns_outputs_gradients_and_pytorchs_running_statistics() {
        for (n, c, hw) in [(4, 8, 9), (33, 16, 2), (40, 32, 1), (1, 3, 5)] {
            for (device, frozen) in [
                (autodiff_device(), false),
                (autodiff_device(), true),
                (device(), false),
            ] {
                let random =
                    |mean, std| Tensor::<1>::random([c], Distribution::Normal(mean, std), &device);
                let values = [
                    random(1.0, 0.3),
                    random(0.0, 0.3),
                    random(0.5, 0.3),
                    random(2.0, 0.3).abs(),
                ];
                let x =
                    Tensor::<4>::random([n, c, hw, hw], Distribution::Normal(0.7, 2.0), &device);
                let probe =
                    Tensor::<4>::random([n, c, hw, hw], Distribution::Normal(0.0, 1.0), &device);
                let (bn, bn_ref) = (layer(&values, frozen), layer(&values, frozen));
                assert!(flex::applies(&bn, &x), "the fused kernels must run here");
                let fused = step(&bn, &x, &probe, true);
                let mut reference = step(&bn_ref, &x, &probe, false);
                if device.is_autodiff() && !frozen {
                    // Burn moves the running variance towards the biased variance v, agc
                    // towards v · n / (n − 1) as PyTorch: add momentum · v / (n − 1).
                    let burn = reference.pop().expect("running variance");
                    let m = bn_ref.momentum;
                    let v0 = Tensor::<1>::from_data(burn.clone(), &device);
                    let biased = (v0.clone() - values[3].clone().mul_scalar(1.0 - m)).div_scalar(m);
                    let per_channel = f64::from(n * hw * hw);
                    let pytorch = v0 + biased.mul_scalar(m / (per_channel - 1.0));
                    reference.push(pytorch.into_data());
                }
                assert_eq!(fused.len(), reference.len());
                for (a, b) in fused.iter().zip(&reference) {
                    a.assert_approx_eq::<f32>(b, tolerance());
                }
                if device.is_autodiff() && !frozen {
                    // Burn's tensor operations (other devices' path) give the same.
                    let bn_generic = layer(&values, frozen);
                    let x = x.clone().detach().require_grad();
                    let y = generic::batch_norm_train(&bn_generic, x.clone());
                    let grads = (y.clone() * probe.clone()).sum().backward();
                    let generic = [
                        y.into_data(),
                        x.grad(&grads).unwrap().into_data(),
                        bn_generic.gamma.val().grad(&grads).unwrap().into_data(),
                        bn_generic.beta.val().grad(&grads).unwrap().into_data(),
                        bn_generic.running_mean.value_sync().into_data(),
                        bn_generic.running_var.value_sync().into_data(),
                    ];
                    for (a, b) in generic.iter().zip(&fused) {
                        a.assert_approx_eq::<f32>(b, tolerance());
                    }
                }
            }
        }
    }

    /// PyTorch's `BatchNorm2d(1, momentum=0.1)` on the values 1, 2, 3, 4 in training moves a
    /// running variance of 1 to 0.9 + 0.1 · var_unbiased = 0.9 + 0.1 · 5/3 (Burn's update gives
    /// 0.9 + 0.1 · 1.25).
    #[test]
    fn the_running_variance_moves_towards_the_unbiased_variance_as_in_pytorch() {
        let dev = autodiff_device();
        let x = Tensor::<4>::from_floats([[[[1.0]]], [[[2.0]]], [[[3.0]]], [[[4.0]]]], &dev);
        let expected = 0.9 + 0.1 * 5.0 / 3.0;
        for fused in [true, false] {
            let bn = BatchNormConfig::new(1).init(&dev);
            if fused {
                batch_norm(&bn, x.clone());
            } else {
                generic::batch_norm_train(&bn, x.clone());
            }
            let var = bn.running_var.value_sync().into_scalar::<f32>();
            let mean = bn.running_mean.value_sync().into_scalar::<f32>();
            assert!(
                (f64::from(var) - expected).abs() < 1e-6,
                "fused {fused}: {var}"
            );
            assert!((mean - 0.25).abs() < 1e-6, "fused {fused}: {mean}");
        }
    }

    #[test]
    #[should_panic(expected = "batch norm of 3 features given 4 channels")]
    fn a_wrong_channel_count_is_refused_as_burn_refuses_it() {
        let bn = BatchNormConfig::new(3).init(&device());
        batch_norm(&bn, Tensor::<4>::zeros([2, 4, 2, 2], &device()));
    }
}
