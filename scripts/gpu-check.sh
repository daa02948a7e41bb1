#!/usr/bin/env bash
# GPU check for agc, sized for 8 minutes on one H100/H200. For each GPU backend (DEVICES,
# default "cuda:0 wgpu"):
#   1. the GPU tests (tests/wgpu.rs: ChipNet and ResNet-18 forward against Flex, ten training
#      steps against Flex) on that device;
#   2. a short pipeline (ResNet-18 backbones, 224 px, 2 folds, 2 epochs, 128 + 64 synthetic
#      images), with its wall time and results table;
#   3. the ResNet-18 and ChipNet-R18 training steps at batch 32 (examples/model_bench.rs);
# then the same steps in eager PyTorch on cuda:0 (scripts/torch_model_bench.py: fp32 with TF32,
# cuDNN autotuning), and for each model the seconds per training epoch of 1 000 images side by
# side with the ratio PyTorch / agc (the target is at least 0.8). Where nvidia-smi lists two
# GPUs, one model also trains data-parallel on cuda:0,cuda:1.
#
#   scripts/gpu-check.sh [OUT]        (default OUT: gpu-check/, a log per step plus summary.txt)
#
# The GPU machine needs no Rust and no internet: build the binaries beforehand on a CPU machine
# with scripts/gpu-bundle.sh (cuda and wgpu features, stripped, one xz archive) and carry
# gpu-bundle/ along; BUNDLE points elsewhere. Without a bundle the script builds one (needs
# Rust). wgpu reaches NVIDIA GPUs through their Vulkan driver (libvulkan and the NVIDIA ICD).
#
# A dry run on a machine without a GPU checks the script itself, on lavapipe:
#   DEVICES=wgpu:cpu SIZE=64 BACKBONE=tiny STEPS=r18 BATCH=2 REPS=1 BENCH_TIMEOUT=300 \
#       TORCH_DEVICE=cpu scripts/gpu-check.sh /tmp/gpu-dry
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu-check}"
BUNDLE="${BUNDLE:-gpu-bundle}"
DEVICES="${DEVICES:-cuda:0 wgpu}"
SIZE="${SIZE:-224}"
BACKBONE="${BACKBONE:-resnet18}"
STEPS="${STEPS:-r18 chipnet_r18}"
BATCH="${BATCH:-32}"
REPS="${REPS:-5}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-90}"
TORCH_DEVICE="${TORCH_DEVICE:-cuda:0}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
elapsed() { echo $(( $(date +%s) - $1 )); }

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader |
        sed 's/^/gpu: /' | tee -a "$SUMMARY"
else
    say "nvidia-smi: not found"
fi

# wgpu needs the Vulkan loader (libvulkan1): a machine without it can be handed Debian's .deb
# files in .gl/ (docs/gpu.md); the NVIDIA driver's Vulkan ICD is used where it is installed.
if ! ldconfig -p | grep -q libvulkan && ls .gl/*.deb > /dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nvidia_icd" ] && export VK_DRIVER_FILES="$nvidia_icd"

[ -f "$BUNDLE/bins.tar.xz" ] || scripts/gpu-bundle.sh "$BUNDLE" > "$OUT/bundle.log" 2>&1 ||
    { say "no bundle, and building one failed: see $OUT/bundle.log"; exit 1; }
xz -dc "$BUNDLE/bins.tar.xz" | tar -C "$OUT" -xf - || { say "cannot unpack $BUNDLE"; exit 1; }
BIN="$OUT/bins"
say "bundle: $(tr '\n' ';' < "$BUNDLE/BUILD")"

DATA="$OUT/data"
"$BIN/agc" synth --out "$DATA" --train 128 --test 64 --quiet > "$OUT/synth.log" 2>&1 ||
    say "synth FAILED: see $OUT/synth.log"

for dev in $DEVICES; do
    tag="${dev//:/-}"
    say "== $dev"
    start=$(date +%s)
    # The out-of-memory test is lavapipe's (a real GPU has room for its batch), and it runs the
    # agc binary at the path it was built with.
    if AGC_TEST_DEVICE="$dev" timeout 120 "$BIN/gpu-tests" --skip out_of_memory --nocapture \
        > "$OUT/tests-$tag.log" 2>&1; then
        say "tests: passed in $(elapsed "$start") s; $(grep -h 'against Flex' "$OUT/tests-$tag.log" |
            sed 's/: losses \[.*\], largest/: largest/' | tr '\n' ';')"
    else
        say "tests FAILED or timed out after $(elapsed "$start") s: see $OUT/tests-$tag.log"
        # Training stalled on CUDA with Burn 0.21: is it autotuning (every new shape tries
        # several kernels) or a hang? The training test again with the least autotuning.
        start=$(date +%s)
        if CUBECL_AUTOTUNE_LEVEL=minimal AGC_TEST_DEVICE="$dev" timeout 120 "$BIN/gpu-tests" \
            train_steps --nocapture > "$OUT/tests-$tag-minimal-autotune.log" 2>&1; then
            say "training test with CUBECL_AUTOTUNE_LEVEL=minimal: passed in $(elapsed "$start") s"
        else
            say "training test with CUBECL_AUTOTUNE_LEVEL=minimal: FAILED or timed out after $(elapsed "$start") s"
        fi
    fi

    start=$(date +%s)
    if timeout 180 "$BIN/agc" pipeline --data "$DATA" --out "$OUT/run-$tag" --device "$dev" \
        --backbone "$BACKBONE" --image-size "$SIZE" --folds 2 --epochs 2 --patience 2 --tta 1 \
        --quiet > "$OUT/pipeline-$tag.log" 2>&1; then
        say "pipeline: done in $(elapsed "$start") s"
        sed -n '/| model/,/^$/p' "$OUT/pipeline-$tag.log" | tee -a "$SUMMARY"
        for model in resnet chipnet cropnet; do
            state="$OUT/run-$tag/models/$model/fold0/state.json"
            [ -f "$state" ] && say "pipeline epoch, $model (fold 0, loader included): $(python3 -c \
                "import json,sys; print(round(json.load(open(sys.argv[1]))['history'][-1]['seconds'],2))" \
                "$state") s"
        done
    else
        say "pipeline FAILED or timed out after $(elapsed "$start") s: see $OUT/pipeline-$tag.log"
    fi

    for step in $STEPS; do
        timeout "$BENCH_TIMEOUT" "$BIN/model_bench" --device "$dev" --batch "$BATCH" --reps "$REPS" \
            --only "${step}_train_step_b${BATCH}_224" >> "$OUT/bench-$tag.log" 2>&1 ||
            say "bench $step FAILED or timed out: see $OUT/bench-$tag.log"
    done
    grep -h '^RESULT' "$OUT/bench-$tag.log" | sed "s/^RESULT /agc $dev /" | tee -a "$SUMMARY"
done

if "$PYTHON" -c "import sys, torch, torchvision
assert sys.argv[1] == 'cpu' or torch.cuda.is_available()" "$TORCH_DEVICE" 2>/dev/null; then
    for step in $STEPS; do
        timeout "$BENCH_TIMEOUT" "$PYTHON" scripts/torch_model_bench.py --device "$TORCH_DEVICE" \
            --batch "$BATCH" --reps "$REPS" --only "${step}_train_step_b${BATCH}_224" \
            >> "$OUT/bench-torch.log" 2>&1 || say "torch bench $step FAILED: see $OUT/bench-torch.log"
    done
    grep -h '^RESULT' "$OUT/bench-torch.log" | sed "s/^RESULT /torch $TORCH_DEVICE /" | tee -a "$SUMMARY"
else
    say "PyTorch with CUDA not available: no reference timings"
fi

say "== seconds per training epoch of 1000 images (model steps only, batch $BATCH; ratio = PyTorch / agc, target >= 0.8)"
python3 - "$SUMMARY" "$BATCH" <<'EOF' | tee -a "$SUMMARY"
import math, re, sys
lines = open(sys.argv[1]).read().splitlines()
batch = int(sys.argv[2])
ms = {}
for line in lines:
    m = re.match(r"(agc|torch) (\S+) (\S+) median_ms=([\d.]+)", line)
    if m:
        ms[(m[1], m[2], m[3])] = float(m[4])
epoch = lambda v: v * math.ceil(1000 / batch) / 1000
torch = {w: v for (who, _, w), v in ms.items() if who == "torch"}
for (who, dev, w), v in sorted(ms.items()):
    if who != "agc":
        continue
    ref = torch.get(w)
    line = f"{w} on {dev}: agc {epoch(v):.1f} s"
    if ref is not None:
        line += f", PyTorch {epoch(ref):.1f} s, ratio {ref / v:.2f}"
    print(line)
EOF

GPUS=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
if [ "$GPUS" -ge 2 ]; then
    say "== data-parallel training on cuda:0,cuda:1 (resnet, 2 folds, 2 epochs)"
    start=$(date +%s)
    if timeout 300 "$BIN/agc" train --model resnet --data "$DATA" --out "$OUT/run-2gpu" \
        --device cuda:0,cuda:1 --backbone "$BACKBONE" --image-size "$SIZE" --folds 2 \
        --epochs 2 --patience 2 --tta 1 --quiet > "$OUT/two-gpus.log" 2>&1; then
        say "two GPUs: done in $(elapsed "$start") s; $(grep -h 'OOF AUC' "$OUT/two-gpus.log")"
    else
        say "two GPUs FAILED or timed out after $(elapsed "$start") s: see $OUT/two-gpus.log"
    fi
else
    say "fewer than two GPUs: data-parallel training (--device cuda:0,cuda:1) not checked"
fi
say "summary in $SUMMARY"
