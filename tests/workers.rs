//! Several `agc` processes on one run directory and one shared cache: they never race, and
//! the result is the one a single process gives.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{agc, agc_fails, bin, synth, tiny_run_args};

fn spawn(args: &[&str]) -> std::process::Child {
    bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agc")
}

fn finish(child: std::process::Child, what: &str) -> String {
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what}: {}\n{stderr}", out.status);
    stderr
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn two_processes_share_a_run_and_a_cache_and_give_the_single_process_result() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    synth(&data, 24, 8);
    let shared = dir.path().join("shared");
    let args = |run: &Path| -> Vec<&'static str> {
        let mut a = vec!["pipeline"];
        a.extend(tiny_run_args(&data, run));
        a
    };

    // Two pipelines on one --out, and a third on its own run directory, all three on the data
    // folder's default cache, started together.
    let alone = dir.path().join("alone");
    let first = spawn(&args(&shared));
    let second = spawn(&args(&shared));
    let third = spawn(&args(&alone));
    let log_a = finish(first, "first worker");
    let log_b = finish(second, "second worker");
    finish(third, "the run alone");

    // And one process after the others, alone: the reference.
    let after = dir.path().join("after");
    agc(&args(&after));
    for file in [
        "folds.csv",
        "models/resnet/oof.csv",
        "models/chipnet/test.csv",
        "boxes.csv",
        "models/cropnet/oof.csv",
        "submission.csv",
    ] {
        let reference = read(&after.join(file));
        assert_eq!(
            read(&shared.join(file)),
            reference,
            "{file} of the shared run differs from a single process's\n{log_a}\n{log_b}"
        );
        assert_eq!(
            read(&alone.join(file)),
            reference,
            "{file} of the concurrent run"
        );
    }

    // `train --fold` on a fold out of range, and attention of a fold that does not exist.
    let run = shared.to_str().expect("utf-8");
    let err = agc_fails(
        &[
            &["train", "--model", "resnet", "--fold", "5"][..],
            &tiny_run_args(&data, &shared),
        ]
        .concat(),
    );
    assert!(err.contains("--fold 5: the run has 2 folds"), "{err}");
    let err = agc_fails(&["attention", "--run", run, "--fold", "7"]);
    assert!(err.contains("fold 7: the run has 2 folds"), "{err}");
}
