#!/usr/bin/env bash
# agc's models against PyTorch on this machine: runs examples/model_bench.rs and
# scripts/torch_model_bench.py one after the other (never at once) with the same thread count,
# then prints, per workload, both medians and agc / PyTorch (below 1: agc is faster).
#
#     scripts/bench_models.sh [--rounds N] [--reps N] [--parts]     # on an idle machine
#
# --rounds N runs the two benches N times, alternating, and keeps each workload's lowest median
# of the N on each side: on a shared machine whose speed drifts over minutes (other tenants of a
# virtual machine's host), what is left of the drift then weighs on both sides alike.
# PYTHON names the interpreter with torch and torchvision (default python3); THREADS the
# threads each side uses (default: every core). Extra arguments go to both benches. The agc
# bench is built with `cargo build --release --example model_bench` (honours
# CARGO_TARGET_DIR and RUSTFLAGS, e.g. RUSTFLAGS="-C target-cpu=native").
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
threads=${THREADS:-$(nproc)}
target=${CARGO_TARGET_DIR:-target}
rounds=1
args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo build --release --example model_bench --quiet
for r in $(seq 1 "$rounds"); do
  RAYON_NUM_THREADS=$threads "$target/release/examples/model_bench" "${args[@]}" | tee "$out/agc.$r"
  "$python" scripts/torch_model_bench.py --threads "$threads" "${args[@]}" | tee "$out/torch.$r"
done
cat "$out"/agc.* >"$out/agc"
cat "$out"/torch.* >"$out/torch"

echo
[[ $rounds == 1 ]] || echo "(the lowest median of $rounds alternating rounds on each side)"
printf '%-34s %12s %12s %10s\n' workload "agc ms" "torch ms" "agc/torch"
awk '
  function keep(table, key, ms) { if (!(key in table) || ms < table[key]) table[key] = ms }
  /^(RESULT|PART) / {
    key = ($1 == "PART") ? $2 "." $3 : $2
    ms = $NF; sub(/^median_ms=/, "", ms); ms += 0
    if (FILENAME ~ /agc$/) { if (!(key in agc)) order[++n] = key; keep(agc, key, ms) }
    else { keep(torch, key, ms) }
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
