#!/usr/bin/env bash
# Accuracy of graft against the PyTorch baseline of the same recipe (bench/pytorch_baseline.py:
# same frozen EfficientNet-Lite0, dropout + dense head, SGD, label smoothing, 20 epochs) on the
# same split, for several seeds: each seed draws graft's split, which PyTorch then reuses.
#   bench/fish_vs_pytorch.sh [DATA] [DEVICE]    (default ../shared/data/fish, cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/fish}
DEVICE=${2:-cpu}
OUT=${OUT_DIR:-runs/fish_vs_pytorch}
mkdir -p "$OUT"
acc() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d=d.get('test', d); print('%.3f %.3f' % (d['accuracy'], d['loss']))" "$1"; }
echo "seed  graft_acc graft_loss  torch_acc torch_loss"
for s in 1 2 3 4 5 42; do
  run="$OUT/seed_$s"
  build/graft train --data "$DATA" --backbone models/efficientnet_lite0.safetensors --out "$run" \
    --overwrite --epochs 20 --device "$DEVICE" --no-progress --seed "$s" >"$run.log" 2>&1
  tail -1 "$run/metrics.jsonl" >"$run/test.json"
  python3 bench/pytorch_baseline.py --model models/efficientnet_lite0.safetensors \
    --split "$run/split.json" --epochs 20 --device "$DEVICE" --mode cached --seed "$s" \
    --json "$run/torch.json" >"$run.torch.log" 2>&1
  echo "$s     $(acc "$run/test.json")      $(acc "$run/torch.json")"
done
