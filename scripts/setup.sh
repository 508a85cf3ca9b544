#!/usr/bin/env bash
# Set up edgerep in ./.venv on a fresh machine: the CPU build of torch first (a bare `torch`
# requirement pulls a multi-GB CUDA build on x86-64 Linux), then edgerep with its dev and fleet (Ray)
# extras, the TensorRT 10.x API stubs the tests read, timm with its paired torchvision, and the page
# tests' browser (never fatal).
# Ends with one line saying what is ready.
# Jetson / GPU users: install your platform's torch into .venv first; this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${EDGEREP_TORCH:-"torch==2.13.0"}
CPU_INDEX=https://download.pytorch.org/whl/cpu
DEFAULT_INDEX=https://pypi.org/simple
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 \
  || echo "setup.sh: note: could not upgrade pip; continuing with $(.venv/bin/python -m pip --version)" >&2

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  # The CPU wheel index first (the default index stays an extra source for torch's dependencies);
  # the default index alone only as a fallback, loudly: there it may be the CUDA build.
  if ! "${PIP[@]}" "$TORCH_SPEC" --index-url "$CPU_INDEX" --extra-index-url "$DEFAULT_INDEX"; then
    echo "setup.sh: WARNING: the CPU wheel index ($CPU_INDEX) did not provide $TORCH_SPEC;" \
         "falling back to the default index, which may install the multi-GB CUDA build" >&2
    "${PIP[@]}" "$TORCH_SPEC"
  fi
fi

"${PIP[@]}" -e ".[dev,fleet]"
# MLPerf LoadGen for `edgerep bench` scenarios (and the tests that use it); a platform with no wheel
# keeps going: edgerep then times with its built-in timer under the same rules, and says so.
"${PIP[@]}" -e ".[loadgen]" \
  || echo "setup.sh: note: no mlcommons-loadgen wheel for this platform; edgerep bench uses its built-in timer" >&2

# The published TensorRT 10.x API listing, read by tests/test_tensorrt_api_names.py. --no-deps:
# its metadata pulls the tensorrt wheel, whose native libraries are fetched from outside PyPI.
READY=("TensorRT API stubs installed")
if ! "${PIP[@]}" --no-deps "tensorrt-stubs>=10.0,<11"; then
  READY=("TensorRT API stubs MISSING (tests/test_tensorrt_api_names.py will skip)")
  echo "setup.sh: WARNING: 'pip install tensorrt-stubs>=10.0,<11' failed: the TensorRT API-name tests" \
       "will be SKIPPED, not run. Rerun this script when the package index is reachable." >&2
fi

# timm and torchvision (the [timm] extra: --arch timm:NAME and tests/test_timm_fold.py). torchvision
# first, the release paired with this torch (torch 2.N <-> torchvision 0.(N+15)), so that timm's bare
# torchvision requirement is already met; both constrained to the installed torch build, so pip never
# swaps it. Not fatal: without them those tests skip and say why.
PIN=$(mktemp)
trap 'rm -f "$PIN"' EXIT
.venv/bin/python -c "import torch; print('torch==' + torch.__version__)" >"$PIN"
TV="0.$(( $(.venv/bin/python -c "import torch; print(torch.__version__.split('.')[1])") + 15 )).*"
if "${PIP[@]}" -c "$PIN" "torchvision==$TV" && "${PIP[@]}" -c "$PIN" -e ".[timm]"; then
  READY+=("timm and torchvision $TV installed")
else
  READY+=("timm/torchvision MISSING (timm fold tests will skip)")
  echo "setup: could not install torchvision $TV and timm for this torch; the timm fold tests will be skipped" >&2
fi

# The page tests' browser driver (the [browser] extra) and Chromium (tests/test_browser_pages.py). Neither
# is fatal: where either is missing the tests skip and say why. Chromium comes from the distribution: only
# when missing and apt-get exists.
if "${PIP[@]}" -e ".[browser]"; then READY+=("playwright installed"); else
  READY+=("playwright MISSING (browser tests will skip)")
  echo "setup: could not install playwright; the browser tests will be skipped" >&2
fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
    && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium; } \
    >/dev/null 2>&1 || echo "setup: could not install chromium; the browser tests will be skipped" >&2
fi
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  READY+=("chromium found")
else
  READY+=("chromium MISSING (browser tests will skip)")
fi
# The [sr] extra: scikit-image's PSNR/SSIM and the photos in its wheel (tests/test_sr_*.py skip without it)
if "${PIP[@]}" -e ".[sr]"; then READY+=("scikit-image installed"); else
  READY+=("scikit-image MISSING (SR metric and photo tests will skip)"); fi

.venv/bin/python - "$(IFS=';'; echo "${READY[*]}")" <<'PYEOF'
import sys

import torch

import edgerep

build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
extras = "; ".join(p.strip() for p in sys.argv[1].split(";"))
print(f"edgerep ready: .venv/bin/edgerep {edgerep.__version__} (python {sys.version.split()[0]}, "
      f"torch {torch.__version__} {build} build); {extras}")
PYEOF
