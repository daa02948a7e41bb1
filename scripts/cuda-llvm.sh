#!/usr/bin/env bash
# Makes Burn's `cuda` feature build offline.
#
# burn-cuda 0.22.1 → cubecl-cuda → cubecl-llvm, whose build dependency tracel-llvm-bundler
# 23.1.0-4 downloads an LLVM 23.1 bundle from GitHub unless
# `$XDG_DATA_HOME/tracel/tracel-llvm-23.1.0-4/.tracel-llvm-installed` exists. This script puts
# the static LLVM 23.1.1 SDK from PyPI (`mlc-llvm-static[all]`: headers, static libraries with
# the NVPTX target, an `llvm-config`) in that place and writes the sentinel, so the bundler
# finds an installed LLVM and downloads nothing.
#
# Usage (the last line it prints is the variable to export):
#
#     eval "$(scripts/cuda-llvm.sh)"          # sets XDG_DATA_HOME for this shell
#     cargo build --release --features cuda
#
# The SDK (~400 MB) goes to $AGC_LLVM_DIR (default ~/.cache/agc-llvm) once and is reused.
# Needs python3 with pip (to fetch the wheel from PyPI or a mirror), g++ (cubecl-llvm compiles a
# small C++ shim), and the development files of zlib and zstd, which LLVM links (installed with
# apt-get when missing and run as root). With no PyPI at all, `pip download` the wheel on a machine that
# has it and install it here with `pip install --target "$AGC_LLVM_DIR/sdk" WHEEL`.
set -euo pipefail

root="${AGC_LLVM_DIR:-$HOME/.cache/agc-llvm}"
sdk="$root/sdk"
# The version tracel-llvm-bundler expects, and the SDK that provides it.
bundle="tracel-llvm-23.1.0-4"
wheel='mlc-llvm-static[all]==23.1.1.post0'

static="$sdk/mlc_llvm_static/static"
if [ ! -x "$static/bin/llvm-config" ]; then
  echo "cuda-llvm: installing $wheel into $sdk" >&2
  rm -rf "$sdk.partial"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target "$sdk.partial" "$wheel" >&2
  rm -rf "$sdk"
  mv "$sdk.partial" "$sdk"
fi
[ -x "$static/bin/llvm-config" ] || {
  echo "cuda-llvm: $static/bin/llvm-config is missing after the install" >&2
  exit 1
}
version=$("$static/bin/llvm-config" --version)
case "$version" in
  23.1.*) ;;
  *) echo "cuda-llvm: expected LLVM 23.1, the SDK says $version" >&2; exit 1 ;;
esac

# The static LLVM links these system libraries (`llvm-config --system-libs`); the linker needs
# their development files (libz.so, libzstd.so).
for lib in $("$static/bin/llvm-config" --system-libs --link-static); do
  name=${lib#-l}
  case "$name" in z) pkg=zlib1g-dev ;; zstd) pkg=libzstd-dev ;; *) continue ;; esac
  if [ "$(gcc -print-file-name="lib$name.so")" = "lib$name.so" ] \
    && [ "$(gcc -print-file-name="lib$name.a")" = "lib$name.a" ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      echo "cuda-llvm: installing $pkg (LLVM links -l$name)" >&2
      apt-get install -y -qq "$pkg" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "$pkg" >&2; }
    else
      echo "cuda-llvm: LLVM links -l$name: install its development files ($pkg on Debian)" >&2
      exit 1
    fi
  fi
done

xdg="$root/xdg"
mkdir -p "$xdg/tracel"
[ "$(readlink "$xdg/tracel/$bundle" 2>/dev/null)" = "$static" ] || ln -sfn "$static" "$xdg/tracel/$bundle"
# Created once, never touched again: tracel-llvm-bundler's build script reruns when the
# sentinel changes (`rerun-if-changed`), and with it llvm-sys, cubecl-llvm, burn-cuda and every
# crate above them, 20 to 30 crates and 9 to 17 minutes of CI on two cores.
sentinel="$xdg/tracel/$bundle/.tracel-llvm-installed"
[ -e "$sentinel" ] || touch "$sentinel"
echo "cuda-llvm: LLVM $version ready for $bundle under $xdg" >&2
echo "export XDG_DATA_HOME=$xdg"
