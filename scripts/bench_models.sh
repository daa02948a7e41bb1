#!/usr/bin/env bash
# agc's models against PyTorch on this machine: runs examples/model_bench.rs and
# scripts/torch_model_bench.py one after the other (never at once) with the same thread count,
# then prints, per workload, both medians and agc / PyTorch (below 1: agc is faster).
#
#     scripts/bench_models.sh [--reps N] [--parts]     # on an idle machine
#
# PYTHON names the interpreter with torch and torchvision (default python3); THREADS the
# threads each side uses (default: every core). Extra arguments go to both benches. The agc
# bench is built with `cargo build --release --example model_bench` (honours
# CARGO_TARGET_DIR and RUSTFLAGS, e.g. RUSTFLAGS="-C target-cpu=native").
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
threads=${THREADS:-$(nproc)}
target=${CARGO_TARGET_DIR:-target}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo build --release --example model_bench --quiet
RAYON_NUM_THREADS=$threads "$target/release/examples/model_bench" "$@" | tee "$out/agc"
"$python" scripts/torch_model_bench.py --threads "$threads" "$@" | tee "$out/torch"

echo
printf '%-34s %12s %12s %10s\n' workload "agc ms" "torch ms" "agc/torch"
awk '
  /^(RESULT|PART) / {
    key = ($1 == "PART") ? $2 "." $3 : $2
    ms = $NF; sub(/^median_ms=/, "", ms)
    if (FILENAME ~ /agc$/) { agc[key] = ms; order[++n] = key } else { torch[key] = ms }
  }
  END {
    for (i = 1; i <= n; i++) {
      k = order[i]
      if (k in torch && torch[k] > 0) {
        printf "%-34s %12.1f %12.1f %9.2fx\n", k, agc[k], torch[k], agc[k] / torch[k]
      } else {
        printf "%-34s %12.1f %12s %10s\n", k, agc[k], "-", "-"
      }
    }
  }' "$out/agc" "$out/torch"
