#!/usr/bin/env bash
# The data-loading table (docs/io.md): `gan_data prepare` against PyTorch's DataLoader (ImageFolder, Resize +
# CenterCrop + ToTensor) on a generated folder of 256x256 JPEGs, fitted to 64 and 128 px, with 1
# and 2 threads / workers, in one job; then the Loader's batch rate from the prepared files
# (`gan_data bench`), from a prepared file and from the folder streamed as gan_train streams it.
# prepare runs twice: exact decode and --fast-decode. PyTorch comes from a venv (TORCH_PYTHON, default /tmp/tv/bin/python).
#   bench/data_bench.sh OUTDIR [COUNT]        (default 5000 images)
# Environment: GAN_BUILD_DIR (default build), DATA_DIR (the generated folder; default
# OUTDIR/jpegs, made if missing and removed at the end unless it was given).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${GAN_BUILD_DIR:-$root/build}
py=${TORCH_PYTHON:-/tmp/tv/bin/python}
out=${1:?usage: bench/data_bench.sh OUTDIR [COUNT]}
count=${2:-5000}
mkdir -p "$out"
jpegs=${DATA_DIR:-$out/jpegs}
made=0
if [ ! -d "$jpegs" ]; then
  "$py" "$root/bench/torch_data_bench.py" make "$jpegs" --count "$count"
  [ -n "${DATA_DIR:-}" ] || made=1
fi
{
  lscpu | grep -E 'Model name|^CPU\(s\)'
  date -u +%Y-%m-%dT%H:%MZ
  echo "images: $(find "$jpegs" -name '*.jpg' | wc -l), $(du -sh "$jpegs" | cut -f1)"
} >"$out/machine.txt"
: >"$out/results.jsonl"
: >"$out/loader.txt"
row() {  # tool size threads seconds
  python3 -c "import json;n=$count;print(json.dumps({'tool':'$1','size':$2,'threads':$3,'images':n,'seconds':$4,'images_per_s':n/$4}))" >>"$out/results.jsonl"
}
for size in 64 128; do
  for t in 1 2; do
    for mode in exact fast; do
      echo "data_bench: prepare ($mode) $size px, $t threads" >&2
      flag=""
      [ "$mode" = exact ] || flag=--fast-decode
      rm -f "$out/p$size.gands"
      s=$(date +%s.%N)
      "$build/gan_data" prepare "$jpegs" "$out/p$size.gands" --size "$size" --threads "$t" $flag 2>/dev/null >/dev/null
      e=$(date +%s.%N)
      row "gan_data prepare ($mode)" "$size" "$t" "$(python3 -c "print($e-$s)")"
    done
    echo "data_bench: torch DataLoader $size px, $t workers" >&2
    "$py" "$root/bench/torch_data_bench.py" load "$jpegs" --size "$size" --workers "$t" |
      python3 -c "import json,sys;r=json.loads(sys.stdin.read());r['tool']='torch DataLoader';r['threads']=r.pop('workers');print(json.dumps(r))" >>"$out/results.jsonl"
    echo "data_bench: streamed folder $size px, $t workers" >&2
    "$build/gan_data" bench "$jpegs" --size "$size" --workers "$t" --batches 40 | tee -a "$out/loader.txt"
  done
  "$build/gan_data" bench "$out/p$size.gands" --batch 64 --batches 500 | tee -a "$out/loader.txt"
done
rm -f "$out"/p*.gands
[ "$made" = 0 ] || rm -rf "$jpegs"
cat "$out/results.jsonl"
