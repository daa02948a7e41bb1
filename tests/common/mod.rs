//! Helpers of the command-line integration tests: run the `agc` binary, read CSVs.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The `agc` binary cargo built for these tests.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agc"))
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "agc {}: {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `agc ARGS`, asserts success and returns stdout.
pub fn agc(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("run agc");
    assert!(out.status.success(), "{}", describe(args, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `agc ARGS`, asserts failure and returns stderr.
pub fn agc_fails(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("run agc");
    assert!(!out.status.success(), "{}", describe(args, &out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A tiny synthetic data set: small originals (160–240 px), 30 % positives.
pub fn synth(out: &Path, train: usize, test: usize) {
    agc(&[
        "synth",
        "--out",
        out.to_str().expect("utf-8"),
        "--train",
        &train.to_string(),
        "--test",
        &test.to_string(),
        "--positive-rate",
        "0.3",
        "--min-side",
        "160",
        "--max-side",
        "240",
        "--seed",
        "3",
        "--quiet",
    ]);
}

/// Run flags for a tiny, fast run: tiny backbone, 64-px images in 16-px chips, 2 folds, 2 epochs.
pub fn tiny_run_args(data: &Path, run: &Path) -> Vec<&'static str> {
    tiny_run_args_with(data, run, "2")
}

/// [`tiny_run_args`] with `epochs` epochs and as much patience (no early stop).
pub fn tiny_run_args_with(data: &Path, run: &Path, epochs: &'static str) -> Vec<&'static str> {
    let leak = |p: &Path| -> &'static str {
        Box::leak(p.to_str().expect("utf-8").to_string().into_boxed_str())
    };
    vec![
        "--data",
        leak(data),
        "--out",
        leak(run),
        "--backbone",
        "tiny",
        "--image-size",
        "64",
        "--chip",
        "16",
        "--folds",
        "2",
        "--epochs",
        epochs,
        "--patience",
        epochs,
        "--tta",
        "1",
        "--batch-size",
        "8",
        "--quiet",
    ]
}

/// Header and rows of a CSV file.
pub fn csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(String::from)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}
