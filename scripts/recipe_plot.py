#!/usr/bin/env python3
"""Draws the recipe curves of docs/results.md from the curve files of
`scripts/learning_parity.sh --agc-only` (agc's runs only): per family, the validation AUC of
the oracle CropNet (mean of each seed's last 5 epochs; mean and standard deviation over seeds)
against each setting changed one at a time from the base recipe (width 16, Adam 3e-4, batch 16,
112 px, a 10 % margin, flips and quarter turns).

    python3 scripts/recipe_plot.py CURVES_DIR OUT.png     # needs matplotlib
"""
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LAST = 5
BASE = {"w": "16", "lr": "3e-4", "b": "16", "px": "112", "m": "0.1", "aug": "symmetries"}
PANELS = [
    ("lr", "Adam learning rate (batch 16)", ["3e-4", "1e-3", "2e-3"]),
    ("w", "backbone width", ["8", "16", "32", "64"]),
    ("px", "crop side (px)", ["112", "160", "224"]),
    ("m", "margin around the true box", ["0", "0.1"]),
    ("aug", "augmentation", ["symmetries", "train"]),
    ("b", "batch (Adam 2e-3)", ["16", "32"]),
]


def settings(case):
    """The settings of a case name such as skin-oracle-w16-lr3e-4-b16-px160."""
    family, images, rest = case.split("-", 2)
    s = dict(BASE, family=family, images=images)
    number = r"(\d+(?:\.\d+)?(?:e-?\d+)?)"
    for key in ("w", "lr", "b", "px", "m"):
        found = re.search(rf"(?:^|-){key}{number}(?=-|$)", rest)
        if found:
            s[key] = found.group(1)
    if rest.endswith("-train"):
        s["aug"] = "train"
    return s


def main():
    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    runs = defaultdict(list)
    for path in folder.glob("agc-*.json"):
        case = path.stem[len("agc-"):].rsplit("-s", 1)[0]
        d = json.loads(path.read_text())
        runs[case].append(statistics.fmean(e["valid_auc"] for e in d["epochs"][-LAST:]))
    points = defaultdict(dict)  # (family, key) -> value -> (mean, sd, n)
    for case, aucs in runs.items():
        s = settings(case)
        if s["images"] != "oracle" or len(aucs) < 2:
            continue
        changed = [k for k in BASE if s[k] != BASE[k]]
        point = (statistics.fmean(aucs), statistics.stdev(aucs))
        if not changed:
            for key, _, _ in PANELS:
                if key != "b":
                    points[s["family"], key][BASE[key]] = point
        elif len(changed) == 1 and changed[0] != "b":
            points[s["family"], changed[0]][s[changed[0]]] = point
        # The batch panel compares batches at Adam 2e-3 (the CPU preset's rate before).
        if s["lr"] == "2e-3" and set(changed) <= {"lr", "b"}:
            points[s["family"], "b"][s["b"]] = point
    families = sorted({f for f, _ in points})
    fig, axes = plt.subplots(1, len(PANELS), figsize=(3.2 * len(PANELS), 3.2), sharey=True)
    for ax, (key, title, order) in zip(axes, PANELS):
        shown = [v for v in order if any(v in points.get((f, key), {}) for f in families)]
        for family, marker in zip(families, "os^"):
            got = points.get((family, key), {})
            xs = [v for v in shown if v in got]
            ax.errorbar([shown.index(v) for v in xs], [got[v][0] for v in xs],
                        yerr=[got[v][1] for v in xs], marker=marker, capsize=3, label=family)
        ax.set_xticks(range(len(shown)), shown)
        ax.set_xlim(-0.5, max(len(shown), 2) - 0.5)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("oracle CropNet validation AUC\n(last 5 epochs, mean ± sd over seeds)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
