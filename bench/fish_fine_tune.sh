#!/usr/bin/env bash
# Head only against fine-tuning on real photos: graft trains EfficientNet-Lite0 on the same data
# with the head alone and with the last 1, 2 and all blocks trained after --freeze-epochs head-only
# epochs (the two-stage recipe of the Keras guide and fastai), for several seeds, and prints each
# setting's mean and spread of test accuracy and loss. Every seed draws its own 80/10/10 split.
#   bench/fish_fine_tune.sh [DATA] [DEVICE]    (default ../shared/data/fish, cpu)
# Environment: SEEDS (default "1 2 3 4 5 6 7 8"), EPOCHS (20), FREEZE (5), OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/fish}
DEVICE=${2:-cpu}
OUT=${OUT_DIR:-runs/fish_fine_tune}
SEEDS=${SEEDS:-1 2 3 4 5 6 7 8}
EPOCHS=${EPOCHS:-20}
FREEZE=${FREEZE:-5}
mkdir -p "$OUT"
for ft in 0 1 2 all; do
  for s in $SEEDS; do
    run="$OUT/ft_${ft}_seed_$s"
    extra=()
    [ "$ft" = 0 ] || extra=(--fine-tune "$ft" --freeze-epochs "$FREEZE")
    build/graft train --data "$DATA" --backbone models/efficientnet_lite0.safetensors \
      --out "$run" --overwrite --epochs "$EPOCHS" --device "$DEVICE" --no-progress --seed "$s" \
      "${extra[@]}" >"$run.log" 2>&1
  done
done
python3 - "$OUT" "$SEEDS" <<'PY'
import json, os, statistics, sys
out, seeds = sys.argv[1], sys.argv[2].split()
print("setting         runs  test accuracy (mean +- sd, min..max)   test loss (mean +- sd)   seconds")
for ft in ("0", "1", "2", "all"):
    acc, loss, secs = [], [], []
    for s in seeds:
        lines = open(os.path.join(out, f"ft_{ft}_seed_{s}", "metrics.jsonl")).read().splitlines()
        test = json.loads(lines[-1])
        acc.append(test["accuracy"]); loss.append(test["loss"])
        secs.append(sum(json.loads(l).get("seconds", 0) for l in lines if '"epoch"' in l))
    name = "head only" if ft == "0" else f"--fine-tune {ft}"
    print(f"{name:15s} {len(acc):4d}  {statistics.mean(acc):.3f} +- {statistics.stdev(acc):.3f} "
          f"({min(acc):.3f}..{max(acc):.3f})        {statistics.mean(loss):.3f} +- "
          f"{statistics.stdev(loss):.3f}          {statistics.mean(secs):.1f}")
PY
