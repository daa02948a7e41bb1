#!/usr/bin/env python3
"""Writes the preprocessing-parity fixtures of agc-data (crates/agc-data/tests/fixtures/).

Four real-looking JPEGs (skin-toned, shaded, a dark irregular lesion, fine noise) of different
sizes and orientations, and for each the reference that torchvision's PIL pipeline gives:
centre square crop (side = shorter side, offsets placed as torchvision's `center_crop` places
them: `int(round((w - side) / 2.0))`, Python's round half to even, as agc does) then
`resize((224, 224), Image.BILINEAR)` (PIL's antialiased bilinear, what torchvision's Resize
uses on PIL images), saved as `<name>.224.npy` ([224, 224, 3] uint8).

Run from the repository root, with numpy and Pillow installed:

    python3 scripts/make_preprocess_fixtures.py

Tests that use the output: crates/agc-data/tests/preprocess_parity.rs
"""

from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "crates/agc-data/tests/fixtures"
SIZE = 224
# name: (width, height) — 1/2 and 1/4 DCT scaling, a square, and no scaling at all.
SPECS = {"landscape": (2400, 1600), "portrait": (1800, 2700), "square": (1024, 1024), "small": (640, 480)}


def render(width, height, rng):
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / width, y / height
    shade = 0.85 + 0.15 * np.cos(3.0 * u + 1.0) * np.cos(2.0 * v)
    vignette = 1.0 - 0.35 * ((u - 0.5) ** 2 + (v - 0.5) ** 2)
    skin = np.array([224.0, 172.0, 150.0]) * (shade * vignette)[..., None]
    cx, cy = width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6)
    r = min(width, height) * rng.uniform(0.08, 0.2)
    angle = np.arctan2(y - cy, x - cx)
    edge = r * (1.0 + 0.15 * np.sin(5.0 * angle) + 0.08 * np.sin(11.0 * angle + 1.0))
    inside = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) < edge
    lesion = np.array([95.0, 60.0, 45.0]) + 20.0 * np.sin(x / 7.0)[..., None] * np.cos(y / 5.0)[..., None]
    img = np.where(inside[..., None], lesion, skin)
    img += rng.normal(0.0, 4.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def main():
    rng = np.random.default_rng(2020)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (w, h) in SPECS.items():
        path = OUT / f"{name}.jpg"
        Image.fromarray(render(w, h, rng)).save(path, quality=85)
        img = Image.open(path).convert("RGB")
        side = min(img.width, img.height)
        # torchvision.transforms.functional.center_crop's offsets (torchvision 0.29).
        x = int(round((img.width - side) / 2.0))
        y = int(round((img.height - side) / 2.0))
        ref = img.crop((x, y, x + side, y + side)).resize((SIZE, SIZE), Image.BILINEAR)
        np.save(OUT / f"{name}.{SIZE}.npy", np.asarray(ref, dtype=np.uint8))


if __name__ == "__main__":
    main()
