#!/usr/bin/env bash
# The GPU checks of the engine: build and pack on a machine without a GPU, run the checks on a
# GPU machine, bring the results back into bench/results/ (docs/gpu-runs.md lists the runs).
#
# Build machine:   tools/scripts/gpu_session.sh pack           builds for sm_90, packs .device/
# GPU machine:     tools/scripts/gpu_session.sh run STAGE...   logs, JSON and tables under $OUT
# Build machine:   tools/scripts/gpu_session.sh collect DIR    DIR (the returned $OUT) ->
#                                                              bench/results/<date>-<gpu>/
#
# `pack` builds the binaries for sm_90 (build-sm90/), copies them stripped, the Fashion-MNIST
# training and test files, the PyTorch baseline bench/torch_gan_bench.py, tools/scripts/torch_check.py
# (its module definitions) and bench/ratio_table.py into .device/ (ignored by git), and fails if
# that exceeds 63 MiB: a command sent to the GPU machine carries at most 64 MiB with it, so
# .device goes with each command. `run STAGE...` runs the stages in order on the GPU machine
# (each bounded by its own timeouts; each appends one line per check to $OUT/summary.txt):
#   tests      every [cuda] test case of engine_tests (on the GPU: cuBLAS, cuDNN, real scheduling)
#   sanitize   compute-sanitizer memcheck, racecheck, synccheck and initcheck over the whole
#              [cuda] suite (GAN_SANITIZE_TIMEOUT seconds each, default 150)
#   kernels    the kernel benchmarks (attention fp32 and TF32, batch norm per channel and
#              conditional, spectral norm, the projection head fused and separate) and
#              PyTorch's attention core (torch_gan_bench.py --attn) in the same job
#   bench      gan_bench (both loops, fp32/tf32/graph/graph_tf32) and torch_gan_bench.py on the
#              same configs in the same job, then bench/ratio_table.py -> ratio_table.md and
#              ratio_table_train_loop.md (GAN_BENCH_CONFIGS overrides the seven configs;
#              GAN_TORCH_VARIANTS and GAN_TORCH_LOOPS the baseline's variants and loops)
#   convs      the per-geometry convolution table: every convolution of the configs (from the
#              bench stage's cuDNN plan log, or a one-iteration gan_bench run), each cuDNN
#              algorithm timed by bench_conv in NHWC and NCHW, fp32 and TF32, PyTorch's time for
#              the same convolution (torch_gan_bench.py --conv), bench/conv_table.py -> conv_table.md
#   attention  the attention lab (bench_attention: every version and math mode, and PyTorch's
#              SDPA backends via torch_gan_bench.py --attn), the sagan-128 B64 and sagan-64 B256
#              rows of gan_bench (graph, graph_fp32tc, graph_tf32; attention choices logged) with
#              the PyTorch baseline in the same job (attn_ratio_table.md), and compute-sanitizer
#              memcheck, racecheck and synccheck over the attention cases; about 5 minutes
#   dist       the data-parallel path at world size 1: gan_bench's train loop (graph, graph_tf32)
#              with the gradients all-reduced by NCCL inside the captured graph against the same
#              without (the path's overhead), and gan_train --dist-backend nccl for 30 steps.
#              With one rank NCCL only copies memory (no NCCL kernel or proxy runs): this proves
#              the communication stream's fork/join capture and the version check, not
#              communication; equality across ranks needs two GPUs
#   bf16       bf16 precision: the [bf16] cuda tests, gan_bench (anchor loop; tf32, graph_tf32,
#              bf16, graph_bf16) and the PyTorch baseline's same variants (torch.autocast bf16)
#              on the seven configs in the same job (bf16_ratio_table.md), and two SAGAN runs of
#              GAN_BF16_STEPS (2000) steps, fp32 and bf16, each scored by gan_eval (the
#              classifier's FD, 5000 samples)
#   resnet     the conditional ResNet SAGAN: its [resnet][cuda] tests (StudioGAN's forward and
#              training step on the GPU path, graph replays equal eager steps), then gan_bench's
#              train loop (fp32, tf32, graph, graph_tf32) and the PyTorch baseline on the same
#              configs in the same job (GAN_RESNET_CONFIGS, default sagan-resnet:32:64,
#              sagan-resnet:64:64, sagan-resnet:128:32) -> resnet_ratio_table.md
#   penalty    gan_bench's train loop with --loss wgan and wgan-gp at n_dis 1 and 2 (the cost of a
#              gradient-penalty D step against a plain one)
#   train      5-epoch SAGAN and wide-DCGAN runs on Fashion-MNIST (images/s, sample grids) and the
#              PyTorch load check of both checkpoints (GAN_TRAIN_EPOCHS, default 5)
#   reference  the same SAGAN trained by gan_train and by bench/torch_gan_train.py (the PyTorch
#              reference trainer) for GAN_REF_STEPS (1000) steps at 64 px on Fashion-MNIST, both
#              scored by gan_eval (the classifier's FD; 5000 samples vs 10000 training images)
#   study      tools/scripts/study.sh: SAGAN, the conditional ResNet SAGAN, DCGAN and wide DCGAN,
#              GAN_STUDY_EPOCHS (5) epochs each with
#              evaluation every epoch, gan_eval at the end, the report (docs/metrics.md)
# `collect DIR` copies a returned $OUT into bench/results/<date>-<gpu>/ and unpacks its
# results.tar.gz. On the GPU machine a command may run at most 10 minutes and returns at most 8
# files: `run` stops its stages by GAN_DEADLINE (default 560 s) and keeps everything in one
# archive; the knobs (GAN_DEADLINE, GAN_*_TIMEOUT, GAN_BENCH_ITERS, ...) are in docs/gpu-runs.md.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dev="$root/.device"
cmd=${1:-}
shift || true

if [ "$cmd" = pack ]; then
  set -e
  build="$root/build-sm90"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DGAN_BUILD_INTERP=OFF -DGAN_MPI=OFF >/dev/null
  cmake --build "$build" -j "$(nproc)" --target engine_tests gan_train gan_sample gan_eval gan_bench \
    bench_attention bench_batchnorm bench_spectral_norm bench_conv bench_projection_head
  rm -rf "$dev" && mkdir -p "$dev/bin" "$dev/data" "$dev/scripts"
  cp "$build/tests/engine_tests" "$build/gan_train" "$build/gan_sample" "$build/gan_eval" \
    "$build"/bench/gan_bench \
    "$build"/bench/bench_attention "$build"/bench/bench_batchnorm \
    "$build"/bench/bench_spectral_norm "$build"/bench/bench_conv \
    "$build"/bench/bench_projection_head "$dev/bin/"
  strip --strip-unneeded "$dev"/bin/*
  gzip -9 "$dev"/bin/*  # ~3x smaller; `run` unpacks them
  # The CPU backend's oneDNN (Debian's libdnnl.so.2, 40 MB; xz makes it 7) and the OpenCL loader
  # it links, and libzip (gan_data's zip archives): the GPU machine (Ubuntu) may lack them. `run`
  # puts them on LD_LIBRARY_PATH.
  mkdir -p "$dev/lib"
  for lib in libdnnl.so.2 libOpenCL.so.1 libzip.so.4; do
    xz -9 -c "$(readlink -f "$(ldconfig -p | sed -n "s/^[[:space:]]*$lib .*=> //p" | head -n 1)")" \
      > "$dev/lib/$lib.xz"
  done
  cp /usr/share/datasets/fashion-mnist/*.gz "$dev/data/"  # the test set too: the evaluation cases
  cp "$root/tools/scripts/torch_check.py" "$root/tools/scripts/studiogan_sagan.py" \
    "$root/bench/ratio_table.py" \
    "$root/bench/torch_gan_bench.py" "$root/bench/conv_table.py" "$root/bench/torch_gan_train.py" \
    "$dev/scripts/"
  grep -qxF '/.device/' "$root/.git/info/exclude" 2>/dev/null || echo '/.device/' >> "$root/.git/info/exclude"
  size=$(du -sm "$dev" | cut -f1)
  echo "gpu_session: packed $dev (${size} MiB)"
  if [ "$size" -gt 63 ]; then
    echo "gpu_session: $dev is over the 64 MiB a command may carry" >&2
    exit 1
  fi
  exit 0
fi

if [ "$cmd" = collect ]; then
  src=${1:?usage: $0 collect DIR}
  [ -f "$src/machine.txt" ] || { echo "gpu_session: $src/machine.txt missing (not a run's \$OUT?)" >&2; exit 1; }
  gpu=$(sed -n 's/^name: //p' "$src/machine.txt" | head -n 1 | tr ' ' '-' | tr -cd 'A-Za-z0-9_.-')
  dest="$root/bench/results/$(date -u +%F)-${gpu:-gpu}"
  mkdir -p "$dest"
  cp -r "$src"/. "$dest"/
  if [ -f "$dest/results.tar.gz" ]; then
    tar -C "$dest" -xzf "$dest/results.tar.gz" && rm "$dest/results.tar.gz"
  fi
  echo "gpu_session: results in $dest; add a line to docs/gpu-runs.md"
  exit 0
fi

[ "$cmd" = run ] && [ $# -gt 0 ] ||
  { echo "usage: $0 pack | run STAGE... (tests sanitize kernels attention bench convs dist bf16 penalty train reference study) | collect DIR" >&2; exit 2; }
# A command on the GPU machine returns at most 8 files: logs go to $work, and after every stage
# $OUT gets summary.txt plus one results.tar.gz of $work (so a command cut off at its limit still
# returns the stages it finished). GAN_DEADLINE (seconds from the start, default 560) bounds the whole run:
# each command's timeout is cut to what is left of it.
out=${OUT:-/tmp/gpu_out}
work=${GAN_WORK:-/tmp/gpu_work}
mkdir -p "$out" "$work"
deadline=$((SECONDS + ${GAN_DEADLINE:-560}))
left() { # left LIMIT: LIMIT, or the seconds left before the deadline (less 15 for packing up)
  local l=$((deadline - SECONDS - 15))
  [ "$l" -lt "$1" ] && echo $((l > 1 ? l : 1)) || echo "$1"
}
bin="$dev/bin"
scripts="$dev/scripts"
for z in "$bin"/*.gz; do  # pack compressed the binaries
  [ -e "$z" ] && gunzip -f "$z" && chmod +x "${z%.gz}"
done
for z in "$dev"/lib/*.xz; do  # and the CPU backend's libraries
  [ -e "$z" ] && xz -d -f "$z"
done
[ -d "$dev/lib" ] && export LD_LIBRARY_PATH="$dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export GAN_TEST_VERBOSE=1
export GAN_FASHION_MNIST_DIR="$dev/data"
export GAN_TRAIN_BIN="$bin/gan_train"
summary="$out/summary.txt"
note() { echo "$*" | tee -a "$summary"; }
pack_up() { tar -C "$work" -czf "$out/results.tar.gz" . 2>/dev/null; }
# The binaries were linked here against CUDA 13's cuBLAS and cuDNN 9: find them there.
# NCCL (opened at run time by the data-parallel path) may come with PyTorch's wheels only.
pyshare=$(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)
for lib in libcublas.so.13 libcudnn.so.9 libnccl.so.2; do
  if ! ldconfig -p | grep -q "$lib"; then
    found=$(find /usr/local/cuda*/ /usr/lib /opt $pyshare -name "$lib" 2>/dev/null | head -n 1)
    [ -n "$found" ] && export LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
done
if [ ! -f "$work/machine.txt" ]; then
  {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader |
      sed 's/^\([^,]*\),/name: \1\ndriver, memory:/'
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' 2>&1
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    ldd "$bin/engine_tests" | grep -E 'cublas|cudnn|dnnl|OpenCL|not found'
  } > "$work/machine.txt" 2>&1
  cp "$work/machine.txt" "$out/machine.txt"
fi

for stage in "$@"; do
  t0=$SECONDS
  case "$stage" in
    tests)
      timeout "$(left "${GAN_TESTS_TIMEOUT:-300}")" "$bin/engine_tests" ${GAN_TESTS_FILTER:-"[cuda]"} \
        > "$work/cuda_tests.log" 2>&1
      note "tests: engine_tests ${GAN_TESTS_FILTER:-[cuda]} rc=$? ($(tail -n 2 "$work/cuda_tests.log" | tr '\n' ' '))"
      grep -E "FAILED|failed|unexpected exception" "$work/cuda_tests.log" | head -n 20 >> "$summary"
      ;;
    sanitize)
      for tool in ${GAN_SANITIZE_TOOLS:-memcheck racecheck synccheck initcheck}; do
        extra=""
        [ "$tool" = memcheck ] && extra="--leak-check full"
        # The trainer cases start gan_train processes: the sanitizer follows them.
        timeout "$(left "${GAN_SANITIZE_TIMEOUT:-150}")" compute-sanitizer --tool "$tool" $extra \
          --error-exitcode 9 --target-processes all "$bin/engine_tests" ${GAN_SANITIZE_FILTER:-"[cuda]"} \
          > "$work/sanitizer_$tool.log" 2>&1
        rc=$?
        what=$([ $rc = 124 ] && echo "timed out (partial)" || echo "rc=$rc")
        note "sanitize: $tool $what: $(grep -E 'ERROR SUMMARY' "$work/sanitizer_$tool.log" | tail -n 1)"
      done
      ;;
    kernels)
      for b in "bench_attention" "bench_attention --tf32" bench_batchnorm bench_spectral_norm \
        "bench_projection_head --device cuda"; do
        name=$(echo "$b" | tr -d ' -')
        timeout "$(left "${GAN_KERNELS_TIMEOUT:-120}")" $bin/$b > "$work/$name.jsonl" 2>&1
        note "kernels: $b rc=$? ($(grep -c '^{' "$work/$name.jsonl") lines)"
      done
      # PyTorch's attention core alone, at bench_attention's shapes.
      timeout "$(left 120)" python3 "$scripts/torch_gan_bench.py" --attn \
        > "$work/torch_attention.jsonl" 2>&1
      note "kernels: PyTorch attention core rc=$?"
      ;;
    bench)
      # GAN_BENCH_ITERS/REPS shorten both sides alike (the defaults: 50 iterations, 5 repeats).
      configs=${GAN_BENCH_CONFIGS:-dcgan:32:64,sagan:32:64,dcgan:64:64,sagan:64:64,sagan:128:64,dcgan:64:256,sagan:64:256}
      iters=${GAN_BENCH_ITERS:-50}
      reps=${GAN_BENCH_REPS:-5}
      : > "$work/gan_bench.jsonl"
      for c in ${configs//,/ }; do  # one process per config: each peak is its own
        # GAN_LOG_KERNELS: each cuDNN choice (timed candidates) goes to gan_bench.err.
        GAN_LOG_KERNELS=1 timeout "$(left "${GAN_BENCH_TIMEOUT:-150}")" "$bin/gan_bench" --configs "$c" --iters "$iters" --reps "$reps" \
          ${GAN_BENCH_ARGS:-} >> "$work/gan_bench.jsonl" 2>> "$work/gan_bench.err"
        note "bench: gan_bench $c rc=$?"
      done
      pack_up
      # The PyTorch baseline: same configs, iterations and repeats (its peaks are reset per line).
      PYTHONUNBUFFERED=1 timeout "$(left "${GAN_TORCH_TIMEOUT:-300}")" python3 "$scripts/torch_gan_bench.py" \
        --configs "$configs" --iters "$iters" --reps "$reps" \
        --variants "${GAN_TORCH_VARIANTS:-fp32,tf32,graph,graph_tf32}" --loops "${GAN_TORCH_LOOPS:-anchor,train}" \
        > "$work/torch_gan_bench.jsonl" 2> "$work/torch_gan_bench.err"
      note "bench: torch_gan_bench.py rc=$? (iters $iters, reps $reps)"
      python3 "$scripts/ratio_table.py" "$work/gan_bench.jsonl" --torch "$work/torch_gan_bench.jsonl" \
        > "$work/ratio_table.md" 2>&1
      python3 "$scripts/ratio_table.py" "$work/gan_bench.jsonl" --torch "$work/torch_gan_bench.jsonl" \
        --loop train > "$work/ratio_table_train_loop.md" 2>&1
      cat "$work/ratio_table.md"
      note "bench: $(tail -n 1 "$work/ratio_table.md")"
      ;;
    convs)
      configs=${GAN_BENCH_CONFIGS:-dcgan:32:64,sagan:32:64,dcgan:64:64,sagan:64:64,sagan:128:64,dcgan:64:256,sagan:64:256}
      if ! grep -q "cuDNN plan" "$work/gan_bench.err" 2>/dev/null; then
        for c in ${configs//,/ }; do
          GAN_LOG_KERNELS=1 timeout "$(left 60)" "$bin/gan_bench" --configs "$c" --iters 1 --reps 1 \
            --warmup 0 --variants fp32 --loops anchor > /dev/null 2>> "$work/gan_bench.err"
        done
      fi
      note "convs: $(grep -c 'cuDNN plan' "$work/gan_bench.err") plan-log lines"
      timeout "$(left "${GAN_CONVS_TIMEOUT:-150}")" "$bin/bench_conv" --from "$work/gan_bench.err" \
        > "$work/bench_conv.jsonl" 2> "$work/bench_conv.err"
      note "convs: bench_conv rc=$? ($(grep -c '^{' "$work/bench_conv.jsonl") lines)"
      pack_up
      timeout "$(left "${GAN_CONVS_TIMEOUT:-150}")" python3 "$scripts/torch_gan_bench.py" \
        --conv "$work/gan_bench.err" > "$work/torch_conv.jsonl" 2> "$work/torch_conv.err"
      note "convs: torch_gan_bench.py --conv rc=$? ($(grep -c '"conv"' "$work/torch_conv.jsonl") lines)"
      python3 "$scripts/conv_table.py" "$work/bench_conv.jsonl" --torch "$work/torch_conv.jsonl" \
        > "$work/conv_table.md" 2>&1
      note "convs: $(grep 'sum over' "$work/conv_table.md" | tr '\n' ' ')"
      ;;
    attention)
      for b in "bench_attention" "bench_attention --tf32"; do
        name=$(echo "$b" | tr -d ' -')
        timeout "$(left 75)" $bin/$b > "$work/$name.jsonl" 2>&1
        note "attention: $b rc=$? ($(grep -c '^{' "$work/$name.jsonl") lines)"
      done
      timeout "$(left 75)" python3 "$scripts/torch_gan_bench.py" --attn \
        > "$work/torch_attention.jsonl" 2>&1
      note "attention: PyTorch attention core rc=$?"
      pack_up
      : > "$work/attn_gan_bench.jsonl"
      for c in sagan:128:64 sagan:64:256; do
        GAN_LOG_KERNELS=1 timeout "$(left 60)" "$bin/gan_bench" --configs "$c" --loops anchor \
          --variants graph,graph_fp32tc,graph_tf32 --iters "${GAN_BENCH_ITERS:-10}" --reps "${GAN_BENCH_REPS:-3}" \
          >> "$work/attn_gan_bench.jsonl" 2>> "$work/attn_gan_bench.err"
        note "attention: gan_bench $c rc=$?"
      done
      PYTHONUNBUFFERED=1 timeout "$(left 90)" python3 "$scripts/torch_gan_bench.py" \
        --configs sagan:128:64,sagan:64:256 --iters "${GAN_BENCH_ITERS:-10}" --reps "${GAN_BENCH_REPS:-3}" \
        --variants graph,graph_tf32 --loops anchor > "$work/attn_torch_bench.jsonl" 2> "$work/attn_torch_bench.err"
      note "attention: torch_gan_bench.py rc=$?"
      python3 "$scripts/ratio_table.py" "$work/attn_gan_bench.jsonl" --torch "$work/attn_torch_bench.jsonl" \
        > "$work/attn_ratio_table.md" 2>&1
      note "attention: $(grep -c '^| sagan' "$work/attn_ratio_table.md") ratio rows; $(grep -c 'attention B' "$work/attn_gan_bench.err") choices logged"
      pack_up
      for tool in memcheck racecheck synccheck; do
        timeout "$(left 40)" compute-sanitizer --tool "$tool" --error-exitcode 9 "$bin/engine_tests" \
          "[attention],[self_attention],[attention flash],[self_attention flash],[attention materialised],[self_attention materialised]" \
          > "$work/attn_sanitizer_$tool.log" 2>&1
        rc=$?
        note "attention: $tool $([ $rc = 124 ] && echo "timed out (partial)" || echo "rc=$rc"): $(grep -E 'ERROR SUMMARY' "$work/attn_sanitizer_$tool.log" | tail -n 1)"
      done
      ;;
    dist)
      configs=${GAN_DIST_CONFIGS:-dcgan:64:64,sagan:64:64,sagan:128:64}
      : > "$work/dist_bench.jsonl"
      for c in ${configs//,/ }; do
        for d in "" "--dist-backend nccl"; do
          timeout "$(left 150)" "$bin/gan_bench" --configs "$c" --loops train --variants graph,graph_tf32 \
            --iters "${GAN_BENCH_ITERS:-50}" --reps "${GAN_BENCH_REPS:-5}" $d \
            >> "$work/dist_bench.jsonl" 2>> "$work/dist_bench.err"
          note "dist: gan_bench $c ${d:-(no all-reduce)} rc=$?"
        done
      done
      timeout "$(left 120)" "$bin/gan_train" --device cuda --dist-backend nccl --steps 30 --image-size 64 \
        --log-every 10 --progress 0 --data "$GAN_FASHION_MNIST_DIR" --out "$work/dist_train" \
        > "$work/dist_train.log" 2>&1
      note "dist: gan_train --dist-backend nccl rc=$? ($(tail -n 1 "$work/dist_train.log"))"
      rm -rf "$work/dist_train/samples" "$work/dist_train/checkpoint.safetensors"
      pack_up
      ;;
    bf16)
      timeout "$(left 200)" "$bin/engine_tests" "[bf16][cuda]" > "$work/bf16_tests.log" 2>&1
      note "bf16: engine_tests [bf16][cuda] rc=$? ($(tail -n 2 "$work/bf16_tests.log" | tr '\n' ' '))"
      grep -E "FAILED|failed|unexpected exception" "$work/bf16_tests.log" | head -n 20 >> "$summary"
      configs=${GAN_BENCH_CONFIGS:-dcgan:32:64,sagan:32:64,dcgan:64:64,sagan:64:64,sagan:128:64,dcgan:64:256,sagan:64:256}
      iters=${GAN_BENCH_ITERS:-20}
      reps=${GAN_BENCH_REPS:-3}
      : > "$work/bf16_gan_bench.jsonl"
      for c in ${configs//,/ }; do
        GAN_LOG_KERNELS=1 timeout "$(left "${GAN_BENCH_TIMEOUT:-120}")" "$bin/gan_bench" --configs "$c" \
          --iters "$iters" --reps "$reps" --loops anchor --variants tf32,graph_tf32,bf16,graph_bf16 \
          >> "$work/bf16_gan_bench.jsonl" 2>> "$work/bf16_gan_bench.err"
        note "bf16: gan_bench $c rc=$?"
      done
      pack_up
      PYTHONUNBUFFERED=1 timeout "$(left "${GAN_TORCH_TIMEOUT:-240}")" python3 "$scripts/torch_gan_bench.py" \
        --configs "$configs" --iters "$iters" --reps "$reps" --variants tf32,graph_tf32,bf16,graph_bf16 \
        --loops anchor > "$work/bf16_torch_gan_bench.jsonl" 2> "$work/bf16_torch_gan_bench.err"
      note "bf16: torch_gan_bench.py rc=$? (iters $iters, reps $reps)"
      python3 "$scripts/ratio_table.py" "$work/bf16_gan_bench.jsonl" --torch "$work/bf16_torch_gan_bench.jsonl" \
        > "$work/bf16_ratio_table.md" 2>&1
      cat "$work/bf16_ratio_table.md"
      pack_up
      for p in fp32 bf16; do
        rm -rf "/tmp/bf16_run_$p"
        timeout "$(left 150)" "$bin/gan_train" --model sagan --steps "${GAN_BF16_STEPS:-2000}" --precision "$p" \
          --data "$dev/data" --progress 0 --log-every 200 --sample-every 100000 --out "/tmp/bf16_run_$p" \
          > "$work/bf16_train_$p.log" 2>&1
        note "bf16: gan_train $p rc=$? $(grep 'gan_train: done' "$work/bf16_train_$p.log")"
        cp "/tmp/bf16_run_$p/samples/latest.png" "$work/bf16_samples_$p.png" 2>/dev/null
        cp "/tmp/bf16_run_$p/metrics.jsonl" "$work/bf16_metrics_$p.jsonl" 2>/dev/null
        timeout "$(left 90)" "$bin/gan_eval" --checkpoint "/tmp/bf16_run_$p" --num-samples 5000 --real "$dev/data" \
          --real-limit 10000 --out "$work/bf16_eval_$p.json" > /dev/null 2> "$work/bf16_eval_$p.err"
        note "bf16: gan_eval $p rc=$? $(grep -o '"fd": [0-9][0-9.e+-]*' "$work/bf16_eval_$p.json" | head -n 1)"
      done
      ;;
    resnet)
      timeout "$(left 240)" "$bin/engine_tests" "[resnet][cuda]" > "$work/resnet_tests.log" 2>&1
      note "resnet: engine_tests [resnet][cuda] rc=$? ($(tail -n 2 "$work/resnet_tests.log" | tr '\n' ' '))"
      grep -E "FAILED|failed|unexpected exception" "$work/resnet_tests.log" | head -n 20 >> "$summary"
      configs=${GAN_RESNET_CONFIGS:-sagan-resnet:32:64,sagan-resnet:64:64,sagan-resnet:128:32}
      iters=${GAN_BENCH_ITERS:-20}
      reps=${GAN_BENCH_REPS:-3}
      : > "$work/resnet_bench.jsonl"
      for c in ${configs//,/ }; do
        timeout "$(left 120)" "$bin/gan_bench" --configs "$c" --loops train \
          --variants fp32,tf32,graph,graph_tf32 --iters "$iters" --reps "$reps" \
          >> "$work/resnet_bench.jsonl" 2>> "$work/gan_bench.err"
        note "resnet: gan_bench $c rc=$?"
      done
      PYTHONUNBUFFERED=1 timeout "$(left 240)" python3 "$scripts/torch_gan_bench.py" \
        --configs "$configs" --iters "$iters" --reps "$reps" --variants fp32,tf32,graph,graph_tf32 \
        --loops train > "$work/torch_resnet_bench.jsonl" 2>> "$work/torch_gan_bench.err"
      note "resnet: torch_gan_bench.py rc=$?"
      python3 "$scripts/ratio_table.py" "$work/resnet_bench.jsonl" \
        --torch "$work/torch_resnet_bench.jsonl" --loop train > "$work/resnet_ratio_table.md" 2>&1
      note "resnet: $(tail -n 1 "$work/resnet_ratio_table.md")"
      ;;
    penalty)
      # The gradient-penalty D step against a plain one (the goal: at most 3x): the train loop with
      # --loss wgan and wgan-gp at n_dis 1 and 2; a D step's cost is the difference.
      : > "$work/penalty_bench.jsonl"
      for c in $(echo "${GAN_PENALTY_CONFIGS:-sagan:64:64,dcgan:64:64}" | tr ',' ' '); do
        for l in wgan wgan-gp; do
          for nd in 1 2; do
            timeout "$(left 120)" "$bin/gan_bench" --configs "$c" --loops train --loss "$l" \
              --n-dis "$nd" --variants fp32,graph --iters 20 --reps 3 \
              >> "$work/penalty_bench.jsonl" 2>> "$work/gan_bench.err"
            note "penalty: gan_bench $c $l n_dis $nd rc=$?"
          done
        done
      done
      ;;
    train)
      epochs=${GAN_TRAIN_EPOCHS:-5}
      for m in ${GAN_TRAIN_MODELS:-sagan dcgan-wide}; do
        args="--model $m"
        [ "$m" = dcgan-wide ] && args="--model dcgan --preset wide"
        rm -rf "/tmp/run_$m"
        timeout "$(left 280)" "$bin/gan_train" $args --data "$dev/data" --epochs "$epochs" --progress 0 \
          --log-every 200 --sample-every 2000 ${GAN_TRAIN_ARGS:-} --out "/tmp/run_$m" > "$work/train_$m.log" 2>&1
        note "train: gan_train $m rc=$? $(grep 'gan_train: done' "$work/train_$m.log")"
        cp "/tmp/run_$m/samples/latest.png" "$work/samples_$m.png" 2>/dev/null
        cp "/tmp/run_$m/metrics.jsonl" "$work/metrics_$m.jsonl" 2>/dev/null
        ls -l "/tmp/run_$m/checkpoint.safetensors" >> "$work/train_$m.log" 2>&1
        timeout "$(left 60)" "$bin/gan_sample" "/tmp/run_$m" --dump "/tmp/dump_$m.safetensors" -n 16 \
          --out /tmp/s.png > /dev/null 2>&1
        timeout "$(left 60)" python3 "$scripts/torch_check.py" "/tmp/run_$m/checkpoint.safetensors" \
          "/tmp/dump_$m.safetensors" >> "$work/torch_check.jsonl" 2>&1
        note "train: torch_check $m rc=$?"
      done
      ;;
    reference)
      steps=${GAN_REF_STEPS:-1000}
      rm -rf /tmp/ref_engine /tmp/ref_torch
      timeout "$(left 200)" "$bin/gan_train" --model sagan --steps "$steps" --data "$dev/data" --progress 0 \
        --log-every 100 --sample-every 100000 --out /tmp/ref_engine > "$work/ref_engine_train.log" 2>&1
      note "reference: gan_train rc=$? $(grep 'gan_train: done' "$work/ref_engine_train.log")"
      timeout "$(left 200)" python3 "$scripts/torch_gan_train.py" --model sagan --steps "$steps" \
        --data "$dev/data" --num-samples 5000 --log-every 100 --out /tmp/ref_torch > "$work/ref_torch_train.log" 2>&1
      note "reference: torch_gan_train.py rc=$? $(tail -n 1 "$work/ref_torch_train.log")"
      cp /tmp/ref_torch/train.jsonl "$work/ref_torch_train.jsonl" 2>/dev/null
      cp /tmp/ref_torch/grid.png "$work/ref_torch_grid.png" 2>/dev/null
      cp /tmp/ref_engine/samples/latest.png "$work/ref_engine_grid.png" 2>/dev/null
      timeout "$(left 90)" "$bin/gan_eval" --checkpoint /tmp/ref_engine --num-samples 5000 --real "$dev/data" \
        --real-limit 10000 --out "$work/ref_engine_eval.json" > /dev/null 2> "$work/ref_engine_eval.err"
      note "reference: gan_eval engine rc=$? $(grep -o '"fd": [0-9][0-9.e+-]*' "$work/ref_engine_eval.json" | head -n 1)"
      timeout "$(left 90)" "$bin/gan_eval" --images /tmp/ref_torch/samples --real "$dev/data" \
        --real-limit 10000 --out "$work/ref_torch_eval.json" > /dev/null 2> "$work/ref_torch_eval.err"
      note "reference: gan_eval PyTorch rc=$? $(grep -o '"fd": [0-9][0-9.e+-]*' "$work/ref_torch_eval.json" | head -n 1)"
      ;;
    study)
      # The study (docs/metrics.md): SAGAN, conditional ResNet SAGAN, DCGAN, wide DCGAN,
      # GAN_STUDY_EPOCHS (5) epochs each,
      # evaluated every epoch and at the end; the report and its PNGs come back.
      rm -rf /tmp/study
      # (tools/ and the committed classifier weights in models/weights travel with the working tree.)
      GAN_BUILD_DIR="$bin" XDG_CACHE_HOME=/tmp/cache timeout "$(left 30)" bash "$root/tools/scripts/study.sh" \
        --epochs "${GAN_STUDY_EPOCHS:-5}" --data "$dev/data" --out /tmp/study \
        ${GAN_STUDY_ARGS:-} > "$work/study.log" 2>&1
      note "study: rc=$?"
      cp -r /tmp/study/report "$work/study_report" 2>/dev/null
      cp /tmp/study/*.log "$work/" 2>/dev/null
      ;;
    *)
      note "gpu_session: unknown stage '$stage' (tests sanitize kernels attention bench convs dist bf16 penalty train reference study)"
      ;;
  esac
  note "stage $stage: $((SECONDS - t0)) s"
  pack_up
done
