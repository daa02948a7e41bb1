//! `agc export` writes what PyTorch reads: the committed fixture is a tiny run exported by agc,
//! with the logits and attention maps that PyTorch computed from those files alone
//! (`scripts/make_export_fixtures.sh`, `scripts/check_export.py`); agc, loading the same
//! files, must compute the same. And an export holds exactly the trained weights.

use std::path::Path;

use agc_data::progress::silent;
use agc_data::{SynthConfig, generate};
use agc_train::export::{export_run, load_export};
use agc_train::model::ModelKind;
use agc_train::run::{PipelineConfig, Run, run_all};
use agc_train::{Net, checkpoint};
use burn::prelude::*;
use safetensors::SafeTensors;

fn tensor_of(st: &SafeTensors<'_>, name: &str) -> (Vec<f32>, Vec<usize>) {
    let view = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (values, view.shape().to_vec())
}

fn outputs(net: &Net, images: Tensor<4>, meta: Option<Tensor<2>>) -> (Vec<f32>, Vec<f32>) {
    let out = net.forward(images, meta);
    let logit = out
        .logit
        .into_data()
        .convert::<f32>()
        .iter::<f32>()
        .collect();
    let attention = out.attention.map_or_else(Vec::new, |a| {
        a.into_data().convert::<f32>().iter::<f32>().collect()
    });
    (logit, attention)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Checks every model of the fixture `name` against PyTorch's outputs; returns how many.
fn check_fixture(name: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let device = Device::flex();
    let bytes = std::fs::read(dir.join("expected.safetensors")).expect("expected outputs");
    let expected = SafeTensors::deserialize(&bytes).expect("safetensors");
    let (pixels, shape) = tensor_of(&expected, "images");
    let images = Tensor::<4>::from_data(
        TensorData::new(pixels, [shape[0], shape[1], shape[2], shape[3]]),
        &device,
    );
    let (meta, meta_shape) = tensor_of(&expected, "meta");
    let meta = Tensor::<2>::from_data(
        TensorData::new(meta, [meta_shape[0], meta_shape[1]]),
        &device,
    );
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("model.json")).expect("model.json"))
            .expect("json");
    let mut checked = 0;
    for (kind, nets) in load_export(&dir, &device).expect("the export loads") {
        let meta_dim = spec["models"][kind.name()]["network"]["meta_dim"]
            .as_u64()
            .unwrap_or(0) as usize;
        for (f, net) in nets.iter().enumerate() {
            let m = (meta_dim > 0).then(|| meta.clone().slice(s![.., 0..meta_dim]));
            let (logit, attention) = outputs(net, images.clone(), m);
            let name = format!("{}.fold{f}", kind.name());
            let (want, _) = tensor_of(&expected, &format!("{name}.logit"));
            let d = max_diff(&logit, &want);
            assert!(
                d < 1e-4,
                "{name}: logits differ by {d}: agc {logit:?}, PyTorch {want:?}"
            );
            if !attention.is_empty() {
                let (want, _) = tensor_of(&expected, &format!("{name}.attention"));
                let d = max_diff(&attention, &want);
                assert!(d < 1e-5, "{name}: attention differs by {d}");
            }
            checked += 1;
        }
    }
    checked
}

#[test]
fn pytorch_computes_from_an_export_what_agc_computes() {
    assert_eq!(
        check_fixture("export"),
        2,
        "the fixture holds a MetaResNet and a ChipNet"
    );
}

#[test]
fn pytorch_computes_the_masked_and_prior_led_attention_that_agc_computes() {
    let spec = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/export-attention/model.json"),
    )
    .expect("model.json");
    let spec: serde_json::Value = serde_json::from_str(&spec).expect("json");
    let chipnet = &spec["models"]["chipnet"]["network"];
    assert_eq!(chipnet["attention_kernel"], 1);
    assert!(chipnet["field_mask"].is_object());
    assert_eq!(chipnet["contrast_prior"], 2.0);
    assert_eq!(check_fixture("export-attention"), 1);
}

#[test]
fn an_export_holds_the_trained_weights() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let synth = SynthConfig {
        train: 24,
        test: 4,
        positive_rate: 0.5,
        min_side: 96,
        max_side: 128,
        seed: 5,
        ..SynthConfig::default()
    };
    generate(&synth, &data, &agc_data::Silent).expect("data");
    let mut config = PipelineConfig::demo(data);
    config.image_size = 32;
    config.model.chip = 8;
    config.folds = 2;
    config.schedules.for_each(|s| {
        s.max_epochs = 1;
        s.patience = 1;
        s.batch_size = 8;
        s.tta = 0;
    });
    let run_dir = tmp.path().join("run");
    let run = Run::start(&run_dir, &config, &silent()).expect("run");
    run_all(&run, &[Device::flex().autodiff()]).expect("trains");
    let out = tmp.path().join("export");
    let summary = export_run(&run_dir, &out, &Device::flex()).expect("exports");
    assert_eq!(
        summary.weights.len(),
        3 * 2 + 2,
        "resnet, chipnet, cropnet, oracle × 2 folds"
    );
    assert!(
        export_run(&run_dir, &out, &Device::flex()).is_err(),
        "an existing folder is refused"
    );

    let device = Device::flex();
    let images = Tensor::<4>::random([2, 3, 32, 32], burn::tensor::Distribution::Default, &device);
    let meta_dim = run.encoder.dim();
    let meta = Tensor::<2>::ones([2, meta_dim], &device);
    for (kind, nets) in load_export(&out, &device).expect("loads") {
        for (f, exported) in nets.iter().enumerate() {
            let trained: Net = config.model.init(kind, meta_dim, &device).expect("init");
            let best = run_dir.join(format!("models/{}/fold{f}/best.bpk", kind.name()));
            let trained = checkpoint::load(trained, &best)
                .expect("checkpoint")
                .valid();
            let m = kind.is_meta_resnet().then(|| meta.clone());
            let (a, att_a) = outputs(&trained, images.clone(), m.clone());
            let (b, att_b) = outputs(exported, images.clone(), m);
            assert_eq!(a, b, "{kind} fold {f}: logits");
            assert_eq!(att_a, att_b, "{kind} fold {f}: attention");
        }
        assert_ne!(kind, ModelKind::Attnresnet);
    }
}
