"""Users' detection data: a COCO folder or the YOLO txt layout, read one batch at a time.

Layouts (``root``, or ``root/<split>/`` when that sub-folder exists: ``train/``, ``calib/``, ``val/``,
``test/``, split by role as class folders are, ``edgerep.data.splits``):

* **COCO**: ``images/`` and one annotations JSON (``images`` / ``annotations`` / ``categories``) beside it
  or in ``annotations/``. ``file_name`` is relative to ``images/``; ``bbox`` is ``[x, y, w, h]`` pixels.
  Every image the JSON lists is a sample (none with no boxes is dropped); crowd boxes stay in the ground
  truth (pycocotools ignores matches to them) and are not targets.
* **YOLO**: ``images/`` and ``labels/`` (``labels/<same path>.txt``, one ``cls cx cy w h`` line per box,
  normalized to [0, 1]; a polygon line ``cls x1 y1 x2 y2 ...`` counts as its bounding box; no file: no
  boxes) and a class-names file: ``classes.txt``, ``names.txt``, ``obj.names`` (one name a line) or
  ``data.yaml`` / ``dataset.yaml`` (``names:``), in the split folder or ``root``.

Classes follow the checkpoint's ``class_names`` when given (matched by name; COCO category ids are
mapped to positions), else the file's order (COCO: by category id). Images are read as RGB and placed in
the model input by the preprocessing's rule (``direct``: stretched to H x W; ``letterbox:N``: aspect kept,
centred on grey 114; ``shorter:N`` crops and is refused here). ``batches`` yields ``(x, targets)``, one
``{"boxes": (k, 4) float32 xyxy in model-input pixels, "classes": (k,) int64}`` per image, as
``ScenesDataset`` does; ``placement(i)`` is image ``i``'s ``Letterbox`` (``to_original`` maps boxes back
to its pixels) and ``coco()`` the ground truth in original image pixels, image id = position.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerep.bench.detect_post import Letterbox
from edgerep.data.base import Dataset, Preprocess, letterbox_geometry, letterbox_side, pixel_digest, shorter_side
from edgerep.data.folder import IMAGE_SUFFIXES, decoded_pixels, image_size
from edgerep.errors import DataError

NAME_FILES = ("classes.txt", "names.txt", "obj.names")
YAML_FILES = ("data.yaml", "dataset.yaml")


@dataclass(frozen=True)
class Item:
    """One image: its file, original (height, width), boxes xyxy in original pixels, class ids, crowd flags."""

    path: Path
    size: tuple[int, int]
    boxes: np.ndarray
    classes: np.ndarray
    crowd: np.ndarray
    label: Path | None = None  # the YOLO label file, when there is one


def layout_of(folder: Path) -> str | None:
    """``"coco"``, ``"yolo"`` or None: which detection layout ``folder`` holds (``images/`` plus
    ``labels/``, or plus one annotations JSON)."""
    if not (folder / "images").is_dir():
        return None
    if (folder / "labels").is_dir():
        return "yolo"
    return "coco" if _annotation_files(folder) else None


def is_detection_folder(root: str | Path, split: str | None = None) -> bool:
    """Whether ``root`` (or ``root/<split>``, or any role sub-folder) is a COCO or YOLO folder."""
    root = Path(root)
    if not root.is_dir():
        return False
    if layout_of(root) or (split and layout_of(root / split)):
        return True
    return any(layout_of(root / s) for s in ("train", "calib", "val", "test"))


def _annotation_files(folder: Path) -> list[Path]:
    found = sorted(folder.glob("*.json"))
    if (folder / "annotations").is_dir():
        found += sorted((folder / "annotations").glob("*.json"))
    return found


def _class_index(names: list[str], model_names: list[str] | None, where: Path) -> tuple[list[str], list[int]]:
    """The class list a model sees and, per file class, its position in it."""
    if not model_names:
        return list(names), list(range(len(names)))
    unknown = [n for n in names if n not in model_names]
    if unknown:
        raise DataError(f"{where}: class(es) {', '.join(unknown[:3])} are not among the model's class names",
                        hint=f"the checkpoint's classes are {', '.join(model_names[:10])}")
    return list(model_names), [model_names.index(n) for n in names]


def read_coco(folder: Path, model_names: list[str] | None) -> tuple[list[Item], list[str], Path]:
    """The items of a COCO folder, its class names and the annotations file."""
    files = _annotation_files(folder)
    docs = []
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{f}: cannot read it as JSON ({e})") from None
        if isinstance(doc, dict) and {"images", "annotations", "categories"} <= set(doc):
            docs.append((f, doc))
    if len(docs) != 1:
        raise DataError(f"{folder}: expected one COCO annotations JSON (images, annotations, categories) beside "
                        f"images/ or in annotations/, found {len(docs)}",
                        hint="keep one annotations file per folder (one per split sub-folder)")
    ann_file, doc = docs[0]
    try:
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        cat_names = [str(c.get("name", c["id"])) for c in cats]
        names, index = _class_index(cat_names, model_names, ann_file)
        cat_pos = {c["id"]: index[k] for k, c in enumerate(cats)}
        by_image: dict = {im["id"]: [] for im in doc["images"]}
        for a in doc["annotations"]:
            if a["image_id"] not in by_image:
                raise DataError(f"{ann_file}: annotation {a.get('id')} names image id {a['image_id']!r}, "
                                "which is not in images")
            if a["category_id"] not in cat_pos:
                raise DataError(f"{ann_file}: annotation {a.get('id')} has category id {a['category_id']!r}, "
                                "which is not in categories")
            by_image[a["image_id"]].append(a)
        items = []
        for im in doc["images"]:
            path = folder / "images" / str(im["file_name"])
            if not path.is_file():
                raise DataError(f"{ann_file}: image {im['file_name']!r} is not in {folder / 'images'}")
            size = (int(im["height"]), int(im["width"])) if "height" in im and "width" in im else image_size(path)
            anns = by_image[im["id"]]
            xywh = np.asarray([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
            items.append(Item(path, size, boxes, np.asarray([cat_pos[a["category_id"]] for a in anns], np.int64),
                              np.asarray([bool(a.get("iscrowd", 0)) for a in anns], bool)))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{ann_file}: not a valid COCO detection file ({type(e).__name__}: {str(e)[:120]})") from None
    return items, names, ann_file


def _yolo_names(folder: Path, root: Path) -> tuple[list[str], Path]:
    for where in dict.fromkeys((folder, root)):
        for n in NAME_FILES:
            if (where / n).is_file():
                return [ln.strip() for ln in (where / n).read_text().splitlines() if ln.strip()], where / n
        for n in YAML_FILES:
            if (where / n).is_file():
                import yaml

                names = (yaml.safe_load((where / n).read_text()) or {}).get("names")
                if isinstance(names, dict):
                    names = [names[k] for k in sorted(names)]
                if not isinstance(names, list):
                    raise DataError(f"{where / n}: no 'names:' list or mapping")
                return [str(v) for v in names], where / n
    raise DataError(f"{folder}: a YOLO folder needs its class names",
                    hint=f"add {' or '.join(NAME_FILES + YAML_FILES)} (one name a line / names:) to {folder}")


def read_yolo(folder: Path, root: Path, model_names: list[str] | None) -> tuple[list[Item], list[str], Path]:
    """The items of a YOLO folder, its class names and the names file."""
    file_names, names_file = _yolo_names(folder, root)
    names, index = _class_index(file_names, model_names, names_file)
    items = []
    for path in sorted(p for p in (folder / "images").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        h, w = image_size(path)
        label = (folder / "labels" / path.relative_to(folder / "images")).with_suffix(".txt")
        boxes, classes = [], []
        if label.is_file():
            for k, line in enumerate(label.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                try:
                    c, vals = int(parts[0]), [float(v) for v in parts[1:]]
                except ValueError:
                    raise DataError(f"{label}:{k}: expected 'class cx cy w h' numbers, got {line.strip()[:60]!r}") from None
                if c < 0 or c >= len(file_names):
                    raise DataError(f"{label}:{k}: class {c} is not in {names_file.name} ({len(file_names)} names)")
                if len(vals) == 4:
                    cx, cy, bw, bh = vals
                    box = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]
                elif len(vals) >= 6 and len(vals) % 2 == 0:  # a polygon: its bounding box
                    xs, ys = vals[0::2], vals[1::2]
                    box = [min(xs), min(ys), max(xs), max(ys)]
                else:
                    raise DataError(f"{label}:{k}: expected 'class cx cy w h' (or a polygon), got {len(vals)} values")
                boxes.append(np.asarray(box) * [w, h, w, h])
                classes.append(index[c])
        items.append(Item(path, (h, w), np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64),
                          np.zeros(len(classes), bool), label if label.is_file() else None))
    return items, names, names_file


class DetectionFolderDataset(Dataset):
    """A COCO or YOLO folder (module docstring); holds the file list and boxes, reads pixels per batch."""

    task = "detect"
    has_labels = True

    def __init__(self, root: str | Path, split: str = "test", preprocess: Preprocess | None = None,
                 class_names: list[str] | None = None):
        root = Path(root)
        self.base = root
        folder = root / split if layout_of(root / split) else root
        self.layout = layout_of(folder)
        if self.layout is None:
            raise DataError(f"{folder}: not a detection folder (images/ with labels/, or with one COCO JSON)")
        self.root, self.split = folder, split
        self.pre = preprocess or Preprocess.from_meta(None)
        if self.pre.input_shape[0] != 3:
            raise DataError(f"{folder}: detection images are read as RGB; the model takes {self.pre.input_shape[0]} "
                            "channels")
        if shorter_side(self.pre.resize) is not None:
            raise DataError(f"resize {self.pre.resize!r}: a centre crop would cut boxes off detection images",
                            hint="use --resize letterbox:N (the YOLO convention) or direct")
        if self.layout == "coco":
            self.items, self.class_names, self.source = read_coco(folder, class_names)
        else:
            self.items, self.class_names, self.source = read_yolo(folder, root, class_names)
        if not self.items:
            raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in images/")
        self.name = f"{folder.name}:{split}"

    def __len__(self) -> int:
        return len(self.items)

    def placement(self, i: int) -> Letterbox:
        """How image ``i`` sits in the model input (``to_input`` / ``to_original`` map boxes)."""
        h, w = self.items[i].size
        th, tw = self.pre.input_shape[1:]
        side = letterbox_side(self.pre.resize)
        if side is None:  # direct: stretched to H x W
            return Letterbox((h, w), tw / w, th / h, 0, 0)
        nh, nw, top, left = letterbox_geometry(h, w, (th, tw), side)
        return Letterbox((h, w), nw / w, nh / h, left, top)

    def to_original(self, i: int, boxes: np.ndarray, clip: bool = True) -> np.ndarray:
        """xyxy boxes in model-input pixels of image ``i`` -> its original pixels (clipped into it)."""
        return self.placement(i).to_original(boxes, clip=clip)

    def _target(self, i: int) -> dict[str, np.ndarray]:
        it = self.items[i]
        keep = ~it.crowd
        return {"boxes": self.placement(i).to_input(it.boxes[keep]).astype(np.float32),
                "classes": it.classes[keep].copy()}

    def _load(self, i: int) -> np.ndarray:
        """Image ``i`` placed in the model input, pixels in [0, 1], (3, H, W)."""
        from PIL import Image, UnidentifiedImageError

        from edgerep.data.base import LETTERBOX_PAD

        path = self.items[i].path
        th, tw = self.pre.input_shape[1:]
        lb = self.placement(i)
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if (im.size[1], im.size[0]) != self.items[i].size:
                    raise DataError(f"{path}: the image is {im.size[0]}x{im.size[1]} but its annotation says "
                                    f"{self.items[i].size[1]}x{self.items[i].size[0]} (width x height)")
                nw, nh = round(lb.scale_x * im.size[0]), round(lb.scale_y * im.size[1])
                canvas = Image.new("RGB", (tw, th), (LETTERBOX_PAD,) * 3)
                canvas.paste(im.resize((nw, nh), Image.BILINEAR), (lb.pad_x, lb.pad_y))
                a = np.asarray(canvas, dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"{path}: cannot read image ({type(e).__name__}: {str(e)[:120]})",
                            hint="remove or re-save the file") from None
        return a.transpose(2, 0, 1)

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:  # type: ignore[override]
        x = np.stack([self._load(i) for i in range(start, stop)]) if stop > start \
            else np.zeros((0, *self.pre.input_shape), np.float32)
        return self.pre.normalize(x), [self._target(i) for i in range(start, stop)]

    def targets(self) -> list[dict[str, np.ndarray]]:
        """Every image's boxes (model-input pixels) and classes, in order, without reading pixels."""
        return [self._target(i) for i in range(len(self))]

    def coco(self) -> dict:
        """COCO ground truth in ORIGINAL image pixels: image id = position, category id = class index,
        file_name = sample id, crowd boxes kept as crowds."""
        images, anns = [], []
        for i, (it, sid) in enumerate(zip(self.items, self.sample_ids())):
            images.append({"id": i, "file_name": sid, "height": it.size[0], "width": it.size[1]})
            for (x1, y1, x2, y2), c, crowd in zip(it.boxes, it.classes, it.crowd):
                w, h = float(x2 - x1), float(y2 - y1)
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c),
                             "bbox": [float(x1), float(y1), w, h], "area": w * h, "iscrowd": int(crowd)})
        cats = [{"id": k, "name": n} for k, n in enumerate(self.class_names)]
        return {"images": images, "annotations": anns, "categories": cats}

    def sample_ids(self) -> list[str]:
        return [it.path.relative_to(self.base).as_posix() for it in self.items]

    def sample_digests(self) -> list[str]:
        return [pixel_digest(decoded_pixels(it.path)) for it in self.items]

    def _identity(self) -> dict:
        h = hashlib.sha256()
        for f in [self.source] + [p for it in self.items for p in (it.path, it.label) if p is not None]:
            st = f.stat()
            h.update(f"{f.relative_to(self.base)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return {"set": f"detect-{self.layout}", "files": h.hexdigest(), "classes": self.class_names,
                **self.pre.to_dict()}
