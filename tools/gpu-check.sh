#!/usr/bin/env bash
# One-shot GPU check: on a machine with an NVIDIA GPU, builds graft for that GPU, runs the whole
# test suite with GRAFT_REQUIRE_GPU=1 (a skipped CUDA test is a failure), runs the CUDA tests under
# compute-sanitizer memcheck (and racecheck on the kernels that share memory within a block), runs
# the kernel yardsticks against cuDNN/cuBLAS, trains on the fish photos on the GPU and on the CPU
# (same seed), runs the PyTorch baseline of the same recipe on the same split, and writes
# OUT_DIR/summary.json plus logs. Budget: under 8 minutes on 16 cores.
#
#   tools/gpu-deps.sh            # on a development machine: build deps, photos, commit id
#   tools/gpu-check.sh OUT_DIR   # on the GPU machine, with .gpudeps, models and .cache/photos
#
# The GPU machine may lack graft's build dependencies and cannot download them, so tools/gpu-deps.sh
# unpacks Debian's packages into .gpudeps/root, which this script puts on CMake's search path.
set -uo pipefail
OUT=${1:?usage: tools/gpu-check.sh OUT_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
WORK=${GPU_CHECK_WORK:-/tmp/graft-gpu-check}
BUILD=${GPU_CHECK_BUILD:-build-gpu}
rm -rf "$WORK" && mkdir -p "$WORK"
T0=$(date +%s)
# Each step also refreshes OUT_DIR/summary.json, so a run cut short still reports what it did.
summarize() {
  python3 tools/gpu_summary.py "$WORK" --build "$BUILD" --command "tools/gpu-check.sh $OUT" \
    >"$OUT/summary.json.tmp" 2>"$WORK/summary.err" && mv "$OUT/summary.json.tmp" "$OUT/summary.json"
  for f in tests.log sanitizer.log bench.log kernels.json; do
    [ -f "$WORK/$f" ] && cp "$WORK/$f" "$OUT/"
  done
  cat "$WORK"/train-cuda.log "$WORK"/train-cpu.log "$WORK"/torch.log >"$OUT/train.log" 2>/dev/null
  [ -f "$WORK/run-cuda/report.html" ] && cp "$WORK/run-cuda/report.html" "$OUT/"
  [ -f "$WORK/build.log" ] && tail -c 20000 "$WORK/build.log" >"$OUT/build.log"
  return 0
}
step() {
  [ -d "$WORK" ] && summarize
  echo "== $* ($(($(date +%s) - T0)) s)" | tee -a "$WORK/steps.log"
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

PREFIX=$PWD/.gpudeps/root/usr
LIBDIR=$PREFIX/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$LIBDIR:${LD_LIBRARY_PATH:-}
export CMAKE_PREFIX_PATH=$PREFIX${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}

# cuDNN is a yardstick only. Use the toolkit's if present, else the one PyTorch ships.
CUDNN_ARGS=()
if ! ls /usr/local/cuda/lib64/libcudnn.so >/dev/null 2>&1; then
  CUDNN_PIP=$(python3 -c "import nvidia.cudnn as m; print(list(m.__path__)[0])" 2>/dev/null || true)
  if [ -n "$CUDNN_PIP" ] && [ -d "$CUDNN_PIP/lib" ]; then
    mkdir -p "$WORK/cudnn/lib"
    ln -sf "$CUDNN_PIP"/lib/libcudnn.so.* "$WORK/cudnn/lib/" 2>/dev/null
    ln -sf "$(ls "$CUDNN_PIP"/lib/libcudnn.so.[0-9]* | head -1)" "$WORK/cudnn/lib/libcudnn.so"
    ln -sfn "$CUDNN_PIP/include" "$WORK/cudnn/include"
    CUDNN_ARGS=(-DGRAFT_CUDNN_ROOT="$WORK/cudnn")
    export LD_LIBRARY_PATH=$CUDNN_PIP/lib:$LD_LIBRARY_PATH
  fi
fi
SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv \
  >"$WORK/nvidia-smi.txt" 2>&1
cat "$WORK/nvidia-smi.txt"

step build
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')
{
  cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES="${ARCH:-90}" "${CUDNN_ARGS[@]}" &&
    cmake --build "$BUILD" -j"$(nproc)"
} >"$WORK/build.log" 2>&1
BUILD_RC=$?
[ $BUILD_RC = 0 ] || tail -40 "$WORK/build.log"

step tests
FISH=${FISH_DIR:-.gpudeps/fish}
[ -d "$FISH" ] || FISH=../shared/data/fish
export GRAFT_FISH_DIR=$(cd "$FISH" && pwd)
# Eight test processes on 16 cores: two OpenMP threads each, or they oversubscribe the cores.
GRAFT_REQUIRE_GPU=1 OMP_NUM_THREADS=2 ctest --test-dir "$BUILD" -j8 --timeout 300 --output-on-failure \
  >"$WORK/tests.log" 2>&1
tail -5 "$WORK/tests.log"

step yardsticks
# 300 s: the conv backward rows (dx and dw of every Lite0 conv at batch 32 and 256, each with a
# cuDNN algorithm search) roughly double the forward rows' time.
timeout 300 "$BUILD/bench/bench_cuda_ops" --tile-sweep --json="$WORK/kernels.json" >"$WORK/bench.log" 2>&1
tail -60 "$WORK/bench.log"

step train
for dev in cuda cpu; do
  t=$(now)
  "$BUILD/graft" train --data "$FISH" --backbone models/efficientnet_lite0.safetensors \
    --out "$WORK/run-$dev" --epochs 20 --device $dev --no-progress >"$WORK/train-$dev.log" 2>&1
  echo "{\"device\": \"$dev\", \"rc\": $?, \"seconds\": $(elapsed $t)}" >"$WORK/train-$dev.json"
  tail -3 "$WORK/train-$dev.log"
done
# Where a training epoch's time goes on this card (decode, copy, backbone, head, idle).
timeout 60 "$BUILD/graft" bench --data "$FISH" --backbone models/efficientnet_lite0.safetensors \
  --out "$WORK/run-bench" --epochs 2 --device cuda --json "$WORK/stages.json" \
  >"$WORK/bench-stages.log" 2>&1
tail -5 "$WORK/bench-stages.log"
# Fine-tuning: the same epochs' stages with the last two blocks and with every block trained, and
# a two-stage run on both devices, whose metrics must agree.
for ft in 2 all; do
  timeout 120 "$BUILD/graft" bench --data "$FISH" --backbone models/efficientnet_lite0.safetensors \
    --out "$WORK/run-bench-ft$ft" --epochs 2 --device cuda --fine-tune $ft \
    --json "$WORK/stages-ft$ft.json" >"$WORK/bench-stages-ft$ft.log" 2>&1
  tail -3 "$WORK/bench-stages-ft$ft.log"
done
for dev in cuda cpu; do
  t=$(now)
  timeout 300 "$BUILD/graft" train --data "$FISH" --backbone models/efficientnet_lite0.safetensors \
    --out "$WORK/run-ft-$dev" --epochs 4 --fine-tune 2 --freeze-epochs 1 --device $dev \
    --no-progress >"$WORK/train-ft-$dev.log" 2>&1
  echo "{\"device\": \"$dev\", \"rc\": $?, \"seconds\": $(elapsed $t)}" >"$WORK/train-ft-$dev.json"
  tail -3 "$WORK/train-ft-$dev.log"
done
if [ -f "$WORK/run-cuda/split.json" ]; then
  timeout 120 python3 bench/pytorch_baseline.py --model models/efficientnet_lite0.safetensors \
    --split "$WORK/run-cuda/split.json" --epochs 20 --device cuda --mode cached \
    --json "$WORK/torch.json" >"$WORK/torch.log" 2>&1
  tail -3 "$WORK/torch.log"
fi

step sanitizer
for t in test_cuda_ops test_cuda_backward test_cuda_engine; do
  [ -x "$BUILD/tests/$t" ] || continue
  echo "### $t" >>"$WORK/sanitizer.log"
  GRAFT_REQUIRE_GPU=1 timeout "${SANITIZER_SECONDS:-120}" "$SANITIZER" --tool memcheck --leak-check no \
    "$BUILD/tests/$t" >>"$WORK/sanitizer.log" 2>&1
  echo "### exit $?" >>"$WORK/sanitizer.log"
done
# Shared-memory hazards between threads of a block: first the small kernels (the pooling ring, the
# normalisation table), then the stem's weights, the tiled GEMMs and the depthwise tiles; each run
# has its own time limit so a slow one cannot hide the other's result.
racecheck() {
  echo "### racecheck $1" >>"$WORK/sanitizer.log"
  GRAFT_REQUIRE_GPU=1 timeout "$2" "$SANITIZER" --tool racecheck "$BUILD/tests/${3:-test_cuda_ops}" \
    --gtest_filter="$1" >>"$WORK/sanitizer.log" 2>&1
  echo "### racecheck exit $?" >>"$WORK/sanitizer.log"
}
racecheck 'CudaOps.GlobalAvgPool*:CudaOps.NormalizeU8*' "${RACECHECK_SECONDS:-30}"
racecheck 'CudaOps.ConvSmallCin*:CudaOps.ConvPointwiseV2*:CudaOps.ConvDepthwise*:CudaOps.Linear*' \
  "${RACECHECK_SECONDS:-60}"
# The backward kernels' block reductions (bias_grad's tree, the depthwise and narrow pointwise dw
# group sums) and the implicit-GEMM dw tiles.
racecheck 'CudaBackward.Depthwise*:CudaBackward.ImplicitGemm*:CudaBackward.BiasGrad*:CudaBackward.Misaligned*' \
  "${RACECHECK_SECONDS:-60}" test_cuda_backward
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|### exit|### racecheck exit" "$WORK/sanitizer.log"


step done
python3 -c "import json,sys; s=json.load(open('$OUT/summary.json')); print(json.dumps({k: s[k] for k in ('device','tests','sanitizer_errors','racecheck_errors','train')}, indent=1))"
