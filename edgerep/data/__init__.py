"""Data sets edgerep calibrates and evaluates on: ``open_dataset(spec, split=..., meta=...)``.

``spec`` is ``"digits"`` (built in, real handwritten digits), ``"synthetic"`` (random, latency
only), a directory of class sub-folders, or an ``.npz`` file with ``x`` and ``y``. ``meta`` (a
``CheckpointMeta``) gives the preprocessing: input shape, mean, std, class names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgerep.data.base import Dataset, Preprocess
from edgerep.errors import DataError

__all__ = ["open_dataset", "Dataset", "Preprocess", "BUILTIN"]

BUILTIN = ("digits", "synthetic")


def open_dataset(spec: str | Path, *, split: str = "test", meta: Any = None, limit: int | None = None) -> Dataset:
    """The data set named by ``spec``, preprocessed as ``meta`` says (see the module docstring).

    ``synthetic`` takes its size from ``limit`` (default 256). Raises ``DataError`` naming
    ``spec`` when it is none of the accepted kinds.
    """
    class_names = getattr(meta, "class_names", None) or None
    s = str(spec)
    if s == "digits":
        from edgerep.data.digits import DEFAULT_SHAPE, DigitsDataset, digits_mean_std

        shape = tuple(getattr(meta, "input_shape", None) or DEFAULT_SHAPE)
        mean, std = digits_mean_std(shape)  # the defaults; a checkpoint's own mean/std win
        return DigitsDataset(split, Preprocess.from_meta(meta, shape, mean, std))
    if s == "synthetic":
        from edgerep.data.synthetic import SyntheticDataset

        c, h, w = tuple(getattr(meta, "input_shape", None) or (3, 224, 224))
        return SyntheticDataset(Preprocess((c, h, w), (0.0,) * c, (1.0,) * c), n=limit or 256)
    path = Path(s)
    if not path.exists():
        raise DataError(f"data {s!r}: no such file or directory",
                        hint=f"use a folder of class sub-folders, an .npz file, or one of {', '.join(BUILTIN)}")
    if path.is_dir():
        from edgerep.data.folder import ImageFolderDataset

        return ImageFolderDataset(path, split, Preprocess.from_meta(meta) if meta is not None else None, class_names)
    if path.suffix.lower() == ".npz":
        from edgerep.data.npz import NpzDataset

        return NpzDataset(path, split, Preprocess.from_meta(meta) if meta is not None else None, class_names)
    raise DataError(f"data {s!r}: not a directory or .npz file",
                    hint=f"use a folder of class sub-folders, an .npz file, or one of {', '.join(BUILTIN)}")
