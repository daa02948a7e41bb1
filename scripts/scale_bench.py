#!/usr/bin/env python3
"""How agc's cost grows with the data (issue 25, docs/performance.md "Cost with the data").

For each size N it makes a data set of N training photographs and N x 10982/33126 test
photographs (ISIC 2020's ratio), a share of them large (4000-6000 px a side, as most ISIC
photographs are 6000x4000) and the rest 1024x1024 JPEGs, and times the steps of
`agc pipeline --preset cpu` one by one on it, each as its own process:

  preprocess                the caches of both sizes, train and test
  train-resnet, -chipnet    one epoch of every fold (--epochs 1), with each fold's validation
  crop                      ChipNet's maps, boxes and the crops of the originals
  train-cropnet             one epoch of every fold on the crops
  predict                   `agc predict` on the test photographs (every fold, the ensemble)

For each step it records wall seconds, CPU seconds (user + system of the process, less
disturbed by anything else running than the wall clock), the peak resident memory (ru_maxrss,
which counts the memory-mapped caches' pages as well) and the peak anonymous memory (RssAnon,
sampled every 50 ms: what the process allocated itself). Then it fits a line per step (seconds
= fixed + per image x N), prints the marginal cost per image between consecutive sizes and the
projection to ISIC 2020's size.

The photographs are drawn once into a pool by `agc synth` (skin family) and every data set
links them (hard links) under new names, each copy its own patient: generating 16 000
photographs of 6000x4000 would take hours and tens of GB, while the cost of a step depends on
the pixels it decodes and the images it trains on, not on their being different. The pool's
files stay in the page cache in every set alike, so disk reads are not measured.

    scripts/scale_bench.sh [--sizes "1000 4000 16000"] [--large-share 0.5] [--out DIR]
"""

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ISIC_TRAIN = 33126
ISIC_TEST = 10982
STEPS = ["preprocess", "train-resnet", "train-chipnet", "crop", "train-cropnet", "predict"]


def run_measured(cmd, log):
    """Runs cmd; returns wall s, CPU s, peak RSS MiB, peak anonymous RSS MiB."""
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        peak_anon = [0]
        done = threading.Event()

        def sample():
            status = f"/proc/{proc.pid}/status"
            while not done.is_set():
                try:
                    with open(status) as f:
                        for line in f:
                            if line.startswith("RssAnon:"):
                                peak_anon[0] = max(peak_anon[0], int(line.split()[1]))
                except OSError:
                    pass
                done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
    wall = time.monotonic() - started
    if status != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed (status {status}); see {log}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "peak_anon_mib": peak_anon[0] / 1024,
    }


def synth_pool(agc, out, name, side, train, test, seed):
    pool = out / f"pool-{name}"
    if not (pool / "train.csv").is_file():
        args = [agc, "synth", "--out", pool, "--family", "skin", "--train", train, "--test", test]
        args += ["--min-side", side[0], "--max-side", side[1], "--seed", seed, "--quiet"]
        subprocess.run([str(a) for a in args], check=True)
    return pool


def read_rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def is_large(i, share):
    """Spreads the large photographs evenly through a list: image i is large when the running
    count of large ones steps up at it."""
    return int((i + 1) * share) > int(i * share)


def make_set(root, pools, n, split, share):
    """ROOT/{split}.csv and ROOT/{split}/ of n photographs linked from the pools."""
    folder = root / split
    csv_path = root / f"{split}.csv"
    if csv_path.is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    sources = {kind: read_rows(pool / f"{split}.csv") for kind, pool in pools.items()}
    fields = sources["small"][0]
    used = {"small": 0, "large": 0}
    rows = []
    for i in range(n):
        kind = "large" if is_large(i, share) else "small"
        pool_rows = sources[kind][1]
        j = used[kind]
        used[kind] += 1
        row = dict(pool_rows[j % len(pool_rows)])
        source = pools[kind] / split / f"{row['image_name']}.jpg"
        copy = j // len(pool_rows)
        row["image_name"] = f"SCL_{split}_{i:06d}"
        row["patient_id"] = f"{row['patient_id']}_{kind}{copy}"
        target = folder / f"{row['image_name']}.jpg"
        if not target.exists():
            os.link(source, target)
        rows.append(row)
    tmp = csv_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.rename(csv_path)


def bench_size(agc, out, pools, n, share):
    results_path = out / f"results-{n}.json"
    if results_path.is_file():
        return json.loads(results_path.read_text())
    n_test = round(n * ISIC_TEST / ISIC_TRAIN)
    data = out / f"set-{n}"
    make_set(data, pools, n, "train", share)
    make_set(data, pools, n_test, "test", share)
    run = out / f"run-{n}"
    common = ["--data", data, "--out", run, "--preset", "cpu", "--epochs", "1", "--quiet"]
    commands = {
        "preprocess": ["preprocess", *common],
        "train-resnet": ["train", "--model", "resnet", *common],
        "train-chipnet": ["train", "--model", "chipnet", *common],
        "crop": ["crop", *common],
        "train-cropnet": ["train", "--model", "cropnet", *common],
        "predict": ["predict", "--run", run, "--images", data / "test.csv", "--out",
                    out / f"predict-{n}", "--quiet"],
    }
    results = {"n_train": n, "n_test": n_test, "large_share": share,
               "threads": os.cpu_count(), "steps": {}}
    for step in STEPS:
        print(f"  N={n}: {step} ...", flush=True)
        cmd = [str(a) for a in [agc, *commands[step]]]
        results["steps"][step] = run_measured(cmd, out / f"log-{n}-{step}.txt")
        print(f"    {json.dumps(results['steps'][step])}", flush=True)
    tmp = results_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.rename(results_path)
    return results


def fit_line(xs, ys):
    """Least squares y = a + b x; returns a, b and the residuals."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    a = my - b * mx
    return a, b, [y - (a + b * x) for x, y in zip(xs, ys)]


def report(all_results, epochs):
    sizes = [r["n_train"] for r in all_results]
    print("\n| step | " + " | ".join(f"N={n}: wall s / CPU s / peak RSS, anon MiB" for n in sizes)
          + " |")
    print("|---|" + "---|" * len(sizes))
    for step in STEPS:
        cells = []
        for r in all_results:
            s = r["steps"][step]
            cells.append(f"{s['wall_s']:.1f} / {s['cpu_s']:.1f} / {s['peak_rss_mib']:.0f}, "
                         f"{s['peak_anon_mib']:.0f}")
        print(f"| {step} | " + " | ".join(cells) + " |")

    # The work of a step grows with the training images (preprocess and predict also with the
    # test images, a fixed share of them); fit against N.
    print("\n| step | fixed s | per image ms | residuals s | per image ms between sizes "
          "| largest / smallest |")
    print("|---|---|---|---|---|---|")
    fits = {}
    for step in STEPS:
        ys = [r["steps"][step]["cpu_s"] for r in all_results]
        a, b, res = fit_line(sizes, ys)
        fits[step] = (a, b)
        marginal = [(ys[i + 1] - ys[i]) / (sizes[i + 1] - sizes[i]) * 1000
                    for i in range(len(sizes) - 1)]
        spread = max(marginal) / min(marginal) if marginal and min(marginal) > 0 else float("nan")
        print(f"| {step} | {a:.1f} | {b * 1000:.2f} | "
              + ", ".join(f"{e:+.1f}" for e in res) + " | "
              + ", ".join(f"{m:.2f}" for m in marginal) + f" | {spread:.2f} |")

    # One fold-run of the CPU preset trains each model for its epochs; the bench trained one
    # epoch of every fold, so a model's training scales by its epochs (the test predictions,
    # made once per fold, are counted in every epoch here: an overestimate).
    n = ISIC_TRAIN
    per_step = {}
    for step in STEPS:
        a, b = fits[step]
        cost = a + b * n
        if step.startswith("train-"):
            cost *= epochs[step.removeprefix("train-")]
        per_step[step] = cost
    wall_ratio = sum(r["steps"][s]["wall_s"] for r in all_results for s in STEPS) / sum(
        r["steps"][s]["cpu_s"] for r in all_results for s in STEPS)
    total = sum(per_step.values())
    print(f"\nProjected at ISIC 2020's size ({ISIC_TRAIN} training, {ISIC_TEST} test photographs; "
          "CPU seconds, the preset's largest epoch counts):")
    for step, cost in per_step.items():
        print(f"  {step}: {cost / 3600:.1f} CPU h")
    print(f"  whole pipeline: {total / 3600:.1f} CPU h, about {total * wall_ratio / 3600:.1f} h "
          f"wall on this machine (wall/CPU {wall_ratio:.2f} in the bench)")
    peak = max(r["steps"][s]["peak_anon_mib"] for r in all_results for s in STEPS)
    print(f"  largest anonymous memory of any step at any size: {peak:.0f} MiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agc", required=True)
    parser.add_argument("--sizes", default="1000 4000 16000")
    parser.add_argument("--large-share", type=float, default=0.5)
    parser.add_argument("--pool-small", type=int, default=400)
    parser.add_argument("--pool-large", type=int, default=200)
    parser.add_argument("--out", default="runs/scale-bench")
    # The CPU preset's most epochs per model (agc_train::PipelineConfig::cpu); the bench runs
    # one epoch of each and multiplies.
    parser.add_argument("--preset-epochs", default="resnet=12,chipnet=3,cropnet=12")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Pools: training and test photographs drawn apart, as the test set would be.
    pools = {
        "small": synth_pool(args.agc, out, "small", (1024, 1024), args.pool_small,
                            args.pool_small // 3, 31),
        "large": synth_pool(args.agc, out, "large", (4000, 6000), args.pool_large,
                            args.pool_large // 3, 32),
    }
    epochs = dict(item.split("=") for item in args.preset_epochs.split(","))
    epochs = {model: int(count) for model, count in epochs.items()}
    all_results = [bench_size(args.agc, out, pools, n, args.large_share)
                   for n in map(int, args.sizes.split())]
    report(all_results, epochs)


if __name__ == "__main__":
    main()
