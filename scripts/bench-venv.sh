#!/usr/bin/env bash
# A Python virtual environment for the comparisons in bench/ that need PyTorch and onnxruntime
# (bench/trunk_vs_torch.py with its onnxruntime row, bench/step_vs_torch.py): numpy, onnx,
# onnxruntime and torch, all from PyPI, kept apart from the system Python that scripts/setup.sh
# fills. Safe to run again: an environment whose packages already import is left as it is.
#
#   scripts/bench-venv.sh [DIR]      # DIR: .venv-bench by default
#   DIR/bin/python bench/trunk_vs_torch.py --device cpu ...
#
# PyPI's Linux torch wheel is the CUDA build, and only pypi.org is reachable (not PyTorch's own
# CPU-wheel index). Its libtorch_cuda.so is linked against CUDA's libraries, so even on the CPU
# `import torch` needs the nvidia-*, cuda-* and triton wheels it depends on (torch 2.15: a 3.1 GB
# download, 2.5 GB of it CUDA; installed without them, the import fails on the first missing
# library, and the machine's own CUDA 13.0 toolkit cannot stand in: its NCCL lacks symbols torch
# 2.15 links against). So torch goes in with all of its dependencies, as pip resolves them.
#
# Versions: TORCH_VERSION and ORT_VERSION (the two yardsticks, pinned so that numbers taken on
# different days compare) can be overridden from the environment; numpy and onnx are left free as
# scripts/setup.sh leaves them. PYTHON picks the interpreter the environment is made from.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "bench-venv: $*"; }

VENV=${1:-.venv-bench}
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.15.0}
ORT_VERSION=${ORT_VERSION:-1.32.0}

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV from $("$PY" --version 2>&1)"
  "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python
PIP=("$VPY" -m pip install -q --disable-pip-version-check)

# The versions the environment must hold; anything else is reinstalled.
if ! "$VPY" - "$TORCH_VERSION" "$ORT_VERSION" 2>/dev/null <<'EOF'; then
import sys
import numpy, onnx, onnxruntime, torch
assert torch.__version__.split('+')[0] == sys.argv[1], torch.__version__
assert onnxruntime.__version__ == sys.argv[2], onnxruntime.__version__
torch.ones(2) @ torch.ones(2)
EOF
  log "installing numpy, onnx and onnxruntime==$ORT_VERSION"
  "${PIP[@]}" numpy onnx "onnxruntime==$ORT_VERSION"
  log "installing torch==$TORCH_VERSION (PyPI's CUDA build, with its CUDA libraries)"
  "${PIP[@]}" "torch==$TORCH_VERSION"
fi

"$VPY" -c "
import numpy, onnx, onnxruntime, torch
print('bench-venv: ready:', 'numpy', numpy.__version__, '| onnx', onnx.__version__,
      '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers(),
      '| torch', torch.__version__, '(CUDA available)' if torch.cuda.is_available() else '(CPU)')"
du -sh "$VENV" | sed 's/^/bench-venv: size /'
