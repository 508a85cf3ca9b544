#!/usr/bin/env bash
# Set up edgerep in ./.venv on a fresh machine: the CPU build of torch first (a bare `torch`
# requirement pulls a multi-GB CUDA build on x86-64 Linux), then edgerep with its dev and fleet (Ray)
# extras, the TensorRT 10.x API stubs the tests read, timm with its paired torchvision (only when
# that torchvision imports beside this torch), and the page tests' browser (never fatal).
# Ends with one line saying what is ready: python, the torch build it got, what is missing and why.
# Jetson / GPU users: install your platform's torch into .venv first; this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${EDGEREP_TORCH:-"torch==2.13.0"}
CPU_INDEX=${EDGEREP_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
DEFAULT_INDEX=https://pypi.org/simple
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
READY=()

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 \
  || echo "setup.sh: note: could not upgrade pip; continuing with $(.venv/bin/python -m pip --version)" >&2

# The CPU wheel index, probed once with a short timeout: pip itself would retry an unreachable index
# five times, with back-off, for every package it resolves.
CPU_FROM=()
if .venv/bin/python - "$CPU_INDEX/torch/" <<'PYEOF' 2>/dev/null
import os
import ssl
import sys
import urllib.error
import urllib.request

try:  # any HTTP answer means the index is there; no answer in 5 s means it is not
    ctx = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    urllib.request.urlopen(sys.argv[1], timeout=5, context=ctx).close()
except urllib.error.HTTPError:
    pass
PYEOF
then
  CPU_FROM=(--index-url "$CPU_INDEX" --extra-index-url "$DEFAULT_INDEX")
else
  echo "setup.sh: WARNING: the CPU wheel index ($CPU_INDEX) does not answer; torch and torchvision come" \
       "from the configured index, where an x86-64 torch is the multi-GB CUDA build unless a CPU wheel" \
       "lies on this machine. The last line says which build was installed." >&2
fi

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  "${PIP[@]}" "${CPU_FROM[@]}" "$TORCH_SPEC"
fi

# What was installed: the distribution's version (the pin pip understands: `2.13.0`, where
# torch.__version__ may say `2.13.0+cu130`), the build, and whether this machine has a GPU for it.
TORCH_DIST=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('torch'))")
TORCH_CUDA=$(.venv/bin/python -c "import torch; print(torch.version.cuda or '')")
HAVE_GPU=no
if [ -e /dev/nvidia0 ] || [ -e /dev/nvhost-ctrl-gpu ] || [ -d /proc/driver/nvidia/gpus ]; then HAVE_GPU=yes; fi
if [ -n "$TORCH_CUDA" ] && [ "$HAVE_GPU" = no ]; then
  echo "setup.sh: WARNING: torch $TORCH_DIST is a CUDA $TORCH_CUDA build and this machine has no NVIDIA GPU:" \
       "its CUDA libraries ($(du -sh .venv 2>/dev/null | cut -f1) venv) are unused here. For the CPU build," \
       "make $CPU_INDEX reachable, or install a CPU torch into .venv first (this script keeps it)." >&2
fi

"${PIP[@]}" -e ".[dev,fleet]"
# MLPerf LoadGen for `edgerep bench` scenarios (and the tests that use it); a platform with no wheel
# keeps going: edgerep then times with its built-in timer under the same rules, and says so.
"${PIP[@]}" -e ".[loadgen]" \
  || echo "setup.sh: note: no mlcommons-loadgen wheel for this platform; edgerep bench uses its built-in timer" >&2

# The published TensorRT 10.x API listing, read by tests/test_tensorrt_api_names.py. --no-deps:
# its metadata pulls the tensorrt wheel, whose native libraries are fetched from outside PyPI.
READY+=("TensorRT API stubs installed")
if ! "${PIP[@]}" --no-deps "tensorrt-stubs>=10.0,<11"; then
  READY[-1]="TensorRT API stubs MISSING (tests/test_tensorrt_api_names.py will skip)"
  echo "setup.sh: WARNING: 'pip install tensorrt-stubs>=10.0,<11' failed: the TensorRT API-name tests" \
       "will be SKIPPED, not run. Rerun this script when the package index is reachable." >&2
fi

# timm and torchvision (the [timm] extra: --arch timm:NAME and tests/test_timm_fold.py). torchvision
# first, the release paired with this torch (torch 2.N <-> torchvision 0.(N+15)), from the CPU index
# when it answers, constrained to the installed torch distribution so pip never swaps it; then kept only
# if it imports beside this torch (PyPI's x86-64 torchvision is a CUDA build: beside a CPU torch its
# import fails with "operator torchvision::nms does not exist"). timm imports torchvision, so timm
# follows it. Not fatal: without them the timm fold tests skip and say why.
PIN=$(mktemp)
trap 'rm -f "$PIN"' EXIT
echo "torch==$TORCH_DIST" >"$PIN"
TV="0.$(( $(echo "$TORCH_DIST" | cut -d. -f2) + 15 )).*"
TIMM_SKIPS="--arch timm:NAME does not work and tests/test_timm_fold.py skips"
if ! "${PIP[@]}" "${CPU_FROM[@]}" -c "$PIN" "torchvision==$TV"; then
  READY+=("timm/torchvision NOT INSTALLED: no torchvision $TV for torch $TORCH_DIST on the index ($TIMM_SKIPS)")
elif ! TV_ERR=$(.venv/bin/python -c "import torchvision" 2>&1); then
  TV_GOT=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('torchvision'))")
  .venv/bin/python -m pip uninstall -q -y torchvision >/dev/null
  READY+=("timm/torchvision NOT INSTALLED: torchvision $TV_GOT does not import beside torch $TORCH_DIST\
 ($(echo "$TV_ERR" | tail -n 1)), so it was uninstalled ($TIMM_SKIPS)")
elif "${PIP[@]}" -c "$PIN" -e ".[timm]" && TM_ERR=$(.venv/bin/python -c "import timm" 2>&1); then
  READY+=("timm $(.venv/bin/python -c "import timm; print(timm.__version__)") and torchvision\
 $(.venv/bin/python -c "import torchvision; print(torchvision.__version__)") import")
else
  READY+=("timm NOT USABLE: $(echo "${TM_ERR:-pip could not install it}" | tail -n 1) ($TIMM_SKIPS)")
fi
case "${READY[*]}" in *"timm/torchvision NOT"*)
  echo "setup.sh: WARNING: ${READY[-1]}. For timm, install a torch whose paired torchvision the index" \
       "has (make $CPU_INDEX reachable, or set EDGEREP_TORCH to such a torch in a new .venv)." >&2 ;;
esac

# Detection mAP (the [detect] extra: pycocotools, tests/test_detect_metrics.py). Not fatal: those tests skip.
if "${PIP[@]}" -e ".[detect]"; then READY+=("pycocotools installed"); else
  READY+=("pycocotools MISSING (detection mAP tests will skip)")
  echo "setup: could not install pycocotools; the detection mAP tests will be skipped" >&2
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

.venv/bin/python - "$(IFS=';'; echo "${READY[*]}")" "$HAVE_GPU" "$(du -sh .venv 2>/dev/null | cut -f1)" <<'PYEOF'
import importlib.metadata
import sys

import torch

import edgerep

extras_arg, have_gpu, venv_size = sys.argv[1:4]
dist = importlib.metadata.version("torch")
if torch.version.cuda:
    build = f"CUDA {torch.version.cuda} build" + ("" if have_gpu == "yes" else ", NO GPU HERE: its CUDA libraries are unused")
else:
    build = "CPU build"
extras = "; ".join(p.strip() for p in extras_arg.split(";"))
print(f"edgerep ready: .venv/bin/edgerep {edgerep.__version__} (python {sys.version.split()[0]}, "
      f"torch {dist} {build}; venv {venv_size}); {extras}")
PYEOF
