#!/usr/bin/env bash
# Writes the export fixtures of crates/agc-train/tests/export_parity.rs: tiny runs trained and
# exported by agc, and, in each expected.safetensors, fixed inputs with the logits and attention
# maps PyTorch computes from the exported files alone (scripts/check_export.py):
#   tests/fixtures/export/            fold 0 of the MetaResNet and of the ChipNet (seed's attention)
#   tests/fixtures/export-attention/  fold 0 of a ChipNet with 1x1 attention kernels, the field
#                                     mask and the contrast prior
# Needs a Python with torch, torchvision and safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
agc() { cargo run -q --bin agc -- "$@"; }
agc synth --out "$tmp/data" --train 24 --test 4 --positive-rate 0.5 --min-side 96 \
  --max-side 128 --seed 5 --quiet

# fixture NAME MODELS [pipeline flags...]
fixture() {
  local name=$1 models=$2
  shift 2
  local out=crates/agc-train/tests/fixtures/$name
  agc pipeline --data "$tmp/data" --out "$tmp/$name" --preset demo --image-size 32 --chip 8 \
    --folds 2 --epochs 1 --patience 1 --tta 0 --batch-size 8 --models "$models" --quiet "$@"
  agc export --run "$tmp/$name" --out "$tmp/$name-export"
  rm -rf "$out"
  for m in ${models//,/ }; do
    mkdir -p "$out/$m"
    cp "$tmp/$name-export/$m/fold0.safetensors" "$out/$m/"
  done
  "$PYTHON" - "$tmp/$name-export/model.json" "$out/model.json" "$models" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
keep = sys.argv[3].split(",")
spec["models"] = {k: v for k, v in spec["models"].items() if k in keep}
for v in spec["models"].values():
    v["folds"] = v["folds"][:1]
json.dump(spec, open(sys.argv[2], "w"), indent=2)
PY
  "$PYTHON" scripts/check_export.py "$out" --out "$out/expected.safetensors"
  du -sh "$out"
}

fixture export resnet,chipnet
fixture export-attention chipnet --attention-kernel 1 --field-mask --contrast-prior 2
