#!/usr/bin/env python3
"""Mean and spread over seeds of the runs written by scripts/seeds.sh: one row per folder of
seeds (OUT/seed-N/metrics.json), each model's out-of-fold AUC (pooled over folds) and test AUC
as mean ± standard deviation, the ensemble's out-of-fold AUC less its best member's (the worst
seed in brackets: issue 22 asks that it never be below −0.002), the median IoU of the attention
boxes and the wall time. Runs without metadata come first (the method's claim is about the
pixels), then those with it.

    python3 scripts/seeds_table.py OUT [OUT...]
"""
import json
import statistics
import sys
from pathlib import Path

MODELS = ["metadata", "chipnet", "cropnet", "oracle_cropnet", "resnet", "ensemble"]


def cell(values, digits=3):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def ensemble_gap(metrics):
    """The ensemble's OOF AUC less the best OOF AUC among its members, or None."""
    members = list(metrics.get("ensemble_weights") or {})
    ensemble = (metrics["models"].get("ensemble") or {}).get("oof_auc")
    aucs = [(metrics["models"].get(m) or {}).get("oof_auc") for m in members]
    if ensemble is None or not aucs or None in aucs:
        return None
    return ensemble - max(aucs)


def main():
    groups = []
    for folder in map(Path, sys.argv[1:]):
        runs = sorted(folder.glob("seed-*/metrics.json"))
        if not runs:
            sys.exit(f"{folder}: no seed-N/metrics.json")
        metrics = [json.loads(p.read_text()) for p in runs]
        metadata = {json.loads((p.parent / "config.json").read_text())["metadata"] for p in runs}
        if len(metadata) != 1:
            sys.exit(f"{folder}: runs with and without metadata mixed")
        groups.append((metadata.pop(), folder, metrics))
    groups.sort(key=lambda g: g[0])
    head = [m for m in MODELS if any(m in x["models"] for _, _, ms in groups for x in ms)]
    print("| runs | metadata | seeds | " + " | ".join(f"{m} OOF | {m} test" for m in head)
          + " | ensemble − best member, OOF (worst) | median IoU | wall (min) |")
    print("|---" * (5 + 2 * len(head)) + "|---|")
    for metadata, folder, ms in groups:
        cells = []
        for m in head:
            scores = [x["models"].get(m) or {} for x in ms]
            cells += [cell([s.get("oof_auc") for s in scores]),
                      cell([s.get("test_auc") for s in scores])]
        gaps = [ensemble_gap(x) for x in ms]
        gap = cell(gaps)
        if any(g is not None for g in gaps):
            gap += f" ({min(g for g in gaps if g is not None):+.3f})"
        iou = cell([(x.get("attention") or {}).get("iou_median") for x in ms])
        wall = cell([x["wall_seconds"] / 60 for x in ms], 1)
        print(f"| {folder.name} | {'yes' if metadata else 'no'} | {len(ms)} | "
              + " | ".join(cells) + f" | {gap} | {iou} | {wall} |")


if __name__ == "__main__":
    main()
