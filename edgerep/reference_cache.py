"""The unfolded reference's outputs, computed once per checkpoint and input batch and kept on disk.

A deploy runs the unfolded FP32 model over the test set (evaluate; quantize judges its choices against
the folded FP32 file); a CI that deploys the same checkpoint on the same data pays for that once. Each batch's
outputs are keyed by the checkpoint's sha256, the torch version and thread count, and a sha256 of
the batch itself (so the data set, its preprocessing and the sample limit are all in the key);
a file that does not load is recomputed.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np


def batch_key(checkpoint_sha: str, x: np.ndarray) -> str:
    """The cache key of the reference's outputs on ``x``."""
    import torch

    h = hashlib.sha256(f"{checkpoint_sha}|{torch.__version__}|{torch.get_num_threads()}|{x.dtype}|{x.shape}".encode())
    h.update(np.ascontiguousarray(x).data)
    return h.hexdigest()[:40]


class CachedReference:
    """``fn(x) -> outputs`` (numpy), read from ``cache_dir`` when this checkpoint already ran on ``x``."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], checkpoint_sha: str, cache_dir: Path):
        self.fn, self.sha, self.dir = fn, checkpoint_sha, Path(cache_dir)
        self.hits = self.misses = 0
        self.name, self.precision = "unfolded reference", "fp32"  # how progress names its loops

    def __call__(self, x: np.ndarray) -> np.ndarray:
        path = self.dir / f"ref-{batch_key(self.sha, x)}.npy"
        try:
            out = np.load(path, allow_pickle=False)
            self.hits += 1
            return out
        except (OSError, ValueError):
            pass
        out = np.asarray(self.fn(x), dtype=np.float32)
        self.misses += 1
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, out, allow_pickle=False)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs the recomputation next time
        return out

    def run(self, x: np.ndarray) -> np.ndarray:
        """The ``Engine.run`` spelling, for ``collect_outputs``."""
        return self(x)


__all__ = ["CachedReference", "batch_key"]
