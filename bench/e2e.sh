#!/usr/bin/env bash
# End-to-end throughput, graft against PyTorch at its best on the same GPU, the same split and the
# same photos: EfficientNet-Lite0 frozen, Dropout + Dense head, batch 32, 20 epochs, on a folder of
# JPEGs at phone-photo sizes. Writes logs and OUT_DIR/e2e.json (bench/e2e_summary.py); see
# bench/README-e2e.md.
#
#   bench/e2e.sh OUT_DIR [DATA_DIR] [--count N] [--torch-epochs N] [--torch-seconds S]
#                [--idle-count N]
#
# Steps, each timed on its own (rc, start, end in OUT_DIR/NAME.time.json; a failed, timed-out or
# skipped step shows as such in e2e.json), with their budget on an H200 with 16 cores:
#
#   step                                         expected   bound
#   photos: N (6000) phone-size JPEGs            ~60 s      240 s   (resumes: seconds when kept)
#   graft train, 20 epochs (feature cache)       ~15 s      240 s
#   idle: M (4000) 256x256 photos, then          ~5 s       60 s
#         graft bench, cache off, 5 epochs       ~10 s      90 s    GPU idle where decode is cheap
#   PyTorch cached mode, 20 epochs (PIL)         ~30 s      150 s
#   PyTorch standard, --decode gpu               <= 60 s    --torch-seconds (60)
#   PyTorch standard, --decode pil-draft         <= 60 s    --torch-seconds
#   PyTorch standard, --decode pil               <= 60 s    --torch-seconds
#   decode per core, graft and PIL               ~40 s      60 s each
#   total                                        ~6 min     E2E_BUDGET (480 s)
#
# PyTorch's standard loop decodes every photo every epoch, so its 20 epochs outlast the budget:
# each standard run stops after --torch-epochs (20) epochs or --torch-seconds seconds, and the
# summary extrapolates it to 20 epochs, labelled as such. Every step's limit is also cut to what
# is left of E2E_BUDGET after the later steps' shares, so the whole script ends in time even on a
# slower machine (a step cut that way shows as timed out).
#
# Environment: BUILD (build-gpu; built here if it has no graft), E2E_WORK (/tmp/graft-e2e: the
# photos and run folders, kept out of OUT_DIR because they are gigabytes), E2E_DEVICE (cuda; cpu
# for a dry run on a machine without a GPU: the GPU-decode run is then skipped, with the reason),
# E2E_WORKERS (DataLoader workers, nproc), E2E_BUDGET (seconds for the whole script, 480),
# FISH_DIR (the source photos).
set -uo pipefail

ARGS=("$@")
POS=()
COUNT=6000 TORCH_EPOCHS=20 TORCH_SECONDS=60 IDLE_COUNT=4000
while [ $# -gt 0 ]; do
  case $1 in
    --count) COUNT=$2; shift 2 ;;
    --torch-epochs) TORCH_EPOCHS=$2; shift 2 ;;
    --torch-seconds) TORCH_SECONDS=$2; shift 2 ;;
    --idle-count) IDLE_COUNT=$2; shift 2 ;;
    -*) echo "e2e.sh: unknown option $1" >&2; exit 2 ;;
    *) POS+=("$1"); shift ;;
  esac
done
OUT=${POS[0]:?usage: bench/e2e.sh OUT_DIR [DATA_DIR] [--count N] [--torch-epochs N] [--torch-seconds S] [--idle-count N]}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 1
WORK=${E2E_WORK:-/tmp/graft-e2e}
DATA=${POS[1]:-$WORK/photos}
SMALL=$WORK/photos-256x256-$IDLE_COUNT
BUILD=${BUILD:-build-gpu}
DEVICE=${E2E_DEVICE:-cuda}
WORKERS=${E2E_WORKERS:-$(nproc)}
BUDGET=${E2E_BUDGET:-480}
EPOCHS=20
IDLE_EPOCHS=5
RUN=$WORK/run
mkdir -p "$WORK"
# A reused OUT_DIR must not lend a failed step the numbers of an earlier run.
for f in command.txt steps.log nvidia-smi.txt cpu.txt versions.txt build.log e2e.json summary.err \
  dataset.log graft_train.log graft_metrics.jsonl graft_stages.jsonl idle_dataset.log \
  graft_idle.log graft_idle.json torch_cached.log torch_pil.log torch_pil_draft.log torch_gpu.log \
  bench_loader.log bench_loader.json pil_decode.log; do
  rm -f "$OUT/$f" "$OUT/${f%.*}.time.json"
done
rm -f "$OUT"/torch_*.json "$OUT"/*.skip "$OUT"/gpu_util_*.csv
echo "bench/e2e.sh ${ARGS[*]}" >"$OUT/command.txt"

# The GPU machine has graft's libraries only under .gpudeps (tools/gpu-deps.sh).
PREFIX=$PWD/.gpudeps/root/usr
export LD_LIBRARY_PATH=$PREFIX/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export CMAKE_PREFIX_PATH=$PREFIX${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
export PYTHONUNBUFFERED=1  # the timestamps of the log lines are the epoch boundaries

T0=${EPOCHREALTIME:-$(date +%s.%N)}
now() { echo "${EPOCHREALTIME:-$(date +%s.%N)}"; }
elapsed() { awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }
# limit WANT RESERVE: WANT seconds, or less if the budget minus RESERVE (the later steps' share)
# leaves less; never under 10.
limit() {
  local left=$((BUDGET - $(elapsed) - $2))
  [ "$left" -lt "$1" ] && { [ "$left" -lt 10 ] && echo 10 || echo "$left"; } || echo "$1"
}
# Each step refreshes OUT_DIR/e2e.json first, so a run cut short still reports what it finished.
summarize() {
  python3 bench/e2e_summary.py "$OUT" --epochs $EPOCHS >"$OUT/e2e.json.tmp" 2>"$OUT/summary.err" &&
    mv "$OUT/e2e.json.tmp" "$OUT/e2e.json"
}
step() {
  summarize
  echo "== $* ($(elapsed) s)" | tee -a "$OUT/steps.log"
}
# Prefixes each line with the time it arrived: the summary reads epoch wall times from them.
stamp() { while IFS= read -r line; do printf '%s %s\n' "${EPOCHREALTIME:-$(date +%s.%N)}" "$line"; done; }
# run_timed NAME SECONDS CMD...: runs CMD under timeout, log in OUT/NAME.log, times in NAME.time.json
run_timed() {
  local name=$1 limit=$2; shift 2
  local t0 t1 rc
  t0=$(now)
  timeout -k 10 "$limit" "$@" 2>&1 | stamp >"$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  t1=$(now)
  echo "{\"rc\": $rc, \"start\": $t0, \"end\": $t1, \"limit_s\": $limit}" >"$OUT/$name.time.json"
  tail -3 "$OUT/$name.log"
  return "$rc"
}
# skip NAME REASON: a step that does not run here says why (the summary shows it as skipped).
skip() { echo "$2" >"$OUT/$1.skip"; echo "skipped $1: $2" | tee -a "$OUT/steps.log"; }
# GPU utilisation sampled by nvidia-smi while a step runs, beside graft's own stage timing.
SAMPLER=
sample_gpu() {
  command -v nvidia-smi >/dev/null || return 0
  nvidia-smi --query-gpu=timestamp,utilization.gpu --format=csv,noheader,nounits -lms 200 \
    >"$OUT/gpu_util_$1.csv" 2>/dev/null &
  SAMPLER=$!
}
stop_sampling() { [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; SAMPLER=; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true; } \
  >"$OUT/nvidia-smi.txt"
# DataLoader workers pass batches through /dev/shm: a small one (containers) makes them crash.
{ echo "cores $(nproc)"; lscpu 2>/dev/null | grep -m1 "Model name" | sed 's/^Model name: *//'
  echo "memory $(free -g 2>/dev/null | awk '/^Mem:/ { print $2 " GiB" }'), /dev/shm $(df -h /dev/shm 2>/dev/null | awk 'NR == 2 { print $2 }')"; } \
  >"$OUT/cpu.txt"
python3 -c "import torch, torchvision, PIL; print(torch.__version__, torchvision.__version__, PIL.__version__)" \
  >"$OUT/versions.txt" 2>&1

FISH=${FISH_DIR:-.gpudeps/fish}
[ -d "$FISH" ] || FISH=../shared/data/fish
step "photos"
if [ -d "$DATA" ] && [ -n "${POS[1]:-}" ]; then
  echo "using $DATA as it is" | tee "$OUT/dataset.log"
else
  # Resumes: photos already there are kept, so a second run costs seconds.
  run_timed dataset "$(limit 240 200)" python3 bench/make_e2e_dataset.py "$FISH" "$DATA" \
    --count "$COUNT" --seed 1
fi
echo "$(find "$DATA" -type f | wc -l) files, $(du -sh "$DATA" | cut -f1)" | tee -a "$OUT/steps.log"

if [ ! -x "$BUILD/graft" ]; then
  step "build $BUILD (it had no graft)"
  ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')
  GEN=()
  command -v ninja >/dev/null && GEN=(-G Ninja)
  { cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${ARCH:-90}" &&
    cmake --build "$BUILD" -j"$(nproc)" --target graft bench_loader; } >"$OUT/build.log" 2>&1 ||
    tail -20 "$OUT/build.log"
fi

# Every run should find the photos in the page cache (6000 are ~7 GB): decode is compared, not disk.
cat_all() { find "$1" -type f -print0 | xargs -0 cat >/dev/null; }
cat_all "$DATA"

step "graft train ($DEVICE)"
rm -rf "$RUN"
sample_gpu graft
run_timed graft_train "$(limit 240 170)" "$BUILD/graft" train --data "$DATA" \
  --backbone models/efficientnet_lite0.safetensors --out "$RUN" --epochs $EPOCHS --batch-size 32 \
  --device "$DEVICE" --no-progress
stop_sampling
cp "$RUN/metrics.jsonl" "$OUT/graft_metrics.jsonl" 2>/dev/null
cp "$RUN/stages.jsonl" "$OUT/graft_stages.jsonl" 2>/dev/null

# GPU idle time where decoding is not the limit: 256x256 photos need no resize before the 224
# crop and decode in a fraction of a millisecond, and with the feature cache off every epoch runs
# the backbone, so graft's stage timing (CUDA events) shows how busy the loader keeps the GPU.
step "graft bench on $IDLE_COUNT 256x256 photos, cache off ($DEVICE, idle time)"
run_timed idle_dataset "$(limit 60 150)" python3 bench/make_e2e_dataset.py "$FISH" "$SMALL" \
  --count "$IDLE_COUNT" --seed 2 --sizes 256x256
cat_all "$SMALL"
sample_gpu graft_idle
run_timed graft_idle "$(limit 90 140)" "$BUILD/graft" bench --data "$SMALL" \
  --backbone models/efficientnet_lite0.safetensors --out "$WORK/run-idle" --overwrite \
  --epochs $IDLE_EPOCHS --batch-size 32 --cache-features off --device "$DEVICE" \
  --json "$OUT/graft_idle.json"
stop_sampling

# torch_run NAME LIMIT MODE DECODE EPOCHS: one PyTorch run on graft's split.
torch_run() {
  local name=$1 lim=$2 mode=$3 decode=$4 epochs=$5
  cat_all "$DATA"
  step "pytorch $mode --decode $decode ($DEVICE, $WORKERS workers, up to $epochs epochs / $lim s)"
  if [ ! -f "$RUN/split.json" ]; then
    skip "$name" "no $RUN/split.json (graft train failed before writing it)"
    return
  fi
  if [ "$decode" = gpu ] && [ "$DEVICE" != cuda ]; then
    skip "$name" "--decode gpu decodes with torchvision.io.decode_jpeg on the GPU; this run is on $DEVICE"
    return
  fi
  sample_gpu "$name"
  run_timed "$name" "$lim" python3 bench/pytorch_baseline.py \
    --model models/efficientnet_lite0.safetensors --split "$RUN/split.json" \
    --epochs "$epochs" --batch-size 32 --device "$DEVICE" --mode "$mode" --decode "$decode" \
    --workers "$WORKERS" --json "$OUT/$name.json"
  stop_sampling
}
# Cached mode is PyTorch's fastest whole job: it decodes each photo once, as graft does.
torch_run torch_cached "$(limit 150 120)" cached pil $EPOCHS
torch_run torch_gpu "$(limit "$TORCH_SECONDS" 100)" standard gpu "$TORCH_EPOCHS"
torch_run torch_pil_draft "$(limit "$TORCH_SECONDS" 80)" standard pil-draft "$TORCH_EPOCHS"
torch_run torch_pil "$(limit "$TORCH_SECONDS" 40)" standard pil "$TORCH_EPOCHS"

# Decode per core, on the same files for both: bench_loader reads exactly 16 photos of each of its
# two sizes from $GRAFT_BENCH_PHOTOS/{1080x1440,3024x4032}/photoN.jpg, so the sample is copied from
# the folder into that layout (either orientation), and pil_decode.py reads the same folder.
step "decode per core"
SAMPLE=$WORK/decode-sample
rm -rf "$SAMPLE"
python3 bench/make_e2e_dataset.py --bench-sample "$DATA" "$SAMPLE" | tee -a "$OUT/steps.log"
LOADER=$BUILD/bench/bench_loader
if [ -x "$LOADER" ]; then
  GRAFT_BENCH_PHOTOS=$SAMPLE run_timed bench_loader "$(limit 60 20)" "$LOADER" \
    --benchmark_out="$OUT/bench_loader.json" --benchmark_out_format=json
else
  skip bench_loader "no $LOADER (built without Google Benchmark?)"
fi
run_timed pil_decode "$(limit 60 0)" python3 bench/pil_decode.py "$SAMPLE"

step "done"
cat "$OUT/summary.err"
python3 -c "import json; s = json.load(open('$OUT/e2e.json')); print(json.dumps(s['headline'], indent=1))"
