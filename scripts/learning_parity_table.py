#!/usr/bin/env python3
"""Summarises the curves of scripts/learning_parity.sh: per case and framework, the validation
AUC over seeds (mean ± standard deviation of each seed's mean over the last 5 epochs, and of
each seed's best epoch), whether agc is within the seeds' spread of PyTorch (|Δ mean| ≤ the
larger standard deviation, or ≤ 0.01), and the mean loss curves side by side. A case is the
curve file's name without framework and seed (e.g. `skin-oracle-w16-lr3e-4-b16-px160`); cases
trained by agc alone (`--agc-only`, the recipe curves) get a row without PyTorch columns.

    python3 scripts/learning_parity_table.py runs/learning-parity/curves [--curves]
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

LAST = 5


def spread(values):
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return mean, sd


def main():
    folder = Path(sys.argv[1])
    runs = defaultdict(lambda: defaultdict(list))
    for path in sorted(folder.glob("*.json")):
        d = json.loads(path.read_text())
        framework, _, rest = path.stem.partition("-")
        case = rest.rsplit("-s", 1)[0]
        runs[case][framework].append(d)
    print(
        "| case | seeds | agc AUC, last 5 epochs | PyTorch | Δ | within spread | "
        "agc best epoch | PyTorch best epoch | s/epoch agc / PyTorch |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for case in sorted(runs):
        by = runs[case]
        last = {f: [statistics.fmean(e["valid_auc"] for e in r["epochs"][-LAST:]) for r in by[f]] for f in by}
        best = {f: [max(e["valid_auc"] for e in r["epochs"]) for r in by[f]] for f in by}
        secs = {f: statistics.fmean(e["seconds"] for r in by[f] for e in r["epochs"]) for f in by}
        cells = {}
        for f in ("agc", "pytorch"):
            if by[f]:
                (m, sd), (bm, bsd) = spread(last[f]), spread(best[f])
                cells[f] = (f"{m:.3f} ± {sd:.3f}", f"{bm:.3f} ± {bsd:.3f}", f"{secs[f]:.1f}")
            else:
                cells[f] = ("—", "—", "—")
        if by["agc"] and by["pytorch"]:
            (am, asd), (pm, psd) = spread(last["agc"]), spread(last["pytorch"])
            delta = f"{am - pm:+.3f}"
            ok = "yes" if abs(am - pm) <= max(asd, psd, 0.01) else "no"
        else:
            delta = ok = "—"
        n = f"{len(by['agc'])}/{len(by['pytorch'])}"
        print(
            f"| {case} | {n} | {cells['agc'][0]} | {cells['pytorch'][0]} | {delta} | {ok} | "
            f"{cells['agc'][1]} | {cells['pytorch'][1]} | {cells['agc'][2]} / {cells['pytorch'][2]} |"
        )
    if "--curves" in sys.argv:
        for case in sorted(runs):
            by = runs[case]
            if not by["agc"] or not by["pytorch"]:
                continue
            print(f"\nmean curves, {case} (train loss, valid loss, valid AUC)")
            print("| epoch | agc train | PyTorch train | agc valid | PyTorch valid | agc AUC | PyTorch AUC |")
            print("|---|---|---|---|---|---|---|")
            epochs = min(len(r["epochs"]) for f in by for r in by[f])
            for e in range(epochs):
                m = {
                    (f, k): statistics.fmean(r["epochs"][e][k] for r in by[f])
                    for f in by
                    for k in ("train_loss", "valid_loss", "valid_auc")
                }
                print(
                    f"| {e + 1} | {m['agc', 'train_loss']:.4f} | {m['pytorch', 'train_loss']:.4f} | "
                    f"{m['agc', 'valid_loss']:.4f} | {m['pytorch', 'valid_loss']:.4f} | "
                    f"{m['agc', 'valid_auc']:.3f} | {m['pytorch', 'valid_auc']:.3f} |"
                )


if __name__ == "__main__":
    main()
