#!/usr/bin/env bash
# agc's models against PyTorch on this machine: runs examples/model_bench.rs and
# scripts/torch_model_bench.py one after the other (never at once) with the same thread count,
# then prints, per workload, both medians and agc / PyTorch (below 1: agc is faster).
#
#     scripts/bench_models.sh [--rounds N] [--reps N] [--parts]     # on an idle machine
#
# --rounds N runs the two benches N times, alternating, and keeps, per workload and side, the
# round with the lowest median (and that round's parts): on a shared machine whose speed drifts
# over minutes (other tenants of a virtual machine's host), the drift then weighs on both sides
# alike.
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
echo
[[ $rounds == 1 ]] || echo "(each side's round with the lowest median step; its parts are that round's)"
printf '%-34s %12s %12s %10s\n' workload "agc ms" "torch ms" "agc/torch"
awk '
  # Per side and workload, the round with the lowest RESULT; PART rows come from that round, so
  # that a step and its parts were measured together.
  /^(RESULT|PART) / {
    side = (FILENAME ~ /\/agc\.[0-9]+$/) ? "agc" : "torch"
    round = FILENAME; sub(/.*\./, "", round)
    key = ($1 == "PART") ? $2 "." $3 : $2
    ms = $NF; sub(/^median_ms=/, "", ms); ms += 0
    value[side, round, key] = ms
    workload[key] = $2
    if (side == "agc" && !(key in seen)) { seen[key] = 1; order[++n] = key }
    if ($1 == "RESULT" && (!((side, key) in best) || ms < best[side, key])) {
      best[side, key] = ms; chosen[side, key] = round
    }
  }
  function pick(side, key,   w) {
    w = workload[key]
    if (!((side, w) in chosen) || !((side, chosen[side, w], key) in value)) return ""
    return value[side, chosen[side, w], key]
  }
  END {
    for (i = 1; i <= n; i++) {
      k = order[i]; a = pick("agc", k); t = pick("torch", k)
      if (t != "" && t > 0) {
        printf "%-34s %12.1f %12.1f %9.2fx\n", k, a, t, a / t
      } else {
        printf "%-34s %12.1f %12s %10s\n", k, a, "-", "-"
      }
    }
  }' "$out"/agc.* "$out"/torch.*
