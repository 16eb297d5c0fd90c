#!/usr/bin/env bash
# Create .venv (if missing) and install imgcls with its test extras.  Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  if [ "$(uname -m)" = "x86_64" ]; then
    # The releases this project is tested with (CPU use; a CUDA build that also runs on GPUs).
    .venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1"
  else
    .venv/bin/pip install -q "torch>=2.10" torchvision
  fi
fi
.venv/bin/pip install -q -e ".[test]"
