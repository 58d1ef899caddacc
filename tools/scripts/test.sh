#!/usr/bin/env bash
# The test command: installs what is missing, builds everything (warnings are errors, as for the
# run command: one configuration), checks that the run command reuses that build, then:
#   1. ASan + UBSan (build-asan, GCC): the interpreter suite under one schedule seed and every CPU
#      case, from engine_tests_interp (warnings are errors in the main build only: the sanitizers
#      make GCC warn in third-party headers);
#   2. ThreadSanitizer (build-tsan) over the kernels that use shared memory (races reported
#      whether or not a schedule exposes them);
#   3. libFuzzer (build-fuzz, clang, ASan + UBSan): the regression inputs, then each parser of user
#      files fuzzed for GAN_FUZZ_SECONDS (default 20) seconds (tools/scripts/fuzz.sh);
#   4. every test of the main build with ctest (CUDA cases on the GPU when there is one, and
#      always on the interpreter: docs/interpreter.md).
# The last line printed is ctest's summary line of the main run.
#   tools/scripts/test.sh [extra ctest arguments...]
# Environment: GAN_BUILD_DIR (default build), GAN_ASAN=0 / GAN_TSAN=0 / GAN_FUZZ_SECONDS=0 skip
# those stages.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${GAN_BUILD_DIR:-$root/build}
GAN_BUILD_DIR="$build" "$root/tools/scripts/setup.sh"
# The run command must reuse this build (same configuration): nothing may be rebuilt by it.
stamp=$(stat -c %Y "$build/gan_train")
GAN_BUILD_DIR="$build" "$root/tools/scripts/run.sh" --help >/dev/null
if [ "$(stat -c %Y "$build/gan_train")" != "$stamp" ]; then
  echo "test: tools/scripts/run.sh rebuilt gan_train: the two README commands configure differently" >&2
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

asan_rc=0
if [ "${GAN_ASAN:-1}" != 0 ]; then
  sanitizer_build asan address,undefined
  set +e
  # The kill -9 loop is slower under ASan: a shorter loop here, the full one in the main run.
  (cd "$build-asan" && GAN_KILL_LOOP=10 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions="$root/tools/scripts/lsan.supp" \
    ctest --output-on-failure -j "$(nproc)" -R '^(interp_s1|cpu):')
  asan_rc=$?
  set -e
fi

tsan_rc=0
if [ "${GAN_TSAN:-1}" != 0 ]; then
  sanitizer_build tsan thread
  set +e
  TSAN_OPTIONS=halt_on_error=1 "$build-tsan/tests/engine_tests_interp" \
    --interp-seed 1 "[attention][cuda],[self_attention][cuda],[batch_norm][cuda],[sum][cuda],[hinge_loss][cuda],[bce_with_logits][cuda],[softmax_cross_entropy][cuda],[mma][cuda],op spectral_norm cuda"
  tsan_rc=$?
  set -e
fi

fuzz_rc=0
if [ "${GAN_FUZZ_SECONDS:-20}" != 0 ]; then
  set +e
  "$root/tools/scripts/fuzz.sh" "${GAN_FUZZ_SECONDS:-20}"
  fuzz_rc=$?
  set -e
fi

set +e
(cd "$build" && ctest --output-on-failure -j "$(nproc)" "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
if [ "$asan_rc" -ne 0 ]; then
  echo "test: the ASan + UBSan suite (interpreter and CPU cases) failed (rc=$asan_rc)"
  [ "$rc" -ne 0 ] || rc=$asan_rc
fi
if [ "$fuzz_rc" -ne 0 ]; then
  echo "test: fuzzing found a crash or a regression input crashes again (rc=$fuzz_rc)"
  [ "$rc" -ne 0 ] || rc=$fuzz_rc
fi
if [ "$tsan_rc" -ne 0 ]; then
  echo "test: the ThreadSanitizer kernel suite failed (rc=$tsan_rc)"
  [ "$rc" -ne 0 ] || rc=$tsan_rc
fi
summary=$(grep -E '^[0-9]+% tests passed' "$log" | tail -n 1 || true)
echo
echo "${summary:-ctest: no summary line (rc=$rc)}"
exit "$rc"
