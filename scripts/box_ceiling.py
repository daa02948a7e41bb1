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

The box rule (`square_box`: upsampling, threshold, bounding box, fallbacks, squaring) is
agc_core::attention_box's, in the same f32 arithmetic. `--fixture` writes it on seeded maps for
the Rust test that keeps the two equal (crates/agc-core/tests/box_rule_parity.rs):

    python3 scripts/box_ceiling.py --fixture crates/agc-core/tests/fixtures/box_rule.json
"""

import argparse
import csv
import json
import math
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
    """Bilinear, half-pixel centres, in f32 as agc_core::upsample_bilinear (rows first)."""
    g = m.shape[0]
    src = np.clip((np.arange(size) + 0.5) * (g / size) - 0.5, 0, None)
    i0 = np.minimum(np.floor(src).astype(int), g - 1)
    i1 = np.minimum(i0 + 1, g - 1)
    w = (src - i0).astype(np.float32)
    m = m.astype(np.float32)
    rows = m[:, i0] * (np.float32(1) - w) + m[:, i1] * w
    return rows[i0, :] * (np.float32(1) - w)[:, None] + rows[i1, :] * w[:, None]


def square_around(x0, y0, x1, y1, size, margin=0.0, min_side=0):
    """agc_core::Rect::square_around in a size×size image: side = the longer side plus `margin`
    of it on each side (at least `min_side`, at most the image), same centre with the odd
    leftover after the box, moved (not shrunk) inside."""
    longer = max(x1 - x0, y1 - y0)
    side = min(max(math.ceil(longer * (1.0 + 2.0 * max(margin, 0.0))), min_side, 1), size)
    place = lambda start, extent: min(max(start - (side - extent) // 2, 0), size - side)
    x, y = place(x0, x1 - x0), place(y0, y1 - y0)
    return [x, y, x + side, y + side]


def square_box(m, size, k, margin=0.0, min_side=0, tolerance=1e-3):
    """agc_core::attention_box on a size×size image: [x0, y0, x1, y1] and whether it fell back
    to the whole image (a map not finite, near-uniform, or with no pixel above the threshold)."""
    whole = ([0, 0, size, size], True)
    if not np.all(np.isfinite(m)):
        return whole
    up = upsample(m, size)
    values = up.astype(np.float64).ravel()
    mean = math.fsum(values) / values.size
    std = math.sqrt(math.fsum((values - mean) ** 2) / values.size)
    if std == 0.0 or std <= tolerance * abs(mean):
        return whole
    ys, xs = np.nonzero(up > np.float32(mean + k * std))
    if len(xs) == 0:
        return whole
    return square_around(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, size, margin, min_side), False


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


def fixture(path):
    """Seeded maps of every kind the box rule meets, with the box it draws from each."""
    rng = np.random.default_rng(24)
    cases = []

    def add(m, size, k, margin=0.0, min_side=0):
        m = np.asarray(np.round(m, 5), dtype=np.float32)
        box, fallback = square_box(m, size, k, margin, min_side)
        cases.append(
            {
                "grid": int(m.shape[0]),
                "size": size,
                "k": k,
                "margin": margin,
                "min_side": min_side,
                "map": [round(float(v), 5) for v in m.ravel()],
                "box": [int(v) for v in box],
                "fallback": fallback,
            }
        )

    for grid, size, n in [(7, 112, 10), (14, 112, 6), (7, 224, 6), (28, 224, 2), (5, 96, 6)]:
        for _ in range(n):
            # The oracle map of a random box, as main() draws them.
            x0, y0 = rng.uniform(0, size * 0.8, 2)
            w, h = rng.uniform(3, size * 0.5, 2)
            box = [x0, y0, min(x0 + w, size), min(y0 + h, size)]
            add(oracle_map(box, grid, size), size, float(rng.choice([1.0, 1.25, 1.5, 3.0])))
            # A random map, a hot chip on noise, a sharpened one (softmax of scores).
            add(rng.uniform(0, 1, (grid, grid)), size, 1.5, float(rng.choice([0.0, 0.1, 0.25])))
            m = rng.uniform(0, 0.2, (grid, grid))
            m[rng.integers(grid), rng.integers(grid)] = 1.0
            add(m, size, float(rng.choice([1.0, 1.5, 3.0])), 0.0, int(rng.choice([0, 40])))
            e = np.exp(3.0 * rng.normal(size=(grid, grid)))
            add(e / e.sum(), size, 1.25)
    # The fallbacks: uniform, all zero, everything hot but one chip.
    add(np.full((7, 7), 1 / 49), 112, 1.5)
    add(np.zeros((7, 7)), 112, 1.5)
    m = np.ones((7, 7))
    m[0, 0] = 0.0
    add(m, 112, 1.5)
    Path(path).write_text(json.dumps({"made_by": "scripts/box_ceiling.py --fixture", "cases": cases}, separators=(",", ":")) + "\n")
    print(f"{len(cases)} cases in {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="?")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--grids", type=int, nargs="+", default=[7, 14])
    parser.add_argument("--k", type=float, nargs="+", default=[1.5, 3.0])
    parser.add_argument("--fixture", type=Path, help="write the box rule's test fixture here instead")
    args = parser.parse_args()
    if args.fixture:
        return fixture(args.fixture)
    if args.data is None:
        parser.error("give DATA or --fixture")
    images, boxes = load(args.data, args.size)
    for grid in args.grids:
        for k in args.k:
            for name, make in [
                ("oracle", lambda i: oracle_map(boxes[i], grid, args.size)),
                ("contrast prior", lambda i: prior_map(images[i], grid)),
            ]:
                v = np.array([iou(square_box(make(i), args.size, k)[0], boxes[i]) for i in range(len(boxes))])
                print(
                    f"{args.data} grid {grid}x{grid} k {k}: {name:14} median IoU {np.median(v):.3f}, "
                    f"IoU >= 0.4 in {np.mean(v >= 0.4):.0%}"
                )


if __name__ == "__main__":
    main()
