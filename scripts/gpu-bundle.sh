#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs on a GPU machine without Rust or internet: the `agc`
# binary, the model bench (examples/model_bench.rs) and the GPU tests (tests/wgpu.rs), with the
# cuda and wgpu features, stripped and packed into OUT/bins.tar.xz (OUT defaults to gpu-bundle/,
# which git ignores). The three binaries share most of their code (Burn, CubeCL, LLVM), so one
# solid archive with a dictionary larger than a binary holds little more than one of them. A
# device session carries at most 64 MiB; the script fails above 60.
#
#   scripts/gpu-bundle.sh [OUT]
#
# FEATURES (default "cuda wgpu") and PROFILE (default release) change the build; FEATURES=wgpu
# needs no LLVM. CUDARC_CUDA_VERSION (default 13000) is the CUDA API the binaries expect.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu-bundle}"
FEATURES="${FEATURES:-cuda wgpu}"
PROFILE="${PROFILE:-release}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/agc-target}"
case " $FEATURES " in
*" cuda "*)
    # burn-cuda needs LLVM 23.1 at build time: installed from PyPI, no download from GitHub.
    eval "$(scripts/cuda-llvm.sh)"
    export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
    ;;
esac
features="${FEATURES// /,}"
dir="$CARGO_TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")"

cargo build --locked --profile "$PROFILE" --features "$features" --bin agc --example model_bench
# The test binary's path, from cargo's own report.
tests=$(cargo test --locked --profile "$PROFILE" --features "$features" -p agc --test wgpu \
    --no-run --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "wgpu" and m.get("executable"):
        print(m["executable"])')
[ -n "$tests" ] || { echo "gpu-bundle: no test binary for tests/wgpu.rs" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT/bins"
strip -o "$OUT/bins/agc" "$dir/agc"
strip -o "$OUT/bins/model_bench" "$dir/examples/model_bench"
strip -o "$OUT/bins/gpu-tests" "$tests"
ls -l "$OUT/bins" >&2
# Single-threaded: a solid stream, so that the later binaries find the first one's code.
tar -C "$OUT" -cf - bins | xz -T1 -9e --lzma2=preset=9e,dict=256MiB > "$OUT/bins.tar.xz"
rm -rf "$OUT/bins"
{
    echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with local changes)')"
    echo "features $features, profile $PROFILE, CUDARC_CUDA_VERSION ${CUDARC_CUDA_VERSION:-none}"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
} > "$OUT/BUILD"
ls -l "$OUT" >&2
kib=$(du -sk "$OUT" | cut -f1)
echo "gpu-bundle: $OUT holds $((kib / 1024)) MiB" >&2
if [ "$kib" -gt $((60 * 1024)) ]; then
    echo "gpu-bundle: over 60 MiB, too large to carry to a device session" >&2
    exit 1
fi
