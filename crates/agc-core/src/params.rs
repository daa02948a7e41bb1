//! Burn 0.22 initialises parameters lazily: a fresh module holds recipes, not values, until a
//! parameter is first read. Moving such a module to another device (`to_device`, `fork`) moves
//! the recipe, so the values are drawn there, from that device's random generator, at whatever
//! point the parameter is first read. [`initialize_params`] draws them now, where the module was built.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

/// Initialises every float parameter of `module` in place, on the device it was built for.
///
/// Call it before moving a freshly built model to another device, or before cloning it into
/// copies that must start equal (data-parallel training): otherwise each copy, and each
/// device, starts from different random weights.
pub fn initialize_params<M: Module>(module: &M) {
    struct Touch;
    impl ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::device;
    use burn::nn::{Linear, LinearConfig};

    fn weights(layer: &Linear) -> Vec<f32> {
        layer
            .weight
            .val()
            .into_data()
            .convert::<f32>()
            .iter::<f32>()
            .collect()
    }

    #[test]
    fn weights_are_drawn_when_built_only_once_initialised() {
        let dev = device();
        let build = |initialise: bool| {
            dev.seed(11);
            let layer = LinearConfig::new(16, 16).init(&dev);
            if initialise {
                initialize_params(&layer);
            }
            // Anything that draws from the generator before the weights are first read, such
            // as the training batch.
            let _ = Tensor::<1>::random([8], burn::tensor::Distribution::Default, &dev);
            weights(&layer.to_device(&dev))
        };
        let (lazy, eager, again) = (build(false), build(true), build(true));
        assert_eq!(eager, again, "initialised weights follow the seed");
        assert!(
            lazy.iter().zip(&eager).any(|(a, b)| (a - b).abs() > 1e-6),
            "a lazy layer draws its weights when first read, after the batch"
        );
    }
}
