#!/usr/bin/env bash
# The test command: installs what is missing, builds everything (warnings are errors, as for the
# run command: one configuration; compilation through ccache, tools/scripts/ccache_env.sh), checks
# that the run command reuses that build, then runs, each stage timed:
#   1. ASan + UBSan (build-asan, GCC) over what only they catch: host memory errors, leaks and
#      undefined behaviour in the C++ around the kernels. That is every CPU case, and on the
#      interpreter (one schedule seed) the engine-level GPU-path cases and the interpreter's own
#      cases. The per-op kernel sweeps ([op] [cuda]) are left to the main run: there the
#      interpreter itself faults on out-of-bounds and freed device memory, poisons shared memory
#      and checks barriers (docs/interpreter.md), which is what ASan would add for them.
#   2. ThreadSanitizer + UBSan (build-tsan) over the kernels that use shared memory, warps or CUB
#      (races reported whether or not a schedule exposes them; undefined behaviour in their index
#      arithmetic);
#   3. libFuzzer (build-fuzz, clang, ASan + UBSan): the regression inputs, then each parser of user
#      files fuzzed for GAN_FUZZ_SECONDS (default 20) seconds (tools/scripts/fuzz.sh);
#   4. every test of the main build with ctest (CUDA cases on the GPU when there is one, and
#      always on the interpreter, under two schedule seeds: docs/interpreter.md).
# Warnings are errors in the main build only: the sanitizers make GCC warn in third-party headers.
# The last lines printed are each stage's duration and ctest's summary line of the main run.
#   tools/scripts/test.sh [extra ctest arguments...]
# Environment: GAN_BUILD_DIR (default build), GAN_ASAN=0 / GAN_TSAN=0 / GAN_FUZZ_SECONDS=0 skip
# those stages; GAN_CCACHE=0 builds without the compile cache.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${GAN_BUILD_DIR:-$root/build}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Stage timing: stage NAME starts one (ending the previous); the durations are printed at the end.
durations=()
stage_name=""
stage_t0=0
stage() {
  local now
  now=$(date +%s)
  if [ -n "$stage_name" ]; then
    durations+=("$(printf '%-34s %5d s' "$stage_name" $((now - stage_t0)))")
    echo "test: $stage_name: $((now - stage_t0)) s"
  fi
  stage_name=$1
  stage_t0=$now
  [ -z "$stage_name" ] || echo "test: == $stage_name"
}
t_start=$(date +%s)

stage "setup and main build"
GAN_BUILD_DIR="$build" "$root/tools/scripts/setup.sh"
# The run command must reuse this build (same configuration): nothing may be rebuilt by it.
stamp=$(stat -c %Y "$build/gan_train")
GAN_BUILD_DIR="$build" "$root/tools/scripts/run.sh" --help >/dev/null
if [ "$(stat -c %Y "$build/gan_train")" != "$stamp" ]; then
  echo "test: tools/scripts/run.sh rebuilt gan_train: the two README commands configure differently" >&2
  exit 1
fi
# shellcheck source=tools/scripts/ccache_env.sh
. "$root/tools/scripts/ccache_env.sh"

# A second build of the interpreter suite with sanitizers: sanitizer_build NAME SANITIZERS.
# At -O1, the level the sanitizers' documentation recommends, which compiles faster than
# Release's -O3 (docs/testing.md has the stage times).
sanitizer_build() {
  local dir="$build-$1"
  echo "test: the interpreter suite with -fsanitize=$2 ($dir)"
  cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
    -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" \
    -DGAN_WERROR=OFF -DGAN_SANITIZE="$2" -DGAN_BUILD_BENCH=OFF "${gan_launcher[@]}" >/dev/null
  cmake --build "$dir" -j "$(nproc)" --target engine_tests_interp
}

asan_rc=0
if [ "${GAN_ASAN:-1}" != 0 ]; then
  stage "ASan + UBSan build"
  sanitizer_build asan address,undefined
  stage "ASan + UBSan tests"
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
  stage "TSan + UBSan build"
  sanitizer_build tsan thread,undefined
  stage "TSan + UBSan tests"
  set +e
  # One OpenMP thread: libgomp (the CPU backend's threads) is not instrumented, and these cases
  # are about the interpreter's kernels, whose threads TSan sees.
  OMP_NUM_THREADS=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 TSAN_OPTIONS=halt_on_error=1 \
    "$build-tsan/tests/engine_tests_interp" --interp-seed 1 \
    "[attention][cuda],[self_attention small][cuda],[attention flash small][cuda],[batch_norm][cuda],[sum][cuda],[mean][cuda],[softmax][cuda],[hinge_loss][cuda],[bce_with_logits][cuda],[softmax_cross_entropy][cuda],[mma][cuda],op spectral_norm cuda"
  tsan_rc=$?
  set -e
fi

fuzz_rc=0
if [ "${GAN_FUZZ_SECONDS:-20}" != 0 ]; then
  stage "fuzzing (build and run)"
  set +e
  "$root/tools/scripts/fuzz.sh" "${GAN_FUZZ_SECONDS:-20}"
  fuzz_rc=$?
  set -e
fi

stage "main tests (ctest)"
set +e
(cd "$build" && ctest --output-on-failure -j "$(nproc)" "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
stage ""
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
echo
echo "test: stage durations"
for d in "${durations[@]}"; do echo "  $d"; done
echo "  $(printf '%-34s %5d s' total $(($(date +%s) - t_start)))"
if command -v ccache >/dev/null && [ "${GAN_CCACHE:-1}" != 0 ]; then
  echo "test: compile cache: $(ccache --print-stats 2>/dev/null | awk -F'\t' '$1=="direct_cache_hit"||$1=="preprocessed_cache_hit"{h+=$2} $1=="cache_miss"{m=$2} END{printf "%d hits, %d misses (cumulative)", h, m}')"
fi
summary=$(grep -E '^[0-9]+% tests passed' "$log" | tail -n 1 || true)
echo
echo "${summary:-ctest: no summary line (rc=$rc)}"
exit "$rc"
