"""What a fleet node sends back per shard, and how the lead scores the shards that came back, per task.

Every task: the additive counts of ``counts`` (samples, non-finite outputs, fidelity sums against the unfolded
model). On top of them:

- classify: top-1 correct / total (``counts``); the lead adds them up.
- detect: the shard's detections in model-input pixels, made on the node by the task's own numpy decode +
  class-aware NMS (``DetectTask.decode``, the single-host thresholds), one ``[row, x1, y1, x2, y2, score,
  class]`` per box. mAP is no sum over shards: the lead maps the boxes into the ground truth's frame
  (``DetectTask.in_frame``; the letterbox or resize of each image is the data set's, which only the lead holds),
  takes each shard once, writes the COCO results and scores mAP once with pycocotools.
- sr: per image PSNR / SSIM keyed by image id (``edgerep.tasks.sr.scored_images``: Y, ``scale`` pixels shaved,
  scikit-image), from the HR images that travel with the shard; the lead averages over images
  (``images_accuracy``), never over shards.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgerep.errors import EdgerepError
from edgerep.fleet.counts import accuracy_model, fidelity_model, merge, shard_counts

TASKS = ("classify", "detect", "sr")  # what a fleet scores (a task module's name)


def task_of(bundle: Any, data: str | None = None) -> dict:
    """The task a bundle's report names (``{"name", "postprocess"}``, what travels in a job's spec); a task the
    fleet cannot score is refused (exit 2) before any work, unless the run is latency only (``--data synthetic``)."""
    name = ((bundle.report or {}).get("task") or {}).get("name") or "classify"
    if name not in TASKS and data != "synthetic":
        raise EdgerepError(f"{bundle.path}: the bundle's task is {name!r}; fleet deploy scores "
                           f"{', '.join(TASKS)}", hint="time it on the fleet with --data synthetic (latency only)")
    return {"name": name, "postprocess": (bundle.manifest.get("settings") or {}).get("postprocess")}


def shard_extras(task: dict, dataset: Any, shard: dict) -> dict:
    """What a shard carries beside its inputs and the reference outputs: classify its labels (int64); sr its HR
    images (uint8 NHWC), their ids and the scale, so a node scores PSNR without the data set; detect no labels
    (the lead keeps the ground truth)."""
    if task["name"] == "classify":
        return {"y": None if shard["y"] is None else np.asarray(shard["y"], np.int64)}
    extra: dict = {"y": None}
    if task["name"] == "sr":
        from edgerep.tasks.sr import _hr

        rows = range(shard["start"], shard["stop"])
        extra.update(hr=np.stack([_hr(dataset, i) for i in rows]) if len(rows) else np.zeros((0, 0, 0, 3), np.uint8),
                     ids=list(dataset.sample_ids()[shard["start"]:shard["stop"]]), scale=int(dataset.scale))
    return extra


class ShardImages:
    """A shard's HR images as the SR task reads a data set (``scale``, ``sample_ids()``, ``pair(i)``)."""

    def __init__(self, shard: dict):
        self.name = f"fleet shard {shard['index']}"
        self.scale = int(shard["scale"])
        self._hr, self._ids = shard["hr"], list(shard["ids"])

    def sample_ids(self) -> list[str]:
        return self._ids

    def pair(self, i: int) -> tuple[None, np.ndarray]:
        return None, self._hr[i]


def shard_part(task: dict, outputs: np.ndarray, shard: dict) -> dict:
    """One shard's scoring data from ``outputs`` (on a node; on the lead for the reference, whose shard has no
    ``ref``): the counts, plus the detections (detect) or the per-image scores (sr)."""
    ref = shard.get("ref")
    ref = ref if ref is not None and len(ref) else None
    part = shard_counts(outputs, shard.get("y"), ref)
    if task["name"] == "detect":
        from edgerep.tasks import get_task

        dets = get_task("detect").with_postprocess(task.get("postprocess")).decode(outputs) if len(outputs) else []
        part["detections"] = [[shard["start"] + i, *(float(v) for v in box), float(s), int(k)]
                              for i, d in enumerate(dets) for box, s, k in zip(d.boxes, d.scores, d.classes)]
    elif task["name"] == "sr":
        from edgerep.tasks.sr import scored_images

        part["images"] = scored_images(outputs, ShardImages(shard), ref)
    return part


@dataclass
class Scorer:
    """The lead's scoring of any set of shards: ``task`` (``task_of``), the test set, each shard's rows, and for
    detect the COCO ground truth with one image per test row (image i is row i)."""

    task: dict = field(default_factory=lambda: {"name": "classify"})
    dataset: Any = None
    bounds: dict[int, tuple[int, int]] = field(default_factory=dict)
    ground_truth: dict | None = None

    def accuracy(self, parts: dict[int, dict], name: str | None = None) -> tuple[Any, dict[str, Any]]:
        """(the report's ``Accuracy`` of the shards ``parts`` = {shard index: part}, each shard once; the files it
        writes, {relative path: JSON-able}, named by ``name``: none without one)."""
        if not parts:
            return None, {}
        ordered = [parts[i] for i in sorted(parts)]
        c = merge(ordered)
        if self.task["name"] == "classify":
            return accuracy_model(c), {}
        fid, nonfinite = fidelity_model(c), c.get("nonfinite") or 0
        if self.task["name"] == "sr":
            from edgerep.bench.sr_metrics import CONVENTION
            from edgerep.tasks.sr import images_accuracy

            rows = [r for p in ordered for r in p["images"]]
            rel = f"sr/{name}.json" if name else None
            acc = images_accuracy(rows, int(self.dataset.scale), scores_file=rel, fidelity=fid, nonfinite=nonfinite)
            return acc, ({rel: {"convention": CONVENTION, "scale": int(self.dataset.scale), "engine": name,
                                "images": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
                                           for r in rows]}} if rel else {})
        return self._detect(parts, name, fid, nonfinite)

    def _detect(self, parts: dict[int, dict], name: str | None, fid: Any, nonfinite: int) -> tuple[Any, dict]:
        from edgerep.bench.detect_post import Detections
        from edgerep.tasks import get_task
        from edgerep.tasks.detect import restricted

        task = get_task("detect").with_postprocess(self.task.get("postprocess"))
        rows = [r for i in sorted(parts) for r in range(*self.bounds[i])]
        boxes: dict[int, list] = {r: [] for r in rows}
        for i in sorted(parts):
            for d in parts[i]["detections"]:
                boxes[int(d[0])].append(d)
        dets = []
        for r in rows:
            a = np.asarray(boxes[r], np.float64).reshape(-1, 7)
            dets.append(Detections(a[:, 1:5], a[:, 5], a[:, 6].astype(np.int64)))
        gt = self.ground_truth or {}
        ids = [gt["images"][r]["id"] for r in rows]
        preds = task.coco_predictions(task.in_frame(dets, self.dataset, rows, hasattr(self.dataset, "coco")), ids)
        rel = f"predictions/{name}.json" if name else None
        acc, _ = task.scored(restricted(gt, ids), preds, rel, fidelity=fid, nonfinite=nonfinite)
        return acc, ({rel: preds} if rel else {})


def lead_scorer(task: dict, bundle: Any, dataset: Any, shards: list[dict], targets: list | None, same: bool | None
                ) -> tuple[Scorer, str | None]:
    """The lead's ``Scorer`` of the shards (their metas: index, start, stop), and for detect where its ground truth
    came from (``ground_truth``)."""
    n = shards[-1]["stop"] if shards else 0
    gt, source = ground_truth(task, bundle, dataset, n, targets, same)
    return Scorer(task, dataset, {s["index"]: (s["start"], s["stop"]) for s in shards}, gt), source


def ground_truth(task: dict, bundle: Any, dataset: Any, n: int, targets: list | None, same: bool | None
                 ) -> tuple[dict | None, str | None]:
    """Detect: (the COCO ground truth of the first ``n`` test rows, where it comes from). The bundle's
    ``annotations/test.json`` when the test set is the bundle's own and the file covers the rows; else the
    ground truth of the data given (``--data``), made by the task as deploy makes it. Other tasks: none."""
    if task["name"] != "detect":
        return None, None
    from edgerep.tasks import get_task

    path = bundle.path / "annotations" / "test.json"
    if same and path.is_file():
        gt = json.loads(path.read_text())
        if len(gt.get("images") or []) >= n:
            return gt, "the bundle's annotations/test.json"
    gt = get_task("detect").with_postprocess(task.get("postprocess")).ground_truth(dataset, n, targets)
    return gt, "the test data given (--data), made as deploy makes annotations/test.json"
