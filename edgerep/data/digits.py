"""The built-in ``digits`` set: scikit-learn's 1,797 real 8x8 handwritten digits (ships with
scikit-learn, no download), with deterministic stratified train / calib / test splits.

Preprocessing (documented, and stored in every checkpoint trained on it): pixel values 0..16
are scaled to [0, 1], resized with bilinear interpolation (``align_corners=False``, as
``torch.nn.functional.interpolate``) from 8x8 to the model's H x W (16x16 by default),
replicated to C channels, then normalized with the checkpoint's mean / std.
Split: per class, a seeded permutation (numpy ``RandomState(0)``) puts the first 20% in ``test``,
the next 10% in ``val``, the next 10% in ``calib`` and the rest (60%) in ``train``. ``calib`` sets
activation ranges, ``val`` makes every choice (calibration method, CPU policy, layers kept in
float), ``test`` is only reported and gated. (``val`` was carved out of an earlier 30% ``test``, so
``train`` and ``calib`` are what the demo checkpoints were trained and calibrated on.)
Sample ids are ``digits/<index>``, the index into scikit-learn's ``load_digits()`` order.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

from edgerep.data.base import Dataset, Preprocess, pixel_digest
from edgerep.errors import DataError

SPLITS = ("train", "calib", "val", "test")
FRACTIONS = {"test": 0.2, "val": 0.1, "calib": 0.1}
SEED = 0
DEFAULT_SHAPE = (1, 16, 16)
CLASS_NAMES = [str(i) for i in range(10)]


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


@lru_cache(maxsize=1)
def split_indices() -> dict[str, np.ndarray]:
    """Sample indices of each split (sorted), stratified by class, the same on every machine."""
    _, y = _raw()
    rng = np.random.RandomState(SEED)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(FRACTIONS["test"] * len(idx)))
        n_held = int(round((FRACTIONS["test"] + FRACTIONS["val"]) * len(idx)))
        n_calib = int(round(FRACTIONS["calib"] * len(idx)))
        out["test"] += idx[:n_test].tolist()
        out["val"] += idx[n_test:n_held].tolist()
        out["calib"] += idx[n_held:n_held + n_calib].tolist()
        out["train"] += idx[n_held + n_calib:].tolist()
    return {s: np.array(sorted(v), dtype=np.int64) for s, v in out.items()}


def resize_digits(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``images`` (N, 8, 8) in [0, 1] -> (N, C, H, W) float32 in [0, 1] (bilinear, C copies)."""
    import torch
    import torch.nn.functional as F

    c, h, w = shape
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    if (h, w) != x.shape[-2:]:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return x.repeat(1, c, 1, 1).numpy()


def digits_mean_std(shape: tuple[int, int, int] = DEFAULT_SHAPE) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of the *train* split after resizing: what a model trained on digits stores."""
    x = resize_digits(_raw()[0][split_indices()["train"]], (1, shape[1], shape[2]))
    m, s = float(x.mean()), float(x.std())
    return (m,) * shape[0], (s,) * shape[0]


class DigitsDataset(Dataset):
    """One split of ``digits``, preprocessed to the model's input shape batch by batch."""

    has_labels = True
    class_names = CLASS_NAMES

    def __init__(self, split: str = "test", preprocess: Preprocess | None = None):
        if split not in SPLITS:
            raise DataError(f"digits has splits {', '.join(SPLITS)}; got split={split!r}")
        if preprocess is None:
            mean, std = digits_mean_std(DEFAULT_SHAPE)
            preprocess = Preprocess(DEFAULT_SHAPE, mean, std)
        self.split, self.pre = split, preprocess
        self.name = f"digits:{split}"
        self._idx = split_indices()[split]

    def __len__(self) -> int:
        return len(self._idx)

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        return self._rows(self._idx[start:stop])

    def _read_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._rows(self._idx[rows])

    def _rows(self, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images, y = _raw()
        c = self.pre.input_shape[0]
        x = np.repeat(np.ascontiguousarray(images[sel], dtype=np.float32)[:, None], c, axis=1)
        return self.pre.normalize(self.pre.resize_batch(x)), y[sel]

    def sample_ids(self) -> list[str]:
        return [f"digits/{i}" for i in self._idx]

    def sample_digests(self) -> list[str]:
        images = _raw()[0]  # decoded pixels in [0, 1] (8x8), before resizing and normalization
        return [pixel_digest(images[i]) for i in self._idx]

    def labels(self) -> np.ndarray:
        return _raw()[1][self._idx]

    def _identity(self) -> dict:
        return {"set": "digits", "split": self.split, "seed": SEED,
                "indices": hashlib.sha256(self._idx.tobytes()).hexdigest()[:16], **self.pre.to_dict()}
