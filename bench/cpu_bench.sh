#!/usr/bin/env bash
# The CPU table (docs/cpu-backend.md): gan_bench --device cpu and torch_gan_bench.py --device cpu
# in the same job, one config and loop per process (peak resident sets are per process), then
# bench/cpu_table.py. PyTorch comes from a venv (default /tmp/tv; make it with
# `python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch`).
#   bench/cpu_bench.sh OUTDIR [configs] [loops]
# Environment: GAN_BUILD_DIR (default build), TORCH_PYTHON (default /tmp/tv/bin/python),
# ITERS (default 10), REPS (default 5), WARMUP (default 2).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${GAN_BUILD_DIR:-$root/build}
py=${TORCH_PYTHON:-/tmp/tv/bin/python}
out=${1:?usage: bench/cpu_bench.sh OUTDIR [configs] [loops]}
configs=${2:-dcgan:32:16,sagan:32:16,dcgan:64:16,sagan:64:16,dcgan:32:64,sagan:32:64,dcgan:64:64,sagan:64:64}
loops=${3:-anchor,train}
iters=${ITERS:-10} reps=${REPS:-5} warmup=${WARMUP:-2}
mkdir -p "$out"
: >"$out/engine.jsonl"
: >"$out/torch.jsonl"
"$build/bench/cpu_peak" >"$out/cpu_peak.json"
{
  lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Core|Socket|L2|L3'
  date -u +%Y-%m-%dT%H:%MZ
  "$py" -c 'import torch; print("torch", torch.__version__, "threads", torch.get_num_threads())'
} >"$out/machine.txt"
for c in ${configs//,/ }; do
  for l in ${loops//,/ }; do
    echo "cpu_bench: $c $l" >&2
    "$build/bench/gan_bench" --device cpu --configs "$c" --loops "$l" --variants fp32 \
      --iters "$iters" --reps "$reps" --warmup "$warmup" | grep '"model"' >>"$out/engine.jsonl"
    "$py" "$root/bench/torch_gan_bench.py" --device cpu --configs "$c" --loops "$l" --variants fp32 \
      --iters "$iters" --reps "$reps" --warmup "$warmup" --count-flops | grep '"model"' \
      >>"$out/torch.jsonl"
  done
done
python3 "$root/bench/cpu_table.py" "$out/engine.jsonl" --torch "$out/torch.jsonl" \
  --peak "$out/cpu_peak.json" | tee "$out/table.md"
