#!/usr/bin/env bash
# Sets up, builds and runs the main job end to end: train a classifier on a folder of photos with
# the pretrained EfficientNet-Lite0 (on the GPU when one is present and built in, else the CPU),
# evaluate it on new photos, predict a few, and point at the report.
#
# The photos are generated (tools/make_demo_data.py: drawn shapes on textured backgrounds, JPEG
# and PNG, four classes), so the demo runs on any machine; pass DATA=folder to use your own, e.g.
# DATA=../shared/data/fish scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
BUILD=${BUILD_DIR:-build}
GRAFT="$BUILD/graft"
MODEL=models/efficientnet_lite0.safetensors

echo "== the pretrained backbone on real photos (scikit-image's samples)"
"$GRAFT" predict --model "$MODEL" --top 1 .cache/photos

DATA=${DATA:-}
NEW=""
if [ -z "$DATA" ]; then
  DATA=.cache/demo-shapes
  NEW=.cache/demo-shapes-new
  [ -d "$DATA" ] || python3 tools/make_demo_data.py "$DATA" --per-class 60 --seed 7
  [ -d "$NEW" ] || python3 tools/make_demo_data.py "$NEW" --per-class 10 --seed 8
fi
RUN=${RUN_DIR:-runs/demo}

echo "== train: $DATA -> $RUN"
"$GRAFT" train --data "$DATA" --backbone "$MODEL" --out "$RUN" --epochs 20 --overwrite

if [ -n "$NEW" ]; then
  echo "== eval on new photos: $NEW"
  "$GRAFT" eval --model "$RUN/model.safetensors" --data "$NEW"
  echo "== predict"
  "$GRAFT" predict --model "$RUN/model.safetensors" --top 2 "$NEW/star/star_000.jpg" \
    "$NEW/circle/circle_004.png" "$NEW/triangle/triangle_001.jpg"
fi
echo
echo "report: $PWD/$RUN/report.html"
