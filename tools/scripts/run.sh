#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the default training job with its
# defaults (on the GPU when there is one). Arguments are passed to the job.
#   tools/scripts/run.sh [job arguments...]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${GAN_BUILD_DIR:-$root/build}
GAN_BUILD_DIR="$build" "$root/tools/scripts/setup.sh" >/dev/null
exec "$build/gan_train" "$@"
