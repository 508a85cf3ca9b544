"""What every data set offers: a length, streamed preprocessed batches, and a fingerprint."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from edgerep.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How raw pixels become model input: resize to (H, W), scale to [0, 1], then (x - mean) / std per channel."""

    input_shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_meta(cls, meta: Any, default_shape: tuple[int, int, int] = (3, 224, 224),
                  default_mean: tuple[float, ...] = IMAGENET_MEAN,
                  default_std: tuple[float, ...] = IMAGENET_STD) -> "Preprocess":
        """Take input_shape / mean / std from a ``CheckpointMeta`` (or anything with those attributes)."""
        shape = tuple(getattr(meta, "input_shape", None) or default_shape)
        if len(shape) != 3:
            raise DataError(f"input_shape must be (C, H, W), got {shape}")
        c = int(shape[0])
        mean = tuple(getattr(meta, "mean", None) or default_mean)
        std = tuple(getattr(meta, "std", None) or default_std)
        mean, std = _per_channel(mean, c, "mean"), _per_channel(std, c, "std")
        if any(s <= 0 for s in std):
            raise DataError(f"std must be positive, got {std}")
        return cls((c, int(shape[1]), int(shape[2])), mean, std)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """``x``: float NCHW in [0, 1] -> normalized float32."""
        m = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        s = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return ((x.astype(np.float32) - m) / s).astype(np.float32)

    def to_dict(self) -> dict:
        return {"input_shape": list(self.input_shape), "mean": list(self.mean), "std": list(self.std)}


def _per_channel(v: tuple[float, ...], c: int, field: str) -> tuple[float, ...]:
    if len(v) == c:
        return tuple(float(a) for a in v)
    if len(v) == 1:
        return tuple(float(v[0]) for _ in range(c))
    if c == 1:  # an RGB mean on a 1-channel model: average it
        return (float(np.mean(v)),)
    raise DataError(f"{field} has {len(v)} values but the model takes {c} channels")


class Dataset:
    """A sized, labelled-or-not source of preprocessed NCHW float32 batches.

    Subclasses implement ``__len__``, ``_read(start, stop)`` (rows ``start:stop``,
    preprocessed) and ``_identity()`` (what the fingerprint hashes). ``batches`` streams:
    only one batch is in memory at a time unless the subclass holds the set anyway.
    """

    name: str = "dataset"
    has_labels: bool = True
    class_names: list[str] | None = None

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:  # pragma: no cover
        raise NotImplementedError

    def _identity(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield ``(x, y)`` batches in a fixed order; ``limit`` caps the number of samples."""
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self) if limit is None else min(len(self), int(limit))
        for start in range(0, n, batch_size):
            yield self._read(start, min(n, start + batch_size))

    def fingerprint(self) -> str:
        """A short hash of the data and its preprocessing; calibration caches key on it."""
        blob = json.dumps(self._identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} n={len(self)}>"
