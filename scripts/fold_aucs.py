#!/usr/bin/env python3
"""The range of each model's AUC over a run's folds (out of fold), for docs/results.md.

    python3 scripts/fold_aucs.py RUN [RUN...]

Reads RUN/baselines/metadata/oof.csv, RUN/models/*/oof.csv and RUN/ensemble/oof.csv (folds from
RUN/folds.csv where a file has no fold column); AUC with tied ranks averaged, as agc and
scikit-learn compute it. No dependencies.
"""

import csv
import sys
from pathlib import Path

MODELS = [
    ("metadata", "baselines/metadata/oof.csv"),
    ("resnet", "models/resnet/oof.csv"),
    ("chipnet", "models/chipnet/oof.csv"),
    ("cropnet", "models/cropnet/oof.csv"),
    ("oracle_cropnet", "models/oracle_cropnet/oof.csv"),
    ("ensemble", "ensemble/oof.csv"),
]


def auc(targets, scores):
    pairs = sorted(zip(scores, targets))
    ranks, i = [0.0] * len(pairs), 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    pos = sum(t for _, t in pairs)
    neg = len(pairs) - pos
    rank_sum = sum(r for r, (_, t) in zip(ranks, pairs) if t == 1)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def main():
    for run in map(Path, sys.argv[1:]):
        folds = {r["image_name"]: r["fold"] for r in csv.DictReader(open(run / "folds.csv"))}
        cells = []
        for name, path in MODELS:
            if not (run / path).is_file():
                continue
            rows = list(csv.DictReader(open(run / path)))
            by_fold = {}
            for r in rows:
                fold = r.get("fold") or folds[r["image_name"]]
                by_fold.setdefault(fold, ([], []))
                by_fold[fold][0].append(int(r["target"]))
                by_fold[fold][1].append(float(r["prediction"]))
            aucs = [auc(t, p) for t, p in by_fold.values()]
            cells.append(f"{name} {min(aucs):.3f}–{max(aucs):.3f}")
        print(f"{run}: " + " | ".join(cells))


if __name__ == "__main__":
    main()
