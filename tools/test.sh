#!/usr/bin/env bash
# The test command: installs what is missing, builds everything (warnings are errors, as for the
# run command: one configuration), checks that the run command reuses that build, runs
# every test with ctest (CUDA cases on the GPU when there is one, and always on the interpreter:
# docs/interpreter.md), then builds the interpreter suite with UBSan into build-ubsan and runs it
# under one schedule seed (warnings are errors in the main build only: UBSan makes GCC warn in
# third-party headers). The last line printed is ctest's summary line of the main run.
#   tools/test.sh [extra ctest arguments...]
# Then the same with ThreadSanitizer (build-tsan) over the kernels that use shared memory
# (races reported whether or not a schedule exposes them).
# Environment: GAN_BUILD_DIR (default build), GAN_UBSAN=0 / GAN_TSAN=0 skip those suites.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${GAN_BUILD_DIR:-$root/build}
GAN_BUILD_DIR="$build" "$root/tools/setup.sh"
# The run command must reuse this build (same configuration): nothing may be rebuilt by it.
stamp=$(stat -c %Y "$build/gan_train")
GAN_BUILD_DIR="$build" "$root/tools/run.sh" --help >/dev/null
if [ "$(stat -c %Y "$build/gan_train")" != "$stamp" ]; then
  echo "test: tools/run.sh rebuilt gan_train: the two README commands configure differently" >&2
  exit 1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# A second build of the interpreter suite with a sanitizer: sanitizer_build NAME SANITIZER.
sanitizer_build() {
  local dir="$build-$1"
  echo "test: the interpreter suite with -fsanitize=$2 ($dir)"
  cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" \
    -DGAN_WERROR=OFF -DGAN_SANITIZE="$2" -DGAN_BUILD_BENCH=OFF >/dev/null
  cmake --build "$dir" -j "$(nproc)" --target engine_tests_interp
}

ubsan_rc=0
if [ "${GAN_UBSAN:-1}" != 0 ]; then
  sanitizer_build ubsan undefined
  set +e
  (cd "$build-ubsan" && UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --output-on-failure -j "$(nproc)" -R '^interp_s1:')
  ubsan_rc=$?
  set -e
fi

tsan_rc=0
if [ "${GAN_TSAN:-1}" != 0 ]; then
  sanitizer_build tsan thread
  set +e
  GAN_SN_NO_COOP=1 TSAN_OPTIONS=halt_on_error=1 "$build-tsan/tests/engine_tests_interp" \
    --interp-seed 1 "[attention][cuda],[self_attention][cuda],[batch_norm][cuda],[sum][cuda],[hinge_loss][cuda],[bce_with_logits][cuda],[mma][cuda],op spectral_norm cuda"
  tsan_rc=$?
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
if [ "$tsan_rc" -ne 0 ]; then
  echo "test: the ThreadSanitizer kernel suite failed (rc=$tsan_rc)"
  [ "$rc" -ne 0 ] || rc=$tsan_rc
fi
summary=$(grep -E '^[0-9]+% tests passed' "$log" | tail -n 1 || true)
echo
echo "${summary:-ctest: no summary line (rc=$rc)}"
exit "$rc"
