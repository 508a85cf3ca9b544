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


RESIZE_HELP = ("direct (to H x W), shorter:N (shorter side to N, then a centre crop of H x W) or letterbox:N "
               "(aspect kept, longer side to N at most H x W, centred on an H x W canvas of grey 114)")
LETTERBOX_PAD = 114  # the YOLO letterbox grey, in 8-bit pixel values
CHANNEL_ORDERS = ("rgb", "bgr")


class Batches:
    """An iterator of ``(x, y)`` batches that knows how many samples it yields in all (``samples``), so a
    loop over it can show a count and an ETA (``edgerep.progress``)."""

    def __init__(self, batches: Iterator, samples: int):
        self._it, self.samples = iter(batches), int(samples)

    def __iter__(self) -> "Batches":
        return self

    def __next__(self):
        return next(self._it)


@dataclass(frozen=True)
class Preprocess:
    """How raw pixels become model input: resize, reorder channels, ``x = pixel * scale``, then
    ``(x - mean) / std`` per channel. ``scale`` applies to 8-bit pixel values (1/255 maps them to [0, 1])."""

    input_shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0 / 255.0
    resize: str = "direct"
    channel_order: str = "rgb"

    @classmethod
    def from_meta(cls, meta: Any, default_shape: tuple[int, int, int] = (3, 224, 224),
                  default_mean: tuple[float, ...] = IMAGENET_MEAN,
                  default_std: tuple[float, ...] = IMAGENET_STD) -> "Preprocess":
        """Take input_shape / mean / std / scale / resize / channel order from a ``CheckpointMeta``
        (or anything with those attributes)."""
        shape = tuple(getattr(meta, "input_shape", None) or default_shape)
        if len(shape) != 3:
            raise DataError(f"input_shape must be (C, H, W), got {shape}")
        c = int(shape[0])
        mean = tuple(getattr(meta, "mean", None) or default_mean)
        std = tuple(getattr(meta, "std", None) or default_std)
        mean, std = _per_channel(mean, c, "mean"), _per_channel(std, c, "std")
        if any(s <= 0 for s in std):
            raise DataError(f"std must be positive, got {std}")
        scale = float(getattr(meta, "scale", None) or 1.0 / 255.0)
        resize = str(getattr(meta, "resize", None) or "direct")
        order = str(getattr(meta, "channel_order", None) or "rgb")
        check_resize(resize)
        if order not in CHANNEL_ORDERS:
            raise DataError(f"channel order {order!r}: expected one of {', '.join(CHANNEL_ORDERS)}")
        return cls((c, int(shape[1]), int(shape[2])), mean, std, scale, resize, order)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """``x``: float NCHW pixels divided by their 8-bit maximum (in [0, 1]) -> model input, float32."""
        x = x.astype(np.float32)
        if self.channel_order == "bgr" and x.shape[1] == 3:
            x = x[:, ::-1]
        factor = 255.0 * self.scale
        if factor != 1.0:
            x = x * np.float32(factor)
        m = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        s = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return np.ascontiguousarray((x - m) / s, dtype=np.float32)

    def resize_batch(self, x: np.ndarray) -> np.ndarray:
        """Float NCHW -> NC x H x W by this preprocessing's resize rule (bilinear, ``align_corners=False``)."""
        h, w = self.input_shape[1:]
        shorter = shorter_side(self.resize)
        boxed = letterbox_side(self.resize)
        if shorter is None and tuple(x.shape[2:]) == (h, w) and (boxed is None or boxed >= max(h, w)):
            return x
        import torch
        import torch.nn.functional as F

        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if boxed is not None:  # aspect kept, centred on a grey canvas (pixels are in [0, 1] here)
            nh, nw, top, left = letterbox_geometry(t.shape[2], t.shape[3], (h, w), boxed)
            out = torch.full((t.shape[0], t.shape[1], h, w), LETTERBOX_PAD / 255.0, dtype=torch.float32)
            out[:, :, top:top + nh, left:left + nw] = F.interpolate(t, size=(nh, nw), mode="bilinear",
                                                                    align_corners=False)
            return out.numpy()
        if shorter is None:
            return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False).numpy()
        ih, iw = t.shape[2:]
        r = shorter / min(ih, iw)
        nh, nw = max(h, round(ih * r)), max(w, round(iw * r))
        if (nh, nw) != (ih, iw):
            t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False)
        top, left = (nh - h) // 2, (nw - w) // 2
        return t[:, :, top:top + h, left:left + w].contiguous().numpy()

    def to_dict(self) -> dict:
        return {"input_shape": list(self.input_shape), "mean": list(self.mean), "std": list(self.std),
                "scale": self.scale, "resize": self.resize, "channel_order": self.channel_order}


def shorter_side(resize: str) -> int | None:
    """``shorter:N`` -> N; ``direct`` -> None."""
    return int(resize.split(":", 1)[1]) if resize.startswith("shorter:") else None


def letterbox_side(resize: str) -> int | None:
    """``letterbox:N`` -> N; anything else -> None."""
    return int(resize.split(":", 1)[1]) if resize.startswith("letterbox:") else None


def letterbox_geometry(h: int, w: int, canvas: tuple[int, int], side: int) -> tuple[int, int, int, int]:
    """Where ``letterbox:side`` puts an h x w image on an ``canvas`` (H, W) input: ``(new h, new w, top, left)``;
    scale ``min(side / h, side / w, H / h, W / w)``, sides rounded, centred (``detect_post.letterbox``'s rule
    when side >= max(H, W))."""
    th, tw = int(canvas[0]), int(canvas[1])
    r = min(side / h, side / w, th / h, tw / w)
    nh, nw = max(1, min(th, round(h * r))), max(1, min(tw, round(w * r)))
    return nh, nw, (th - nh) // 2, (tw - nw) // 2


def check_resize(resize: str) -> None:
    """Refuse a resize rule other than ``direct``, ``shorter:N`` or ``letterbox:N`` (N a positive int)."""
    if resize == "direct":
        return
    if resize.startswith(("shorter:", "letterbox:")):
        tail = resize.split(":", 1)[1]
        if tail.isdigit() and int(tail) > 0:
            return
    raise DataError(f"resize {resize!r}: expected {RESIZE_HELP}")


def _per_channel(v: tuple[float, ...], c: int, field: str) -> tuple[float, ...]:
    if len(v) == c:
        return tuple(float(a) for a in v)
    if len(v) == 1:
        return tuple(float(v[0]) for _ in range(c))
    if c == 1:  # an RGB mean on a 1-channel model: average it
        return (float(np.mean(v)),)
    raise DataError(f"{field} has {len(v)} values but the model takes {c} channels")


def pixel_digest(pixels: np.ndarray) -> str:
    """A content hash of one decoded sample, the same whatever container held it: the array is made
    (C, H, W) by the caller, a channel axis is added to (H, W), channels that are all equal collapse to
    one (a grey PNG and its RGB copy), integer pixels in 0..255 hash as uint8, other numbers as int64 or
    float32; the hash covers dtype, shape and bytes."""
    a = np.asarray(pixels)
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 3 and a.shape[0] > 1 and all(np.array_equal(a[0], a[i]) for i in range(1, a.shape[0])):
        a = a[:1]
    if a.dtype.kind in "iub":
        a = a.astype(np.uint8) if a.size == 0 or (a.min() >= 0 and a.max() <= 255) else a.astype(np.int64)
    else:
        a = a.astype(np.float32)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:20]


class Dataset:
    """A sized, labelled-or-not source of preprocessed NCHW float32 batches.

    Subclasses implement ``__len__``, ``_read(start, stop)`` (rows ``start:stop``,
    preprocessed) and ``_identity()`` (what the fingerprint hashes). ``batches`` streams:
    only one batch is in memory at a time unless the subclass holds the set anyway.
    """

    name: str = "dataset"
    has_labels: bool = True
    task: str = "classify"  # "detect": ``y`` of a batch is one ``{"boxes", "classes"}`` dict per image
    class_names: list[str] | None = None
    note: str | None = None  # what a user must know about how it is read (printed and reported)

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:  # pragma: no cover
        raise NotImplementedError

    def _identity(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def batches(self, batch_size: int, limit: int | None = None) -> "Batches":
        """``(x, y)`` batches in a fixed order; ``limit`` caps the number of samples (``.samples``: how many)."""
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self) if limit is None else min(len(self), int(limit))
        return Batches((self._read(start, min(n, start + batch_size)) for start in range(0, n, batch_size)), n)

    def fingerprint(self) -> str:
        """A short hash of the data and its preprocessing; calibration caches key on it."""
        blob = json.dumps(self._identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def sample_ids(self) -> list[str]:
        """One stable id per sample, in ``batches`` order (what ``splits.json`` lists)."""
        return [f"{self.name}#{i}" for i in range(len(self))]

    def sample_digests(self) -> list[str]:
        """A content hash per sample of its DECODED pixels, before preprocessing (``pixel_digest``): the
        same image in two containers (a PNG and a uint8 .npz row) has one digest. This default hashes
        the preprocessed input (for sets that have no raw pixels, e.g. synthetic)."""
        return [pixel_digest(x) for xb, _ in self.batches(256) for x in xb]

    def labels(self) -> np.ndarray | None:
        """Every class label in order, or None for unlabelled or detection data (used for stratified splits)."""
        if not self.has_labels or self.task != "classify":
            return None
        ys = [y for _, y in self.batches(256)]
        return np.concatenate(ys).astype(np.int64) if ys else np.zeros(0, np.int64)

    def _read_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows at sorted indices ``rows``, read as contiguous runs (forward-only readers stay O(N))."""
        xs, ys = [], []
        starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)
        for a, b in zip(starts, list(starts[1:]) + [len(rows)]):
            x, y = self._read(int(rows[a]), int(rows[b - 1]) + 1)
            xs.append(x)
            if y is not None:
                ys.append(y)
        if ys and isinstance(ys[0], list):  # detection: one target dict per image
            return np.concatenate(xs), [t for y in ys for t in y]  # type: ignore[return-value]
        return np.concatenate(xs), (np.concatenate(ys) if ys else None)


class Subset(Dataset):
    """The rows ``indices`` (sorted) of ``parent``: one part of a deterministic split."""

    def __init__(self, parent: Dataset, indices: np.ndarray, role: str):
        self.parent, self.role = parent, role
        self.indices = np.asarray(sorted(int(i) for i in indices), dtype=np.int64)
        self.has_labels, self.class_names = parent.has_labels, parent.class_names
        self.task = parent.task
        self.pre = getattr(parent, "pre", None)
        self.name = f"{parent.name}[{role}]"

    def __len__(self) -> int:
        return len(self.indices)

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.parent._read_rows(self.indices[start:stop])

    def _identity(self) -> dict:
        return {"parent": self.parent._identity(), "role": self.role,
                "indices": hashlib.sha256(self.indices.tobytes()).hexdigest()[:16]}

    def sample_ids(self) -> list[str]:
        ids = self.parent.sample_ids()
        return [ids[i] for i in self.indices]

    def sample_digests(self) -> list[str]:
        d = self.parent.sample_digests()
        return [d[i] for i in self.indices]

    def labels(self) -> np.ndarray | None:
        y = self.parent.labels()
        return None if y is None else y[self.indices]

    # detection parents (``coco()``, ``targets()``, ``placement(i)``): the same, for these rows
    def coco(self) -> dict:
        """The parent's COCO ground truth restricted to these rows, image ids renumbered to positions here."""
        return subset_coco(self.parent.coco(), self.indices)  # type: ignore[attr-defined]

    def targets(self) -> list:
        t = self.parent.targets()  # type: ignore[attr-defined]
        return [t[i] for i in self.indices]

    def placement(self, i: int) -> Any:
        return self.parent.placement(int(self.indices[i]))  # type: ignore[attr-defined]

    def to_original(self, i: int, boxes: np.ndarray, clip: bool = True) -> np.ndarray:
        return self.parent.to_original(int(self.indices[i]), boxes, clip)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} n={len(self)}>"


def subset_coco(gt: dict, rows: np.ndarray) -> dict:
    """COCO ground truth whose image ids are positions (0..n-1) cut to ``rows``: image ``rows[k]`` becomes id
    ``k``, its annotations follow (renumbered from 1), categories unchanged."""
    new_id = {int(r): k for k, r in enumerate(rows)}
    by_id = {im["id"]: im for im in gt["images"]}
    images = [{**by_id[int(r)], "id": k} for k, r in enumerate(rows)]
    anns = [{**a, "image_id": new_id[a["image_id"]]} for a in gt["annotations"] if a["image_id"] in new_id]
    anns.sort(key=lambda a: a["image_id"])
    for j, a in enumerate(anns, 1):
        a["id"] = j
    return {**gt, "images": images, "annotations": anns}
