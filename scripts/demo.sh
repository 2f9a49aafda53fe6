#!/usr/bin/env bash
# Sets up, builds, and runs the main job: the pretrained EfficientNet-Lite0 names what is in real
# photos (scikit-image's sample photos: a cat, a cup of coffee, a rocket, a motorcycle, an astronaut).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
BUILD=${BUILD_DIR:-build}
"$BUILD/graft" inspect models/efficientnet_lite0.safetensors | head -8
echo
"$BUILD/graft" predict --model models/efficientnet_lite0.safetensors --top 3 .cache/photos
