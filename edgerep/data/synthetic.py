"""Seeded random inputs with no labels: for latency work only (never for accuracy or calibration claims)."""
from __future__ import annotations

import numpy as np

from edgerep.data.base import Dataset, Preprocess


class SyntheticDataset(Dataset):
    """``n`` standard-normal NCHW samples of the model's input shape; sample i is the same on every run."""

    has_labels = False
    class_names = None
    task = None  # any task's model takes random inputs: latency and cost, never a metric

    def __init__(self, preprocess: Preprocess, n: int = 256, seed: int = 0):
        self.pre, self.n, self.seed = preprocess, int(n), int(seed)
        self.name = "synthetic"

    def __len__(self) -> int:
        return self.n

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, None]:
        rows = [np.random.default_rng([self.seed, i]).standard_normal(self.pre.input_shape, dtype=np.float32)
                for i in range(start, stop)]
        return np.stack(rows), None

    def sample_ids(self) -> list[str]:
        return [f"synthetic/{self.seed}/{i}" for i in range(self.n)]

    def labels(self) -> None:
        return None

    def _identity(self) -> dict:
        return {"set": "synthetic", "n": self.n, "seed": self.seed, "input_shape": list(self.pre.input_shape)}
