#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks (Debian packages; the CUDA 13 toolkit is expected in
# /usr/local/cuda), then configures and builds the project into build/ (or $GAN_BUILD_DIR).
#   tools/scripts/setup.sh [extra cmake arguments...]
# Environment: GAN_BUILD_DIR (default build), GAN_BUILD_TYPE (default Release), GAN_WERROR (default
# ON: warnings are errors, as CI builds; OFF for a compiler that warns where GCC 12 does not),
# GAN_CCACHE=0 (no compile cache).
# Compilation goes through ccache (g++ and nvcc): its cache (~/.cache/ccache, or $CCACHE_DIR)
# outlives build folders and clean clones, and paths are taken relative to the source tree
# (CCACHE_BASEDIR), so a fresh clone on the same machine rebuilds from the cache.
# Both README commands (tools/scripts/run.sh, tools/scripts/test.sh) configure through here with the same
# settings, so either one after the other reuses the build.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${GAN_BUILD_DIR:-$root/build}

packages=(build-essential ccache cmake python3 catch2 libfmt-dev libcli11-dev nlohmann-json3-dev
  libstb-dev libeigen3-dev libjpeg62-turbo-dev libpng-dev zlib1g-dev python3-matplotlib dataset-fashion-mnist
  libopenmpi-dev openmpi-bin libdnnl-dev libzip-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

nvcc=$(command -v nvcc || true)
[ -n "$nvcc" ] || nvcc=/usr/local/cuda/bin/nvcc
if [ ! -x "$nvcc" ]; then
  echo "setup: nvcc not found on PATH or in /usr/local/cuda/bin; install the CUDA 13 toolkit" >&2
  exit 1
fi

# shellcheck source=tools/scripts/ccache_env.sh
. "$root/tools/scripts/ccache_env.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE="${GAN_BUILD_TYPE:-Release}" \
  -DCMAKE_CUDA_COMPILER="$nvcc" -DGAN_WERROR="${GAN_WERROR:-ON}" "${gan_launcher[@]}" "$@"
cmake --build "$build" -j "$(nproc)"
