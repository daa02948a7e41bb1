#!/usr/bin/env python3
"""Whole-process preprocessing benchmark: agc's `build_cache` against PIL, same machine, same files.

For a set of large JPEGs (6000×4000) and a set of small ones (1024×1024) it times, as wall clock of
the whole batch, best of 3 runs:

- agc: `examples/preprocess_bench.rs` (DCT-scaled decode, centre square crop, antialiased bilinear
  resize to 224 on all cores, `[N, 224, 224, 3]` uint8 `.npy` written to disk and synced);
- PIL, full decode, as torchvision users do it: `Image.open(p).convert("RGB")` → centre square crop
  → `resize((224, 224), Image.BILINEAR)` → `np.stack` into `[N, 224, 224, 3]` uint8, in a
  `multiprocessing.Pool` of `os.cpu_count()` processes;
- PIL with `img.draft("RGB", (448, 448))` before `convert`: libjpeg's own DCT scaling (1/2, 1/4,
  1/8 keeping both sides ≥ 448), the like-for-like comparison with agc's reduced-scale decode.

The PIL pool is started before the clock (its start-up is not counted) and its result stays in
memory; agc's time includes writing the cache to disk. Both are to PIL's advantage.

The images are generated once (seeded, real-looking: skin-toned shaded background, a dark
irregular blob, mild noise, JPEG quality 90) into DIR/large and DIR/small and reused afterwards.

Run from the repository root, with numpy and Pillow installed (`pip install numpy pillow`) and
the Rust toolchain on the PATH:

    python3 scripts/bench_preprocess.py [--dir /tmp/agc-bench] [--large 12] [--small 60]

The agc example is run with `cargo run --release --example preprocess_bench` (built on first use;
honours CARGO_TARGET_DIR), or pass a built binary with `--agc-bin`.
"""

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 224
RUNS = 3
LARGE = (6000, 4000)
SMALL = (1024, 1024)
REPO = Path(__file__).resolve().parent.parent


def render(width, height, rng):
    """A skin-like picture: shaded, vignetted background, a dark irregular blob, mild noise."""
    x = (np.arange(width, dtype=np.float32) / width)[None, :]
    y = (np.arange(height, dtype=np.float32) / height)[:, None]
    shade = 0.85 + 0.15 * np.cos(3.0 * x + rng.uniform(0, 2)) * np.cos(2.0 * y + rng.uniform(0, 2))
    vignette = 1.0 - 0.35 * ((x - 0.5) ** 2 + (y - 0.5) ** 2)
    # A skin tone: one brightness for all channels, a small hue jitter per channel.
    jitter = rng.uniform(0.97, 1.03, 3) * rng.uniform(0.8, 1.05)
    tone = (np.array([224.0, 172.0, 150.0]) * jitter).astype(np.float32)
    img = (shade * vignette)[..., None] * tone

    # The blob: a wobbly disc in pixel units, with a little texture of its own.
    px, py = x * width, y * height
    cx, cy = width * rng.uniform(0.35, 0.65), height * rng.uniform(0.35, 0.65)
    r = min(width, height) * rng.uniform(0.08, 0.2)
    angle = np.arctan2(py - cy, px - cx)
    edge = r * (1.0 + 0.15 * np.sin(5.0 * angle + rng.uniform(0, 6)) + 0.08 * np.sin(11.0 * angle))
    inside = (px - cx) ** 2 + (py - cy) ** 2 < edge**2
    texture = 15.0 * np.sin(px / 7.0)[..., None] * np.cos(py / 5.0)[..., None]
    lesion = np.array([95.0, 60.0, 45.0], dtype=np.float32) + texture
    img = np.where(inside[..., None], lesion, img)
    del inside, angle, edge, texture, lesion

    img += rng.standard_normal(img.shape, dtype=np.float32) * 4.0
    return np.clip(img, 0, 255).astype(np.uint8)


def generate(folder, count, size, seed):
    """Writes `count` JPEGs of `size` into `folder` unless they are already there."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    paths = []
    for i in range(count):
        path = folder / f"img{i:04d}.jpg"
        # One generator per image, so adding images never changes the existing ones.
        image_rng = np.random.default_rng([seed, i])
        if not path.is_file():
            print(f"  writing {path} ({width}×{height})", file=sys.stderr, flush=True)
            tmp = path.with_suffix(".jpg.partial")
            Image.fromarray(render(width, height, image_rng)).save(tmp, format="JPEG", quality=90)
            tmp.replace(path)
        paths.append(path)
    return paths


def centre_crop_resize(img):
    side = min(img.width, img.height)
    # torchvision's center_crop offsets (Python's round half to even), as agc places them.
    x, y = int(round((img.width - side) / 2.0)), int(round((img.height - side) / 2.0))
    img = img.crop((x, y, x + side, y + side)).resize((SIZE, SIZE), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def pil_full(path):
    with Image.open(path) as img:
        return centre_crop_resize(img.convert("RGB"))


def pil_draft(path):
    with Image.open(path) as img:
        img.draft("RGB", (2 * SIZE, 2 * SIZE))
        return centre_crop_resize(img.convert("RGB"))


def time_pil(pool, fn, paths):
    """Best wall time of RUNS batches: every image through `fn` in the pool, stacked."""
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        batch = np.stack(pool.map(fn, paths, chunksize=1))
        best = min(best, time.perf_counter() - start)
        assert batch.shape == (len(paths), SIZE, SIZE, 3) and batch.dtype == np.uint8
    return best


def time_agc(folder, count, agc_bin):
    """Runs the agc example on `folder` and returns its best wall time."""
    if agc_bin:
        cmd = [agc_bin, str(folder)]
    else:
        cmd = ["cargo", "run", "--release", "--quiet", "--example", "preprocess_bench", "--"]
        cmd.append(str(folder))
    # stderr passes through: cargo's errors, and the example's own.
    out = subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r"^agc images=(\d+) best_seconds=([0-9.]+) images_per_second=([0-9.]+)$", out, re.M)
    if not m:
        sys.exit(f"cannot parse the agc example's output:\n{out}")
    if int(m.group(1)) != count:
        sys.exit(f"agc saw {m.group(1)} images in {folder}, expected {count} (stray *.jpg files?)")
    return float(m.group(2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/agc-bench"),
                        help="where the generated JPEGs live (default: /tmp/agc-bench)")
    parser.add_argument("--large", type=int, default=12, help="6000×4000 images (default: 12)")
    parser.add_argument("--small", type=int, default=60, help="1024×1024 images (default: 60)")
    parser.add_argument("--agc-bin",
                        help="a built preprocess_bench binary (default: cargo run --release)")
    args = parser.parse_args()

    sets = [
        ("large 6000×4000", args.dir / "large", args.large, LARGE, 1),
        ("small 1024×1024", args.dir / "small", args.small, SMALL, 2),
    ]
    cores = os.cpu_count()
    rows = []
    with multiprocessing.Pool(cores) as pool:
        for label, folder, count, size, seed in sets:
            if count <= 0:
                continue
            print(f"{label}: {count} images in {folder}", file=sys.stderr, flush=True)
            paths = generate(folder, count, size, seed)
            stray = sorted(set(folder.glob("*.jpg")) - set(paths))
            if stray:
                sys.exit(f"{folder} holds other *.jpg files ({stray[0].name}, ...); remove them or use another --dir")
            agc = time_agc(folder, count, args.agc_bin)
            full = time_pil(pool, pil_full, paths)
            draft = time_pil(pool, pil_draft, paths)
            rows.append((label, count, agc, full, draft))

    print(f"preprocessing to {SIZE}×{SIZE} uint8, wall clock of the whole batch, best of {RUNS}, "
          f"{cores} cores (PIL: Pool({cores}))")
    header = ("set", "images", "agc img/s", "PIL full img/s", "PIL draft img/s",
              "agc/PIL full", "agc/PIL draft")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for label, count, agc, full, draft in rows:
        print(f"| {label} | {count} | {count / agc:.1f} | {count / full:.1f} | {count / draft:.1f} "
              f"| {full / agc:.2f}× | {draft / agc:.2f}× |")


if __name__ == "__main__":
    main()
