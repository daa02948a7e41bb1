//! Kill `agc train` in the middle of training, run the same command again, and check that the
//! resumed run ends with exactly the predictions of a run that was never interrupted.

mod common;

use std::time::{Duration, Instant};

use common::{agc, bin, synth};

#[test]
fn a_killed_training_resumes_to_the_same_predictions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    synth(&data, 48, 24);
    let args = |run: &std::path::Path| -> Vec<String> {
        let mut a: Vec<String> = ["train", "--model", "resnet"]
            .iter()
            .map(ToString::to_string)
            .collect();
        // More epochs than the tiny default, and no early stop, so the kill lands mid-run.
        a.extend(
            common::tiny_run_args_with(&data, run, "6")
                .iter()
                .map(ToString::to_string),
        );
        a
    };

    // The uninterrupted reference.
    let reference = dir.path().join("reference");
    let a = args(&reference);
    agc(&a.iter().map(String::as_str).collect::<Vec<_>>());

    // The same run, killed as soon as its first epoch is saved.
    let killed = dir.path().join("killed");
    let a = args(&killed);
    let mut child = bin().args(&a).spawn().expect("spawn agc");
    let state = killed.join("models/resnet/fold0/state.json");
    let started = Instant::now();
    while !state.is_file() {
        assert!(
            child.try_wait().expect("poll").is_none(),
            "agc ended before its first epoch was saved"
        );
        assert!(
            started.elapsed() < Duration::from_mins(10),
            "no epoch after 10 min"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill");
    child.wait().expect("reap");
    // The killed process held fold 0's claim; the operating system released it with the
    // process, so the rerun below takes it without any clean-up.
    let claim = killed.join("locks/resnet.fold0.lock");
    assert!(claim.is_file(), "the fold was claimed while it trained");
    assert!(
        !killed.join("models/resnet/oof.csv").exists(),
        "the run finished before the kill: the test proves nothing"
    );

    // Resume with the same command.
    let out = bin().args(&a).output().expect("rerun agc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("resuming after epoch"), "{log}");

    for file in ["oof.csv", "test.csv"] {
        let want =
            std::fs::read_to_string(reference.join("models/resnet").join(file)).expect("ref");
        let got = std::fs::read_to_string(killed.join("models/resnet").join(file)).expect("got");
        assert_eq!(got, want, "{file} differs after resuming");
    }
}
