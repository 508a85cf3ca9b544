"""The one cache root: calibration ranges, TensorRT plans and timing caches all live under it.

``$EDGEREP_CACHE``, else ``$XDG_CACHE_HOME/edgerep``, else ``~/.cache/edgerep``. The old
``$EDGEREP_CACHE_DIR`` (plans only) is still read when ``$EDGEREP_CACHE`` is unset, with a warning.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

ENV = "EDGEREP_CACHE"
_OLD_ENV = "EDGEREP_CACHE_DIR"


def cache_root() -> Path:
    """The directory every edgerep cache lives under (sub-folders ``calibration/``, ``tensorrt/``)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    if os.environ.get(_OLD_ENV):
        warnings.warn(f"${_OLD_ENV} is deprecated: set ${ENV} (one root for calibration, plans and timing caches)",
                      DeprecationWarning, stacklevel=2)
        return Path(os.environ[_OLD_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgerep"


__all__ = ["ENV", "cache_root"]
