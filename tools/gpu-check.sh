#!/usr/bin/env bash
# The GPU check, in phases that each fit one call of at most 10 minutes on a GPU machine:
#
#   tools/gpu-deps.sh                          # development machine, before copying: build deps,
#                                              # fish photos, and .gpudeps/tree.json (commit, dirty
#                                              # flag, sha256 of every file) for a tree without .git
#   tools/gpu-check.sh --phase test OUT/test   # GPU machine, with .gpudeps, models, .cache/photos
#   tools/gpu-check.sh --phase sanitize OUT/sanitize
#   tools/gpu-check.sh --phase bench OUT/bench
#   tools/gpu-check.sh --phase trunk OUT/trunk
#   tools/gpu-check.sh --phase e2e OUT/e2e
#   python3 tools/gpu_summary.py merge OUT/* -o summary.json   # development machine, afterwards
#   tools/gpu-check.sh OUT                     # every phase in turn into OUT/PHASE, then the merge
#
# Every phase first records which tree it runs on (git, else .gpudeps/tree.json hashed here) and
# builds it: configure when the build folder has none, then `cmake --build` of every target
# (incremental where the folder survives from an earlier call). If the build fails, every later
# step is recorded as skipped ("build failed"). Each step runs through run_step under its own time
# limit and lands in WORK/steps.jsonl with its command, exit status, seconds, limit and status
# (ok, failed, timeout, skipped, cut short); OUT_DIR/phase-NAME.json (tools/gpu_summary.py) is
# rewritten before and after every step, so a phase stopped from outside still reports what it
# did and which step was running, and OUT_DIR/logs holds each step's log (head and tail of a long
# one).
#
#   test      build; ctest with GRAFT_REQUIRE_GPU=1 (a skipped CUDA test is a failure); fish
#             training on cuda and cpu (same seed, metrics compared); the two-stage fine-tuning
#             run on both devices (compared); graft predict on both devices (compared)
#   sanitize  build; compute-sanitizer memcheck over test_cuda_ops, test_cuda_backward and
#             test_cuda_engine; racecheck, one run per test that uses shared memory
#   bench     build; graft bench stage timings (head only, --fine-tune 2, all); the PyTorch cached
#             baseline on the fish split; bench_cuda_ops --tile-sweep (cuDNN FMA and TF32 columns);
#             every kernel ladder (bench/ladder/, a few seconds each)
#   trunk     build; bench/torch_conv_layers.py (PyTorch's F.conv2d per layer); then
#             bench/trunk_vs_torch.py: the whole frozen trunk, graft against PyTorch eager fp32,
#             TF32, channels_last bf16 and torch.compile max-autotune, batch 32 and 256
#   e2e       build; bench/step_vs_torch.py (one training step, graft vs PyTorch eager, head
#             only, --fine-tune 2 and all); bench/e2e.sh OUT_DIR/e2e (6000 phone-size photos)
#
# Expected time on one H200 with 16 cores (bench/results/2026-11-26-h200-*.json: build and tests
# took 104 s then; bench_cuda_ops a few minutes before its backward rows were added):
#   build     ~90-150 s from scratch, seconds when the build folder is kept
#   test      ~3 min from scratch: ctest ~40 s, the five fish runs ~30 s, predict a few seconds
#   sanitize  ~4-6 min with a kept build (memcheck and racecheck have no timing on record yet;
#             every run has its own limit, so the phase ends within its budget either way)
#   bench     ~6-8 min with a kept build: graft bench ~10 s a run, the PyTorch baseline ~30-60 s,
#             bench_cuda_ops ~4-7 min (limit 420 s)
#   trunk     ~5-8 min with a kept build: torch_conv_layers ~1 min; the eager trunk rows take
#             seconds, max-autotune compiles for minutes at each batch size (180 s a row at most)
#   e2e       ~6-7 min with a kept build: step_vs_torch ~1 min, e2e.sh ~5-6 (bench/README-e2e.md)
# A phase stops starting steps when its budget (GPU_CHECK_BUDGET seconds, 540 for --phase; none
# for the all-phases form) is spent: each step's limit is cut to what is left, and steps that no
# longer fit are skipped with that reason. Give the call a timeout of the budget plus a minute.
#
# Environment: GPU_CHECK_BUILD (build-gpu), GPU_CHECK_WORK (/tmp/graft-gpu-check), GPU_CHECK_BUDGET,
# GPU_CHECK_CMAKE_ARGS (more configure arguments), FISH_DIR (.gpudeps/fish, else
# ../shared/data/fish), GPU_CHECK_DRY=1 (record every step as skipped without running it: shows
# the plan and checks the records on a machine without a GPU).
set -uo pipefail

usage() {
  echo "usage: tools/gpu-check.sh [--phase test|sanitize|bench|trunk|e2e] OUT_DIR" >&2
  exit 2
}
PHASE=all
if [ "${1:-}" = --phase ]; then
  PHASE=${2:-}
  shift 2 || usage
fi
case $PHASE in test | sanitize | bench | trunk | e2e | all) ;; *) usage ;; esac
[ $# = 1 ] || usage
mkdir -p "$1" && OUT=$(cd "$1" && pwd)
cd "$(dirname "$0")/.." || exit 1

if [ "$PHASE" = all ]; then
  for p in test sanitize bench trunk e2e; do
    GPU_CHECK_BUDGET=${GPU_CHECK_BUDGET:-0} "$PWD/tools/gpu-check.sh" --phase "$p" "$OUT/$p"
  done
  python3 tools/gpu_summary.py merge "$OUT"/test "$OUT"/sanitize "$OUT"/bench "$OUT"/trunk "$OUT"/e2e \
    -o "$OUT/summary.json"
  exit
fi

ROOT=${GPU_CHECK_WORK:-/tmp/graft-gpu-check}
WORK=$ROOT/$PHASE
BUILD=${GPU_CHECK_BUILD:-build-gpu}
BUDGET=${GPU_CHECK_BUDGET:-540}
RESERVE=15 # seconds kept back at the end of the budget for the last records
COMMAND="tools/gpu-check.sh --phase $PHASE $1"
rm -rf "$WORK" && mkdir -p "$WORK"
rm -f "$OUT/phase-$PHASE.json" && rm -rf "$OUT/logs"
T0=$(date +%s)
SKIP_REASON=
STEP_PID=
STEP_NAME=

summarize() {
  python3 tools/gpu_summary.py phase "$WORK" --phase "$PHASE" --out "$OUT" --command "$COMMAND" "$@" \
    2>>"$WORK/summary.err" || echo "gpu-check: the phase record failed: $(tail -1 "$WORK/summary.err")" >&2
}
record() { python3 tools/gpu_summary.py step "$WORK/steps.jsonl" "$@"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# skip_step NAME REASON [CMD...]: the step is in the record, with why it did not run.
skip_step() {
  local name=$1 reason=$2
  shift 2
  record --name "$name" --event end --status skipped --reason "$reason" --limit 0 -- "$@"
  echo "== $name: skipped ($reason)"
}

# run_step NAME LIMIT_S CMD...: runs CMD under its time limit (cut to what is left of the phase's
# budget), its output in WORK/NAME.log; returns CMD's exit status. It runs in the background so a
# TERM to this script is handled at once (on_term) rather than after the step.
run_step() {
  local name=$1 limit=$2 reason='' t rc
  shift 2
  if [ -n "$SKIP_REASON" ]; then
    skip_step "$name" "$SKIP_REASON" "$@"
    return 1
  fi
  if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then
    record --name "$name" --event end --status skipped --reason "dry run" --limit "$limit" -- "$@"
    return 0
  fi
  if [ "$BUDGET" -gt 0 ]; then
    local left=$((BUDGET - RESERVE - ($(date +%s) - T0)))
    if [ "$left" -lt 10 ]; then
      skip_step "$name" "the phase's ${BUDGET} s budget is spent" "$@"
      return 1
    fi
    if [ "$left" -lt "$limit" ]; then
      reason="limit cut from $limit s to the $left s left of the phase's budget"
      limit=$left
    fi
  fi
  echo "== $name (limit $limit s, $(($(date +%s) - T0)) s into the phase)"
  record --name "$name" --event start --limit "$limit" --log "$name.log" -- "$@"
  summarize
  t=$(now)
  # A session of its own, so that whatever the step leaves behind can go with it: bench/e2e.sh's
  # children run under time limits of their own, in process groups a timeout here cannot reach.
  setsid -w timeout -k 10 "$limit" "$@" >"$WORK/$name.log" 2>&1 </dev/null &
  STEP_PID=$! STEP_NAME=$name
  wait "$STEP_PID"
  rc=$?
  end_session "$STEP_PID"
  STEP_PID=
  [ $rc = 124 ] || [ $rc = 137 ] || reason=
  record --name "$name" --event end --rc "$rc" --seconds "$(elapsed "$t")" --limit "$limit" \
    --log "$name.log" --reason "$reason" -- "$@"
  summarize
  [ $rc = 0 ] || { echo "   exit $rc; last lines:"; tail -5 "$WORK/$name.log"; }
  return $rc
}

# end_session SID: stops what is left of a step (its session id is the pid run_step started).
end_session() { pkill -KILL -s "$1" 2>/dev/null || true; }

on_term() {
  trap - TERM INT
  if [ -n "$STEP_PID" ]; then
    kill -TERM "$STEP_PID" 2>/dev/null
    wait "$STEP_PID" 2>/dev/null
    end_session "$STEP_PID"
    record --name "$STEP_NAME" --event end --status "cut short" --rc 143 --seconds 0 \
      --reason "the phase was stopped (SIGTERM) while this step ran" --log "$STEP_NAME.log"
  fi
  summarize
  exit 143
}
trap on_term TERM INT

# --- what every phase does first: the tree, the card, the build ---------------------------------

python3 tools/gpu_tree.py check .gpudeps/tree.json >"$WORK/tree.json" 2>"$WORK/tree.err" ||
  echo '{"source": null, "matches": null, "error": "tools/gpu_tree.py check failed"}' >"$WORK/tree.json"
python3 -c "import json, sys; t = json.load(open(sys.argv[1])); print('tree:', t.get('source'), t.get('commit'), \
'dirty' if t.get('dirty') else 'clean', 'matches' if t.get('matches') else 'DOES NOT MATCH ' + str(t.get('differing')))" \
  "$WORK/tree.json"

PREFIX=$PWD/.gpudeps/root/usr
export LD_LIBRARY_PATH=$PREFIX/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export CMAKE_PREFIX_PATH=$PREFIX${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}

# cuDNN is a yardstick only. Use the toolkit's if present, else the one PyTorch ships; the links
# live outside the phase's folder so a kept build finds them at the same place.
CUDNN_ARGS=()
if ! ls /usr/local/cuda/lib64/libcudnn.so >/dev/null 2>&1; then
  CUDNN_PIP=$(python3 -c "import nvidia.cudnn as m; print(list(m.__path__)[0])" 2>/dev/null || true)
  if [ -n "$CUDNN_PIP" ] && [ -d "$CUDNN_PIP/lib" ]; then
    mkdir -p "$ROOT/cudnn/lib"
    ln -sf "$CUDNN_PIP"/lib/libcudnn.so.* "$ROOT/cudnn/lib/" 2>/dev/null
    # shellcheck disable=SC2012 # the toolkit's names are plain
    ln -sf "$(ls "$CUDNN_PIP"/lib/libcudnn.so.[0-9]* | head -1)" "$ROOT/cudnn/lib/libcudnn.so"
    ln -sfn "$CUDNN_PIP/include" "$ROOT/cudnn/include"
    CUDNN_ARGS=(-DGRAFT_CUDNN_ROOT="$ROOT/cudnn")
    export LD_LIBRARY_PATH=$CUDNN_PIP/lib:$LD_LIBRARY_PATH
  fi
fi
SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
FISH=${FISH_DIR:-.gpudeps/fish}
[ -d "$FISH" ] || FISH=../shared/data/fish
[ -d "$FISH" ] && FISH=$(cd "$FISH" && pwd) && export GRAFT_FISH_DIR=$FISH
MODEL=models/efficientnet_lite0.safetensors
GRAFT=$BUILD/graft

run_step nvidia-smi 30 nvidia-smi \
  --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,compute_cap --format=csv
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')
if [ -f "$BUILD/CMakeCache.txt" ] && { [ -f "$BUILD/build.ninja" ] || [ -f "$BUILD/Makefile" ]; }; then
  skip_step configure "$BUILD is configured already"
else
  GEN=()
  command -v ninja >/dev/null && GEN=(-G Ninja)
  # shellcheck disable=SC2086 # GPU_CHECK_CMAKE_ARGS is a list of arguments
  run_step configure 180 cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES="${ARCH:-90}" "${CUDNN_ARGS[@]}" ${GPU_CHECK_CMAKE_ARGS:-} ||
    SKIP_REASON="build failed (configure)"
fi
run_step build 480 cmake --build "$BUILD" -j"$(nproc)" || SKIP_REASON=${SKIP_REASON:-build failed}

# --- the phases ----------------------------------------------------------------------------------

# built NAME: the step's program is there, or the step will be recorded as skipped anyway.
built() { [ -x "$BUILD/$1" ] || [ -n "$SKIP_REASON" ] || [ "${GPU_CHECK_DRY:-0}" = 1 ]; }

fish_or_skip() {
  [ -d "$FISH" ] || [ -n "$SKIP_REASON" ] && return 0 # run_step says "build failed" first
  skip_step "$1" "no fish photos (.gpudeps/fish or ../shared/data/fish)"
  return 1
}

phase_test() {
  # Eight test processes on 16 cores: two OpenMP threads each, or they oversubscribe the cores.
  run_step ctest 300 env GRAFT_REQUIRE_GPU=1 OMP_NUM_THREADS=2 \
    ctest --test-dir "$BUILD" -j8 --timeout 180 --output-on-failure
  # The same seed on both devices: the metrics must agree (tolerances in tools/gpu_summary.py).
  for dev in cuda cpu; do
    fish_or_skip "train-$dev" &&
      run_step "train-$dev" 120 "$GRAFT" train --data "$FISH" --backbone "$MODEL" \
        --out "$WORK/run-train-$dev" --epochs 20 --device $dev --no-progress
  done
  for dev in cuda cpu; do
    fish_or_skip "train-ft-$dev" &&
      run_step "train-ft-$dev" 240 "$GRAFT" train --data "$FISH" --backbone "$MODEL" \
        --out "$WORK/run-train-ft-$dev" --epochs 4 --fine-tune 2 --freeze-epochs 1 --device $dev \
        --no-progress
  done
  # The model trained on the GPU, applied to every photo on both devices.
  for dev in cuda cpu; do
    if [ -f "$WORK/run-train-cuda/model.safetensors" ] || [ -n "$SKIP_REASON" ]; then
      run_step "predict-$dev" 60 "$GRAFT" predict --model "$WORK/run-train-cuda/model.safetensors" \
        --device $dev "$FISH"
    else
      skip_step "predict-$dev" "no model: train-cuda wrote none"
    fi
  done
}

phase_sanitize() {
  # memcheck skips the cuDNN/cuBLAS comparisons: they check the yardsticks, and the vendor's
  # autotuning under memcheck would take most of the limit.
  local t limit
  for t in test_cuda_ops:150 test_cuda_backward:150 test_cuda_engine:90; do
    limit=${t#*:} t=${t%:*}
    if built "tests/$t"; then
      run_step "memcheck-$t" "$limit" env GRAFT_REQUIRE_GPU=1 "$SANITIZER" --tool memcheck \
        --leak-check no --error-exitcode 99 "$BUILD/tests/$t" \
        --gtest_filter=-CudaOps.ConvMatchesCudnn:CudaOps.PointwiseAndLinearMatchCublas
    else
      skip_step "memcheck-$t" "$BUILD/tests/$t was not built"
    fi
  done
  # Shared-memory hazards between the threads of a block, one run per test so a slow one cannot
  # hide another's result. GRAFT_TEST_SHAPES=small keeps each test's cases of at most 2^18
  # elements (tests/test_util.h), a few cases for every kernel; each run keeps its own limit
  # and a timeout is recorded as one.
  racecheck() {
    local name=$1 limit=$2 bin=$3 filter=$4
    if built "tests/$bin"; then
      run_step "racecheck-$name" "$limit" env GRAFT_REQUIRE_GPU=1 GRAFT_TEST_SHAPES=small \
        "$SANITIZER" --tool racecheck \
        --error-exitcode 99 "$BUILD/tests/$bin" --gtest_filter="$filter"
    else
      skip_step "racecheck-$name" "$BUILD/tests/$bin was not built"
    fi
  }
  # The small kernels first (the pooling ring, the normalisation table), then the stem's weights,
  # the tiled GEMMs, the depthwise tiles and the linear layer.
  racecheck pool 45 test_cuda_ops 'CudaOps.GlobalAvgPool*'
  racecheck normalize 45 test_cuda_ops 'CudaOps.NormalizeU8*'
  racecheck stem 60 test_cuda_ops 'CudaOps.ConvSmallCin*'
  racecheck pointwise 60 test_cuda_ops 'CudaOps.ConvPointwiseV2*'
  racecheck depthwise 60 test_cuda_ops 'CudaOps.ConvDepthwise*'
  racecheck linear 45 test_cuda_ops 'CudaOps.Linear*'
  # The backward kernels' block reductions (bias_grad's tree, the depthwise and narrow pointwise
  # dw group sums) and the implicit-GEMM dw tiles.
  racecheck bias-grad 45 test_cuda_backward 'CudaBackward.BiasGrad*'
  racecheck dw-depthwise 60 test_cuda_backward 'CudaBackward.Depthwise*'
  racecheck dw-implicit-gemm 60 test_cuda_backward 'CudaBackward.ImplicitGemm*'
  racecheck dw-misaligned 60 test_cuda_backward 'CudaBackward.Misaligned*'
}

phase_bench() {
  # Where a training epoch's time goes on this card (decode, copy, backbone, head, idle): head
  # only, then the last two blocks and every block trained.
  local ft
  fish_or_skip stages-head &&
    run_step stages-head 90 "$GRAFT" bench --data "$FISH" --backbone "$MODEL" \
      --out "$WORK/run-stages-head" --epochs 2 --device cuda --json "$WORK/stages-head.json"
  for ft in 2 all; do
    fish_or_skip "stages-ft$ft" &&
      run_step "stages-ft$ft" 120 "$GRAFT" bench --data "$FISH" --backbone "$MODEL" \
        --out "$WORK/run-stages-ft$ft" --epochs 2 --device cuda --fine-tune $ft \
        --json "$WORK/stages-ft$ft.json"
  done
  # PyTorch's cached recipe on the same split (graft bench wrote it; the seed fixes it).
  if [ -f "$WORK/run-stages-head/split.json" ] || [ -n "$SKIP_REASON" ]; then
    run_step pytorch-cached 150 python3 bench/pytorch_baseline.py --model "$MODEL" \
      --split "$WORK/run-stages-head/split.json" --epochs 20 --device cuda --mode cached \
      --json "$WORK/pytorch-cached.json"
  else
    skip_step pytorch-cached "no split.json: stages-head wrote none"
  fi
  # The kernel yardsticks against cuDNN/cuBLAS. 420 s: the conv backward rows (dx and dw of every
  # Lite0 conv at batch 32 and 256, each with a cuDNN algorithm search) roughly double the
  # forward rows' time, and the TF32 columns add a second search per shape. bench_cuda_ops
  # rewrites its JSON after each section, so a cut run keeps the sections it finished.
  if built bench/bench_cuda_ops; then
    run_step kernels 420 "$BUILD/bench/bench_cuda_ops" --tile-sweep --json="$WORK/kernels.json"
  else
    skip_step kernels "$BUILD/bench/bench_cuda_ops was not built"
  fi
  # Every kernel ladder (bench/ladder/): each version checked and timed, one row each, in the
  # step's log (the worklogs' "measured" columns come from these rows).
  local ladder
  for ladder in "$BUILD"/bench/ladder_*; do
    [ -x "$ladder" ] || continue
    run_step "$(basename "$ladder")" 60 "$ladder"
  done
}

phase_trunk() {
  # PyTorch's own per-layer convs on this card, rows that join bench_cuda_ops's (bench phase).
  if [ -f bench/torch_conv_layers.py ]; then
    run_step torch-layers 120 python3 bench/torch_conv_layers.py --batches 32,256 \
      --json "$WORK/torch-layers.json"
  else
    skip_step torch-layers "bench/torch_conv_layers.py not found"
  fi
  # trunk_vs_torch.py rewrites its JSON after every row, so a run cut at its limit keeps the rows
  # it finished, and a compile that runs past --seconds-per-variant is a failed row. Its own phase:
  # torch.compile's max-autotune search takes minutes at each batch size.
  if [ -f bench/trunk_vs_torch.py ]; then
    run_step trunk 400 python3 bench/trunk_vs_torch.py --build "$BUILD" --model "$MODEL" \
      --batches 32,256 --seconds-per-variant 180 --json "$WORK/trunk.json"
  else
    skip_step trunk "bench/trunk_vs_torch.py not found"
  fi
}

phase_e2e() {
  # One training step, graft against PyTorch eager fp32 and TF32 on this card, for the head alone,
  # the last two blocks and every block (bench/step_vs_torch.py; the fine-tuning goal is a ratio
  # of at least 1 against eager fp32). Seconds; it rewrites its JSON after every row.
  if [ -f bench/step_vs_torch.py ]; then
    run_step step 150 python3 bench/step_vs_torch.py --build "$BUILD" --model "$MODEL" \
      --fine-tune 0,2,all --batch 32 --json "$WORK/step.json"
  else
    skip_step step "bench/step_vs_torch.py not found"
  fi
  # bench/e2e.sh bounds its own steps and rewrites e2e.json after each, so a run cut at this
  # limit still reports what it finished. Its own budget is what the build left of this phase's
  # (less a margin for the record), so it shortens its later steps instead of being cut off.
  local e2e_budget=480
  if [ "$BUDGET" -gt 0 ]; then
    e2e_budget=$((BUDGET - RESERVE - ($(date +%s) - T0) - 20))
    [ "$e2e_budget" -gt 480 ] && e2e_budget=480
    [ "$e2e_budget" -lt 30 ] && e2e_budget=30
  fi
  run_step e2e 600 env BUILD="$BUILD" E2E_BUDGET="$e2e_budget" bench/e2e.sh "$OUT/e2e"
}

"phase_$PHASE"
summarize --finished
python3 - "$OUT/phase-$PHASE.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"phase {r['phase']}: {r['status']}; build {r['build'].get('status')}"
      f" ({r['build'].get('seconds')} s); tree {r['git']}{' dirty' if r['git_dirty'] else ''},"
      f" matches: {r['tree'].get('matches')}")
for s in r["steps"]:
    print(f"  {s['name']:28} {s['status']:9} rc={s.get('rc')} {s.get('seconds')} s"
          + (f"  ({s['reason']})" if s.get("reason") else ""))
EOF
