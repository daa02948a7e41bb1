//! The batch norms of agc's ResNets and attention heads, one pass per step on the CPU.
//!
//! Burn 0.22's Flex backend has no batch norm of its own: it runs Burn's generic one, which in
//! training transposes the input twice to take the channel statistics and then makes a separate
//! pass for each of `x − mean`, `÷ σ`, `× γ` and `+ β` (and about a dozen passes backward). On
//! Flex devices [`batch_norm`] instead takes the statistics in two passes over the input as it
//! lies, writes the output in one (`x · scale + shift`), and differentiates in two ([`kernel`]),
//! through a Burn backend extension with its own backward pass. It computes what
//! [`BatchNorm::forward`] computes, with the same choice between the batch's statistics
//! (autodiff device and the layer's `training` flag on) and the running ones, and the same
//! update of the running statistics (momentum, biased variance). Other devices and non-`f32`
//! tensors take `BatchNorm::forward`.

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
    bn.forward(x)
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
            let m = bn.momentum;
            let update = |state: &burn::module::RunningState<Tensor<1>>, batch: Tensor<1>| {
                let running = state.value_sync().to_device(&device);
                let running = running
                    .mul_scalar(1.0 - m)
                    .add(batch.detach().mul_scalar(m));
                state.update(running.detach());
            };
            update(&bn.running_mean, mean);
            update(&bn.running_var, var);
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
    /// still differentiated) and inference, against Burn's `BatchNorm::forward`, for images,
    /// chips of 2×2 and 1×1 pixels and a batch of one.
    #[test]
    fn fused_batch_norm_matches_burns_outputs_gradients_and_running_statistics() {
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
                let reference = step(&bn_ref, &x, &probe, false);
                assert_eq!(fused.len(), reference.len());
                for (a, b) in fused.iter().zip(&reference) {
                    a.assert_approx_eq::<f32>(b, tolerance());
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "batch norm of 3 features given 4 channels")]
    fn a_wrong_channel_count_is_refused_as_burn_refuses_it() {
        let bn = BatchNormConfig::new(3).init(&device());
        batch_norm(&bn, Tensor::<4>::zeros([2, 4, 2, 2], &device()));
    }
}
