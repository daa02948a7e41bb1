//! Bad input at the command line: each case ends with an error that names the setting, file or
//! row at fault before any work is done, or is handled as documented.

mod common;

use common::{agc, agc_fails, synth, tiny_run_args, tiny_run_args_with};

#[test]
fn bad_settings_are_named_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    synth(&data, 24, 8);
    let run = dir.path().join("run");
    let base = tiny_run_args(&data, &run);
    // The tiny run's flags with some values replaced.
    let pipeline = |changes: &[(&str, &'static str)]| {
        let mut args = vec!["pipeline"];
        args.extend(base.iter().copied());
        for (flag, value) in changes {
            let at = args
                .iter()
                .position(|a| a == flag)
                .expect("a flag of the tiny run");
            args[at + 1] = value;
        }
        agc_fails(&args)
    };

    // Chips that do not tile the image: refused up front, not after the ResNet has trained.
    let err = pipeline(&[("--image-size", "80"), ("--chip", "32")]);
    assert!(err.contains("chip 32 with image_size 80"), "{err}");
    let err = pipeline(&[("--image-size", "0")]);
    assert!(err.contains("image_size 0"), "{err}");
    assert!(
        !run.join("config.json").exists(),
        "nothing saved after a refusal"
    );

    // Weights of a deeper ResNet ([2, 2, 1, 1]) into the tiny one ([1, 1, 1, 1]): refused
    // before the run starts, naming the file; allowed on request.
    let deeper = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/agc-core/tests/fixtures/resnet_basic.safetensors"
    );
    let err = agc_fails(
        &[
            &["train", "--model", "resnet"],
            &base[..],
            &["--weights", deeper],
        ]
        .concat(),
    );
    assert!(
        err.contains("resnet_basic.safetensors") && err.contains("layer1.1"),
        "{err}"
    );
    assert!(
        !run.join("config.json").exists(),
        "nothing saved after a refusal"
    );
    let partial = dir.path().join("partial");
    agc(&[
        &["train", "--model", "resnet"],
        &tiny_run_args(&data, &partial)[..],
        &["--weights", deeper, "--allow-unused-weights"],
    ]
    .concat());

    // `--models resnet,chipnet` trains and ends without the CropNet ensemble.
    let out = agc(&[&["pipeline"], &base[..], &["--models", "resnet,chipnet"]].concat());
    assert!(
        out.contains("chipnet") && !out.contains("| ensemble"),
        "{out}"
    );
    assert!(
        out.contains("no submission.csv: the ensemble writes it, and this run has none")
            && !run.join("submission.csv").exists(),
        "{out}"
    );
    assert!(run.join("metrics.json").is_file());

    // A saved run's configuration with a misspelt key: an error, not ignored.
    let config = dir.path().join("config.json");
    let saved = std::fs::read_to_string(run.join("config.json")).expect("saved");
    let mut value: serde_json::Value = serde_json::from_str(&saved).expect("json");
    value["schedules"]["resnet"]["max_epohcs"] = 99.into();
    std::fs::write(&config, value.to_string()).expect("write");
    let err = agc_fails(&[
        "pipeline",
        "--config",
        config.to_str().expect("utf-8"),
        "--out",
        dir.path().join("run2").to_str().expect("utf-8"),
    ]);
    assert!(err.contains("\"schedules.resnet.max_epohcs\""), "{err}");

    // `agc evaluate` refuses predictions that miss labelled images.
    let labels = data.join("test_labels.csv");
    let partial = dir.path().join("partial.csv");
    let full = std::fs::read_to_string(run.join("models/resnet/test.csv")).expect("test.csv");
    let lines: Vec<&str> = full.lines().collect();
    std::fs::write(&partial, lines[..lines.len() - 2].join("\n")).expect("write");
    let err = agc_fails(&[
        "evaluate",
        "--predictions",
        partial.to_str().expect("utf-8"),
        "--labels",
        labels.to_str().expect("utf-8"),
    ]);
    assert!(
        err.contains("2 of 8 labelled images have no prediction"),
        "{err}"
    );
}

#[test]
fn synth_families_are_chosen_by_name_and_an_unknown_one_lists_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("derm");
    let err = agc_fails(&[
        "synth",
        "--family",
        "dermatoscopy",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(
        err.contains("\"dermatoscopy\"") && err.contains("skin, dermoscopy"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written for a bad family");
    agc(&[
        "synth",
        "--family",
        "dermoscopy",
        "--out",
        out.to_str().expect("utf-8"),
        "--train",
        "4",
        "--test",
        "2",
        "--min-side",
        "160",
        "--max-side",
        "200",
        "--quiet",
    ]);
    let signs = std::fs::read_to_string(out.join("signs.csv")).expect("signs.csv");
    assert!(
        signs.starts_with("image_name,target,atypical_network,irregular_border,blue_grey\n"),
        "{signs}"
    );
    let manifest = std::fs::read_to_string(out.join("synth.json")).expect("synth.json");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("json");
    assert_eq!(manifest["config"]["family"], "dermoscopy");
}

#[test]
fn an_unknown_preset_lists_the_presets_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("demo");
    let err = agc_fails(&[
        "demo",
        "--preset",
        "gpu",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(
        err.contains("\"gpu\"") && err.contains("seed, demo, cpu"),
        "{err}"
    );
    let err = agc_fails(&[
        "demo",
        "--family",
        "clinical",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(err.contains("skin, dermoscopy"), "{err}");
    assert!(!out.exists(), "nothing written");
    let data = dir.path().join("data");
    let err = agc_fails(&[
        "pipeline",
        "--preset",
        "fast",
        "--data",
        data.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(err.contains("seed, demo, cpu"), "{err}");
}

#[test]
fn a_partial_config_is_laid_over_the_preset_and_its_typos_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    synth(&data, 24, 8);
    let partial = dir.path().join("partial.json");
    std::fs::write(&partial, r#"{"image_size": 64}"#).expect("write");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let (data_arg, partial_arg) = (path(&data), path(&partial));
    let preprocess = |out: &str| {
        vec![
            "preprocess".to_string(),
            "--preset".into(),
            "cpu".into(),
            "--config".into(),
            partial_arg.clone(),
            "--data".into(),
            data_arg.clone(),
            "--out".into(),
            path(&dir.path().join(out)),
            "--quiet".into(),
        ]
    };
    let args = preprocess("run");
    agc(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // The file's image size, and the CPU preset's 224-pixel ChipNet for the key it leaves out
    // (over the seed's configuration there would be one cache).
    assert!(data.join("agc-cache-64/train.npy").is_file());
    assert!(data.join("agc-cache-224/train.npy").is_file());

    std::fs::write(&partial, r#"{"imagesize": 96}"#).expect("write");
    let args = preprocess("other");
    let err = agc_fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("imagesize") && !err.contains("missing field"),
        "{err}"
    );
}

#[test]
fn a_batch_larger_than_a_fold_is_named_and_a_smaller_one_resumes_the_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    synth(&data, 24, 4);
    let run = dir.path().join("run");
    let mut args = vec!["train", "--model", "resnet"];
    args.extend(tiny_run_args_with(&data, &run, "1"));
    let at = args
        .iter()
        .position(|a| *a == "--batch-size")
        .expect("batch")
        + 1;
    // Two folds of 24 images train on about 12 each: no batch of 32 fits.
    args[at] = "32";
    let err = agc_fails(&args);
    assert!(
        err.contains("batch_size 32")
            && err.contains("fewer than one batch")
            && err.contains("fold0"),
        "{err}"
    );
    // The prepared run takes a smaller batch (and says so in config.json); other changes are
    // still refused.
    args[at] = "4";
    agc(&args);
    let saved = std::fs::read_to_string(run.join("config.json")).expect("config");
    let saved: serde_json::Value = serde_json::from_str(&saved).expect("json");
    assert_eq!(saved["schedules"]["resnet"]["batch_size"], 4);
    let err = agc_fails(&[&args[..], &["--seed", "9"]].concat());
    assert!(err.contains("seed: saved 42, given 9"), "{err}");
    // ResNet is trained at 4: another batch size leaves it, and config.json, as they are.
    args[at] = "8";
    agc(&args);
    let again = std::fs::read_to_string(run.join("config.json")).expect("config");
    let again: serde_json::Value = serde_json::from_str(&again).expect("json");
    assert_eq!(again["schedules"]["resnet"]["batch_size"], 4);
    assert_eq!(
        again["schedules"]["chipnet"]["batch_size"], 8,
        "not trained yet"
    );
    // No attention maps before the crop step: `agc boxes` names the step that makes them, and
    // a threshold that is not a number is named first.
    let run_arg = run.to_str().expect("utf-8");
    let err = agc_fails(&["boxes", "--run", run_arg]);
    assert!(err.contains("run `agc crop` first"), "{err}");
    let err = agc_fails(&["boxes", "--run", run_arg, "--k", "1.5", "inf"]);
    assert!(
        err.contains("--k inf: a box threshold must be finite"),
        "{err}"
    );
}
