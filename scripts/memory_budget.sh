#!/usr/bin/env bash
# The memory budget of issue 23 (docs/robustness.md): peak resident memory of agc preprocess and
# agc predict on one image at the pixel limit (a JPEG and an RGBA PNG of 16 384 × 10 922 =
# 178.9 MP, just under --max-image-pixels) and on N and 4N photographs of 6000 × 4000, each run
# under `ulimit -v` (so an allocation past the budget fails instead of swapping) and timed by
# /usr/bin/time. The peak must not grow with the number of images.
#
#   scripts/memory_budget.sh [--images N] [--limit-mb MIB] [--run RUN] [--out DIR]
#
# --run names a trained run (agc pipeline --preset cpu, for instance) for agc predict; without it
# only agc preprocess is measured. Needs python3 with numpy and Pillow (PYTHON=...) to write the
# images; AGC=/path/to/agc chooses the binary (default: the release build, built first).
set -euo pipefail
cd "$(dirname "$0")/.."

n=25
limit_mb=2048
run=""
out=runs/memory-budget
python=${PYTHON:-python3}
while [[ $# -gt 0 ]]; do
  case $1 in
    --images) n=$2; shift 2 ;;
    --limit-mb) limit_mb=$2; shift 2 ;;
    --run) run=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [[ -z ${AGC:-} ]]; then
  cargo build --release --locked --bin agc
  AGC=${CARGO_TARGET_DIR:-target}/release/agc
fi
mkdir -p "$out"

# Data folders in the ISIC layout: limit-jpg, limit-png (one image each), many-N and many-4N.
"$python" - "$out" "$n" <<'PY'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

Image.MAX_IMAGE_PIXELS = None
out, n = Path(sys.argv[1]), int(sys.argv[2])
HEAD = "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,target\n"


def photograph(w, h, seed, mode="RGB"):
    """A smooth photograph-like image with a dark blob, from a small random field."""
    rng = np.random.default_rng(seed)
    small = rng.integers(60, 230, (12, 18, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((w, h), Image.BILINEAR)
    return image.convert(mode) if mode != "RGB" else image


def folder(name, files):
    d = out / name
    if (d / "train.csv").exists():
        return
    (d / "train").mkdir(parents=True, exist_ok=True)
    rows, written = [], {}
    for i, (stem, ext, image) in enumerate(files):
        path = d / "train" / f"{stem}.{ext}"
        if id(image) in written:  # the same photograph again: copy its bytes, encode once
            path.write_bytes(written[id(image)])
        else:
            image.save(path, quality=90)
            written[id(image)] = path.read_bytes()
        rows.append(f"{stem},IP_{i},male,50,torso,{i % 2}\n")
    (d / "train.csv").write_text(HEAD + "".join(rows))


w, h = 16384, 10922
folder("limit-jpg", [("ISIC_limit", "jpg", photograph(w, h, 1))])
folder("limit-png", [("ISIC_limit", "png", photograph(w, h, 1, "RGBA"))])
for count in (n, 4 * n):
    base = photograph(6000, 4000, 2)
    folder(f"many-{count}", [(f"ISIC_{i:07d}", "jpg", base) for i in range(count)])
PY

printf '| command | images | wall (s) | peak RSS (MiB) | exit |\n|---|---|---|---|---|\n'
measure() {
  local label=$1 data=$2
  shift 2
  local status=0
  (ulimit -v $((limit_mb * 1024)); /usr/bin/time -f "%e %M" -o "$out/time" "$@" >"$out/log" 2>&1) ||
    status=$?
  read -r wall kb <"$out/time" || { wall=?; kb=0; }
  printf '| %s | %s | %s | %d | %s |\n' "$label" "$data" "$wall" $((kb / 1024)) "$status"
}
for data in limit-jpg limit-png "many-$n" "many-$((4 * n))"; do
  rm -rf "$out/$data/agc-cache-"* "$out/run-$data"
  measure "agc preprocess --preset cpu" "$data" \
    "$AGC" preprocess --data "$out/$data" --out "$out/run-$data" --preset cpu --quiet
  if [[ -n $run ]]; then
    rm -rf "$out/predict-$data"
    measure "agc predict" "$data" \
      "$AGC" predict --run "$run" --images "$out/$data/train" --out "$out/predict-$data" --quiet
  fi
done
echo "(ulimit -v $limit_mb MiB; $(grep -o 'avx512f' /proc/cpuinfo | head -1 || echo no-avx512), $(nproc) cores)"
