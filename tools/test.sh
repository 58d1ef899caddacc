#!/usr/bin/env bash
# The test command: installs what is missing, builds everything with warnings as errors, and runs
# every test with ctest. Without a GPU the CUDA test cases report "Skipped". The last line printed
# is ctest's summary line.
#   tools/test.sh [extra ctest arguments...]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${GAN_BUILD_DIR:-$root/build}
GAN_BUILD_DIR="$build" GAN_WERROR=ON "$root/tools/setup.sh"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
(cd "$build" && ctest --output-on-failure -j "$(nproc)" "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E '^[0-9]+% tests passed' "$log" | tail -n 1 || true)
echo
echo "${summary:-ctest: no summary line (rc=$rc)}"
exit "$rc"
