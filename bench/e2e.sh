#!/usr/bin/env bash
# End-to-end throughput, graft against PyTorch on the same GPU, the same split and the same photos:
# EfficientNet-Lite0 frozen, Dropout + Dense head, batch 32, 20 epochs, on a folder of JPEGs at
# phone-photo sizes. Writes logs and OUT_DIR/e2e.json (bench/e2e_summary.py); see
# bench/README-e2e.md.
#
#   bench/e2e.sh OUT_DIR [DATA_DIR] [--count N] [--torch-epochs N] [--torch-seconds S]
#
# DATA_DIR that exists is used as it is; otherwise bench/make_e2e_dataset.py makes N (6000) photos
# there (default $E2E_WORK/photos) from $FISH_DIR (.gpudeps/fish, else ../shared/data/fish).
# PyTorch's standard loop decodes every photo every epoch, so its 20 epochs can outlast the
# budget: it runs at most --torch-epochs (20) epochs and at most --torch-seconds (180) seconds,
# and the summary extrapolates whatever it did not finish to 20 epochs, labelled as such.
#
# Environment: BUILD (build-gpu; built here if it has no graft), E2E_WORK (/tmp/graft-e2e: the
# photos and run folders, kept out of OUT_DIR because they are gigabytes), E2E_DEVICE (cuda; cpu
# for a dry run on a machine without a GPU), E2E_WORKERS (DataLoader workers, nproc).
set -uo pipefail

ARGS=("$@")
POS=()
COUNT=6000 TORCH_EPOCHS=20 TORCH_SECONDS=180
while [ $# -gt 0 ]; do
  case $1 in
    --count) COUNT=$2; shift 2 ;;
    --torch-epochs) TORCH_EPOCHS=$2; shift 2 ;;
    --torch-seconds) TORCH_SECONDS=$2; shift 2 ;;
    -*) echo "e2e.sh: unknown option $1" >&2; exit 2 ;;
    *) POS+=("$1"); shift ;;
  esac
done
OUT=${POS[0]:?usage: bench/e2e.sh OUT_DIR [DATA_DIR] [--count N] [--torch-epochs N] [--torch-seconds S]}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 1
WORK=${E2E_WORK:-/tmp/graft-e2e}
DATA=${POS[1]:-$WORK/photos}
BUILD=${BUILD:-build-gpu}
DEVICE=${E2E_DEVICE:-cuda}
WORKERS=${E2E_WORKERS:-$(nproc)}
EPOCHS=20
RUN=$WORK/run
mkdir -p "$WORK"
# A reused OUT_DIR must not lend a failed step the numbers of an earlier run.
for f in command.txt steps.log nvidia-smi.txt cpu.txt versions.txt dataset.log graft_train.log \
  graft_metrics.jsonl graft_stages.jsonl torch_e2e.log torch_e2e.json bench_loader.log bench_loader.json pil_decode.log \
  gpu_util_graft.csv gpu_util_torch.csv build.log e2e.json summary.err; do
  rm -f "$OUT/$f" "$OUT/${f%.*}.time.json"
done
echo "bench/e2e.sh ${ARGS[*]}" >"$OUT/command.txt"

# The GPU machine has graft's libraries only under .gpudeps (tools/gpu-deps.sh).
PREFIX=$PWD/.gpudeps/root/usr
export LD_LIBRARY_PATH=$PREFIX/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export CMAKE_PREFIX_PATH=$PREFIX${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
export PYTHONUNBUFFERED=1  # the timestamps of the log lines are the epoch boundaries

T0=${EPOCHREALTIME:-$(date +%s.%N)}
now() { echo "${EPOCHREALTIME:-$(date +%s.%N)}"; }
# Each step refreshes OUT_DIR/e2e.json first, so a run cut short still reports what it finished.
summarize() {
  python3 bench/e2e_summary.py "$OUT" --epochs $EPOCHS >"$OUT/e2e.json.tmp" 2>"$OUT/summary.err" &&
    mv "$OUT/e2e.json.tmp" "$OUT/e2e.json"
}
step() {
  summarize
  echo "== $* ($(awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }') s)" | tee -a "$OUT/steps.log"
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
# GPU utilisation sampled by nvidia-smi while a step runs (graft does not report its own idle time).
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

step "photos"
if [ -d "$DATA" ] && [ -n "${POS[1]:-}" ]; then
  echo "using $DATA as it is" | tee "$OUT/dataset.log"
else
  FISH=${FISH_DIR:-.gpudeps/fish}
  [ -d "$FISH" ] || FISH=../shared/data/fish
  # Resumes: photos already there are kept, so a second run costs seconds.
  run_timed dataset 600 python3 bench/make_e2e_dataset.py "$FISH" "$DATA" --count "$COUNT" --seed 1
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

# Both runs should find the photos in the page cache (6000 are ~7 GB): decode is compared, not disk.
cat_all() { find "$DATA" -type f -print0 | xargs -0 cat >/dev/null; }
cat_all

step "graft train ($DEVICE)"
rm -rf "$RUN"
sample_gpu graft
run_timed graft_train 600 "$BUILD/graft" train --data "$DATA" \
  --backbone models/efficientnet_lite0.safetensors --out "$RUN" --epochs $EPOCHS --batch-size 32 \
  --device "$DEVICE" --no-progress
stop_sampling
cp "$RUN/metrics.jsonl" "$OUT/graft_metrics.jsonl" 2>/dev/null
cp "$RUN/stages.jsonl" "$OUT/graft_stages.jsonl" 2>/dev/null

cat_all
step "pytorch standard ($DEVICE, $WORKERS workers, up to $TORCH_EPOCHS epochs / $TORCH_SECONDS s)"
if [ -f "$RUN/split.json" ]; then
  sample_gpu torch
  run_timed torch_e2e "$TORCH_SECONDS" python3 bench/pytorch_baseline.py \
    --model models/efficientnet_lite0.safetensors --split "$RUN/split.json" \
    --epochs "$TORCH_EPOCHS" --batch-size 32 --device "$DEVICE" --mode standard \
    --workers "$WORKERS" --json "$OUT/torch_e2e.json"
  stop_sampling
else
  echo "no $RUN/split.json (graft train failed before writing it): no PyTorch run" | tee -a "$OUT/steps.log"
fi

# Decode per core, on the same files for both: bench_loader reads exactly 16 photos of each of its
# two sizes from $GRAFT_BENCH_PHOTOS/{1080x1440,3024x4032}/photoN.jpg, so the sample is copied from
# the folder into that layout (either orientation), and pil_decode.py reads the same folder.
step "decode per core"
SAMPLE=$WORK/decode-sample
rm -rf "$SAMPLE"
python3 bench/make_e2e_dataset.py --bench-sample "$DATA" "$SAMPLE" | tee -a "$OUT/steps.log"
LOADER=$BUILD/bench/bench_loader
if [ -x "$LOADER" ]; then
  GRAFT_BENCH_PHOTOS=$SAMPLE run_timed bench_loader 180 "$LOADER" \
    --benchmark_out="$OUT/bench_loader.json" --benchmark_out_format=json
else
  echo "no $LOADER (built without Google Benchmark?)" | tee -a "$OUT/steps.log"
fi
run_timed pil_decode 180 python3 bench/pil_decode.py "$SAMPLE"

step "done"
cat "$OUT/summary.err"
python3 -c "import json; s = json.load(open('$OUT/e2e.json')); print(json.dumps(s['headline'], indent=1))"
