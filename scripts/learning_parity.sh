#!/usr/bin/env bash
# Learning parity with PyTorch (docs/learning-parity.md): the same model trained the same way in
# agc (examples/learning_parity.rs, through the library's train_fold) and in PyTorch
# (scripts/learning_parity.py), on the same images written once by agc, over several seeds;
# prints the table of mean and spread of validation AUC and loss per case. With --agc-only it
# trains agc alone: the recipe curves of docs/results.md.
#
#   scripts/learning_parity.sh [--seeds 5] [--epochs 15] [--cases "skin:oracle:16 ..."]
#                              [--agc-only] [--out DIR]
#
# A case is FAMILY:IMAGES:WIDTH[:LR[:BATCH[:SIZE[:MARGIN[:AUGMENT]]]]]: images oracle (the true
# box squared with MARGIN of context, 0.1 unless given) or whole (the centre-cropped image);
# Adam LR (3e-4), BATCH (16), SIZE pixels (112); AUGMENT symmetries (flips and quarter turns, the
# default and the only one PyTorch draws the same way) or train (agc's pipeline augmentation,
# agc only). Always focal loss, class-balanced epochs, dropout 0.3. Each run writes
# OUT/curves/FRAMEWORK-CASE-sSEED.json and is skipped when that file exists, so a killed
# benchmark resumes. Needs python3 with torch and numpy (PYTHON=/path/to/python to choose one)
# unless --agc-only.
set -euo pipefail
cd "$(dirname "$0")/.."

seeds=5
epochs=15
out=runs/learning-parity
cases="skin:oracle:16 dermoscopy:oracle:16 skin:whole:16 dermoscopy:whole:16 skin:oracle:64 dermoscopy:oracle:64"
python=${PYTHON:-python3}
agc_only=false
while [[ $# -gt 0 ]]; do
  case $1 in
    --seeds) seeds=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --cases) cases=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --agc-only) agc_only=true; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

cargo build --release --locked --bin agc --example learning_parity
target=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$out/curves"

# The folder of prepared images of a family at a size and margin (the defaults keep the
# historical name).
set_dir() {
  if [[ $2 == 112 && $3 == 0.1 ]]; then echo "$out/$1"; else echo "$out/$1-px$2-m$3"; fi
}

for c in $cases; do
  IFS=: read -r family images width lr batch size margin augment <<<"$c"
  size=${size:-112}
  margin=${margin:-0.1}
  dir=$(set_dir "$family" "$size" "$margin")
  [[ -f $dir/split.json ]] && continue
  # 600 photographs with true boxes, the family's defaults; seeds fixed so every run sees the
  # same images.
  seed=$([[ $family == skin ]] && echo 21 || echo 22)
  [[ -f $out/$family-data/train.csv ]] ||
    "$target/agc" synth --out "$out/$family-data" --family "$family" --train 600 --test 20 \
      --seed "$seed" --quiet
  "$target/examples/learning_parity" prepare --data "$out/$family-data" --out "$dir" \
    --size "$size" --margin "$margin"
done

for c in $cases; do
  IFS=: read -r family images width lr batch size margin augment <<<"$c"
  lr=${lr:-3e-4}
  batch=${batch:-16}
  size=${size:-112}
  margin=${margin:-0.1}
  augment=${augment:-symmetries}
  name="$family-$images-w$width-lr$lr-b$batch"
  [[ $size == 112 ]] || name+="-px$size"
  [[ $margin == 0.1 ]] || name+="-m$margin"
  [[ $augment == symmetries ]] || name+="-$augment"
  for s in $(seq 1 "$seeds"); do
    args=(--set "$(set_dir "$family" "$size" "$margin")" --images "$images" --width "$width"
      --lr "$lr" --batch "$batch" --epochs "$epochs" --augment "$augment" --seed "$s")
    [[ -f $out/curves/agc-$name-s$s.json ]] ||
      "$target/examples/learning_parity" train "${args[@]}" --out "$out/curves/agc-$name-s$s.json"
    $agc_only || [[ -f $out/curves/pytorch-$name-s$s.json ]] ||
      "$python" scripts/learning_parity.py "${args[@]}" --out "$out/curves/pytorch-$name-s$s.json"
  done
done

"$python" scripts/learning_parity_table.py "$out/curves"
