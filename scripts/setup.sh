#!/usr/bin/env bash
# Set up edgerep in ./.venv on a fresh machine: the CPU build of torch first (a bare `torch`
# requirement would pull a multi-GB CUDA build), then edgerep with its dev and fleet (Ray) extras.
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
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,fleet]"
# The published TensorRT 10.x API listing, read by tests/test_tensorrt_api_names.py. --no-deps:
# its metadata pulls the tensorrt wheel, whose native libraries are fetched from outside PyPI.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "tensorrt-stubs>=10.0,<11" || true
# The page tests' browser driver (the [browser] extra) and Chromium (tests/test_browser_pages.py). Neither
# is fatal: where either is missing the tests skip and say why. Chromium comes from the distribution: only
# when missing and apt-get exists.
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[browser]" \
  || echo "setup: could not install playwright; the browser tests will be skipped" >&2
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
    && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium; } \
    >/dev/null 2>&1 || echo "setup: could not install chromium; the browser tests will be skipped" >&2
fi
