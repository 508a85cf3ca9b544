"""Detection: COCO mAP@[.5:.95] (headline) and mAP@.5 in points by pycocotools, with image and instance counts.

Outputs are decoded and NMS'd in numpy (``edgerep.bench.detect_post``, the same for every engine), or by a
user's ``--postprocess module:function``. Predicted boxes are in model-input pixels. Against the test set's
COCO ground truth (``dataset.coco()``) they are mapped by ``dataset.to_original(i, boxes)`` when the data set
has it (COCO / YOLO folders, letterbox), else by the ratio of its ``image_size`` to the input size (``scenes``:
targets and ground truth in 160x160 scene pixels), else kept. Against the batches' targets (the selection
split) the same, except ``to_original``: a data set with it yields targets in model-input pixels.

A choice on the selection split is scored by **selection-split mAP** (its drop in mAP points against the
unfolded model's on the same images), not by the raw head tensor's fidelity: the head tensor mixes box
coordinates in pixels (tens to hundreds) with class probabilities (0-1), so a cosine or MSE on it is dominated
by the boxes and blind to the score errors that cost mAP; and the budget (``--max-drop``) is then in the gate's
unit. pycocotools on a few hundred images costs well under a second beside the engine run. The continuous
``error`` (ties between range methods) is the mean of the box rows' and the score rows' relative MSE, each
normalised by its own reference mean square.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from edgerep.errors import EdgerepError
from edgerep.plugins import load_function
from edgerep.tasks.base import Evaluation

Postprocess = Callable[[np.ndarray], list]  # (N, ...) outputs -> per image Detections (xyxy, scores, classes)
EXAMPLES = 4  # test images whose detections the report page draws


def load_postprocess(spec: str) -> Postprocess:
    """``--postprocess package.module:function``: ``function(outputs) -> [Detections-like]`` per image (objects
    with ``boxes`` (k, 4) xyxy model-input pixels, ``scores`` (k,), ``classes`` (k,) int)."""
    return load_function(spec, "--postprocess")


class DetectTask:
    """``Task`` for detectors whose output is ``(N, 4 + C, anchors)`` (YOLOv6 / YOLOv8 export layout), or any
    output a ``postprocess`` function turns into detections."""

    name = "detect"
    metric = "map"

    def __init__(self, postprocess: Postprocess | None = None, postprocess_name: str | None = None):
        self.postprocess = postprocess
        self.postprocess_name = postprocess_name
        self._ref_cache: dict[str, float] = {}

    def with_postprocess(self, spec: str | None) -> "DetectTask":
        """This task with ``--postprocess`` (a new object; None: the built-in decode + NMS)."""
        return self if not spec else DetectTask(load_postprocess(spec), spec)

    def describe(self) -> dict[str, Any]:
        from edgerep.bench import detect_post as dp

        if self.postprocess is not None:
            return {"postprocess": self.postprocess_name}
        return {"postprocess": "edgerep.bench.detect_post.postprocess (numpy, every engine alike)",
                "layout": "(N, 4 + C, anchors): cx, cy, w, h in input pixels, then C class probabilities",
                "score_threshold": dp.SCORE_THRESHOLD, "iou_threshold": dp.IOU_THRESHOLD,
                "max_detections": dp.MAX_DETECTIONS, "evaluator": "pycocotools COCOeval (bbox)"}

    def matches_output(self, shape: tuple[int, ...]) -> bool:
        return self.postprocess is not None or (len(shape) == 3 and shape[1] >= 5)

    def check_output(self, shape: tuple[int, ...], classes: int | None = None) -> None:
        """Refuse, naming the flag, an output the built-in decoder cannot read (with ``classes`` known, its
        second axis must be 4 + classes: a transposed (N, anchors, 4 + C) output is not read as boxes)."""
        if self.postprocess is not None:
            return
        if not self.matches_output(shape) or (classes and shape[1] != 4 + classes):
            want = f"(N, {4 + classes} = 4 + {classes} classes, anchors)" if classes else "(N, 4 + classes, anchors)"
            raise EdgerepError(f"detect: the model's output has shape {tuple(shape)}, not {want}",
                               hint="pass --postprocess package.module:function for another output layout")

    def collect_targets(self, batches: Iterable[Any]) -> list[dict] | None:
        out: list[dict] = []
        for y in batches:
            if y is None:
                return None
            out.extend(y)
        return out

    # ---- decoding -------------------------------------------------------------------------------
    def decode(self, outputs: np.ndarray) -> list:
        """Per image ``Detections`` in model-input pixels: the built-in decode + class-aware NMS, or the user's
        ``--postprocess`` (a fleet node runs this on its shard; the lead maps the boxes with ``in_frame``)."""
        from edgerep.bench.detect_post import Detections, postprocess

        if self.postprocess is None:
            self.check_output(outputs.shape)
            dets = postprocess(outputs)
        else:
            dets = list(self.postprocess(outputs))
            if len(dets) != len(outputs):
                raise EdgerepError(f"--postprocess {self.postprocess_name} returned {len(dets)} detection sets "
                                   f"for {len(outputs)} images")
        return [Detections(np.asarray(d.boxes, np.float64).reshape(-1, 4), np.asarray(d.scores, np.float64).reshape(-1),
                           np.asarray(d.classes, np.int64).reshape(-1)) for d in dets]

    def in_frame(self, dets: list, dataset: Any, rows: Iterable[int], original: bool = True) -> list:
        """``dets`` (model-input pixels) of the test samples ``rows`` in the frame of the data set's ``coco()``
        (``original``) or of its targets."""
        from edgerep.bench.detect_post import Detections

        hw = _input_hw(dataset)
        return [Detections(_to_frame(dataset, int(i), d.boxes, hw, original), d.scores, d.classes)
                for i, d in zip(rows, dets)]

    def detections(self, outputs: np.ndarray, dataset: Any = None, original: bool = True) -> list:
        """Per image ``Detections`` in the frame of the data set's ``coco()`` (``original``) or of its targets."""
        return self.in_frame(self.decode(outputs), dataset, range(len(outputs)), original)

    @staticmethod
    def coco_predictions(dets: list, image_ids: list) -> list[dict]:
        """COCO results of ``dets`` (in the ground truth's frame), rounded as written (0.01 px, 1e-5 score): a
        predictions file holds exactly what was scored, at a third of the size."""
        from edgerep.bench.detect_metrics import detections_to_coco

        return [{**p, "bbox": [round(v, 2) for v in p["bbox"]], "score": round(p["score"], 5)}
                for p in detections_to_coco(dets, image_ids)]

    # ---- the test set -----------------------------------------------------------------------------
    def ground_truth(self, dataset: Any, n: int, targets: list[dict] | None = None) -> dict:
        """COCO ground truth of the first ``n`` images of ``dataset``: its own ``coco()`` (image i is sample i)
        when it has one, else built from ``targets``."""
        from edgerep.data.scenes import coco_ground_truth

        if hasattr(dataset, "coco"):
            gt = dataset.coco()
            return restricted(gt, [im["id"] for im in gt["images"]][:n])
        if targets is None:
            raise EdgerepError(f"data set {getattr(dataset, 'name', '?')}: no COCO ground truth and no targets")
        names = list(getattr(dataset, "class_names", None) or [str(k) for k in range(1 + max(
            [int(c) for t in targets for c in t["classes"]] or [0]))])
        ids = getattr(dataset, "sample_ids", lambda: [str(i) for i in range(n)])()[:n]
        return coco_ground_truth(targets[:n], list(ids), names)

    def evaluate(self, outputs: np.ndarray, targets: Any, reference: np.ndarray | None, *, dataset: Any = None,
                 name: str = "", user_metric: Callable | None = None) -> Evaluation:
        from edgerep.bench import metrics
        from edgerep.bench.accuracy import _finite, score, user_values
        from edgerep.report.models.results import Fidelity

        if targets is None and not hasattr(dataset, "coco"):  # unlabelled (--data synthetic): fidelity, no mAP
            return Evaluation(score(outputs, None, reference, user_metric, classifier=False))
        n = int(outputs.shape[0])
        fid = None
        if reference is not None and n:
            fid = Fidelity(cosine=_finite(metrics.cosine(reference, outputs)),
                           sqnr_db=_finite(metrics.sqnr_db(reference, outputs)))
        gt = self.ground_truth(dataset, n, targets)
        image_ids = [im["id"] for im in gt["images"]]
        dets = self.detections(outputs, dataset, original=hasattr(dataset, "coco"))
        preds = self.coco_predictions(dets, image_ids)
        rel = f"predictions/{name}.json"
        user = user_values(user_metric, outputs, None, reference) if user_metric is not None else None
        acc, s = self.scored(gt, preds, rel, fidelity=fid, user=user, nonfinite=metrics.nonfinite_rows(outputs))
        examples = [{"image": int(i), "boxes": np.round(d.boxes[:20], 1).tolist(),
                     "scores": np.round(d.scores[:20], 3).tolist(), "classes": d.classes[:20].tolist()}
                    for i, d in enumerate(dets[:EXAMPLES])]
        return Evaluation(acc, {rel: preds}, {"per_class": s.per_class, "examples": examples})

    @staticmethod
    def scored(gt: dict, preds: list[dict], predictions_file: str | None, *, fidelity: Any = None, nonfinite: int = 0,
               user: dict | None = None) -> tuple[Any, Any]:
        """pycocotools' mAP@[.5:.95] / mAP@.5 of COCO ``preds`` against ``gt``: (the report's ``Accuracy`` with image,
        instance and detection counts, the ``DetectionScore``)."""
        from edgerep.bench.detect_metrics import coco_map
        from edgerep.report.models.results import detect_accuracy

        s = coco_map(gt, preds)
        return detect_accuracy(map=s.map, map50=s.map50, images=s.images, instances=s.instances,
                               detections=s.predictions, per_class=s.per_class, predictions_file=predictions_file,
                               fidelity=fidelity, nonfinite=nonfinite, user=user), s

    def write_views(self, root: Path, dataset: Any, targets: list[dict], details: dict[str, dict], ref: str,
                    other: str | None) -> tuple[dict[str, str], dict[str, Any]]:
        """The report view's files: the first ``EXAMPLES`` test images with the ``ref`` and ``other`` engines'
        boxes side by side (``detections/example-<i>.png``). Returns ({manifest key: path}, report["task"]
        ["examples"])."""
        from edgerep.report.detect_view import DISPLAY_SCORE, example_png

        image = _image_reader(dataset)
        if other is None or image is None:
            why = "no INT8 engine ran" if other is None else f"data set {getattr(dataset, 'name', '?')} gives no image"
            return {}, {"files": [], "why_not": why}
        names = list(getattr(dataset, "class_names", None) or [])
        files: dict[str, str] = {}
        rels = []
        for k, (a, b) in enumerate(zip(details[ref]["examples"], details[other]["examples"])):
            png = example_png(image(a["image"]), targets[a["image"]], [("unfolded fp32", a), (other, b)], names)
            rel = f"detections/example-{k}.png"
            (Path(root) / "detections").mkdir(parents=True, exist_ok=True)
            (Path(root) / rel).write_bytes(png)
            files[f"task:{rel}"] = rel
            rels.append(rel)
        return files, {"files": rels, "engine": other, "reference": ref, "display_score": DISPLAY_SCORE}

    def ground_truth_files(self, dataset: Any, limit: int | None) -> dict[str, Any]:
        """``annotations/test.json`` (COCO ground truth of the scored images); none for unlabelled inputs."""
        if not hasattr(dataset, "coco") and not getattr(dataset, "has_labels", False):
            return {}
        n = len(dataset) if limit is None else min(limit, len(dataset))
        return {"annotations/test.json": self.ground_truth(dataset, n)}

    # ---- the selection split ------------------------------------------------------------------------
    def selection_score(self, outputs: np.ndarray, targets: Any, reference: np.ndarray, *, dataset: Any = None):
        from edgerep.quant.mixed import Score

        err = _row_error(outputs, reference)
        if not np.isfinite(err):
            return Score(drop=100.0, error=float("inf"))
        if targets is None:  # unlabelled: the budget applies to the head tensor's fidelity
            from edgerep.quant.pipeline import cosine_loss

            return Score(drop=cosine_loss(outputs, reference), error=err)
        key = hashlib.blake2b(np.ascontiguousarray(reference).tobytes(), digest_size=16).hexdigest()
        if key not in self._ref_cache:
            self._ref_cache = {key: self._map(reference, targets, dataset)}
        m = self._map(outputs, targets, dataset)
        return Score(drop=self._ref_cache[key] - m, error=err, top1=None)

    def _map(self, outputs: np.ndarray, targets: list[dict], dataset: Any) -> float:
        from edgerep.bench.detect_metrics import coco_map, detections_to_coco
        from edgerep.data.scenes import coco_ground_truth

        n = len(outputs)
        names = list(getattr(dataset, "class_names", None) or [str(k) for k in range(outputs.shape[1] - 4)])
        gt = coco_ground_truth(targets[:n], [str(i) for i in range(n)], names)
        dets = self.detections(outputs, dataset, original=False)
        return coco_map(gt, detections_to_coco(dets, list(range(n)))).map


def restricted(gt: dict, image_ids: Iterable[Any]) -> dict:
    """COCO ground truth ``gt`` cut to the images ``image_ids`` (and their annotations); categories kept."""
    keep = set(image_ids)
    return {**gt, "images": [im for im in gt["images"] if im["id"] in keep],
            "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}


def _image_reader(dataset: Any) -> Callable[[int], np.ndarray] | None:
    """Test image i in the targets' frame (uint8), for the report's pictures: ``dataset.image(i)``, or a scene."""
    if hasattr(dataset, "image"):
        return dataset.image
    from edgerep.data.scenes import ScenesDataset, render

    if isinstance(dataset, ScenesDataset):
        return lambda i: render(dataset.split, int(i))[0]
    return None


def _input_hw(dataset: Any) -> tuple[int, int] | None:
    pre = getattr(dataset, "pre", None)
    shape = getattr(pre, "input_shape", None)
    return (int(shape[1]), int(shape[2])) if shape is not None and len(shape) == 3 else None


def _to_frame(dataset: Any, i: int, boxes: np.ndarray, input_hw: tuple[int, int] | None,
              original: bool) -> np.ndarray:
    """Model-input pixels -> the ground truth's frame (``original``) or the targets' (see the module docstring)."""
    if dataset is not None and hasattr(dataset, "to_original"):
        return np.asarray(dataset.to_original(i, boxes), np.float64).reshape(-1, 4) if original else boxes
    size = getattr(dataset, "image_size", None)
    if size is not None and input_hw is not None:
        th, tw = (size, size) if isinstance(size, int) else size
        ih, iw = input_hw
        if (th, tw) != (ih, iw):
            return boxes * np.array([tw / iw, th / ih, tw / iw, th / ih])
    return boxes


def _row_error(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean of the box rows' and the score rows' relative MSE (each by its own reference mean square)."""
    o, r = outputs.astype(np.float64), reference.astype(np.float64)
    if o.ndim != 3 or o.shape[1] < 5:
        return float(np.mean((o - r) ** 2) / (float(np.mean(r ** 2)) or 1.0))
    parts = [float(np.mean((o[:, s] - r[:, s]) ** 2) / (float(np.mean(r[:, s] ** 2)) or 1.0))
             for s in (slice(0, 4), slice(4, None))]
    return float(np.mean(parts))


TASK = DetectTask()
