"""timm / torchvision as the user's own code sees them: edgerep imports them as they are and never
declares operators in torch's global registry to get a mismatched torchvision to import."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# In a fresh interpreter: edgerep's import, then what the user's own code finds in torch.ops.
_PROBE = r"""
import json, torch
from edgerep.models.libraries import LibraryUnavailable, import_timm, import_torchvision
out = {}
for name, imp in (("torchvision", import_torchvision), ("timm", import_timm)):
    try:
        imp()
        out[name] = "ok"
    except LibraryUnavailable as e:
        out[name] = "unavailable: " + str(e)
boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
try:
    out["nms"] = torch.ops.torchvision.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist()
except AttributeError:
    out["nms"] = "absent"
except Exception as e:  # declared with no kernel: what a user's detection code would hit
    out["nms"] = f"broken: {type(e).__name__}: {str(e).splitlines()[0]}"
print(json.dumps(out))
"""


def test_torchvision_imports_as_it_is_or_is_refused_naming_the_pair() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if out["torchvision"] == "ok":  # a torchvision built for this torch: its own nms runs
        assert out["nms"] == [0], out
    else:  # nothing was declared on its behalf: torch.ops has no half-made torchvision::nms
        assert out["nms"] == "absent", out
        assert out["timm"].startswith("unavailable"), out
        from importlib.metadata import version

        import torch

        if "not installed" not in out["torchvision"]:
            assert f"torchvision {version('torchvision')}" in out["torchvision"]
            assert f"beside torch {version('torch')}" in out["torchvision"], out
            assert ("CPU build" if torch.version.cuda is None else "CUDA") in out["torchvision"]
