//! A model trained data-parallel on two devices runs the whole epoch loop (shards, all-reduce,
//! validation, checkpoints, predictions) and resumes from its checkpoints. Both peers share the
//! CPU's one Flex device here; on a machine with several GPUs they are `cuda:0`, `cuda:1`, ...

use agc_data::progress::silent;
use agc_data::{SynthConfig, generate};
use agc_train::ModelKind;
use agc_train::run::{PipelineConfig, Run};

use burn::prelude::Device;

#[test]
fn a_model_trains_data_parallel_on_two_devices_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let synth = SynthConfig {
        train: 32,
        test: 8,
        positive_rate: 0.5,
        min_side: 96,
        max_side: 128,
        seed: 3,
        ..SynthConfig::default()
    };
    generate(&synth, &data, &agc_data::Silent).expect("synthetic data");
    let mut config = PipelineConfig::new(data);
    config.image_size = 64;
    config.folds = 2;
    config.model.backbone = "tiny".into();
    config.model.chip = 16;
    config.schedules.resnet.max_epochs = 2;
    config.schedules.resnet.patience = 2;
    config.schedules.resnet.batch_size = 8;
    config.schedules.resnet.tta = 1;
    let run_dir = dir.path().join("run");
    let run = Run::start(&run_dir, &config, &silent()).expect("start the run");
    let device = Device::flex().autodiff();
    let devices = [device.clone(), device];

    let predictions = run
        .train(ModelKind::Resnet, &devices)
        .expect("data-parallel training");
    assert_eq!(predictions.oof.len(), 32);
    assert_eq!(predictions.test.len(), 8);
    assert!(
        predictions
            .oof
            .iter()
            .chain(&predictions.test)
            .all(|p| (0.0..=1.0).contains(p)),
        "probabilities in [0, 1]"
    );
    for fold in 0..2 {
        let fold_dir = run_dir.join(format!("models/resnet/fold{fold}"));
        let state = std::fs::read_to_string(fold_dir.join("state.json")).expect("state.json");
        let state: serde_json::Value = serde_json::from_str(&state).expect("json");
        let history = state["history"].as_array().expect("history");
        assert_eq!(history.len(), 2, "fold {fold}: two epochs");
        for epoch in history {
            // 16 training images per fold, balanced: two steps of 8, 4 on each device.
            let loss = epoch["train_loss"].as_f64().expect("train loss");
            assert!(loss.is_finite() && loss > 0.0, "fold {fold}: loss {loss}");
        }
        for file in [
            "best.bpk",
            "last.bpk",
            "optim.backbone.bpk",
            "optim.head.bpk",
            "predictions.json",
        ] {
            assert!(fold_dir.join(file).is_file(), "fold {fold}: {file}");
        }
    }

    // Resuming after the last epoch of fold 1: the run reloads its checkpoints, trains the
    // missing epoch on both devices again and finishes.
    let fold1 = run_dir.join("models/resnet/fold1");
    let state_path = fold1.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).expect("state")).expect("json");
    state["history"].as_array_mut().expect("history").pop();
    state["finished"] = serde_json::Value::Bool(false);
    std::fs::write(&state_path, serde_json::to_vec(&state).expect("json")).expect("write");
    std::fs::remove_file(fold1.join("predictions.json")).expect("remove");
    for file in ["oof.csv", "test.csv"] {
        std::fs::remove_file(run_dir.join("models/resnet").join(file)).expect("remove");
    }
    let run = Run::open(&run_dir, &silent()).expect("reopen the run");
    let again = run
        .train(ModelKind::Resnet, &devices)
        .expect("resumed data-parallel training");
    assert_eq!(again.oof.len(), 32);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).expect("state")).expect("json");
    assert_eq!(state["history"].as_array().expect("history").len(), 2);
    assert_eq!(state["finished"], serde_json::Value::Bool(true));
}
