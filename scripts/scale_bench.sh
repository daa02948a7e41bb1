#!/usr/bin/env bash
# How agc's cost grows with the data, up to ISIC 2020's size (docs/performance.md, "Cost with
# the data"): builds the release binary and runs scripts/scale_bench.py, which times every step
# of the CPU preset on 1 000, 4 000 and 16 000 photographs and projects them to ISIC 2020.
#
#   scripts/scale_bench.sh [--sizes "1000 4000 16000"] [--large-share 0.5] [--out DIR]
#
# Finished sizes are kept (OUT/results-N.json) and skipped when it runs again. Disk: the pool of
# photographs (about 1 GB) and each size's caches and crops (about 0.3 MB per photograph).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin agc
target=${CARGO_TARGET_DIR:-target}/release
exec python3 scripts/scale_bench.py --agc "$target/agc" "$@"
