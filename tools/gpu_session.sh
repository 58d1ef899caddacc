#!/usr/bin/env bash
# The GPU checks in one go, for a session that is lent a GPU machine (docs/gpu-runs.md).
#
# Here (no GPU needed):   tools/gpu_session.sh pack     builds for sm_90 and packs .device/
# On the GPU machine:     tools/gpu_session.sh run [quick|train]   (logs and JSON under $OUT)
#
# `pack` copies the binaries, the Fashion-MNIST files and the PyTorch anchor script into .device/
# (ignored by git; well under the 64 MiB a call may carry): carry ".device" in the call.
# `run quick`: every [cuda] test (errors printed), compute-sanitizer memcheck and racecheck on
# the attention tests, the three kernel benchmarks and PyTorch's attention numbers in the same
# job. `run train`: 5-epoch SAGAN and DCGAN runs on Fashion-MNIST (images/s, sample grids) and
# the PyTorch load check of their checkpoints.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dev="$root/.device"
cmd=${1:-}

if [ "$cmd" = pack ]; then
  set -e
  build="$root/build-sm90"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
  cmake --build "$build" -j "$(nproc)" --target engine_tests gan_train gan_sample bench_attention \
    bench_batchnorm bench_spectral_norm
  rm -rf "$dev" && mkdir -p "$dev/bin" "$dev/data" "$dev/anchors"
  cp "$build/tests/engine_tests" "$build/gan_train" "$build/gan_sample" "$build"/bench/bench_* "$dev/bin/"
  cp /usr/share/datasets/fashion-mnist/train-*.gz "$dev/data/"
  cp "$root/../shared/anchors/torch_gan_bench.py" "$dev/anchors/" 2>/dev/null || true
  grep -qxF '/.device/' "$root/.git/info/exclude" 2>/dev/null || echo '/.device/' >> "$root/.git/info/exclude"
  du -sh "$dev"
  exit 0
fi

[ "$cmd" = run ] || { echo "usage: $0 pack | run [quick|train]" >&2; exit 2; }
what=${2:-quick}
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
bin="$dev/bin"
export GAN_TEST_VERBOSE=1
export GAN_FASHION_MNIST_DIR="$dev/data"
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; } > "$out/machine.txt" 2>&1

if [ "$what" = quick ]; then
  "$bin/engine_tests" "[cuda]" > "$out/cuda_tests.log" 2>&1
  echo "cuda tests rc=$?" | tee -a "$out/summary.txt"
  tail -n 3 "$out/cuda_tests.log" | tee -a "$out/summary.txt"
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 9 "$bin/engine_tests" \
      "op self_attention cuda,op attention cuda" > "$out/sanitizer_$tool.log" 2>&1
    echo "compute-sanitizer $tool rc=$?" | tee -a "$out/summary.txt"
    tail -n 2 "$out/sanitizer_$tool.log" >> "$out/summary.txt"
  done
  "$bin/bench_attention" > "$out/bench_attention.jsonl" 2>&1
  "$bin/bench_attention" --tf32 > "$out/bench_attention_tf32.jsonl" 2>&1
  "$bin/bench_batchnorm" > "$out/bench_batchnorm.jsonl" 2>&1
  "$bin/bench_spectral_norm" > "$out/bench_spectral_norm.jsonl" 2>&1
  if [ -f "$dev/anchors/torch_gan_bench.py" ]; then
    python3 "$dev/anchors/torch_gan_bench.py" --attn --variants fp32 --configs sagan:64:64 \
      > "$out/torch_anchor.jsonl" 2>&1
  fi
  echo "done" >> "$out/summary.txt"
elif [ "$what" = train ]; then
  for m in sagan dcgan; do
    "$bin/gan_train" --model "$m" --data "$dev/data" --epochs 5 --progress 0 --log-every 200 \
      --sample-every 1000 --out "/tmp/run_$m" > "$out/train_$m.log" 2>&1
    echo "gan_train $m rc=$?" | tee -a "$out/summary.txt"
    tail -n 2 "$out/train_$m.log" >> "$out/summary.txt"
    cp "/tmp/run_$m/samples/latest.png" "$out/samples_$m.png" 2>/dev/null
    "$bin/gan_sample" "/tmp/run_$m" --dump "/tmp/dump_$m.safetensors" -n 16 --out /tmp/s.png \
      > /dev/null 2>&1
    python3 "$root/tools/torch_check.py" "/tmp/run_$m/checkpoint.safetensors" \
      "/tmp/dump_$m.safetensors" >> "$out/torch_check.jsonl" 2>&1
    echo "torch_check $m rc=$?" | tee -a "$out/summary.txt"
  done
fi
