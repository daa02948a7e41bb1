#!/usr/bin/env bash
# Lavapipe from Mesa 25 (Debian bookworm-backports' mesa-vulkan-drivers), unpacked into a private
# folder without touching the system's packages, for running the wgpu tests on a newer Mesa than
# the system's (docs/gpu.md, "Training that stalls"):
#
#     env=$(scripts/mesa25.sh) && eval "$env" && cargo test -p agc --features wgpu --test wgpu -- wgpu
#
# Prints the variables that select it (VK_ICD_FILENAMES, LD_LIBRARY_PATH) on stdout, what it did on
# stderr. Downloads once into AGC_MESA25_DIR (default ~/.cache/agc-mesa25) through apt-get with
# private package lists and cache; exits 1, saying why, when the mirror cannot be reached.
# Debian x86-64 only (the packages link the system's libLLVM-15, as bookworm's Mesa 22 does).
set -euo pipefail

dir="${AGC_MESA25_DIR:-$HOME/.cache/agc-mesa25}"
suite=bookworm-backports
root="$dir/root"
lib="$root/usr/lib/x86_64-linux-gnu"
icd="$root/usr/share/vulkan/icd.d/lvp_icd.json"

if [ ! -f "$dir/.installed" ]; then
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/debs"
  echo "deb http://deb.debian.org/debian $suite main" >"$dir/sources.list"
  apt_opts=(-qq -o Dir::Etc::sourcelist="$dir/sources.list" -o Dir::Etc::sourceparts=-
    -o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache")
  # apt-get update only warns when the mirror is unreachable; the download then fails.
  apt-get "${apt_opts[@]}" update >&2 || true
  if ! (cd "$dir/debs" && apt-get "${apt_opts[@]}" download \
    "mesa-vulkan-drivers/$suite" "libdrm2/$suite" "libdrm-amdgpu1/$suite") >&2; then
    echo "mesa25: could not download Mesa 25 from $suite (offline?)" >&2
    exit 1
  fi
  rm -rf "$root"
  for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$root"; done
  # The manifest names the driver by file name only; point it at the private copy.
  sed -i "s#\"library_path\": *\"[^\"]*\"#\"library_path\": \"$lib/libvulkan_lvp.so\"#" "$icd"
  touch "$dir/.installed"
fi
echo "mesa25: $(ls "$dir"/debs | grep mesa-vulkan-drivers) in $root" >&2

echo "export VK_ICD_FILENAMES=$icd"
echo "export LD_LIBRARY_PATH=$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
