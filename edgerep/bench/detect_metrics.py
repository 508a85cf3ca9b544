"""COCO detection accuracy by the reference evaluator (``pycocotools``, the ``[detect]`` extra): mAP@[.5:.95],
mAP@.5 and per-class AP, in points (0-100), with the image and instance counts they rest on.

No AP is computed here: the numbers are ``COCOeval``'s (101-point interpolation, areas "all", at most
100 detections per image as COCO scores them), so anyone recomputes them from the ground-truth JSON
and a COCO results JSON alone.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgerep.errors import DataError


@dataclass(frozen=True)
class DetectionScore:
    """mAP@[.5:.95] and mAP@.5 in points; ``per_class`` AP@[.5:.95] by category name (None: no instance)."""

    map: float
    map50: float
    per_class: dict[str, float | None] = field(default_factory=dict)
    images: int = 0
    instances: int = 0
    predictions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"mAP": self.map, "mAP50": self.map50, "per_class_AP": dict(self.per_class),
                "images": self.images, "instances": self.instances, "predictions": self.predictions}


def _load(obj: Any, what: str) -> Any:
    if isinstance(obj, (str, Path)):
        try:
            return json.loads(Path(obj).read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{what} {obj}: cannot read it as JSON ({e})") from None
    return obj


def _pycocotools() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise DataError("detection mAP needs pycocotools", hint="pip install 'edgerep[detect]'") from None
    return COCO, COCOeval


def coco_map(ground_truth: dict | str | Path, predictions: Sequence[dict] | str | Path) -> DetectionScore:
    """Score COCO ``predictions`` (results format: image_id, category_id, bbox xywh, score) against the
    COCO ``ground_truth`` dict (either may be a JSON file path) with pycocotools' ``COCOeval``."""
    COCO, COCOeval = _pycocotools()
    gt_dict = _load(ground_truth, "ground truth")
    # loadRes adds keys to each result (area, id, segmentation) and COCOeval to each annotation (ignore): a copy
    # of each dict suffices (no nested value is changed in place), far cheaper than a deep copy at 100k boxes
    preds = [dict(p) for p in _load(predictions, "predictions")]
    if not isinstance(gt_dict, dict) or not {"images", "annotations", "categories"} <= set(gt_dict):
        raise DataError("ground truth must be a COCO dict with images, annotations and categories")
    image_ids = {im["id"] for im in gt_dict["images"]}
    cats = {c["id"]: str(c.get("name", c["id"])) for c in gt_dict["categories"]}
    stray = sorted({p["image_id"] for p in preds} - image_ids, key=str)
    if stray:
        raise DataError(f"{len(stray)} predicted image id(s) are not in the ground truth, e.g. {stray[0]!r}")
    unknown = sorted({p["category_id"] for p in preds} - set(cats), key=str)
    if unknown:
        raise DataError(f"predicted category id(s) {unknown[:5]} are not in the ground truth's categories")
    instances = sum(1 for a in gt_dict["annotations"] if not a.get("iscrowd", 0))
    counts = {"images": len(image_ids), "instances": instances, "predictions": len(preds)}
    has_gt = {a["category_id"] for a in gt_dict["annotations"] if not a.get("iscrowd", 0)}
    if not preds:  # pycocotools' loadRes cannot take an empty list: nothing found scores 0
        return DetectionScore(0.0, 0.0, {n: (0.0 if k in has_gt else None) for k, n in cats.items()}, **counts)
    gt_dict = {"info": {}, **gt_dict}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {**gt_dict, "images": [dict(i) for i in gt_dict["images"]],
                      "annotations": [dict(a) for a in gt_dict["annotations"]],
                      "categories": [dict(c) for c in gt_dict["categories"]]}
        gt.createIndex()
        dt = gt.loadRes(preds)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # (iou thresholds, recall thresholds, categories, areas, max dets)
    per_class: dict[str, float | None] = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[cats[cat_id]] = float(np.mean(p)) * 100 if p.size else None
    stats = ev.stats
    return DetectionScore(max(0.0, float(stats[0])) * 100, max(0.0, float(stats[1])) * 100, per_class, **counts)


def detections_to_coco(detections: Sequence[Any], image_ids: Sequence[int]) -> list[dict]:
    """Per-image ``Detections`` (xyxy boxes, scores, classes; ``detect_post``) -> COCO results list,
    category id = class id, ``bbox`` = ``[x, y, w, h]``."""
    if len(detections) != len(image_ids):
        raise ValueError(f"{len(detections)} detection sets but {len(image_ids)} image ids")
    out = []
    for d, img in zip(detections, image_ids):
        for (x1, y1, x2, y2), s, c in zip(np.asarray(d.boxes, np.float64).reshape(-1, 4), d.scores, d.classes):
            out.append({"image_id": img, "category_id": int(c), "bbox": [float(x1), float(y1), float(x2 - x1),
                                                                           float(y2 - y1)], "score": float(s)})
    return out
