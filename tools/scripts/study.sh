#!/usr/bin/env bash
# The SAGAN vs DCGAN study in one command (docs/metrics.md, "The study"): SAGAN, the paper's
# class-conditional ResNet SAGAN (sagan-resnet: cBN, projection D, hinge, TTUR as StudioGAN's),
# DCGAN and the wide DCGAN trained on the same data with the same seed, each evaluated at every epoch
# (gan_train --eval-every) and at the end (gan_eval), then a Markdown report with PNGs:
# per-epoch sample grids side by side, loss and FD curves, FD/KID/precision/recall at the end and
# at equal training time, weight and checkpoint sizes, parameter counts, images/s; for the
# conditional model its class grids, the classifier's accuracy on its samples against their labels
# and per-class FD.
#
#   tools/scripts/study.sh [--epochs 5] [--data DIR] [--out runs/study] [--seed 0] [--image-size 64]
#                  [--batch-size 64] [--eval-samples 5000] [--final-samples 10000]
#                  [--models "sagan sagan-resnet dcgan dcgan-wide"] [--device auto] [--force]
#                  [--tiny]
#
# --tiny: the CPU configuration CI runs (tools/scripts/test.sh): 512 training images, 32 px, widths 8,
# batch 16, 2 epochs, SAGAN, the conditional ResNet SAGAN and DCGAN (the wide DCGAN is a fixed 12.7M + 11.0M-parameter 64 px
# model: about half a minute per step on two CPU cores); a few seconds per model.
# Environment: GAN_BUILD_DIR (default build; built by tools/scripts/setup.sh when gan_train is missing),
# GAN_PLOT_PYTHON (a Python with matplotlib; default: python3 if it has it, else /usr/bin/python3).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${GAN_BUILD_DIR:-$root/build}

epochs=5 data=/usr/share/datasets/fashion-mnist out=runs/study seed=0 size=64 batch=64
eval_samples=5000 final_samples=10000 models="sagan sagan-resnet dcgan dcgan-wide" device=auto
force=0 tiny=0
width_args=() extra_args=() eval_args=()
die() { echo "study: $*" >&2; exit 1; }
while (($#)); do
  case $1 in
    --epochs) epochs=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --image-size) size=$2; shift 2 ;;
    --batch-size) batch=$2; shift 2 ;;
    --eval-samples) eval_samples=$2; shift 2 ;;
    --final-samples) final_samples=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --force) force=1; shift ;;
    --tiny) tiny=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ $epochs =~ ^[1-9][0-9]*$ ]] || die "--epochs must be a positive integer, got '$epochs'"
for m in $models; do
  case $m in sagan|sagan-resnet|dcgan|dcgan-wide) ;;
    *) die "--models: unknown model '$m' (sagan, sagan-resnet, dcgan, dcgan-wide)" ;;
  esac
done
if ((tiny)); then
  epochs=2 size=32 batch=16 eval_samples=200 final_samples=400 models="sagan sagan-resnet dcgan"
  device=cpu
  width_args=(--ngf 8 --ndf 8)
  extra_args=(--eval-real 512)
  eval_args=(--kid-subset-size 200)  # 400 samples: smaller KID subsets than torch-fidelity's 1000
fi
if [[ -e $out ]] && [[ -n $(ls -A "$out" 2>/dev/null) ]]; then
  ((force)) || die "$out exists and is not empty (--force replaces it)"
  rm -rf "$out"
fi
mkdir -p "$out"
[[ -x $build/gan_train && -x $build/gan_eval && -x $build/gan_sample ]] ||
  GAN_BUILD_DIR="$build" "$root/tools/scripts/setup.sh" >/dev/null

if ((tiny)); then  # the first 512 training images (and the test set's labels file is not needed)
  python3 - "$data" "$out/fashion-mnist-512" <<'PY'
import gzip, os, struct, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
def read(name):
    for n in (name + ".gz", name):
        p = os.path.join(src, n)
        if os.path.exists(p):
            return (gzip.open if n.endswith(".gz") else open)(p, "rb").read()
    sys.exit(f"study: {src}: no {name}[.gz]")
img, lab = read("train-images-idx3-ubyte"), read("train-labels-idx1-ubyte")
n, rows, cols = 512, *struct.unpack(">II", img[8:16])
with gzip.open(os.path.join(dst, "train-images-idx3-ubyte.gz"), "wb") as f:
    f.write(struct.pack(">IIII", 0x803, n, rows, cols) + img[16:16 + n * rows * cols])
with gzip.open(os.path.join(dst, "train-labels-idx1-ubyte.gz"), "wb") as f:
    f.write(struct.pack(">II", 0x801, n) + lab[8:8 + n])
PY
  data=$out/fashion-mnist-512  # named so: IDX files get Fashion-MNIST's class names (docs/io.md)
fi

# Steps per epoch: what gan_train prints ("N images (...), B batches per epoch").
for m in $models; do
  name=$m model=$m preset=default msize=$size model_args=()
  if [[ $m == dcgan-wide ]]; then model=dcgan preset=wide msize=64; fi
  # The ResNet SAGAN conditioned on the labels, with StudioGAN's optimisation for its size.
  if [[ $m == sagan-resnet ]]; then model_args=(--conditional); fi
  run=$out/$name
  echo "study: training $name ($epochs epochs) -> $run"
  count=$("$build/gan_train" --data "$data" --steps 1 --device cpu --image-size 32 --ngf 8 --ndf 8 \
    --batch-size "$batch" --out "$out/.probe" --progress 0 --sample-every 1 --checkpoint-every 1 |
    sed -n 's/.*, \([0-9]*\) batches per epoch.*/\1/p') || die "gan_train cannot read $data"
  rm -rf "$out/.probe"
  [[ -n $count ]] || die "could not read the number of batches per epoch of $data"
  if [[ $m == sagan-resnet ]]; then
    # Generator steps per epoch: each takes n_dis real batches (StudioGAN's 32 px SAGAN: 5).
    n_dis=$("$build/gan_train" --model sagan-resnet --conditional --data "$data" --steps 1 \
      --device cpu --image-size "$msize" --ngf 8 --ndf 8 --batch-size "$batch" --out "$out/.probe" \
      --progress 0 --sample-every 1 --checkpoint-every 1 | sed -n 's/.* n_dis=\([0-9]*\) .*/\1/p' |
      head -n 1) || die "gan_train cannot build sagan-resnet at $msize px"
    rm -rf "$out/.probe"
    [[ -n $n_dis ]] || die "could not read sagan-resnet's n_dis"
    count=$(( count / n_dis > 0 ? count / n_dis : 1 ))
  fi
  "$build/gan_train" --model "$model" --preset "$preset" --image-size "$msize" \
    "${model_args[@]}" "${width_args[@]}" --data "$data" --epochs "$epochs" --batch-size "$batch" --seed "$seed" \
    --device "$device" --out "$run" --progress 0 --log-every "$(( count < 10 ? 1 : count / 10 ))" \
    --sample-every "$count" --checkpoint-every "$count" --eval-every "$count" \
    --eval-samples "$eval_samples" "${extra_args[@]}" > "$out/$name.train.log" 2>&1 ||
    die "gan_train failed for $name: see $out/$name.train.log"
  echo "study: evaluating $name ($final_samples samples)"
  "$build/gan_eval" --checkpoint "$run" --num-samples "$final_samples" --real "$data" \
    --device "$device" --seed "$seed" "${eval_args[@]}" --out "$run/eval.json" > /dev/null 2> "$out/$name.eval.log" ||
    die "gan_eval failed for $name: see $out/$name.eval.log"
  "$build/gan_sample" "$run" --device cpu --export-torch "$run/weights.safetensors" \
    > /dev/null
done

plot_python=${GAN_PLOT_PYTHON:-}
if [[ -z $plot_python ]]; then
  for p in python3 /usr/bin/python3; do
    if command -v "$p" > /dev/null && "$p" -c 'import matplotlib' 2> /dev/null; then plot_python=$p; break; fi
  done
fi
mkdir -p "$out/report"
if [[ -n $plot_python ]]; then
  runs=() labels=()
  for m in $models; do runs+=("$out/$m"); labels+=(--label "$m"); done
  "$plot_python" "$root/tools/scripts/plot_metrics.py" --out "$out/report" "${labels[@]}" "${runs[@]}" > /dev/null
else
  echo "study: no Python with matplotlib (Debian: python3-matplotlib): the report has no curves" >&2
fi
report_runs=()
for m in $models; do report_runs+=("$out/$m"); done
python3 "$root/tools/scripts/study_report.py" --out "$out/report" \
  --command "tools/scripts/study.sh $(((tiny)) && echo --tiny || echo "--epochs $epochs --data $data")" \
  "${report_runs[@]}"
echo "study: report in $out/report/report.md"
