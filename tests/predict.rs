//! `agc predict` applies a trained run to new images: on the run's own test images it gives the
//! run's test predictions back, in chunks or not, resumes, and names what is wrong.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{agc, agc_fails, csv_rows, synth, tiny_run_args};

/// `image_name → column` of a CSV.
fn column(path: &Path, name: &str) -> HashMap<String, f64> {
    let (header, rows) = csv_rows(path);
    let c = header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("{}: no {name} column in {header:?}", path.display()));
    rows.iter()
        .map(|r| (r[0].clone(), r[c].parse::<f64>().expect("a number")))
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn assert_close(got: &HashMap<String, f64>, want: &HashMap<String, f64>, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: images");
    for (name, w) in want {
        let g = got[name];
        assert!((g - w).abs() < 2e-6, "{what} {name}: predict {g}, run {w}");
    }
}

#[test]
fn predict_reproduces_the_runs_test_predictions_and_resumes() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    synth(&data, 24, 10);
    let run = dir.path().join("run");
    let args = tiny_run_args(&data, &run);

    // Before CropNet is trained, predict says which step to run.
    agc(&[&["train", "--model", "resnet"], &args[..]].concat());
    let out = dir.path().join("p0");
    let p = |run: &Path, out: &Path, extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "predict".to_string(),
            "--run".into(),
            run.display().to_string(),
            "--images".into(),
            data.join("test.csv").display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--quiet".into(),
        ];
        a.extend(extra.iter().map(ToString::to_string));
        a
    };
    let err = agc_fails(&strs(&p(&run, &out, &[])));
    assert!(err.contains("agc train --model chipnet"), "{err}");

    agc(&[&["pipeline"], &args[..]].concat());
    // In chunks of 3 and batches of 2 (TTA seeded by each image's place in the whole list),
    // with overlays.
    let out = dir.path().join("p1");
    let printed = agc(&strs(&p(
        &run,
        &out,
        &["--chunk", "3", "--batch-size", "2", "--overlays"],
    )));
    assert!(printed.contains("10 images scored"), "{printed}");
    let predictions = out.join("predictions.csv");
    for (model, file) in [
        ("resnet", "models/resnet/test.csv"),
        ("chipnet", "models/chipnet/test.csv"),
        ("cropnet", "models/cropnet/test.csv"),
    ] {
        assert_close(
            &column(&predictions, model),
            &column(&run.join(file), "prediction"),
            model,
        );
    }
    assert_close(
        &column(&predictions, "ensemble"),
        &column(&run.join("submission.csv"), "target"),
        "ensemble",
    );
    let overlays = std::fs::read_dir(out.join("overlays"))
        .expect("overlays")
        .count();
    assert_eq!(overlays, 10);

    // Resume: a lost chunk is scored again, the others are read back; same file.
    let before = std::fs::read(&predictions).expect("read");
    assert!(
        !out.join("parts").exists(),
        "parts are removed once predictions.csv is written"
    );
    std::fs::remove_file(&predictions).expect("remove");
    let again = agc(&strs(&p(&run, &out, &["--chunk", "3"])));
    assert!(again.contains("10 images scored"), "{again}");
    assert_eq!(std::fs::read(&predictions).expect("read"), before);

    // A corrupt image: named, or left out and listed with --skip-bad-images.
    let bad_data = dir.path().join("bad");
    std::fs::create_dir_all(&bad_data).expect("mkdir");
    for e in std::fs::read_dir(data.join("test")).expect("test images") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), bad_data.join(e.file_name())).expect("copy");
    }
    std::fs::write(bad_data.join("SYN_test_000002.jpg"), b"not a jpeg").expect("corrupt");
    let folder = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut v = p(&run, out, extra);
        v[4] = bad_data.display().to_string();
        v
    };
    let err = agc_fails(&strs(&folder(&dir.path().join("p2"), &[])));
    assert!(
        err.contains("SYN_test_000002") && err.contains("--skip-bad-images"),
        "{err}"
    );
    let out = dir.path().join("p3");
    let printed = agc(&strs(&folder(&out, &["--skip-bad-images"])));
    assert!(
        printed.contains("1 left out") && printed.contains("SYN_test_000002"),
        "{printed}"
    );
    let (_, rows) = csv_rows(&out.join("predictions.csv"));
    assert_eq!(rows.len(), 10);
}

#[test]
fn chipnet_sees_its_own_image_size_in_the_run_and_in_predict() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    synth(&data, 24, 6);
    let run = dir.path().join("run");
    // The classifiers at 32 px, ChipNet at 64: a 4×4 grid of 16-px chips (2×2 at 32 px).
    let mut args = tiny_run_args(&data, &run);
    let at = args
        .iter()
        .position(|a| *a == "--image-size")
        .expect("flag");
    args[at + 1] = "32";
    args.extend(["--chipnet-image-size", "64"]);
    agc(&[&["pipeline"], &args[..]].concat());
    for size in [32, 64] {
        assert!(
            data.join(format!("agc-cache-{size}/train.npy")).is_file(),
            "the {size}-px cache"
        );
    }
    let (header, rows) = csv_rows(&run.join("attention/fold0.csv"));
    let cells = header.iter().filter(|h| h.starts_with('a')).count();
    assert_eq!(cells, 16, "a 4×4 map: {header:?}");
    assert_eq!(rows.len(), 30);

    let out = dir.path().join("p");
    agc(&[
        "predict",
        "--run",
        run.to_str().expect("utf-8"),
        "--images",
        data.join("test.csv").to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
        "--quiet",
    ]);
    let predictions = out.join("predictions.csv");
    for model in ["resnet", "chipnet", "cropnet"] {
        assert_close(
            &column(&predictions, model),
            &column(&run.join(format!("models/{model}/test.csv")), "prediction"),
            model,
        );
    }
}
