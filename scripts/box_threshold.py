#!/usr/bin/env python3
"""How the box threshold k changes a run's attention boxes, from its saved maps alone.

For every training image of a run (every fold's ChipNet map of it, `RUN/attention/fold*.csv`),
draws the box agc's rule draws (bilinear upsampling to ChipNet's image size, threshold mean +
k·std, bounding box, square, carried to the original through the centre square) for each k,
and prints the median IoU with the true lesion box squared, as `RUN/boxes.csv` computes it.
Only training images are read, so a threshold chosen with it never sees a test label. Needs
numpy; the data directory and ChipNet's image size come from RUN/config.json.

    python3 scripts/box_threshold.py RUN [RUN...] [--k 1 1.25 1.5 2 3]
"""

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from box_ceiling import upsample


def true_square(box, width, height):
    """agc_train::run::true_square: the box squared around its centre, inside the image."""
    x0, y0, x1, y1 = box
    side = min(max(x1 - x0, y1 - y0, 1), min(width, height))
    return [min(max(x0 + x1 - side, 0) // 2, width - side), min(max(y0 + y1 - side, 0) // 2, height - side), side]


def square_in(x0, y0, x1, y1, size):
    """agc_core's square around the tight box, moved (not shrunk) into the image."""
    side = max(x1 - x0, y1 - y0)
    place = lambda start, extent: int(np.clip(start - (side - extent) // 2, 0, size - side))
    return place(x0, x1 - x0), place(y0, y1 - y0), side


def to_original(square, entry, size):
    """agc_core::CentreCrop::map_box."""
    cx, cy, cs = int(entry["crop_x"]), int(entry["crop_y"]), int(entry["crop_side"])
    scale = cs / size
    x, y, s = square
    mapped = min(max(round(s * scale), 1), cs)
    return [cx + min(round(x * scale), cs - mapped), cy + min(round(y * scale), cs - mapped), mapped]


def iou(a, b):
    w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0, min(a[1] + a[2], b[1] + b[2]) - max(a[1], b[1]))
    inter = w * h
    return inter / (a[2] ** 2 + b[2] ** 2 - inter)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--k", type=float, nargs="+", default=[1.0, 1.25, 1.5, 2.0, 3.0])
    args = parser.parse_args()
    for run in args.runs:
        config = json.loads((run / "config.json").read_text())
        data = Path(config["data"])
        size = config.get("chipnet_image_size") or config["image_size"]
        cache = Path(config["cache_dir"]) if config.get("cache_dir") else data / f"agc-cache-{size}"
        if config.get("cache_dir") and size != config["image_size"]:
            cache = cache / f"agc-cache-{size}"
        index = {r["image_name"]: r for r in csv.DictReader(open(cache / "train.index.csv"))}
        truth = {
            r["image_name"]: [int(r[c]) for c in ("lesion_x0", "lesion_y0", "lesion_x1", "lesion_y1")]
            for r in csv.DictReader(open(data / "train.csv"))
        }
        ious = {k: [] for k in args.k}
        for path in sorted((run / "attention").glob("fold*.csv")):
            for row in csv.DictReader(open(path)):
                if row["split"] != "train":
                    continue
                cells = np.array([float(v) for c, v in row.items() if c[0] == "a" and c[1:].isdigit()])
                grid = int(round(len(cells) ** 0.5))
                up = upsample(cells.reshape(grid, grid), size)
                mean, std = up.mean(), up.std()
                entry = index[row["image_name"]]
                target = true_square(truth[row["image_name"]], int(entry["width"]), int(entry["height"]))
                for k in args.k:
                    ys, xs = np.nonzero(up > mean + k * std)
                    if len(xs) == 0:
                        square = (0, 0, size)
                    else:
                        square = square_in(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, size)
                    ious[k].append(iou(to_original(square, entry, size), target))
        print(
            f"{run}: {len(ious[args.k[0]])} training boxes; median IoU "
            + ", ".join(f"k {k}: {np.median(v):.3f}" for k, v in ious.items())
        )


if __name__ == "__main__":
    main()
