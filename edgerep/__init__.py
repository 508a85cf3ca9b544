"""edgerep: fold re-parameterizable CNNs exactly, quantize them safely, ship them to edge engines.

Stable names: ``fold_model``, ``verify_fold``, ``FoldError``, ``edgerep.blocks``.
Heavy modules (torch) are imported on first use so the CLI starts fast.
"""
from __future__ import annotations

import os

# Thread discipline (edgerep.bench.threads): torch's OpenMP workers sleep at barriers instead of
# spinning, so they never burn the cores another engine (or another process) is timed on. Read when
# torch loads libgomp, so it only takes effect if edgerep is imported first; a value you set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from edgerep.errors import (  # noqa: E402
    CheckpointError,
    DataError,
    EdgerepError,
    EngineError,
    FoldError,
    GateFailed,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "fold_model",
    "verify_fold",
    "FoldError",
    "EdgerepError",
    "CheckpointError",
    "DataError",
    "EngineError",
    "GateFailed",
]


def __getattr__(name: str):
    if name in ("fold_model", "verify_fold", "FoldReport"):
        from edgerep.fold import model as _m

        return getattr(_m, name)
    raise AttributeError(f"module 'edgerep' has no attribute {name!r}")
