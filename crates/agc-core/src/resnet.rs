//! ResNet backbones whose parameter names equal torchvision's state-dict keys.
//!
//! The module tree mirrors `torchvision.models.resnet.ResNet`: `conv1`, `bn1`, `layer1`…`layer4`
//! (each a list of residual blocks with `conv1`, `bn1`, … and an optional `downsample`) and an
//! optional `fc`. Only `downsample.0`/`downsample.1` are named `downsample.conv`/`downsample.bn`
//! here, which [`crate::weights`] remaps when it loads a torchvision checkpoint.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::conv::conv2d;
use crate::norm::batch_norm;
use crate::pool::max_pool2d;

/// The residual block of a ResNet.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34); expansion 1.
    Basic,
    /// 1×1 → 3×3 → 1×1 convolutions (ResNet-50/101/152); expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// How many times wider a block's output is than its `planes`.
    pub fn expansion(self) -> usize {
        match self {
            Self::Basic => 1,
            Self::Bottleneck => 4,
        }
    }
}

/// Configuration of a [`ResNet`].
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// Number of residual blocks in each of the four stages.
    pub layers: [usize; 4],
    /// Residual block kind.
    #[config(default = "BlockKind::Basic")]
    pub block: BlockKind,
    /// Channels of the stem and of the first stage's `planes`; the stages use `width`, `2·width`,
    /// `4·width` and `8·width` planes. torchvision's ResNets use 64.
    #[config(default = 64)]
    pub width: usize,
    /// Channels of the input image.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Classes of the `fc` head, or `None` for a backbone without one.
    #[config(default = "None")]
    pub num_classes: Option<usize>,
}

impl ResNetConfig {
    /// ResNet-18 (basic blocks `[2, 2, 2, 2]`), without a classifier head.
    pub fn resnet18() -> Self {
        Self::new([2, 2, 2, 2])
    }

    /// ResNet-34 (basic blocks `[3, 4, 6, 3]`), without a classifier head.
    pub fn resnet34() -> Self {
        Self::new([3, 4, 6, 3])
    }

    /// ResNet-50 (bottleneck blocks `[3, 4, 6, 3]`), without a classifier head.
    pub fn resnet50() -> Self {
        Self::new([3, 4, 6, 3]).with_block(BlockKind::Bottleneck)
    }

    /// ResNet-101 (bottleneck blocks `[3, 4, 23, 3]`), without a classifier head.
    pub fn resnet101() -> Self {
        Self::new([3, 4, 23, 3]).with_block(BlockKind::Bottleneck)
    }

    /// ResNet-152 (bottleneck blocks `[3, 8, 36, 3]`), without a classifier head.
    pub fn resnet152() -> Self {
        Self::new([3, 8, 36, 3]).with_block(BlockKind::Bottleneck)
    }

    /// A tiny ResNet for tests, benches and CPU demos: basic blocks `[1, 1, 1, 1]`, width 8
    /// (64-dimensional embedding, about 78 k parameters).
    pub fn tiny() -> Self {
        Self::new([1, 1, 1, 1]).with_width(8)
    }

    /// A small ResNet for CPU runs: basic blocks `[1, 1, 1, 1]`, width 16 (128-dimensional
    /// embedding, about 310 k parameters), twice as wide as [`Self::tiny`].
    pub fn small() -> Self {
        Self::new([1, 1, 1, 1]).with_width(16)
    }

    /// Looks a preset up by name: `resnet18`, `resnet34`, `resnet50`, `resnet101`, `resnet152`,
    /// `small` or `tiny`; `wN` is basic blocks `[1, 1, 1, 1]` of width N (`w8` is `tiny`, `w16`
    /// `small`, `w64` torchvision's `ResNet(BasicBlock, [1, 1, 1, 1])`), and `NAME-wN` is preset
    /// NAME at width N (`resnet18-w32`). A width of 0 or an unknown name gives `None`.
    pub fn preset(name: &str) -> Option<Self> {
        let width = |digits: &str| {
            digits
                .parse::<usize>()
                .ok()
                .filter(|&w| w > 0 && digits.bytes().all(|b| b.is_ascii_digit()))
        };
        if let Some((base, digits)) = name.rsplit_once("-w") {
            let w = width(digits)?;
            return Self::preset(base).map(|c| c.with_width(w));
        }
        if let Some(digits) = name.strip_prefix('w') {
            return width(digits).map(|w| Self::new([1, 1, 1, 1]).with_width(w));
        }
        Some(match name {
            "resnet18" => Self::resnet18(),
            "resnet34" => Self::resnet34(),
            "resnet50" => Self::resnet50(),
            "resnet101" => Self::resnet101(),
            "resnet152" => Self::resnet152(),
            "small" => Self::small(),
            "tiny" => Self::tiny(),
            _ => return None,
        })
    }

    /// Channels of the last feature map, which is also the length of the pooled embedding.
    pub fn embed_dim(&self) -> usize {
        8 * self.width * self.block.expansion()
    }

    /// Builds the network with torchvision's initialisation: Kaiming-normal (fan-out, ReLU gain)
    /// convolutions, batch norms with weight 1 and bias 0, and PyTorch's default for `fc`.
    ///
    /// # Panics
    /// If `width`, `in_channels`, `num_classes` or a stage's block count is zero.
    pub fn init(&self, device: &Device) -> ResNet {
        assert!(self.width > 0, "ResNet width must be positive");
        assert!(self.in_channels > 0, "ResNet in_channels must be positive");
        assert!(
            self.layers.iter().all(|&n| n > 0),
            "every ResNet stage needs at least one block, got {:?}",
            self.layers
        );
        assert!(
            self.num_classes != Some(0),
            "a ResNet head needs at least one class"
        );
        let w = self.width;
        let expansion = self.block.expansion();
        let conv1 = conv(self.in_channels, w, 7, 2, device);
        let bn1 = BatchNormConfig::new(w).init(device);
        let maxpool = MaxPool2dConfig::new([3, 3])
            .with_strides([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init();

        let mut in_planes = w;
        let mut stage = |planes: usize, blocks: usize, stride: usize| {
            (0..blocks)
                .map(|i| {
                    let stride = if i == 0 { stride } else { 1 };
                    let block = ResBlock::new(self.block, in_planes, planes, stride, device);
                    in_planes = planes * expansion;
                    block
                })
                .collect::<Vec<_>>()
        };
        let layer1 = stage(w, self.layers[0], 1);
        let layer2 = stage(2 * w, self.layers[1], 2);
        let layer3 = stage(4 * w, self.layers[2], 2);
        let layer4 = stage(8 * w, self.layers[3], 2);

        let embed_dim = self.embed_dim();
        let fc = self
            .num_classes
            .map(|classes| LinearConfig::new(embed_dim, classes).init(device));
        ResNet {
            conv1,
            bn1,
            maxpool,
            layer1,
            layer2,
            layer3,
            layer4,
            fc,
            embed_dim,
        }
    }
}

/// A convolution as torchvision's ResNet builds it: no bias, padding `k / 2`, Kaiming-normal
/// fan-out initialisation with the ReLU gain.
fn conv(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    device: &Device,
) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new([in_channels, out_channels], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: true,
        })
        .init(device)
}

/// The projection shortcut of a block whose shape changes (torchvision's `downsample.0/1`).
#[derive(Module, Debug)]
pub struct Downsample {
    /// 1×1 strided convolution.
    pub conv: Conv2d,
    /// Batch norm after it.
    pub bn: BatchNorm,
}

impl Downsample {
    fn new(in_channels: usize, out_channels: usize, stride: usize, device: &Device) -> Self {
        Self {
            conv: conv(in_channels, out_channels, 1, stride, device),
            bn: BatchNormConfig::new(out_channels).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        batch_norm(&self.bn, conv2d(&self.conv, x))
    }
}

/// The shortcut of a block: the identity, or the projection when the shape changes.
fn shortcut(downsample: Option<&Downsample>, x: Tensor<4>) -> Tensor<4> {
    match downsample {
        Some(d) => d.forward(x),
        None => x,
    }
}

/// Two 3×3 convolutions with a residual connection (torchvision's `BasicBlock`).
#[derive(Module, Debug)]
pub struct BasicBlock {
    /// First 3×3 convolution (carries the block's stride).
    pub conv1: Conv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm,
    /// Second 3×3 convolution.
    pub conv2: Conv2d,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm,
    /// Projection shortcut, where the shape changes.
    pub downsample: Option<Downsample>,
}

impl BasicBlock {
    /// # Shapes
    /// - `x`: `[batch, in_channels, h, w]`
    /// - output: `[batch, planes, h / stride, w / stride]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = shortcut(self.downsample.as_ref(), x.clone());
        let out = relu(batch_norm(&self.bn1, conv2d(&self.conv1, x)));
        let out = batch_norm(&self.bn2, conv2d(&self.conv2, out));
        relu(out + identity)
    }
}

/// 1×1 → 3×3 → 1×1 convolutions with a residual connection (torchvision's `Bottleneck`, stride
/// on the 3×3 convolution as in torchvision's "ResNet v1.5").
#[derive(Module, Debug)]
pub struct Bottleneck {
    /// 1×1 reduction.
    pub conv1: Conv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm,
    /// 3×3 convolution (carries the block's stride).
    pub conv2: Conv2d,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm,
    /// 1×1 expansion to `4 · planes`.
    pub conv3: Conv2d,
    /// Batch norm after `conv3`.
    pub bn3: BatchNorm,
    /// Projection shortcut, where the shape changes.
    pub downsample: Option<Downsample>,
}

impl Bottleneck {
    /// # Shapes
    /// - `x`: `[batch, in_channels, h, w]`
    /// - output: `[batch, 4 · planes, h / stride, w / stride]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = shortcut(self.downsample.as_ref(), x.clone());
        let out = relu(batch_norm(&self.bn1, conv2d(&self.conv1, x)));
        let out = relu(batch_norm(&self.bn2, conv2d(&self.conv2, out)));
        let out = batch_norm(&self.bn3, conv2d(&self.conv3, out));
        relu(out + identity)
    }
}

/// A residual block of either kind.
// Boxing the larger variant would put a `Box` in every module path; blocks are few.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ResBlock {
    /// See [`BasicBlock`].
    Basic(BasicBlock),
    /// See [`Bottleneck`].
    Bottleneck(Bottleneck),
}

impl ResBlock {
    fn new(
        kind: BlockKind,
        in_planes: usize,
        planes: usize,
        stride: usize,
        device: &Device,
    ) -> Self {
        let out = planes * kind.expansion();
        let downsample = (stride != 1 || in_planes != out)
            .then(|| Downsample::new(in_planes, out, stride, device));
        let bn = |c| BatchNormConfig::new(c).init(device);
        match kind {
            BlockKind::Basic => Self::Basic(BasicBlock {
                conv1: conv(in_planes, planes, 3, stride, device),
                bn1: bn(planes),
                conv2: conv(planes, planes, 3, 1, device),
                bn2: bn(planes),
                downsample,
            }),
            BlockKind::Bottleneck => Self::Bottleneck(Bottleneck {
                conv1: conv(in_planes, planes, 1, 1, device),
                bn1: bn(planes),
                conv2: conv(planes, planes, 3, stride, device),
                bn2: bn(planes),
                conv3: conv(planes, out, 1, 1, device),
                bn3: bn(out),
                downsample,
            }),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, in_channels, h, w]`
    /// - output: `[batch, out_channels, h / stride, w / stride]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::Basic(block) => block.forward(x),
            Self::Bottleneck(block) => block.forward(x),
        }
    }
}

/// A ResNet (He et al., 2016) laid out like torchvision's, so its weights load directly.
#[derive(Module, Debug)]
pub struct ResNet {
    /// 7×7 stride-2 stem convolution.
    pub conv1: Conv2d,
    /// Batch norm after the stem.
    pub bn1: BatchNorm,
    /// 3×3 stride-2 max pool after the stem.
    pub maxpool: MaxPool2d,
    /// Stage 1 (stride 1).
    pub layer1: Vec<ResBlock>,
    /// Stage 2 (stride 2).
    pub layer2: Vec<ResBlock>,
    /// Stage 3 (stride 2).
    pub layer3: Vec<ResBlock>,
    /// Stage 4 (stride 2).
    pub layer4: Vec<ResBlock>,
    /// Classifier head, absent on a backbone.
    pub fc: Option<Linear>,
    embed_dim: usize,
}

impl ResNet {
    /// Channels of the last feature map, which is also the length of the pooled embedding.
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// The unpooled feature map of the last stage (total stride 32).
    ///
    /// # Shapes
    /// - `images`: `[batch, in_channels, height, width]`
    /// - output: `[batch, embed_dim, ⌈height / 32⌉, ⌈width / 32⌉]`
    pub fn features(&self, images: Tensor<4>) -> Tensor<4> {
        // Stem: conv → BN → ReLU → max pool (stride 4 in all).
        let x = relu(batch_norm(&self.bn1, conv2d(&self.conv1, images)));
        let x = max_pool2d(&self.maxpool, x);
        // Four residual stages.
        [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .into_iter()
            .flatten()
            .fold(x, |x, block| block.forward(x))
    }

    /// The global-average-pooled embedding.
    ///
    /// # Shapes
    /// - `images`: `[batch, in_channels, height, width]`
    /// - output: `[batch, embed_dim]`
    pub fn embed(&self, images: Tensor<4>) -> Tensor<2> {
        global_avg_pool(self.features(images))
    }

    /// The classifier's logits, or the embedding where the network has no `fc` head.
    ///
    /// # Shapes
    /// - `images`: `[batch, in_channels, height, width]`
    /// - output: `[batch, num_classes]`, or `[batch, embed_dim]` without a head
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let embedding = self.embed(images);
        match &self.fc {
            Some(fc) => fc.forward(embedding),
            None => embedding,
        }
    }
}

/// Mean over the spatial positions of a feature map.
///
/// # Shapes
/// - `maps`: `[batch, channels, h, w]`
/// - output: `[batch, channels]`
pub fn global_avg_pool(maps: Tensor<4>) -> Tensor<2> {
    maps.flatten::<3>(2, 3).mean_dim(2).squeeze_dim(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::device;

    #[test]
    fn presets_have_torchvision_parameter_counts() {
        let dev = device();
        // torchvision counts exclude the BN running mean and var that Burn counts as parameters.
        let cases = [
            (
                ResNetConfig::resnet18().with_num_classes(Some(1000)),
                11_689_512,
            ),
            (
                ResNetConfig::resnet50().with_num_classes(Some(1000)),
                25_557_032,
            ),
        ];
        for (config, torchvision) in cases {
            let model: ResNet = config.init(&dev);
            let bn_buffers: usize = bn_channels(&config) * 2;
            assert_eq!(model.num_params() - bn_buffers, torchvision, "{config:?}");
        }
    }

    /// Channels of every batch norm of a configuration, computed from the architecture.
    fn bn_channels(config: &ResNetConfig) -> usize {
        let e = config.block.expansion();
        let mut total = config.width;
        let mut in_planes = config.width;
        for (stage, &blocks) in config.layers.iter().enumerate() {
            let planes = config.width << stage;
            for i in 0..blocks {
                total += match config.block {
                    BlockKind::Basic => 2 * planes,
                    BlockKind::Bottleneck => 2 * planes + planes * e,
                };
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                if stride != 1 || in_planes != planes * e {
                    total += planes * e;
                }
                in_planes = planes * e;
            }
        }
        total
    }

    #[test]
    fn feature_map_has_stride_32_and_embedding_matches() {
        let dev = device();
        let model: ResNet = ResNetConfig::tiny().init(&dev);
        let x = Tensor::<4>::random([2, 3, 64, 96], burn::tensor::Distribution::Default, &dev);
        let maps = model.features(x.clone());
        assert_eq!(maps.dims(), [2, 64, 2, 3]);
        let emb = model.embed(x.clone());
        assert_eq!(emb.dims(), [2, 64]);
        // Without a head, forward is the embedding.
        model
            .forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&emb.into_data(), burn::tensor::Tolerance::default());
    }

    #[test]
    fn bottleneck_stage_widths_expand_by_four() {
        let dev = device();
        let config = ResNetConfig::new([1, 1, 1, 1])
            .with_block(BlockKind::Bottleneck)
            .with_width(4)
            .with_num_classes(Some(5));
        let model: ResNet = config.init(&dev);
        assert_eq!(model.embed_dim(), 128);
        let x = Tensor::<4>::zeros([1, 3, 32, 32], &dev);
        assert_eq!(model.forward(x).dims(), [1, 5]);
        // Every stage's first block changes the channel count, so each has a projection.
        for layer in [&model.layer1, &model.layer2, &model.layer3, &model.layer4] {
            match &layer[0] {
                ResBlock::Bottleneck(b) => assert!(b.downsample.is_some()),
                ResBlock::Basic(_) => panic!("expected bottleneck blocks"),
            }
        }
    }

    #[test]
    fn convolutions_use_kaiming_normal_fan_out() {
        let dev = device();
        let model: ResNet = ResNetConfig::resnet18().init(&dev);
        let ResBlock::Basic(block) = &model.layer1[0] else {
            panic!("resnet18 has basic blocks")
        };
        let w = block.conv1.weight.val();
        // fan_out = 64 · 3 · 3, gain √2 → std = √(2 / 576) ≈ 0.0589.
        let std = w.flatten::<1>(0, 3).var(0).sqrt().into_scalar::<f64>();
        assert!((std - (2.0f64 / 576.0).sqrt()).abs() < 0.004, "std {std}");
    }

    #[test]
    fn preset_names_resolve() {
        assert_eq!(
            ResNetConfig::preset("resnet50").map(|c| c.embed_dim()),
            Some(2048)
        );
        assert_eq!(
            ResNetConfig::preset("tiny").map(|c| c.embed_dim()),
            Some(64)
        );
        assert_eq!(
            ResNetConfig::preset("small").map(|c| c.embed_dim()),
            Some(128)
        );
        assert!(ResNetConfig::preset("vgg16").is_none());
    }

    #[test]
    fn width_names_set_the_width_of_one_block_per_stage_or_of_a_preset() {
        let w64 = ResNetConfig::preset("w64").expect("w64");
        assert_eq!(
            (w64.layers, w64.width, w64.embed_dim()),
            ([1, 1, 1, 1], 64, 512)
        );
        let shape = |c: ResNetConfig| (c.layers, c.width);
        assert_eq!(
            ResNetConfig::preset("w8").map(shape),
            Some(shape(ResNetConfig::tiny()))
        );
        assert_eq!(
            ResNetConfig::preset("w16").map(shape),
            Some(shape(ResNetConfig::small()))
        );
        let r50 = ResNetConfig::preset("resnet50-w32").expect("resnet50-w32");
        assert_eq!(
            (r50.layers, r50.width, r50.embed_dim()),
            ([3, 4, 6, 3], 32, 1024)
        );
        for bad in [
            "w0",
            "w",
            "w-3",
            "w+8",
            "w1.5",
            "resnet18-w0",
            "vgg-w8",
            "small-w",
        ] {
            assert!(ResNetConfig::preset(bad).is_none(), "{bad}");
        }
    }
}
