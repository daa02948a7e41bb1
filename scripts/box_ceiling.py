#!/usr/bin/env python3
"""What IoU attention boxes can reach on a data set, without training anything.

For the training images of a data directory (its `agc-cache-S/train.npy` written by
`agc preprocess` or a run, and the true boxes in `train.csv`), computes the median IoU with the
true box of the box agc's rule (bilinear upsampling, threshold mean + k·std, bounding box,
square) draws from two kinds of attention map:

- the *oracle* map: each chip's weight is its overlap with the true box, the best a map on
  that grid can say: the ceiling the grid and the box rule put on IoU;
- the *contrast prior* alone (agc_core::contrast_prior with the field mask's rules), as
  ChipNet's attention would be if it learnt nothing.

Boxes and true boxes are compared in the S×S image's pixels (the true box mapped through the
centre square). Needs numpy.

    python3 scripts/box_ceiling.py DATA [--size 112] [--grids 7 14] [--k 1.5 3]
"""

import argparse
import csv
from pathlib import Path

import numpy as np

BLACK, OUTSIDE, CLEAN = 0.1, 0.75, 0.02


def load(data, size):
    cache = data / f"agc-cache-{size}"
    images = np.load(cache / "train.npy").astype(np.float32) / 255.0
    index = list(csv.DictReader(open(cache / "train.index.csv")))
    rows = {r["image_name"]: r for r in csv.DictReader(open(data / "train.csv"))}
    boxes = []
    for r in index:
        t = rows[r["image_name"]]
        x, y, side = int(r["crop_x"]), int(r["crop_y"]), int(r["crop_side"])
        scale = size / side
        boxes.append(
            [
                (int(t["lesion_x0"]) - x) * scale,
                (int(t["lesion_y0"]) - y) * scale,
                (int(t["lesion_x1"]) - x) * scale,
                (int(t["lesion_y1"]) - y) * scale,
            ]
        )
    return images, boxes


def upsample(m, size):
    """Bilinear, half-pixel centres (agc_core::upsample_bilinear)."""
    g = m.shape[0]
    src = np.clip((np.arange(size) + 0.5) * g / size - 0.5, 0, None)
    i0 = np.minimum(np.floor(src).astype(int), g - 1)
    i1 = np.minimum(i0 + 1, g - 1)
    w = src - i0
    rows = m[:, i0] * (1 - w) + m[:, i1] * w
    return rows[i0, :] * (1 - w)[:, None] + rows[i1, :] * w[:, None]


def square_box(m, size, k):
    up = upsample(m, size)
    ys, xs = np.nonzero(up > up.mean() + k * up.std())
    if len(xs) == 0:
        return [0, 0, size, size]
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = max(x1 - x0, y1 - y0)
    bx = min(max((x0 + x1 - side) // 2, 0), size - side)
    by = min(max((y0 + y1 - side) // 2, 0), size - side)
    return [bx, by, bx + side, by + side]


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def oracle_map(box, grid, size):
    c = size / grid
    m = np.zeros((grid, grid))
    for i in range(grid):
        for j in range(grid):
            w = max(0.0, min(box[2], (j + 1) * c) - max(box[0], j * c))
            h = max(0.0, min(box[3], (i + 1) * c) - max(box[1], i * c))
            m[i, j] = w * h
    return m / max(m.sum(), 1e-12)


def standardise(v, w):
    n = max(w.sum(), 1.0)
    centre = (v * w[:, None]).sum(0) / n
    spread = np.sqrt((((v - centre) ** 2) * w[:, None]).sum(0) / n)
    return (v - centre) / (spread + 1e-4)


def prior_map(image, grid):
    size = image.shape[0]
    c = size // grid
    chips = image.reshape(grid, c, grid, c, 3).transpose(0, 2, 1, 3, 4).reshape(grid * grid, c * c, 3)
    share = (chips.mean(2) < BLACK).mean(1)
    outside = share >= OUTSIDE
    if outside.all():
        outside[:] = False
    clean = (share <= CLEAN).astype(float)
    if clean.sum() == 0:
        clean[:] = 1.0
    z = standardise(np.concatenate([chips.mean(1), chips.std(1)], 1), clean)
    d = np.sqrt((z**2).sum(1))
    p = standardise(d[:, None], clean)[:, 0] * clean - 1e4 * outside
    e = np.exp(p - p.max())
    return (e / e.sum()).reshape(grid, grid)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--grids", type=int, nargs="+", default=[7, 14])
    parser.add_argument("--k", type=float, nargs="+", default=[1.5, 3.0])
    args = parser.parse_args()
    images, boxes = load(args.data, args.size)
    for grid in args.grids:
        for k in args.k:
            for name, make in [
                ("oracle", lambda i: oracle_map(boxes[i], grid, args.size)),
                ("contrast prior", lambda i: prior_map(images[i], grid)),
            ]:
                v = np.array([iou(square_box(make(i), args.size, k), boxes[i]) for i in range(len(boxes))])
                print(
                    f"{args.data} grid {grid}x{grid} k {k}: {name:14} median IoU {np.median(v):.3f}, "
                    f"IoU >= 0.4 in {np.mean(v >= 0.4):.0%}"
                )


if __name__ == "__main__":
    main()
