#!/usr/bin/env bash
# Fuzzes the parsers of user files with libFuzzer (docs/reliability.md): builds the targets of
# fuzz/ with clang, ASan and UBSan into build-fuzz/, replays fuzz/regressions/<target>/ (inputs
# that once crashed a parser, kept as regression tests), then fuzzes each target for SECONDS,
# starting from a copy of fuzz/corpus/<target>/ (the committed seeds are not modified).
#   tools/scripts/fuzz.sh [SECONDS] [TARGET...]      (default 20 s each, every target)
# Prints one line per target (executions, crashes); exits 1 on any crash, naming the input that
# crashed (build-fuzz/crashes/). The test command runs it with GAN_FUZZ_SECONDS (default 20).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${GAN_FUZZ_BUILD_DIR:-$root/build-fuzz}
secs=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_idx fuzz_cifar10 fuzz_image_folder fuzz_safetensors fuzz_checkpoint fuzz_prepared fuzz_zip)

if ! command -v clang++ >/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "fuzz: installing clang (libFuzzer comes with it)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends clang
fi

# Only what the targets need: no tests, benchmarks or interpreter (clang 14 cannot build the
# interpreter: no std::source_location); one GPU architecture for the kernels, which nvcc
# compiles with its own host compiler, uninstrumented. Every C++ file gets libFuzzer's coverage
# instrumentation (GAN_FUZZ), so the fuzzer sees into the libraries the targets call.
# shellcheck source=tools/scripts/ccache_env.sh
. "$root/tools/scripts/ccache_env.sh"
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${gan_launcher[@]}" \
  -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DGAN_FUZZ=ON -DGAN_SANITIZE=address,undefined \
  -DGAN_BUILD_TESTS=OFF -DGAN_BUILD_BENCH=OFF -DGAN_BUILD_INTERP=OFF -DGAN_WERROR=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
mkdir -p "$build/crashes"
failed=0
for t in "${targets[@]}"; do
  name=${t#fuzz_}
  bin="$build/fuzz/$t"
  log="$build/$t.log"
  regressions=("$root/fuzz/regressions/$name"/*)
  if [ -e "${regressions[0]}" ]; then
    if ! "$bin" "${regressions[@]}" > "$log.regressions" 2>&1; then
      echo "fuzz: $t: a regression input crashes again (log: $log.regressions)"
      failed=1
      continue
    fi
    nreg=${#regressions[@]}
  else
    nreg=0
  fi
  work="$build/corpus/$name"
  mkdir -p "$work"
  cp -n "$root/fuzz/corpus/$name"/* "$work"/ 2>/dev/null || true
  set +e
  "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$build/crashes/$name-" "$work" > "$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  if [ $rc -ne 0 ]; then
    art=$(grep -oE "Test unit written to [^ ]+" "$log" | tail -n 1 | cut -d' ' -f5)
    echo "fuzz: $t: CRASH after ${execs:-?} executions: input ${art:-?} (log: $log); fix it, then add the input to fuzz/regressions/$name/"
    failed=1
  else
    echo "fuzz: $t: ${execs:-?} executions in ${secs} s, 0 crashes, $nreg regression inputs pass, corpus $(ls "$work" | wc -l) inputs"
  fi
done
exit $failed
