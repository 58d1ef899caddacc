#!/usr/bin/env bash
# The test command: installs what is missing, builds everything with warnings as errors, runs
# every test with ctest (CUDA cases on the GPU when there is one, and always on the interpreter:
# docs/interpreter.md), then builds the interpreter suite with UBSan into build-ubsan and runs it
# under one schedule seed (warnings are errors in the main build only: UBSan makes GCC warn in
# third-party headers). The last line printed is ctest's summary line of the main run.
#   tools/test.sh [extra ctest arguments...]
# Environment: GAN_BUILD_DIR (default build), GAN_UBSAN=0 skips the UBSan suite.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${GAN_BUILD_DIR:-$root/build}
GAN_BUILD_DIR="$build" GAN_WERROR=ON "$root/tools/setup.sh"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

ubsan_rc=0
if [ "${GAN_UBSAN:-1}" != 0 ]; then
  ubsan="$build-ubsan"
  echo "test: the interpreter suite with UBSan ($ubsan)"
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  cmake -S "$root" -B "$ubsan" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc" \
    -DGAN_WERROR=OFF -DGAN_SANITIZE=undefined -DGAN_BUILD_BENCH=OFF >/dev/null
  cmake --build "$ubsan" -j "$(nproc)" --target engine_tests_interp
  set +e
  (cd "$ubsan" && UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --output-on-failure -j "$(nproc)" -R '^interp_s1:')
  ubsan_rc=$?
  set -e
fi

set +e
(cd "$build" && ctest --output-on-failure -j "$(nproc)" "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
if [ "$ubsan_rc" -ne 0 ]; then
  echo "test: the UBSan interpreter suite failed (rc=$ubsan_rc)"
  [ "$rc" -ne 0 ] || rc=$ubsan_rc
fi
summary=$(grep -E '^[0-9]+% tests passed' "$log" | tail -n 1 || true)
echo
echo "${summary:-ctest: no summary line (rc=$rc)}"
exit "$rc"
