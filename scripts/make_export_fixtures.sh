#!/usr/bin/env bash
# Writes crates/agc-train/tests/fixtures/export/: a tiny run trained and exported by agc (fold 0
# of its MetaResNet and its ChipNet, to keep the fixture small), and, in expected.safetensors,
# fixed inputs with the logits and attention maps PyTorch computes from the exported files
# alone (scripts/check_export.py). Needs a Python with torch, torchvision and safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
out=crates/agc-train/tests/fixtures/export
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
agc() { cargo run -q --bin agc -- "$@"; }
agc synth --out "$tmp/data" --train 24 --test 4 --positive-rate 0.5 --min-side 96 \
  --max-side 128 --seed 5 --quiet
agc pipeline --data "$tmp/data" --out "$tmp/run" --preset demo --image-size 32 --chip 8 \
  --folds 2 --epochs 1 --patience 1 --tta 0 --batch-size 8 --models resnet,chipnet --quiet
agc export --run "$tmp/run" --out "$tmp/export"
rm -rf "$out"
mkdir -p "$out/resnet" "$out/chipnet"
cp "$tmp/export/resnet/fold0.safetensors" "$out/resnet/"
cp "$tmp/export/chipnet/fold0.safetensors" "$out/chipnet/"
"$PYTHON" - "$tmp/export/model.json" "$out/model.json" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["models"] = {k: v for k, v in spec["models"].items() if k in ("resnet", "chipnet")}
for v in spec["models"].values():
    v["folds"] = v["folds"][:1]
json.dump(spec, open(sys.argv[2], "w"), indent=2)
PY
"$PYTHON" scripts/check_export.py "$out" --out "$out/expected.safetensors"
du -sh "$out"
