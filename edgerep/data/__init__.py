"""Data sets edgerep calibrates and evaluates on: ``open_dataset(spec, split=..., meta=...)``.

``spec`` is ``"digits"`` (built in, real handwritten digits), ``"photos"`` (built in, super-resolution: the
photos inside the scikit-image / scikit-learn wheels, ``edgerep.data.photos``), ``"scenes"`` (built in, detection),
``"synthetic"`` (random, latency only), a directory of class sub-folders, a detection folder (COCO: ``images/`` +
one annotations JSON; YOLO: ``images/`` + ``labels/`` + class names; ``edgerep.data.detect_folder``), or an
``.npz`` file with ``x`` and ``y``. For an SR checkpoint (``meta.task == "sr"``) a directory is a folder of HR
images, or of ``hr/`` + ``lr/`` pairs (a folder holding both ``hr/`` and ``lr/`` is read as pairs whatever the
checkpoint). ``meta`` (a
``CheckpointMeta``) gives the preprocessing: input shape, mean, std, class names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgerep.data.base import Dataset, Preprocess
from edgerep.errors import DataError

__all__ = ["open_dataset", "Dataset", "Preprocess", "BUILTIN"]

BUILTIN = ("digits", "scenes", "photos", "synthetic")


def open_dataset(spec: str | Path, *, split: str = "test", meta: Any = None, limit: int | None = None) -> Dataset:
    """The data set named by ``spec``, preprocessed as ``meta`` says (see the module docstring).

    ``scenes`` is the built-in detection set (``edgerep.data.scenes``: digits pasted on real photos).
    ``synthetic`` takes its size from ``limit`` (default 256). Raises ``DataError`` naming
    ``spec`` when it is none of the accepted kinds.
    """
    class_names = getattr(meta, "class_names", None) or None
    s = str(spec)
    if s == "digits":
        _require_preprocessing(meta, "digits (raw 8x8 pixels)")
        from edgerep.data.digits import DEFAULT_SHAPE, DigitsDataset, digits_mean_std

        shape = tuple(getattr(meta, "input_shape", None) or DEFAULT_SHAPE)
        mean, std = digits_mean_std(shape)  # the defaults; a checkpoint's own mean/std win
        return DigitsDataset(split, Preprocess.from_meta(meta, shape, mean, std))
    if s == "scenes":
        _require_preprocessing(meta, "scenes (RGB photos)")
        from edgerep.data.scenes import DEFAULT_SHAPE, ScenesDataset

        return ScenesDataset(split, Preprocess.from_meta(meta, DEFAULT_SHAPE, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
    if s == "photos" or is_sr_folder(s, meta):
        from edgerep.data.sr import open_sr_dataset

        return open_sr_dataset(s, split=split, scale=sr_scale(meta), meta=meta)
    if s == "synthetic":
        from edgerep.data.synthetic import SyntheticDataset

        c, h, w = tuple(getattr(meta, "input_shape", None) or (3, 224, 224))
        return SyntheticDataset(Preprocess((c, h, w), (0.0,) * c, (1.0,) * c), n=limit or 256)
    path = Path(s)
    if not path.exists():
        raise DataError(f"data {s!r}: no such file or directory",
                        hint=f"use a folder of class sub-folders, an .npz file, or one of {', '.join(BUILTIN)}")
    if path.is_dir():
        from edgerep.data.detect_folder import DetectionFolderDataset, is_detection_folder

        if is_detection_folder(path, split):  # images/ + labels/ (YOLO) or + one annotations JSON (COCO)
            _require_preprocessing(meta, f"{s} (images)")
            return DetectionFolderDataset(path, split, Preprocess.from_meta(meta) if meta is not None else None,
                                          class_names)
        from edgerep.data.folder import ImageFolderDataset

        _require_preprocessing(meta, f"{s} (images)")
        return ImageFolderDataset(path, split, Preprocess.from_meta(meta) if meta is not None else None, class_names)
    if path.suffix.lower() == ".npz":
        from edgerep.data.npz import NpzDataset

        ds = NpzDataset(path, split, Preprocess.from_meta(meta) if meta is not None else None, class_names)
        if ds.raw_pixels:
            _require_preprocessing(meta, f"{s} (integer pixels)")
        else:
            ds.note = f"{path.name}: float x is read as model-ready tensors (no scaling, resize or mean/std applied)"
        return ds
    raise DataError(f"data {s!r}: not a directory or .npz file",
                    hint=f"use a folder of class sub-folders, an .npz file, or one of {', '.join(BUILTIN)}")


def sr_scale(meta: Any) -> int:
    """An SR checkpoint's upscale factor: ``meta.extra["sr"]["scale"]``, else 2 (the registry's SR models are x2)."""
    sr = (getattr(meta, "extra", None) or {}).get("sr") or {}
    return int(sr.get("scale", 2))


def is_sr_folder(spec: str, meta: Any) -> bool:
    """A folder read as SR data: ``hr/`` + ``lr/`` sub-folders, or any folder for an SR checkpoint."""
    p = Path(spec)
    if not p.is_dir():
        return False
    return ((p / "hr").is_dir() and (p / "lr").is_dir()) or getattr(meta, "task", None) == "sr"


def _require_preprocessing(meta: Any, what: str) -> None:
    """Raw pixels need the model's preprocessing; a checkpoint that carries none gets no silent guess."""
    from edgerep.checkpoint import PREPROCESSING_FLAGS, preprocessing_known

    if meta is not None and not preprocessing_known(meta):
        partial = getattr(meta, "extra", {}).get("preprocessing_partial")
        said = f" (only {', '.join('--' + k.replace('_', '-') for k in partial)} given)" if partial else ""
        arch = str(getattr(meta, "arch", ""))
        timm = (f"; timm's config for {arch} says --mean {_csv(meta.mean)} --std {_csv(meta.std)} (its pretrained "
                "weights'; yours if you trained with timm's transforms)") if arch.startswith("timm:") else ""
        raise DataError(f"data {what}: the checkpoint carries no preprocessing{said}, and edgerep will not guess it",
                        hint=f"pass {PREPROCESSING_FLAGS} as the model was trained, e.g. --mean 0 --std 1 for "
                             f"inputs in [0, 1], or --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 for ImageNet{timm}")


def _csv(values: Any) -> str:
    return ",".join(f"{float(v):g}" for v in values)
