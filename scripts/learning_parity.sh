#!/usr/bin/env bash
# Learning parity with PyTorch (docs/learning-parity.md): the same model trained the same way in
# agc (examples/learning_parity.rs, through the library's train_fold) and in PyTorch
# (scripts/learning_parity.py), on the same images written once by agc, over several seeds;
# prints the table of mean and spread of validation AUC and loss per case.
#
#   scripts/learning_parity.sh [--seeds 5] [--epochs 15] [--cases "skin:oracle:16 ..."] [--out DIR]
#
# A case is FAMILY:IMAGES:WIDTH[:LR:BATCH] (images: oracle = true box squared with a 10 % margin,
# whole = the centre-cropped image; by default Adam 3e-4 and batch 16), all at 112 px, focal
# loss, class-balanced epochs, flips and quarter turns, dropout 0.3. Each run writes OUT/curves/FRAMEWORK-CASE-sSEED.json
# and is skipped when that file exists, so a killed benchmark resumes. Needs python3 with torch
# and numpy (PYTHON=/path/to/python to choose one).
set -euo pipefail
cd "$(dirname "$0")/.."

seeds=5
epochs=15
out=runs/learning-parity
cases="skin:oracle:16 dermoscopy:oracle:16 skin:whole:16 dermoscopy:whole:16 skin:oracle:64 dermoscopy:oracle:64"
python=${PYTHON:-python3}
while [[ $# -gt 0 ]]; do
  case $1 in
    --seeds) seeds=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --cases) cases=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

cargo build --release --locked --bin agc --example learning_parity
target=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$out/curves"

for family in $(for c in $cases; do echo "${c%%:*}"; done | sort -u); do
  # 600 photographs with true boxes, the family's defaults; seeds fixed so every run sees the
  # same images.
  seed=$([[ $family == skin ]] && echo 21 || echo 22)
  "$target/agc" synth --out "$out/$family-data" --family "$family" --train 600 --test 20 \
    --seed "$seed" --quiet
  [[ -f $out/$family/split.json ]] ||
    "$target/examples/learning_parity" prepare --data "$out/$family-data" --out "$out/$family"
done

for c in $cases; do
  IFS=: read -r family images width lr batch <<<"$c"
  lr=${lr:-3e-4}
  batch=${batch:-16}
  for s in $(seq 1 "$seeds"); do
    name="$family-$images-w$width-lr$lr-b$batch-s$s"
    args=(--set "$out/$family" --images "$images" --width "$width" --lr "$lr" --batch "$batch"
      --epochs "$epochs" --seed "$s")
    [[ -f $out/curves/agc-$name.json ]] ||
      "$target/examples/learning_parity" train "${args[@]}" --out "$out/curves/agc-$name.json"
    [[ -f $out/curves/pytorch-$name.json ]] ||
      "$python" scripts/learning_parity.py "${args[@]}" --out "$out/curves/pytorch-$name.json"
  done
done

"$python" scripts/learning_parity_table.py "$out/curves"
