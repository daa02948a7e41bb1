#!/usr/bin/env python3
"""Measures agc's preprocessing against torchvision's PIL pipeline on large generated JPEGs.

The committed fixtures (scripts/make_preprocess_fixtures.py) stay small, so the large-JPEG case
(short side ≥ 3 584 px, where a DCT-scaled decode at 224 would reach 1/8) is measured here:
it generates seeded photographs like the fixtures' (6000×4000, the ISIC size, and 3600×3600;
JPEG quality 90) into DIR, runs `crates/agc-data/examples/preprocess_npy.rs` on them, and
compares with PIL: full decode → `convert("RGB")` → centre square placed as torchvision's
`center_crop` (`int(round((w - side) / 2.0))`) → `resize((224, 224), Image.BILINEAR)`. It prints
per image the mean absolute error, the mean signed error of each channel (agc − PIL) and the
largest difference, for agc's cache decode and for agc's full-resolution decode.

Run from the repository root, with numpy and Pillow installed and the Rust toolchain on the PATH:

    python3 scripts/measure_preprocess_parity.py [--dir /tmp/agc-parity]
"""

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_preprocess_fixtures import render  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SIZE = 224
SPECS = {"isic_6000x4000": (6000, 4000), "square_3600": (3600, 3600)}


def pil_reference(path):
    with Image.open(path) as img:
        img = img.convert("RGB")
        side = min(img.width, img.height)
        x = int(round((img.width - side) / 2.0))
        y = int(round((img.height - side) / 2.0))
        img = img.crop((x, y, x + side, y + side)).resize((SIZE, SIZE), Image.BILINEAR)
        return np.asarray(img, dtype=np.int16)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/agc-parity"),
                        help="where the generated JPEGs and agc's outputs go (default: /tmp/agc-parity)")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    paths = []
    for name, (w, h) in SPECS.items():
        path = args.dir / f"{name}.jpg"
        Image.fromarray(render(w, h, rng)).save(path, quality=90)
        paths.append(path)
    cmd = ["cargo", "run", "--release", "--quiet", "-p", "agc-data", "--example", "preprocess_npy",
           "--", str(args.dir)] + [str(p) for p in paths]
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    print("| image | agc decode | MAE | mean signed R, G, B | max |")
    print("|---|---|---|---|---|")
    for path in paths:
        ref = pil_reference(path)
        for suffix, label in [("", "cache (DCT-scaled)"), (".full", "full")]:
            ours = np.load(args.dir / f"{path.stem}.{SIZE}{suffix}.npy").astype(np.int16)
            diff = ours - ref
            signed = ", ".join(f"{v:+.3f}" for v in diff.reshape(-1, 3).mean(axis=0))
            print(f"| {path.stem} | {label} | {np.abs(diff).mean():.3f} | {signed} "
                  f"| {np.abs(diff).max()} |")


if __name__ == "__main__":
    main()
