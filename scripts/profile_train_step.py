#!/usr/bin/env python3
"""Where a training step's time goes on Flex: samples `examples/model_bench.rs` with Linux `perf`
and sums the self time of the sampled functions into operation classes, the breakdown that
docs/performance.md puts beside PyTorch's profiler (`scripts/torch_model_bench.py --profile`).

    python3 scripts/profile_train_step.py [--workload chipnet_r18_train_step_b8_224] [--reps 5]

Needs `perf` (Debian: linux-perf) and a built bench (`cargo build --release --example
model_bench`; honours CARGO_TARGET_DIR). The figures are shares of all samples of the process,
which spends nearly all its time in training steps (two warm-ups, then `--reps` timed steps;
model initialisation is a few per cent).

Classes are matched on the sampled function's name, first match wins:
- gemm: gemm's matrix-product kernels, which the convolutions (agc's batched kernel on Flex,
  `agc_core::conv`, and Flex's own for the attention head's) and linear layers call;
- conv packing: the convolution code around the products (agc's and Flex's im2col, col2im,
  layout copies) and the rayon closures that run it;
- element-wise and reductions: batch norm, ReLU, residual adds, the loss and the optimizer's
  tensor arithmetic (Flex's zip/binary/unary kernels and macerator's SIMD loops);
- pooling; random numbers (dropout masks); allocation (malloc, memset, page faults);
- other user code, other kernel code.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import OrderedDict

CLASSES = OrderedDict([
    ("gemm (matrix products)", [r"^gemm_"]),
    ("conv packing (im2col, col2im, copies)", [
        r"burn_flex::ops::conv", r"agc_core::conv", r"copy_2d_tiled", r"FnMut<A> for &F>::call_mut",
        r"ForEachConsumer", r"StridedIter", r"SpecFromIter"]),
    ("element-wise and reductions (BN, ReLU, adds, optimizer)", [
        r"burn_flex::zip", r"burn_flex::ops::(binary|unary|reduce|comparison|activation)",
        r"macerator", r"burn_flex::simd"]),
    ("pooling", [r"pool"]),
    ("random numbers (dropout masks)", [r"rand::", r"chacha", r"random", r"Distribution"]),
    ("allocation and page faults", [
        r"memset", r"memcpy", r"malloc", r"_int_free", r"unlink_chunk", r"page", r"mm_fault",
        r"munmap", r"mmap", r"memcg", r"folio", r"lruvec", r"charge"]),
])


def classify(symbol, kernel):
    for name, patterns in CLASSES.items():
        if any(re.search(p, symbol) for p in patterns):
            return name
    return "other (kernel)" if kernel else "other (user)"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workload", default="chipnet_r18_train_step_b8_224")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--top", type=int, default=12, help="also list the N hottest functions")
    args = p.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    bench = os.path.join(target, "release", "examples", "model_bench")
    if not os.access(bench, os.X_OK):
        sys.exit(f"{bench} is missing: cargo build --release --example model_bench")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        subprocess.run(["perf", "record", "-q", "-F", "999", "-o", data, "--", bench,
                        "--only", args.workload, "--reps", str(args.reps)], check=True)
        report = subprocess.run(
            ["perf", "report", "-i", data, "--no-children", "--sort", "symbol", "--stdio"],
            check=True, capture_output=True, text=True).stdout
    totals = OrderedDict((name, 0.0) for name in list(CLASSES) + ["other (user)",
                                                                   "other (kernel)"])
    hottest = []
    for line in report.splitlines():
        m = re.match(r"^\s*([0-9.]+)%\s+\[([.k])\]\s+(.*?)\s*$", line)
        if not m:
            continue
        share, kind, symbol = float(m.group(1)), m.group(2), m.group(3)
        symbol = symbol.rstrip(" -")
        totals[classify(symbol, kind == "k")] += share
        hottest.append((share, symbol))
    print(f"# {args.workload}: share of perf samples by operation class (self time)")
    for name, share in totals.items():
        print(f"CLASS {args.workload} {share:5.1f}% {name}")
    print(f"# the {args.top} hottest functions")
    for share, symbol in hottest[:args.top]:
        print(f"  {share:5.1f}%  {symbol[:110]}")


if __name__ == "__main__":
    main()
