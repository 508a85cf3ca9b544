#!/usr/bin/env bash
# Set up edgerep in ./.venv on a fresh machine: the CPU build of torch first (a bare `torch`
# requirement would pull a multi-GB CUDA build), then edgerep with its dev extras.
# Jetson / GPU users: install your platform's torch first and skip the torch line.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" \
    || .venv/bin/python -m pip install -q --disable-pip-version-check "torch>=2.1,<3" --index-url https://download.pytorch.org/whl/cpu
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
# The published TensorRT 10.x API listing, read by tests/test_tensorrt_api_names.py. --no-deps:
# its metadata pulls the tensorrt wheel, whose native libraries are fetched from outside PyPI.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "tensorrt-stubs>=10.0,<11" || true
