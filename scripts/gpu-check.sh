#!/usr/bin/env bash
# GPU check for agc: build with CUDA, run the model tests on the GPU, run a short pipeline on
# cuda:0, train data-parallel on two GPUs where there are two, and time one training epoch of
# each model against PyTorch on the same GPU.
#
#   scripts/gpu-check.sh [OUT]        (default OUT: gpu-check/, a log per step plus summary.txt)
#
# Needs an NVIDIA GPU with its driver. Rust is needed to build; on a machine without it, build
# here first and point the script at the binaries:
#   eval "$(scripts/cuda-llvm.sh)"
#   CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda --bin agc
#   AGC_BIN=target/release/agc SKIP_TESTS=1 scripts/gpu-check.sh
# PyTorch (with CUDA) is needed only for the reference timings; without it they are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu-check}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    | sed 's/^/gpu: /' | tee -a "$SUMMARY" || { say "no GPU visible"; exit 1; }

if [ -z "${AGC_BIN:-}" ]; then
    say "== build (--features cuda)"
    # burn-cuda needs LLVM 23.1 at build time: installed from PyPI, no download from GitHub.
    eval "$(scripts/cuda-llvm.sh)" || { say "no LLVM for the cuda build (scripts/cuda-llvm.sh)"; exit 1; }
    cargo build --release --features cuda --bin agc > "$OUT/build.log" 2>&1 \
        || { say "build failed: see $OUT/build.log"; exit 1; }
    AGC_BIN=target/release/agc
fi

if [ -z "${SKIP_TESTS:-}" ]; then
    say "== model tests on the GPU (agc-core, --features cuda)"
    if cargo test --release -p agc-core --features cuda > "$OUT/tests.log" 2>&1; then
        say "model tests: $(grep -h 'test result' "$OUT/tests.log" | tr '\n' ' ')"
    else
        say "model tests FAILED: see $OUT/tests.log"
    fi
fi

say "== short pipeline on cuda:0 (resnet18, 224 px, 2 folds, 2 epochs)"
DATA="$OUT/data"
"$AGC_BIN" synth --out "$DATA" --train 256 --test 128 --quiet > "$OUT/synth.log" 2>&1
start=$(date +%s)
if timeout 1800 "$AGC_BIN" pipeline --data "$DATA" --out "$OUT/run" --device cuda:0 \
    --backbone resnet18 --folds 2 --epochs 2 --patience 2 --tta 1 --quiet \
    > "$OUT/pipeline.log" 2>&1; then
    say "pipeline: done in $(( $(date +%s) - start )) s"
    sed -n '/| model/,/^$/p' "$OUT/pipeline.log" | tee -a "$SUMMARY"
else
    say "pipeline FAILED or timed out after $(( $(date +%s) - start )) s: see $OUT/pipeline.log"
fi

GPUS=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
if [ "$GPUS" -ge 2 ]; then
    say "== data-parallel training on cuda:0,cuda:1 (resnet, 2 folds, 2 epochs)"
    start=$(date +%s)
    if timeout 1200 "$AGC_BIN" train --model resnet --data "$DATA" --out "$OUT/run-2gpu" \
        --device cuda:0,cuda:1 --backbone resnet18 --folds 2 --epochs 2 --patience 2 --tta 1 \
        --quiet > "$OUT/two-gpus.log" 2>&1; then
        say "two GPUs: done in $(( $(date +%s) - start )) s; $(grep -h 'OOF AUC' "$OUT/two-gpus.log")"
    else
        say "two GPUs FAILED or timed out after $(( $(date +%s) - start )) s: see $OUT/two-gpus.log"
    fi
else
    say "one GPU: data-parallel training (--device cuda:0,cuda:1) not checked"
fi

say "== one training epoch per model (agc: the second epoch of fold 0, loader included)"
for model in resnet chipnet cropnet; do
    state="$OUT/run/models/$model/fold0/state.json"
    if [ -f "$state" ]; then
        secs=$(python3 -c "import json,sys; h=json.load(open(sys.argv[1]))['history']; print(round(h[-1]['seconds'],2))" "$state")
        say "agc $model: $secs s per epoch (fold 0, 2 folds of 256 images, balanced)"
    fi
done
if python3 -c "import torch, torchvision; assert torch.cuda.is_available()" 2>/dev/null; then
    # The same number of images as one balanced agc epoch of fold 0 (about 1.5 x 128).
    for model in resnet chipnet; do
        python3 scripts/torch_epoch.py --model "$model" --images 192 --batch 32 --size 224 \
            --chip 32 2>&1 | tee -a "$SUMMARY"
    done
else
    say "PyTorch with CUDA not available: reference timings skipped"
fi
say "summary in $SUMMARY"
