//! The convolutions of agc's ResNets, batched over the images on the CPU.
//!
//! Burn 0.22's Flex backend runs a convolution as one matrix product per image (and per tile of
//! 512 output pixels), and its weight gradient as a convolution whose kernel is the whole output
//! gradient. For ChipNet, whose "images" are 32-pixel chips that shrink to 4×4, 2×2 and 1×1
//! pixels in the deeper layers, that means thousands of products with 16 rows or fewer, each
//! re-reading the weights. [`conv2d`] instead forms the columns of as many whole images as fit in
//! a few MiB and multiplies them at once, forward and backward ([`kernel`]), through a Burn
//! backend extension with its own backward pass. The products go through the same `gemm` crate
//! that Flex uses.
//!
//! It applies on Flex devices (with or without autodiff) to `f32` convolutions without groups or
//! dilation and with symmetric padding: every convolution of a torchvision ResNet and of agc's
//! attention heads (whose bias is added to the product's output as a broadcast tensor, so
//! autodiff sums its gradient). Anything else, and every other device, takes Burn's own
//! `Conv2d::forward`.

pub mod kernel;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

/// `conv.forward(x)`, through the batched kernel where it applies (see the module's doc).
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(params) = flex::applies(conv, &x) {
        let y = flex::forward(x, conv.weight.val(), params);
        return match &conv.bias {
            Some(bias) => {
                let channels = bias.dims()[0];
                y + bias.val().reshape([1, channels, 1, 1])
            }
            None => y,
        };
    }
    conv.forward(x)
}

/// Stride and padding along height and width, when the batched kernel can run the convolution.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
fn batched_params(conv: &Conv2d) -> Option<[usize; 4]> {
    let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding else {
        return None;
    };
    let plain = conv.groups == 1 && conv.dilation == [1, 1];
    (plain && top == bottom && left == right).then_some([conv.stride[0], conv.stride[1], top, left])
}

#[cfg(feature = "flex")]
mod flex {
    //! The backend extension: Flex runs [`super::kernel`], autodiff on Flex records its backward.

    use super::kernel::{ConvGeometry, conv2d_backward, conv2d_forward};
    use burn::backend::autodiff::NodeId;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{
        Autodiff, Backend, DispatchDevice, Flex, TensorMetadata, backend_extension,
    };
    use burn::nn::conv::Conv2d;
    use burn::prelude::*;
    use burn::tensor::{DType, TensorData};

    /// A 2-D convolution batched over the images (see [`super::kernel`]).
    #[backend_extension(Flex, Autodiff)]
    pub trait BatchedConv: Backend {
        /// `x` `[N, C, H, W]` by `weight` `[O, C, kh, kw]`; `params` are the stride and the
        /// padding along height and width.
        fn batched_conv2d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            params: [usize; 4],
        ) -> FloatTensor<Self>;
    }

    /// The stride and padding when `conv` on `x` can take the batched kernel.
    pub(super) fn applies(conv: &Conv2d, x: &Tensor<4>) -> Option<[usize; 4]> {
        let device = x.device().without_autodiff();
        let on_flex = matches!(device.as_dispatch(), DispatchDevice::Flex(_));
        let f32s = x.dtype() == DType::F32 && conv.weight.val().dtype() == DType::F32;
        if !(on_flex && f32s) {
            return None;
        }
        super::batched_params(conv)
    }

    pub(super) fn forward(x: Tensor<4>, weight: Tensor<4>, params: [usize; 4]) -> Tensor<4> {
        let out = <burn::backend::Dispatch as BatchedConv>::batched_conv2d(
            x.into_dispatch(),
            weight.into_dispatch(),
            params,
        );
        Tensor::from_dispatch(out)
    }

    fn geometry(x: &FlexTensor, weight: &FlexTensor, params: [usize; 4]) -> ConvGeometry {
        let [batch, in_channels, h, w] = x.shape().dims();
        let [out_channels, weight_in, kh, kw] = weight.shape().dims();
        assert_eq!(
            in_channels, weight_in,
            "batched conv2d: input has {in_channels} channels, the weight {weight_in}"
        );
        let [sh, sw, ph, pw] = params;
        ConvGeometry {
            batch,
            in_channels,
            input: [h, w],
            out_channels,
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [ph, pw],
        }
    }

    fn flex_tensor(values: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    impl BatchedConv for Flex {
        fn batched_conv2d(x: FlexTensor, weight: FlexTensor, params: [usize; 4]) -> FlexTensor {
            let g = geometry(&x, &weight, params);
            let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
            let y = conv2d_forward(x.storage::<f32>(), weight.storage::<f32>(), &g);
            let [oh, ow] = g.output();
            flex_tensor(y, [g.batch, g.out_channels, oh, ow])
        }
    }

    #[derive(Debug)]
    struct BatchedConvBackward;

    impl Backward<Flex, 2> for BatchedConvBackward {
        type State = (NodeId, NodeId, [usize; 4]);

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let [node_x, node_weight] = ops.parents;
            let grad: FlexTensor = grads.consume::<Flex>(&ops.node).to_contiguous();
            let (x_state, weight_state, params) = ops.state;
            let x: FlexTensor = checkpointer.retrieve_node_output(x_state);
            let weight: FlexTensor = checkpointer.retrieve_node_output(weight_state);
            let g = geometry(&x, &weight, params);
            let (x_c, weight_c) = (x.to_contiguous(), weight.to_contiguous());
            let (dx, dw) = conv2d_backward(
                x_c.storage::<f32>(),
                weight_c.storage::<f32>(),
                grad.storage::<f32>(),
                &g,
                node_x.is_some(),
                node_weight.is_some(),
            );
            if let (Some(node), Some(dx)) = (node_x, dx) {
                grads.register::<Flex>(node.id, flex_tensor(dx, x.shape().dims()));
            }
            if let (Some(node), Some(dw)) = (node_weight, dw) {
                grads.register::<Flex>(node.id, flex_tensor(dw, weight.shape().dims()));
            }
        }
    }

    impl<C: CheckpointStrategy> BatchedConv for Autodiff<Flex, C> {
        fn batched_conv2d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            params: [usize; 4],
        ) -> FloatTensor<Self> {
            match BatchedConvBackward
                .prepare::<C>([x.node(), weight.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let x_state = prep.checkpoint(&x);
                    let weight_state = prep.checkpoint(&weight);
                    prep.finish(
                        (x_state, weight_state, params),
                        Flex::batched_conv2d(x.into_primitive(), weight.into_primitive(), params),
                    )
                }
                OpsKind::UnTracked(prep) => prep.finish(Flex::batched_conv2d(
                    x.into_primitive(),
                    weight.into_primitive(),
                    params,
                )),
            }
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    // x, w, y, dx, dw: the names of the convolution's formulas.
    #![allow(clippy::many_single_char_names, clippy::similar_names)]

    use super::*;
    use crate::test_util::autodiff_device;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, Tolerance};

    fn layer(c: usize, o: usize, k: usize, stride: usize, pad: usize, bias: bool) -> Conv2d {
        Conv2dConfig::new([c, o], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_bias(bias)
            .init(&autodiff_device())
    }

    /// Output, input gradient and weight gradient of `conv2d` against Burn's `Conv2d::forward`
    /// on the same Flex autodiff device, for the shapes of ResNet layers and chips.
    #[test]
    fn batched_convolution_matches_burns_forward_and_gradients() {
        let device = autodiff_device();
        for (n, c, hw, o, k, stride, pad, bias) in [
            (3, 3, 16, 8, 7, 2, 3, false),
            (4, 8, 8, 8, 3, 1, 1, false),
            (5, 8, 8, 16, 3, 2, 1, false),
            (5, 8, 7, 16, 1, 2, 0, false),
            (6, 16, 1, 16, 3, 1, 1, false),
            (2, 4, 5, 6, 1, 1, 0, false),
            (3, 16, 7, 8, 3, 1, 1, true),
            (3, 8, 7, 1, 1, 1, 0, true),
        ] {
            let conv = layer(c, o, k, stride, pad, bias);
            let x = Tensor::<4>::random([n, c, hw, hw], Distribution::Normal(0.0, 1.0), &device);
            assert!(
                flex::applies(&conv, &x).is_some(),
                "the batched kernel must run here"
            );
            let probe = Tensor::<4>::random(
                conv.forward(x.clone()).dims(),
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let run = |batched: bool| {
                let x = x.clone().detach().require_grad();
                let conv = conv.clone();
                let y = if batched {
                    conv2d(&conv, x.clone())
                } else {
                    conv.forward(x.clone())
                };
                let grads = (y.clone() * probe.clone()).sum().backward();
                let dx = x.grad(&grads).unwrap();
                let dw = conv.weight.val().grad(&grads).unwrap();
                let db = conv
                    .bias
                    .as_ref()
                    .map(|b| b.val().grad(&grads).unwrap().into_data());
                (y.into_data(), dx.into_data(), dw.into_data(), db)
            };
            let (y, dx, dw, db) = run(true);
            let (y_ref, dx_ref, dw_ref, db_ref) = run(false);
            let tol = Tolerance::<f32>::absolute(1e-4).set_relative(1e-4);
            y.assert_approx_eq::<f32>(&y_ref, tol);
            dx.assert_approx_eq::<f32>(&dx_ref, tol);
            dw.assert_approx_eq::<f32>(&dw_ref, tol);
            assert_eq!(db.is_some(), bias);
            if let (Some(db), Some(db_ref)) = (db, db_ref) {
                db.assert_approx_eq::<f32>(&db_ref, tol);
            }
        }
    }

    #[test]
    fn convolutions_outside_the_kernel_take_burns_path() {
        let asymmetric = Conv2dConfig::new([2, 2], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 0, 0))
            .init(&autodiff_device());
        assert!(batched_params(&asymmetric).is_none());
        let grouped = Conv2dConfig::new([2, 2], [3, 3])
            .with_groups(2)
            .init(&autodiff_device());
        assert!(batched_params(&grouped).is_none());
        let dilated = Conv2dConfig::new([2, 2], [3, 3])
            .with_dilation([2, 2])
            .init(&autodiff_device());
        assert!(batched_params(&dilated).is_none());
    }
}
