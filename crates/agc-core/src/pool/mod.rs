//! The max pooling of agc's ResNets (the stem's 3×3, stride 2), on the CPU.
//!
//! Burn 0.22's Flex backend pools through its 3-D kernel: for every output it recomputes the
//! window's bounds, scans it with a branch per pixel and writes a 64-bit index even when no
//! backward pass will read it (32–33 ms for the ResNet-18 stem's output at batch 8 here, against
//! 2–3 ms for a ReLU over the same tensor). On Flex devices [`max_pool2d`] instead runs
//! [`kernel`]: window maxima down whole rows, then along them (along the rows first, with
//! 32-bit indices, when a backward pass needs them), through a Burn backend extension with its
//! own backward. It computes what
//! `MaxPool2d::forward` computes, ties and NaNs included. Dilation, ceil mode, asymmetric
//! padding, other devices and non-`f32` tensors take `MaxPool2d::forward`.

pub mod kernel;

use burn::nn::PaddingConfig2d;
use burn::nn::pool::MaxPool2d;
use burn::prelude::*;

/// `pool.forward(x)`, through the kernel where it applies (see the module's doc).
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(params) = flex::applies(pool, &x) {
        return flex::forward(x, params);
    }
    pool.forward(x)
}

/// Kernel, stride and padding along height and width, when the kernel can run `pool` on
/// images of `input` pixels.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
fn params(pool: &MaxPool2d, input: [usize; 2]) -> Option<[usize; 6]> {
    let PaddingConfig2d::Explicit(top, left, bottom, right) = pool.padding else {
        return None;
    };
    let plain = pool.dilation == [1, 1] && !pool.ceil_mode && top == bottom && left == right;
    let [kh, kw] = pool.kernel_size;
    let [sh, sw] = pool.stride;
    let geometry = kernel::PoolGeometry {
        planes: 1,
        input,
        kernel: [kh, kw],
        stride: [sh, sw],
        padding: [top, left],
    };
    (plain && geometry.supported()).then_some([kh, kw, sh, sw, top, left])
}

#[cfg(feature = "flex")]
mod flex {
    //! The backend extension: Flex runs [`super::kernel`], autodiff on Flex records its backward.

    use super::kernel::{PoolGeometry, max_pool2d, max_pool2d_backward};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{
        Autodiff, Backend, DispatchDevice, Flex, TensorMetadata, backend_extension,
    };
    use burn::nn::pool::MaxPool2d;
    use burn::prelude::*;
    use burn::tensor::{DType, TensorData};

    /// 2-D max pooling (see [`super::kernel`]).
    #[backend_extension(Flex, Autodiff)]
    pub trait FastMaxPool: Backend {
        /// `x` `[N, C, H, W]` pooled with `params`: kernel, stride and padding along height
        /// and width.
        fn fast_max_pool2d(x: FloatTensor<Self>, params: [usize; 6]) -> FloatTensor<Self>;
    }

    /// The kernel's parameters when `pool` on `x` can take it.
    pub(super) fn applies(pool: &MaxPool2d, x: &Tensor<4>) -> Option<[usize; 6]> {
        let device = x.device().without_autodiff();
        let on_flex = matches!(device.as_dispatch(), DispatchDevice::Flex(_));
        if !(on_flex && x.dtype() == DType::F32) {
            return None;
        }
        let [_, _, h, w] = x.dims();
        super::params(pool, [h, w])
    }

    pub(super) fn forward(x: Tensor<4>, params: [usize; 6]) -> Tensor<4> {
        let out =
            <burn::backend::Dispatch as FastMaxPool>::fast_max_pool2d(x.into_dispatch(), params);
        Tensor::from_dispatch(out)
    }

    fn geometry(shape: [usize; 4], params: [usize; 6]) -> PoolGeometry {
        let [n, c, h, w] = shape;
        let [kh, kw, sh, sw, ph, pw] = params;
        PoolGeometry {
            planes: n * c,
            input: [h, w],
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [ph, pw],
        }
    }

    /// Pools `x`; the output tensor and, when `indexed`, the indices of its maxima.
    fn pool(x: &FlexTensor, params: [usize; 6], indexed: bool) -> (FlexTensor, Option<Vec<u32>>) {
        let shape: [usize; 4] = x.shape().dims();
        let g = geometry(shape, params);
        let x = x.to_contiguous();
        let (out, index) = max_pool2d(x.storage::<f32>(), &g, indexed);
        let [oh, ow] = g.output();
        let out = FlexTensor::from_data(TensorData::new(out, [shape[0], shape[1], oh, ow]));
        (out, index)
    }

    impl FastMaxPool for Flex {
        fn fast_max_pool2d(x: FlexTensor, params: [usize; 6]) -> FlexTensor {
            pool(&x, params, false).0
        }
    }

    /// Backward of [`FastMaxPool::fast_max_pool2d`]: the input's shape and where each output's
    /// maximum came from.
    #[derive(Debug)]
    struct MaxPoolBackward;

    impl Backward<Flex, 1> for MaxPoolBackward {
        type State = ([usize; 4], [usize; 6], Vec<u32>);

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let [node_x] = ops.parents;
            let dy: FlexTensor = grads.consume::<Flex>(&ops.node).to_contiguous();
            let (shape, params, index) = ops.state;
            if let Some(node) = node_x {
                let g = geometry(shape, params);
                let dx = max_pool2d_backward(dy.storage::<f32>(), &index, &g);
                grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, shape)));
            }
        }
    }

    impl<C: CheckpointStrategy> FastMaxPool for Autodiff<Flex, C> {
        fn fast_max_pool2d(x: FloatTensor<Self>, params: [usize; 6]) -> FloatTensor<Self> {
            match MaxPoolBackward
                .prepare::<C>([x.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let x = x.into_primitive();
                    let (out, index) = pool(&x, params, true);
                    let index = index.expect("indices were asked for");
                    prep.finish((x.shape().dims(), params, index), out)
                }
                OpsKind::UnTracked(prep) => {
                    prep.finish(Flex::fast_max_pool2d(x.into_primitive(), params))
                }
            }
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::test_util::{autodiff_device, device};
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::{Distribution, Tolerance};

    fn layer(k: usize, stride: usize, pad: usize) -> MaxPool2d {
        MaxPool2dConfig::new([k, k])
            .with_strides([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .init()
    }

    /// Output and input gradient against `MaxPool2d::forward` on Flex, with and without
    /// autodiff, for the ResNet stem's pooling of images and of chips, with ties.
    #[test]
    fn pooling_matches_burns_output_and_gradient() {
        for (n, c, hw, k, stride, pad) in [
            (2, 3, 17, 3, 2, 1),
            (40, 4, 4, 3, 2, 1),
            (9, 2, 2, 3, 2, 1),
            (3, 2, 8, 2, 2, 0),
        ] {
            let pool = layer(k, stride, pad);
            let autodiff = autodiff_device();
            // Rounded to halves, so that windows hold ties.
            let x = Tensor::<4>::random([n, c, hw, hw], Distribution::Normal(0.0, 1.0), &autodiff)
                .mul_scalar(2.0)
                .round()
                .div_scalar(2.0);
            assert!(
                flex::applies(&pool, &x).is_some(),
                "the kernel must run here"
            );
            let probe = Tensor::<4>::random(
                pool.forward(x.clone()).dims(),
                Distribution::Normal(0.0, 1.0),
                &autodiff,
            );
            let run = |fast: bool| {
                let x = x.clone().detach().require_grad();
                let y = if fast {
                    max_pool2d(&pool, x.clone())
                } else {
                    pool.forward(x.clone())
                };
                let grads = (y.clone() * probe.clone()).sum().backward();
                (y.into_data(), x.grad(&grads).unwrap().into_data())
            };
            let (y, dx) = run(true);
            let (y_ref, dx_ref) = run(false);
            assert_eq!(y, y_ref);
            dx.assert_approx_eq::<f32>(&dx_ref, Tolerance::<f32>::absolute(1e-6));
            // Without autodiff only the values are pooled, down the rows first: equal, though a
            // tie of 0 and −0 may keep the other sign.
            let plain = Tensor::<4>::from_data(x.into_data(), &device());
            max_pool2d(&pool, plain.clone())
                .into_data()
                .assert_approx_eq::<f32>(
                    &pool.forward(plain).into_data(),
                    Tolerance::absolute(0.0),
                );
        }
    }

    #[test]
    fn pooling_outside_the_kernel_takes_burns_path() {
        let dilated = MaxPool2dConfig::new([3, 3]).with_dilation([2, 2]).init();
        assert!(params(&dilated, [8, 8]).is_none());
        let ceil = MaxPool2dConfig::new([3, 3]).with_ceil_mode(true).init();
        assert!(params(&ceil, [8, 8]).is_none());
        let asymmetric = MaxPool2dConfig::new([3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 0, 0))
            .init();
        assert!(params(&asymmetric, [8, 8]).is_none());
        assert!(params(&layer(3, 2, 1), [8, 8]).is_some());
    }
}
