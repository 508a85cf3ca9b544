"""edgerep.tasks: the registry, how a run's task is decided, the detect task's scoring and --postprocess, the
checkpoint's task, open_dataset('scenes') (issue 24, task plumbing)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgerep.errors import CheckpointError, EdgerepError


class _Data:
    def __init__(self, task: str):
        self.task, self.name = task, f"{task}-set"


class _Meta:
    def __init__(self, task: str = "classify"):
        self.task, self.class_names = task, [str(i) for i in range(10)]


def test_registry_lists_the_task_modules_and_refuses_an_unknown_name():
    from edgerep.tasks import available, get_task

    assert {"classify", "detect"} <= set(available()) and "base" not in available()
    assert get_task("detect").metric == "map" and get_task("classify").metric == "top1"
    with pytest.raises(EdgerepError, match="--task 'segment'"):
        get_task("segment")


def test_the_task_comes_from_the_flag_then_the_checkpoint_then_the_data():
    from edgerep.tasks import resolve_task

    assert resolve_task(None, _Meta(), _Data("detect"))[0].name == "detect"
    assert resolve_task(None, _Meta("detect"), None) == (resolve_task("detect", None, None)[0], "checkpoint meta.task")
    assert resolve_task(None, _Meta(), _Data("classify"))[1] == "data set classify-set"
    assert resolve_task(None, None, None)[1] == "default"
    assert resolve_task("detect", _Meta(), _Data("detect"))[1] == "--task"


@pytest.mark.parametrize("flag,meta", [("classify", "classify"), (None, "detect")])
def test_a_task_that_disagrees_with_the_data_is_refused(flag, meta):
    from edgerep.tasks import resolve_task

    data = _Data("classify" if meta == "detect" else "detect")
    with pytest.raises(EdgerepError, match="is a '(detect|classify)' set"):
        resolve_task(flag, _Meta(meta), data)


def test_checkpoint_meta_task_round_trips_and_refuses_an_unknown_task():
    from edgerep.checkpoint import CheckpointMeta, default_meta

    meta = CheckpointMeta(arch="repdet_scenes", input_shape=(3, 64, 64), task="detect")
    assert CheckpointMeta.from_dict(meta.to_dict()).task == "detect"
    assert CheckpointMeta.from_dict({"arch": "x"}).task == "classify"  # older checkpoints
    with pytest.raises(CheckpointError, match="meta.task 'segment'"):
        CheckpointMeta.from_dict({**meta.to_dict(), "task": "segment"})
    assert default_meta("repdet_scenes").task == "detect" and default_meta("repvgg_a0").task == "classify"


def test_open_dataset_scenes_takes_the_checkpoints_preprocessing():
    from edgerep.checkpoint import CheckpointMeta
    from edgerep.data import open_dataset

    meta = CheckpointMeta(arch="repdet_scenes", input_shape=(3, 64, 64), mean=(0.5,) * 3, std=(0.25,) * 3)
    ds = open_dataset("scenes", split="val", meta=meta)
    assert ds.task == "detect" and ds.split == "val" and len(ds) == 256
    x, y = next(iter(ds.batches(2)))
    assert x.shape == (2, 3, 64, 64) and isinstance(y[0], dict)
    raw = open_dataset("scenes", split="val")
    x0, _ = next(iter(raw.batches(2)))
    from PIL import Image  # noqa: F401  (resize below is the data set's own)

    assert x.min() < 0 <= x0.min()  # (x - 0.5) / 0.25 reaches below zero, raw pixels in [0, 1] do not


def _scene_outputs(n: int = 6):
    """Perfect (N, 4 + C, A) outputs for n test scenes at 64x64 input: one anchor per ground-truth box."""
    from edgerep.data.scenes import ScenesDataset

    ds = ScenesDataset("test", n=n)
    from edgerep.data.base import Preprocess

    ds = ScenesDataset("test", Preprocess((3, 64, 64), (0.0,) * 3, (1.0,) * 3), n=n)
    targets = ds.targets()
    out = np.zeros((n, 14, 20), np.float32)
    for i, t in enumerate(targets):
        for j, (b, c) in enumerate(zip(t["boxes"] * 0.4, t["classes"])):  # 160 -> 64 pixels
            out[i, :4, j] = [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]]
            out[i, 4 + c, j] = 0.9
    return ds, targets, out


def test_detect_evaluation_maps_boxes_back_to_the_scene_frame_and_scores_perfect_outputs_100():
    from edgerep.tasks import get_task

    ds, targets, out = _scene_outputs()
    ev = get_task("detect").evaluate(out, targets, out, dataset=ds, name="x-fp32")
    assert ev.accuracy.value == pytest.approx(100.0) and ev.accuracy.map50 == pytest.approx(100.0)
    assert ev.accuracy.instances == sum(len(t["classes"]) for t in targets) and ev.accuracy.samples == 6
    assert list(ev.files) == ["predictions/x-fp32.json"] and len(ev.files["predictions/x-fp32.json"]) == ev.accuracy.detections


def test_detect_selection_score_is_the_selection_map_drop_against_the_reference():
    from edgerep.bench.detect_metrics import coco_map, detections_to_coco
    from edgerep.bench.detect_post import postprocess
    from edgerep.data.scenes import coco_ground_truth
    from edgerep.tasks import get_task

    ds, targets, ref = _scene_outputs()
    worse = ref.copy()
    worse[:, :2] += 2.0  # boxes shifted by 2 input pixels: IoU falls, mAP@[.5:.95] drops
    s = get_task("detect").selection_score(worse, targets, ref, dataset=ds)
    dets = postprocess(worse)
    for d in dets:
        d.boxes[:] = d.boxes / 0.4
    gt = coco_ground_truth(targets, [str(i) for i in range(6)])
    want = 100.0 - coco_map(gt, detections_to_coco(dets, list(range(6)))).map
    assert s.drop == pytest.approx(want, abs=1e-6) and s.drop > 1.0
    assert get_task("detect").selection_score(ref, targets, ref, dataset=ds).drop == 0.0


def test_postprocess_reads_a_layout_the_built_in_decoder_refuses():
    from edgerep.pipeline import DeployOptions, deploy_task
    from tests.detect_helpers import INPUT, Transposed, tiny_detector

    model = Transposed(tiny_detector())
    opts = DeployOptions(checkpoint="x.pt", task="detect")
    with pytest.raises(EdgerepError, match=r"has shape \(1, 84, 14\), not \(N, 14 = 4 \+ 10 classes") as e:
        deploy_task(opts, _Meta(), _Data("detect"), model, INPUT)
    assert "--postprocess" in e.value.hint
    opts.postprocess = "tests.detect_helpers:transposed"
    task, _ = deploy_task(opts, _Meta(), _Data("detect"), model, INPUT)
    ds, targets, out = _scene_outputs()
    ev = task.evaluate(np.ascontiguousarray(out.transpose(0, 2, 1)), targets, None, dataset=ds, name="t")
    assert ev.accuracy.value == pytest.approx(100.0)
    assert task.describe() == {"postprocess": "tests.detect_helpers:transposed"}
    with pytest.raises(EdgerepError, match="applies to detectors"):
        deploy_task(DeployOptions(checkpoint="x.pt", postprocess="tests.detect_helpers:transposed"), _Meta(),
                    _Data("classify"), torch.nn.Flatten(), INPUT)


def test_nms_keeps_what_the_whole_iou_matrix_greedy_keeps():
    """The lazy NMS (IoU of kept boxes only, a class stopped at max_detections) against the textbook one."""
    from edgerep.bench.detect_post import box_iou, nms

    def reference(boxes, scores, classes, thr, cap):
        order = np.argsort(-scores, kind="stable")
        kept = []
        for c in np.unique(classes):
            idx = order[classes[order] == c]
            iou = box_iou(boxes[idx], boxes[idx])
            alive = np.ones(len(idx), bool)
            for j in range(len(idx)):
                if alive[j]:
                    kept.append(idx[j])
                    alive[j + 1:] &= iou[j, j + 1:] <= thr
        kept = np.asarray(kept, np.int64)
        return kept[np.lexsort((kept, -scores[kept]))][:cap]

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 120))
        xy = rng.uniform(0, 50, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 30, (n, 2))], 1)
        scores = np.round(rng.uniform(0, 1, n), 2)  # ties
        classes = rng.integers(0, 3, n)
        cap = int(rng.integers(1, 40))
        assert nms(boxes, scores, classes, 0.5, cap).tolist() == reference(boxes, scores, classes, 0.5, cap).tolist()


class _Letterboxed:
    """A detection data set as COCO / YOLO folders give it: targets in model-input pixels (64x64), ``coco()`` in
    original pixels (the images were 128x256, letterboxed: scale 0.25, pad 16 rows at the top)."""

    task, name, class_names = "detect", "folder", [str(i) for i in range(10)]

    def __init__(self, targets_original: list[dict]):
        self.orig = targets_original
        self.pre = type("P", (), {"input_shape": (3, 64, 64)})()

    def to_original(self, i, boxes, clip=True):
        return (np.asarray(boxes, np.float64) - [0, 16, 0, 16]) / 0.25

    def targets(self):
        return [{"boxes": (t["boxes"] * 0.25 + [0, 16, 0, 16]).astype(np.float32), "classes": t["classes"]}
                for t in self.orig]

    def coco(self):
        from edgerep.data.scenes import coco_ground_truth

        return coco_ground_truth(self.orig, [f"im{i}" for i in range(len(self.orig))], self.class_names, (128, 256))


def test_a_letterboxed_data_set_is_scored_in_original_pixels_on_test_and_in_input_pixels_on_selection():
    from edgerep.tasks import get_task

    orig = [{"boxes": np.array([[8, 16, 72, 80], [100, 20, 180, 60]], np.float32), "classes": np.array([3, 7])},
            {"boxes": np.array([[40, 40, 104, 120]], np.float32), "classes": np.array([1])}]
    ds = _Letterboxed(orig)
    targets = ds.targets()
    out = np.zeros((2, 14, 8), np.float32)
    for i, t in enumerate(targets):
        for j, (b, c) in enumerate(zip(t["boxes"], t["classes"])):
            out[i, :4, j] = [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]]
            out[i, 4 + c, j] = 0.9
    task = get_task("detect")
    ev = task.evaluate(out, targets, out, dataset=ds, name="x")
    assert ev.accuracy.value == pytest.approx(100.0) and ev.accuracy.instances == 3
    box = ev.files["predictions/x.json"][0]["bbox"]
    assert box == pytest.approx([8, 16, 64, 64])  # xywh in original pixels
    assert task._map(out, targets, ds) == pytest.approx(100.0)


def test_coco_map_leaves_its_inputs_as_they_were():
    """coco_map copies each result and annotation dict (pycocotools writes keys into them), not deep copies."""
    import json

    from edgerep.bench.detect_metrics import coco_map, detections_to_coco
    from edgerep.bench.detect_post import postprocess

    ds, targets, out = _scene_outputs()
    gt = ds.coco()
    preds = detections_to_coco(postprocess(out), list(range(6)))
    before = json.dumps([gt, preds], sort_keys=True)
    first, second = coco_map(gt, preds), coco_map(gt, preds)
    assert json.dumps([gt, preds], sort_keys=True) == before and first == second
