#!/usr/bin/env bash
# One agc pipeline over several seeds (folds, initialisation, sampling and augmentation all
# follow the seed), so that a figure that decides something is a mean and a spread, not one
# run (docs/results.md). Each seed's run is OUT/seed-N; a killed run resumes where it stopped,
# and a finished one is skipped. Prints the table of scripts/seeds_table.py at the end.
#
#   scripts/seeds.sh [--seeds 3] OUT -- PIPELINE_ARGUMENTS...
#   scripts/seeds.sh --seeds 3 runs/skin-cpu -- --data demo-data --preset cpu --no-metadata
#
# AGC=/path/to/agc chooses the binary (default: the release build, built first).
set -euo pipefail
cd "$(dirname "$0")/.."

seeds=3
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --seeds) seeds=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $# -ge 2 && $2 == -- ]] || { echo "usage: $0 [--seeds N] OUT -- PIPELINE_ARGUMENTS..." >&2; exit 2; }
out=$1
shift 2

if [[ -z ${AGC:-} ]]; then
  cargo build --release --locked --bin agc
  AGC=${CARGO_TARGET_DIR:-target}/release/agc
fi
mkdir -p "$out"
for s in $(seq 1 "$seeds"); do
  [[ -f $out/seed-$s/metrics.json ]] && continue
  /usr/bin/env time -f "%e s wall, %M KB peak" -o "$out/seed-$s.time" \
    "$AGC" pipeline --out "$out/seed-$s" --seed "$s" --quiet "$@"
done
python3 scripts/seeds_table.py "$out"
