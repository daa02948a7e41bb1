//! agc's ResNet loads torchvision weights and reproduces torchvision's eval-mode outputs.
//!
//! The fixtures come from `scripts/make_resnet_fixtures.py` (torch 2.15, torchvision 0.29): a
//! BasicBlock ResNet (`[2, 2, 1, 1]`, width 8) and a Bottleneck ResNet (`[1, 2, 1, 1]`,
//! width 4), both with projection shortcuts and randomised batch-norm statistics, and the
//! torchvision outputs for one `[2, 3, 64, 96]` input. Relative error = max |agc − torch| /
//! max |torch|, over the whole tensor.

use std::path::PathBuf;

use agc_core::{BlockKind, LoadOptions, ResNet, ResNetConfig, WeightsError};
use burn::prelude::*;
use safetensors::SafeTensors;

const TOLERANCE: f64 = 1e-4;
/// On CUDA, f32 matrix products may run in TF32: an H200 gave 3.5e-3 on the basic features.
#[cfg(feature = "cuda")]
const CUDA_TOLERANCE: f64 = 1e-2;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A tensor of `resnet_io.safetensors` as shape and values.
fn reference(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture("resnet_io.safetensors")).expect("fixture present");
    let file = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let view = file.tensor(name).expect("tensor present");
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (view.shape().to_vec(), values)
}

fn tensor<const D: usize>(name: &str, device: &Device) -> Tensor<D> {
    let (shape, values) = reference(name);
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn relative_error<const D: usize>(ours: Tensor<D>, name: &str) -> f64 {
    let (shape, expected) = reference(name);
    assert_eq!(ours.dims().to_vec(), shape, "{name}: shape");
    let ours = ours.into_data().try_to_vec::<f32>().expect("f32 output");
    let diff = ours
        .iter()
        .zip(&expected)
        .map(|(a, b)| f64::from((a - b).abs()))
        .fold(0.0, f64::max);
    let scale = expected
        .iter()
        .map(|v| f64::from(v.abs()))
        .fold(0.0, f64::max);
    diff / scale
}

fn config(kind: &str, head: bool) -> ResNetConfig {
    let config = match kind {
        "basic" => ResNetConfig::new([2, 2, 1, 1]).with_width(8),
        "bottleneck" => ResNetConfig::new([1, 2, 1, 1])
            .with_width(4)
            .with_block(BlockKind::Bottleneck),
        _ => unreachable!("two fixtures"),
    };
    config.with_num_classes(head.then_some(10))
}

fn options(kind: &str) -> LoadOptions {
    // The bottleneck .pth nests its state dict as {"state_dict": ..., "epoch": 3}.
    LoadOptions {
        top_level_key: (kind == "bottleneck").then(|| "state_dict".to_string()),
        ..LoadOptions::default()
    }
}

fn check_parity(kind: &str, format: &str) {
    check_parity_within(kind, format, TOLERANCE, &Device::flex());
}

fn check_parity_within(kind: &str, format: &str, tolerance: f64, device: &Device) {
    let device = device.clone();
    let mut model: ResNet = config(kind, true).init(&device);
    let opts = if format == "pth" {
        options(kind)
    } else {
        LoadOptions::default()
    };
    let report = model
        .load_torchvision(fixture(&format!("resnet_{kind}.{format}")), &opts)
        .expect("weights load");
    assert!(
        report.unused.is_empty(),
        "{kind}.{format}: unused {:?}",
        report.unused
    );

    let x = tensor::<4>("input", &device);
    let checks = [
        (
            "features",
            relative_error(model.features(x.clone()), &format!("{kind}.features")),
        ),
        (
            "embedding",
            relative_error(model.embed(x.clone()), &format!("{kind}.embedding")),
        ),
        (
            "logits",
            relative_error(model.forward(x), &format!("{kind}.logits")),
        ),
    ];
    for (what, err) in checks {
        eprintln!("{kind}.{format} {what}: relative error {err:.2e}");
        assert!(
            err <= tolerance,
            "{kind}.{format} {what}: relative error {err:e}"
        );
    }
}

#[test]
fn basic_block_resnet_from_pth_matches_torchvision() {
    check_parity("basic", "pth");
}

#[test]
fn basic_block_resnet_from_safetensors_matches_torchvision() {
    check_parity("basic", "safetensors");
}

#[test]
fn bottleneck_resnet_from_nested_pth_matches_torchvision() {
    check_parity("bottleneck", "pth");
}

#[test]
fn bottleneck_resnet_from_safetensors_matches_torchvision() {
    check_parity("bottleneck", "safetensors");
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_backend_matches_torchvision_too() {
    let device = Device::cuda(0);
    check_parity_within("basic", "pth", CUDA_TOLERANCE, &device);
    check_parity_within("bottleneck", "safetensors", CUDA_TOLERANCE, &device);
}

#[test]
fn backbone_without_head_loads_and_reports_fc_unused() {
    let device = Device::flex();
    for format in ["pth", "safetensors"] {
        let mut model: ResNet = config("basic", false).init(&device);
        let report = model
            .load_torchvision(
                fixture(&format!("resnet_basic.{format}")),
                &LoadOptions::default(),
            )
            .expect("backbone loads");
        let mut unused = report.unused.clone();
        unused.sort();
        assert_eq!(unused, ["fc.bias", "fc.weight"], "{format}");
        let x = tensor::<4>("input", &device);
        let err = relative_error(model.embed(x), "basic.embedding");
        assert!(err <= TOLERANCE, "{format}: {err:e}");
    }
}

#[test]
fn skip_head_keeps_a_differently_sized_head() {
    let device = Device::flex();
    let mut model: ResNet = config("basic", false)
        .with_num_classes(Some(1))
        .init(&device);
    let fc_before = model.fc.as_ref().expect("head").weight.val().into_data();
    let options = LoadOptions {
        skip_head: true,
        ..LoadOptions::default()
    };
    model
        .load_torchvision(fixture("resnet_basic.pth"), &options)
        .expect("loads");
    let fc_after = model
        .fc
        .as_ref()
        .expect("head kept")
        .weight
        .val()
        .into_data();
    assert_eq!(fc_before, fc_after);
    let x = tensor::<4>("input", &device);
    assert!(relative_error(model.embed(x), "basic.embedding") <= TOLERANCE);
}

#[test]
fn wrong_architecture_names_the_mis_shaped_tensor_and_leaves_the_model_unchanged() {
    let device = Device::flex();
    let mut model: ResNet = config("basic", true).with_width(16).init(&device);
    let before = model.conv1.weight.val().into_data();
    let err = model
        .load_torchvision(fixture("resnet_basic.safetensors"), &LoadOptions::default())
        .expect_err("widths differ");
    match &err {
        WeightsError::ShapeMismatch {
            key,
            expected,
            found,
            ..
        } => {
            assert!(!key.is_empty());
            assert_ne!(expected, found);
        }
        other => panic!("expected a shape mismatch, got {other}"),
    }
    assert!(
        err.to_string().contains("resnet_basic.safetensors"),
        "{err}"
    );
    assert_eq!(
        model.conv1.weight.val().into_data(),
        before,
        "model untouched on error"
    );
}

#[test]
fn missing_blocks_are_named() {
    let device = Device::flex();
    let mut model: ResNet = ResNetConfig::new([2, 2, 1, 2]).with_width(8).init(&device);
    let err = model
        .load_torchvision(fixture("resnet_basic.pth"), &LoadOptions::default())
        .expect_err("layer4.1 is not in the file");
    match err {
        WeightsError::Missing { keys, .. } => {
            assert!(keys.iter().all(|k| k.starts_with("layer4.1.")), "{keys:?}");
            assert!(keys.iter().any(|k| k.contains("conv1.weight")), "{keys:?}");
        }
        other => panic!("expected missing tensors, got {other}"),
    }
}

#[test]
fn unreadable_or_unknown_files_are_errors_naming_the_path() {
    let device = Device::flex();
    let mut model: ResNet = config("basic", true).init(&device);
    let err = model
        .load_torchvision("no/such/file.pth", &LoadOptions::default())
        .expect_err("missing");
    assert!(
        matches!(err, WeightsError::NotFound { .. })
            && err.to_string().contains("no/such/file.pth")
    );
    let err = model
        .load_torchvision(fixture("resnet_fixtures.json"), &LoadOptions::default())
        .expect_err("json is not a weight format");
    assert!(matches!(err, WeightsError::UnknownFormat { .. }), "{err}");

    let dir = std::env::temp_dir().join(format!("agc-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let corrupt = dir.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"not a safetensors file").expect("write");
    let err = model
        .load_torchvision(&corrupt, &LoadOptions::default())
        .expect_err("corrupt");
    assert!(
        matches!(err, WeightsError::Read { .. }) && err.to_string().contains("corrupt.safetensors"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_deeper_file_is_an_error_naming_its_unused_tensors_unless_allowed() {
    // The file has two blocks in layer2 ([2, 2, 1, 1]); this model has one, as a ResNet-18 has
    // fewer blocks than a ResNet-34 file.
    let device = Device::flex();
    let shallower = || {
        ResNetConfig::new([2, 1, 1, 1])
            .with_width(8)
            .with_num_classes(Some(10))
    };
    for format in ["pth", "safetensors"] {
        let name = format!("resnet_basic.{format}");
        let mut model: ResNet = shallower().init(&device);
        let before = model.conv1.weight.val().into_data();
        let err = model
            .load_torchvision(fixture(&name), &LoadOptions::default())
            .expect_err("layer2.1 has no place in the model");
        match &err {
            WeightsError::Unused { count, first, .. } => {
                assert!(*count > 0 && first.len() == (*count).min(5), "{err}");
                assert!(first.iter().all(|k| k.starts_with("layer2.1.")), "{err}");
            }
            other => panic!("{format}: expected unused tensors, got {other}"),
        }
        assert!(err.to_string().contains(&name), "{err}");
        assert_eq!(model.conv1.weight.val().into_data(), before, "unchanged");

        let allowed = LoadOptions {
            allow_unused: true,
            ..LoadOptions::default()
        };
        let report = model
            .load_torchvision(fixture(&name), &allowed)
            .expect("allowed");
        assert!(
            !report.unused.is_empty() && report.unused.iter().all(|k| k.starts_with("layer2.1.")),
            "{:?}",
            report.unused
        );
    }
}

#[test]
fn an_extra_tensor_in_a_safetensors_file_is_an_error() {
    let bytes = std::fs::read(fixture("resnet_basic.safetensors")).expect("fixture present");
    let file = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        file.tensors().into_iter().collect();
    let extra = [0_u8; 16];
    tensors.push((
        "projection.weight".to_string(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &extra)
            .expect("view"),
    ));
    let dir = std::env::temp_dir().join(format!("agc-weights-extra-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("extra.safetensors");
    safetensors::serialize_to_file(tensors, None, &path).expect("write");

    let device = Device::flex();
    let mut model: ResNet = config("basic", true).init(&device);
    let err = model
        .load_torchvision(&path, &LoadOptions::default())
        .expect_err("projection.weight is not a ResNet tensor");
    assert!(
        matches!(&err, WeightsError::Unused { count: 1, first, .. } if first == &["projection.weight"])
            && err.to_string().contains("extra.safetensors"),
        "{err}"
    );
    // A headless model still ignores the file's fc.* but not the extra tensor.
    let mut backbone: ResNet = config("basic", false).init(&device);
    let err = backbone
        .load_torchvision(&path, &LoadOptions::default())
        .expect_err("still unused");
    assert!(
        matches!(&err, WeightsError::Unused { count: 1, .. }),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
