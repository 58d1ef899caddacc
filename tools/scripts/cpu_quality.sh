#!/usr/bin/env bash
# Learning quality measured on the CPU (docs/metrics.md): the Fashion-MNIST FID floor and the
# quality twin, DCGAN-32 and SAGAN-32 trained by the engine (gan_train) and by PyTorch
# (bench/torch_gan_train.py) with the same settings, all scored by gan_eval --fid.
#   tools/scripts/cpu_quality.sh OUT [steps]
# Stages (each skipped when its result is already in OUT, so an interrupted run resumes):
#   1. the floor: the 10,000 test images against the 60,000 training images, both fitted to 32 px
#      as gan_train fits them (PIL bicubic), TF-Inception features (the training set's are cached
#      in gan_eval's cache folder for the later stages);
#   2. per model: gan_train --device cpu and torch_gan_train.py --device cpu, batch 64, STEPS
#      (default 2000) generator steps, seed 1, the models' own losses and Adam settings, the same
#      data order; then gan_eval --fid on 10,000 samples of each (the engine's checkpoint; the
#      PNGs PyTorch's trainer writes).
# Environment: GAN_BUILD_DIR (default build), TORCH_PYTHON (default /tmp/tv/bin/python; torch and
# pillow from PyPI), DATA (default /usr/share/datasets/fashion-mnist), THREADS (default: all).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${GAN_BUILD_DIR:-$root/build}
py=${TORCH_PYTHON:-/tmp/tv/bin/python}
data=${DATA:-/usr/share/datasets/fashion-mnist}
out=${1:?usage: tools/scripts/cpu_quality.sh OUT [steps]}
steps=${2:-2000}
threads=()
[ -z "${THREADS:-}" ] || threads=(--threads "$THREADS")
mkdir -p "$out"
log() { echo "cpu_quality: $(date -u +%H:%M:%S) $*" | tee -a "$out/log.txt" >&2; }
timed() {  # timed NAME command...: the command's wall seconds into OUT/NAME.seconds
  local t0 t1
  t0=$(date +%s.%N)
  "${@:2}"
  t1=$(date +%s.%N)
  python3 -c "print(round($t1 - $t0, 1))" >"$out/$1.seconds"
}
eval_args=(--fid --batch-size 50 --device cpu "${threads[@]}")

if [ ! -s "$out/floor.json" ]; then
  log "floor: 10,000 test images vs 60,000 training images at 32 px"
  timed floor "$build/gan_eval" --data "$data" --split test --image-size 32 --fit resize \
    "${eval_args[@]}" --out "$out/floor.json" >/dev/null
fi

for model in dcgan sagan; do
  if [ ! -s "$out/engine_$model/checkpoint.safetensors" ]; then
    log "$model: gan_train, $steps steps"
    rm -rf "$out/engine_$model"
    timed "engine_${model}_train" "$build/gan_train" --model "$model" --data "$data" \
      --image-size 32 --batch-size 64 --steps "$steps" --seed 1 --device cpu "${threads[@]}" \
      --sample-every "$steps" --checkpoint-every "$steps" --log-every 100 --progress 0 \
      --out "$out/engine_$model" >"$out/engine_$model.log"
  fi
  if [ ! -s "$out/torch_$model/grid.png" ]; then
    log "$model: torch_gan_train.py, $steps steps"
    rm -rf "$out/torch_$model"
    timed "torch_${model}_train" "$py" "$root/bench/torch_gan_train.py" --model "$model" \
      --data "$data" --image-size 32 --batch-size 64 --steps "$steps" --seed 1 --device cpu \
      --num-samples 10000 --log-every 100 --out "$out/torch_$model" >"$out/torch_$model.log"
  fi
  if [ ! -s "$out/engine_$model.fid.json" ]; then
    log "$model: FID of the engine's samples"
    "$build/gan_eval" --checkpoint "$out/engine_$model" --num-samples 10000 --seed 1 \
      "${eval_args[@]}" --out "$out/engine_$model.fid.json" >/dev/null
  fi
  if [ ! -s "$out/torch_$model.fid.json" ]; then
    log "$model: FID of PyTorch's samples"
    "$build/gan_eval" --images "$out/torch_$model/samples" --image-size 32 --fit resize \
      "${eval_args[@]}" --out "$out/torch_$model.fid.json" >/dev/null
  fi
done
python3 - "$out" <<'EOF'
import json, os, sys
out = sys.argv[1]
def j(name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)
def sec(name):
    p = os.path.join(out, name + ".seconds")
    return float(open(p).read()) if os.path.exists(p) else None
fl = j("floor.json")
print(f"floor: FID {fl['fd']:.3f} (test {fl['fake_count']} vs train {fl['real_count']}, "
      f"{sec('floor') or fl['seconds']:.0f} s)")
for m in ("dcgan", "sagan"):
    e, t = j(f"engine_{m}.fid.json"), j(f"torch_{m}.fid.json")
    es, ts = sec(f"engine_{m}_train"), sec(f"torch_{m}_train")
    print(f"{m}: engine FID {e['fd']:.2f} ({es:.0f} s training), PyTorch FID {t['fd']:.2f} "
          f"({ts:.0f} s training); engine/PyTorch FID {e['fd'] / t['fd']:.3f}, "
          f"training speed-up {ts / es:.2f}x")
EOF
