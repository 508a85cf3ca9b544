"""The built-in ``scenes`` detection set: real photos as backgrounds, real handwritten digits as
objects, exact boxes, COCO-format ground truth. Everything ships inside the scikit-learn wheel
(``load_sample_image`` photos and ``load_digits``); nothing is downloaded.

Roles never share material:

* **Backgrounds.** Both photos (``china.jpg``, ``flower.jpg``) are cut into a grid of 3 x 5 tiles of
  142 x 128 pixels (rows 0-425, columns 0-639); each photo's 15 tiles, ranked by mean luminance, are dealt
  to the roles stratified (``tiles()``, ``RANKS``): ranks 1 and 13 to ``calib``, 3 and 11 to ``val``, 5 and 9
  to ``test``, the other 9 to ``train``. A scene picks one of its role's tiles (18 for train, 4 for the
  others, of both photos) and crops a square of side 112-128 px inside it, so no
  background pixel is in two roles and every role draws from both photos alike (version 1 gave train and
  calib ``china.jpg`` and val and test ``flower.jpg``: the roles' colour statistics differed so much that the
  demo detector's input-statistics gate failed on its own calibration split, and test measured transfer to an
  unseen photo rather than detection). The crop is flipped left-right half the time, resized to 160x160
  (bilinear) and its colour jittered (brightness 0.7-1.3, per-channel gain 0.85-1.15).
* **Objects.** The digit images of role R are ``edgerep.data.digits.split_indices()[R]`` (disjoint by
  construction). 1-6 per scene, side 12-48 px (bilinear upsampling of the 8x8 digit), a random RGB
  colour and opacity 0.6-1.0 (contrast), alpha-blended; a new object may overlap earlier ones partly
  (IoU <= 0.3 with each, and covering at most half of each).
* **Boxes** are exact: the tight pixel box of the pasted digit's ink (upsampled intensity >= 0.25),
  ``[x, y, w, h]`` in scene pixels (COCO ``bbox``), the class the digit's label.

Scene ``i`` of a split is drawn from ``numpy.random.default_rng([SEED, role, i])``: any scene can be
rebuilt alone, the same on every machine. Sample ids are ``scenes/<split>/<i>``. In COCO output the
image id is ``i`` and the category id is the digit (0-9).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from edgerep.data.base import Dataset, Preprocess, pixel_digest
from edgerep.errors import DataError

SPLITS = ("train", "calib", "val", "test")
SIZES = {"train": 2000, "calib": 256, "val": 256, "test": 500}
SEED = 2024
VERSION = 2  # bump when the generator changes: it is in every fingerprint (2: tiles of both photos per role)
IMAGE_SIZE = 160
DEFAULT_SHAPE = (3, IMAGE_SIZE, IMAGE_SIZE)
CLASS_NAMES = [str(i) for i in range(10)]
OBJECTS = (1, 6)
OBJECT_SIZE = (12, 48)
INK = 0.25  # an upsampled digit pixel at or above this intensity is inside the box
PHOTOS = ("china.jpg", "flower.jpg")
TILE = (142, 128)  # (height, width) of a background tile
GRID = (3, 5)  # tiles per photo: rows, columns
#: the ranks (0 = darkest of the photo's 15 tiles by mean luminance) each other role takes, pairs symmetric
#: about the median rank 7; train takes the other 9: every role's mean rank is 7 (stratified, as digits is by class)
RANKS = {"calib": (1, 13), "val": (3, 11), "test": (5, 9)}
CROP = (112, 128)


@dataclass(frozen=True)
class SceneObject:
    """One pasted digit: which digit image, where (top-left of its square patch), how big, its look,
    and its exact ink box (xyxy, scene pixels, end-exclusive)."""

    digit: int
    label: int
    x: int
    y: int
    size: int
    colour: tuple[float, float, float]
    opacity: float
    box: tuple[int, int, int, int]


@lru_cache(maxsize=2)
def _photo(name: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return np.ascontiguousarray(load_sample_image(name), dtype=np.uint8)  # (H, W, 3)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from edgerep.data.digits import _raw

    return _raw()


@lru_cache(maxsize=None)
def _patch(digit: int, size: int) -> np.ndarray:
    """Digit ``digit`` upsampled to ``size`` x ``size`` (bilinear), intensity in [0, 1]."""
    from PIL import Image

    img = Image.fromarray(_digits()[0][digit].astype(np.float32), mode="F")
    return np.clip(np.asarray(img.resize((size, size), Image.BILINEAR), np.float32), 0.0, 1.0)


def digit_pool(split: str) -> np.ndarray:
    """The digit images (indices into ``load_digits()``) a split may paste: one role's share."""
    from edgerep.data.digits import split_indices

    return split_indices()[split]


def _rng(split: str, i: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([SEED, SPLITS.index(split), int(i), stream])


def _ink_box(patch: np.ndarray, x: int, y: int) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero((patch >= INK).any(1)), np.flatnonzero((patch >= INK).any(0))
    if len(rows) == 0:
        return None
    return (x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1)


def _iou_cover(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[float, float]:
    """IoU of boxes a and b, and the share of b that a covers."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    return inter / max(1, area_a + area_b - inter), inter / max(1, area_b)


def layout(split: str, i: int) -> list[SceneObject]:
    """The objects of scene ``i`` of ``split``, in paste order (later ones on top)."""
    rng = _rng(split, i, 1)
    pool = digit_pool(split)
    labels = _digits()[1]
    out: list[SceneObject] = []
    want = int(rng.integers(OBJECTS[0], OBJECTS[1] + 1))
    for _ in range(want):
        for _attempt in range(20):
            digit = int(pool[rng.integers(len(pool))])
            size = int(rng.integers(OBJECT_SIZE[0], OBJECT_SIZE[1] + 1))
            x, y = (int(v) for v in rng.integers(0, IMAGE_SIZE - size + 1, size=2))
            r, g, b = (float(c) for c in rng.uniform(0, 255, size=3))
            opacity = float(rng.uniform(0.6, 1.0))
            box = _ink_box(_patch(digit, size), x, y)
            if box is None:
                continue
            if all(iou <= 0.3 and cover <= 0.5 for iou, cover in (_iou_cover(box, o.box) for o in out)):
                out.append(SceneObject(digit, int(labels[digit]), x, y, size, (r, g, b), opacity, box))
                break
    return out


@lru_cache(maxsize=1)
def tiles() -> dict[str, list[tuple[str, int, int]]]:
    """Each role's background tiles: ``(photo, top, left)`` of a ``TILE``-sized window; disjoint across roles,
    each role holding tiles of both photos at ranks ``RANKS`` of their mean luminance (train: the rest)."""
    out: dict[str, list[tuple[str, int, int]]] = {s: [] for s in SPLITS}
    for name in PHOTOS:
        photo = _photo(name).astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        grid = [((t // GRID[1]) * TILE[0], (t % GRID[1]) * TILE[1]) for t in range(GRID[0] * GRID[1])]
        lum = [photo[y:y + TILE[0], x:x + TILE[1]].mean() for y, x in grid]
        ranked = [grid[t] for t in np.argsort(lum, kind="stable")]
        taken = {r for ranks in RANKS.values() for r in ranks}
        for role, ranks in RANKS.items():
            out[role] += [(name, *ranked[r]) for r in ranks]
        out["train"] += [(name, *ranked[r]) for r in range(len(ranked)) if r not in taken]
    return out


def background_window(split: str, i: int) -> tuple[str, int, int, int, bool, np.ndarray]:
    """(photo, top, left, side, flipped, RGB gain) of the crop scene ``i`` uses (what the role test checks)."""
    rng = _rng(split, i, 0)
    role_tiles = tiles()[split]
    name, t0, l0 = role_tiles[int(rng.integers(len(role_tiles)))]
    side = int(rng.integers(CROP[0], min(CROP[1], *TILE) + 1))
    top, left = t0 + int(rng.integers(0, TILE[0] - side + 1)), l0 + int(rng.integers(0, TILE[1] - side + 1))
    flip = bool(rng.random() < 0.5)
    gain = (rng.uniform(0.7, 1.3) * rng.uniform(0.85, 1.15, size=3)).astype(np.float32)
    return name, top, left, side, flip, gain


def background(split: str, i: int) -> np.ndarray:
    """Scene ``i``'s background: a jittered crop of its role's photo region, (160, 160, 3) float32 0..255."""
    from PIL import Image

    name, top, left, side, flip, gain = background_window(split, i)
    crop = _photo(name)[top:top + side, left:left + side]
    if flip:
        crop = crop[:, ::-1]
    img = Image.fromarray(np.ascontiguousarray(crop)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return np.clip(np.asarray(img, np.float32) * gain, 0, 255)


def render(split: str, i: int) -> tuple[np.ndarray, list[SceneObject]]:
    """Scene ``i`` of ``split``: uint8 pixels (3, 160, 160) and its objects."""
    img = background(split, i)
    objs = layout(split, i)
    for o in objs:
        a = (_patch(o.digit, o.size) * o.opacity)[..., None]
        region = img[o.y:o.y + o.size, o.x:o.x + o.size]
        region[...] = region * (1 - a) + np.asarray(o.colour, np.float32) * a
    return np.round(img).astype(np.uint8).transpose(2, 0, 1), objs


def targets_of(objs: list[SceneObject]) -> dict[str, np.ndarray]:
    """``{"boxes": (k, 4) float32 xyxy pixels, "classes": (k,) int64}`` of one scene."""
    boxes = np.asarray([o.box for o in objs], np.float32).reshape(-1, 4)
    return {"boxes": boxes, "classes": np.asarray([o.label for o in objs], np.int64)}


class ScenesDataset(Dataset):
    """One split of ``scenes``. ``batches`` yields ``(x, targets)``: x NCHW float32 preprocessed, targets
    one dict per image (``targets_of``), boxes in scene pixels (160x160) whatever the model's input size."""

    task = "detect"
    has_labels = True
    image_size = IMAGE_SIZE  # the frame of the targets' boxes (edgerep.tasks.detect maps predictions into it)
    class_names = CLASS_NAMES

    def __init__(self, split: str = "test", preprocess: Preprocess | None = None, n: int | None = None):
        if split not in SPLITS:
            raise DataError(f"scenes has splits {', '.join(SPLITS)}; got split={split!r}")
        self.split = split
        self.pre = preprocess or Preprocess(DEFAULT_SHAPE, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        if self.pre.input_shape[0] != 3:
            raise DataError(f"scenes are RGB: the model takes {self.pre.input_shape[0]} channels")
        self.n = SIZES[split] if n is None else int(n)
        if self.n < 0:
            raise DataError(f"scenes: n must be >= 0, got {n}")
        self.name = f"scenes:{split}"

    def __len__(self) -> int:
        return self.n

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:  # type: ignore[override]
        return self._rows(np.arange(start, stop))

    def _read_rows(self, rows: np.ndarray) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:  # type: ignore[override]
        return self._rows(rows)

    def _rows(self, rows: np.ndarray) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
        scenes = [render(self.split, int(i)) for i in rows]
        x = np.stack([s[0] for s in scenes]).astype(np.float32) / 255.0 if scenes \
            else np.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        return self.pre.normalize(self.pre.resize_batch(x)), [targets_of(s[1]) for s in scenes]

    def targets(self) -> list[dict[str, np.ndarray]]:
        """Every image's boxes and classes, in order, without rendering pixels."""
        return [targets_of(layout(self.split, i)) for i in range(self.n)]

    def sample_ids(self) -> list[str]:
        return [f"scenes/{self.split}/{i}" for i in range(self.n)]

    def sample_digests(self) -> list[str]:
        return [pixel_digest(render(self.split, i)[0]) for i in range(self.n)]

    def coco(self) -> dict:
        """COCO ground truth of this split (``images`` / ``annotations`` / ``categories``)."""
        return coco_ground_truth(self.targets(), self.sample_ids())

    def _identity(self) -> dict:
        return {"set": "scenes", "version": VERSION, "split": self.split, "seed": SEED, "n": self.n,
                "size": IMAGE_SIZE, **self.pre.to_dict()}


def coco_ground_truth(targets: list[dict[str, np.ndarray]], file_names: list[str],
                      class_names: list[str] = CLASS_NAMES, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> dict:
    """COCO ground truth of per-image ``targets`` (xyxy boxes, class ids): image id = position,
    category id = class id, ``bbox`` = ``[x, y, w, h]`` pixels, ``area`` = w * h, no crowds."""
    if len(targets) != len(file_names):
        raise DataError(f"{len(targets)} targets but {len(file_names)} file names")
    images = [{"id": i, "file_name": f, "height": size[0], "width": size[1]} for i, f in enumerate(file_names)]
    anns = []
    for i, t in enumerate(targets):
        for (x1, y1, x2, y2), c in zip(np.asarray(t["boxes"], np.float64).reshape(-1, 4), t["classes"]):
            w, h = float(x2 - x1), float(y2 - y1)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c),
                         "bbox": [float(x1), float(y1), w, h], "area": w * h, "iscrowd": 0})
    cats = [{"id": k, "name": n} for k, n in enumerate(class_names)]
    return {"images": images, "annotations": anns, "categories": cats}

