"""edgerep: fold re-parameterizable CNNs exactly, quantize them safely, ship them to edge engines.

Stable names: ``fold_model``, ``verify_fold``, ``FoldError``, ``edgerep.blocks``.
Heavy modules (torch) are imported on first use so the CLI starts fast.
"""
from __future__ import annotations

# Thread discipline lives in edgerep.bench.threads (each engine timed only once every pool has parked).
# OMP_WAIT_POLICY is left as the user set it: forcing PASSIVE made the unfolded torch baseline of the
# digits demo 7x slower on a quiet host (0.56 -> 4.09 ms p50), which would flatter every speed-up.
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
