#!/usr/bin/env python3
"""Compares the JPEG decoders agc can use with Pillow's on the same files (docs/performance.md,
"JPEG decoders"): runs `crates/agc-data/examples/jpeg_decoders.rs` (jpeg-decoder at full size,
1/2 and 1/4; zune-jpeg at full size), then times Pillow (libjpeg-turbo) at full size and with
`draft` to 1/4 and 1/8, one thread each, best of three passes, and prints milliseconds per image.

    python3 scripts/bench_jpeg_decoders.py FILE.jpg ...     # needs Pillow
"""

import io
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def pillow(datas, reduce):
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for data in datas:
            with Image.open(io.BytesIO(data)) as img:
                if reduce > 1:
                    img.draft("RGB", (img.width // reduce, img.height // reduce))
                img.convert("RGB").load()
        best = min(best, (time.perf_counter() - started) * 1e3 / len(datas))
    return best


def main():
    files = sys.argv[1:]
    if not files:
        sys.exit(__doc__)
    out = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "--locked", "-p", "agc-data", "--example",
         "jpeg_decoders", "--", *files],
        cwd=REPO, check=True, capture_output=True, text=True).stdout
    rows = [(line.split()[0], float(line.split("=")[1])) for line in out.splitlines()]
    datas = [Path(f).read_bytes() for f in files]
    rows += [("pillow-full", pillow(datas, 1)), ("pillow-draft-1/4", pillow(datas, 4)),
             ("pillow-draft-1/8", pillow(datas, 8))]
    print(f"{len(files)} files, one thread, best of 3")
    print("| decoder | ms per image |\n|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
