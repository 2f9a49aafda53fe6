#!/usr/bin/env bash
# Head only against fine-tuning on real photos, graft and PyTorch: graft trains EfficientNet-Lite0
# with the head alone and with the last 1, 2 and all blocks trained after --freeze-epochs head-only
# epochs (the two-stage recipe of the Keras guide and fastai), for several seeds; after each graft
# run, bench/pytorch_baseline.py runs the same recipe on graft's split (same seed, epochs,
# --fine-tune, --freeze-epochs; --mode cached, whose cache holds what graft's holds). Prints each
# setting's mean, spread and range of test accuracy and loss, and the wall seconds of a run
# (process start to exit), for both. Every seed draws its own 80/10/10 split.
#   bench/fish_fine_tune.sh [DATA] [DEVICE]    (default ../shared/data/fish, cpu)
# Environment: SEEDS (default "1 2 3 4 5 6 7 8"), EPOCHS (20), FREEZE (5), OUT_DIR,
# GRAFT (build/graft), TORCH_THREADS (2; 0: torch's default), TORCH (1; 0: graft alone).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/fish}
DEVICE=${2:-cpu}
OUT=${OUT_DIR:-runs/fish_fine_tune}
SEEDS=${SEEDS:-1 2 3 4 5 6 7 8}
EPOCHS=${EPOCHS:-20}
FREEZE=${FREEZE:-5}
GRAFT=${GRAFT:-build/graft}
TORCH_THREADS=${TORCH_THREADS:-2}
TORCH=${TORCH:-1}
TORCH_DEVICE=cuda
[ "$DEVICE" = cpu ] && TORCH_DEVICE=cpu
mkdir -p "$OUT"

# timed NAME CMD...: runs CMD with its output in NAME.log and its wall seconds in NAME.seconds.
timed() {
  local name=$1 t0
  shift
  t0=$EPOCHREALTIME
  "$@" >"$name.log" 2>&1
  echo "$EPOCHREALTIME - $t0" | bc >"$name.seconds"
}

for ft in 0 1 2 all; do
  for s in $SEEDS; do
    run="$OUT/ft_${ft}_seed_$s"
    extra=()
    [ "$ft" = 0 ] || extra=(--fine-tune "$ft" --freeze-epochs "$FREEZE")
    timed "$run" "$GRAFT" train --data "$DATA" --backbone models/efficientnet_lite0.safetensors \
      --out "$run" --overwrite --epochs "$EPOCHS" --device "$DEVICE" --no-progress --seed "$s" \
      "${extra[@]}"
    [ "$TORCH" = 1 ] || continue
    timed "$run.torch" python3 bench/pytorch_baseline.py \
      --model models/efficientnet_lite0.safetensors --split "$run/split.json" --seed "$s" \
      --epochs "$EPOCHS" --device "$TORCH_DEVICE" --mode cached --threads "$TORCH_THREADS" \
      --json "$run.torch.json" "${extra[@]}"
  done
done
python3 - "$OUT" "$SEEDS" "$TORCH" <<'PY'
import json, os, statistics, sys
out, seeds, torch = sys.argv[1], sys.argv[2].split(), sys.argv[3] == "1"

def spread(v):
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):.3f} +- {sd:.3f} ({min(v):.3f}..{max(v):.3f})"

def graft(run):
    test = json.loads(open(os.path.join(run, "metrics.jsonl")).read().splitlines()[-1])
    return test["accuracy"], test["loss"]

def pytorch(run):
    test = json.load(open(run + ".torch.json"))["test"]
    return test["accuracy"], test["loss"]

print(f"{'setting':16s}{'side':9s}runs  {'test accuracy (mean +- sd, min..max)':38s}"
      f"{'test loss (mean +- sd, min..max)':38s}seconds")
for ft in ("0", "1", "2", "all"):
    name = "head only" if ft == "0" else f"--fine-tune {ft}"
    for side, read, suffix in (("graft", graft, ""), ("pytorch", pytorch, ".torch")):
        if side == "pytorch" and not torch:
            continue
        runs = [os.path.join(out, f"ft_{ft}_seed_{s}") for s in seeds]
        acc, loss = zip(*(read(r) for r in runs))
        secs = [float(open(r + suffix + ".seconds").read()) for r in runs]
        print(f"{name:16s}{side:9s}{len(runs):4d}  {spread(acc):38s}{spread(loss):38s}"
              f"{statistics.mean(secs):.1f}")
PY
