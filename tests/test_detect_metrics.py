"""COCO mAP through pycocotools: perfect predictions score 100, none score 0, known box shifts lower it
by amounts computed from the counts, and a round trip through JSON files changes nothing."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pycocotools", reason="the [detect] extra (pycocotools) is not installed")

from edgerep.bench.detect_metrics import coco_map, detections_to_coco  # noqa: E402
from edgerep.bench.detect_post import Detections  # noqa: E402
from edgerep.data.scenes import ScenesDataset  # noqa: E402
from edgerep.errors import DataError  # noqa: E402


@pytest.fixture(scope="module")
def gt() -> dict:
    return ScenesDataset("val", n=80).coco()


def _preds(gt: dict, shift=lambda a: 0.0, score=lambda a: 1.0, category=lambda a: a["category_id"]) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": category(a), "score": score(a),
             "bbox": [a["bbox"][0] + shift(a), *a["bbox"][1:]]} for a in gt["annotations"]]


def test_predictions_equal_to_the_ground_truth_score_100(gt):
    s = coco_map(gt, _preds(gt))
    assert (s.map, s.map50) == (100.0, 100.0)
    assert set(s.per_class.values()) == {100.0} and len(s.per_class) == 10
    assert (s.images, s.instances, s.predictions) == (80, len(gt["annotations"]), len(gt["annotations"]))


def test_no_predictions_score_0(gt):
    s = coco_map(gt, [])
    assert (s.map, s.map50) == (0.0, 0.0) and set(s.per_class.values()) == {0.0}
    assert s.instances == len(gt["annotations"]) and s.predictions == 0


def test_right_boxes_with_wrong_classes_score_0(gt):
    s = coco_map(gt, _preds(gt, category=lambda a: (a["category_id"] + 1) % 10))
    assert (s.map, s.map50) == (0.0, 0.0)


def test_shifting_boxes_lowers_map_by_the_amount_the_iou_gives(gt):
    # by half a width: IoU = 0.5 / 1.5 = 1/3, below every threshold
    s = coco_map(gt, _preds(gt, shift=lambda a: a["bbox"][2] / 2))
    assert (s.map, s.map50) == (0.0, 0.0)
    # by a fifth of a width: IoU = 0.8 / 1.2 = 2/3 matches at .50 .55 .60 .65, not at .70 ... .95
    s = coco_map(gt, _preds(gt, shift=lambda a: a["bbox"][2] / 5))
    assert s.map50 == 100.0 and s.map == pytest.approx(40.0, abs=1e-9)
    # every other instance shifted by half a width and scored lower: per class, precision 1 up to
    # the recall of the unshifted share f, then nothing: AP@.5 = share of the 101 recall points <= f
    odd = lambda a: a["id"] % 2 == 1  # noqa: E731
    s = coco_map(gt, _preds(gt, shift=lambda a: a["bbox"][2] / 2 * odd(a), score=lambda a: 0.5 if odd(a) else 0.9))
    expected = []
    for k in range(10):
        anns = [a for a in gt["annotations"] if a["category_id"] == k]
        f = sum(not odd(a) for a in anns) / len(anns)
        expected.append(np.mean(np.linspace(0, 1, 101) <= f) if f > 0 else 0.0)
    assert s.map50 == pytest.approx(100 * np.mean(expected), abs=1e-9)
    assert 30 < s.map50 < 70 and s.map == pytest.approx(s.map50, abs=1e-9)
    assert [s.per_class[str(k)] for k in range(10)] == pytest.approx([100 * e for e in expected], abs=1e-9)


def test_per_class_ap_follows_the_classes_predicted(gt):
    s = coco_map(gt, [p for p in _preds(gt) if p["category_id"] < 5])
    assert [s.per_class[str(k)] for k in range(10)] == [100.0] * 5 + [0.0] * 5
    assert s.map == pytest.approx(50.0, abs=1e-9)


def test_a_round_trip_through_json_files_gives_the_same_numbers(gt, tmp_path):
    preds = _preds(gt, shift=lambda a: a["bbox"][2] / 5 * (a["id"] % 3 == 0), score=lambda a: 1.0 / a["id"])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    before = json.dumps(preds)
    a = coco_map(gt, preds)
    b = coco_map(tmp_path / "gt.json", str(tmp_path / "pred.json"))
    assert a == b and 0 < a.map < 100
    assert json.dumps(preds) == before, "coco_map changed the caller's predictions"


def test_detections_convert_to_coco_results():
    d = Detections(np.array([[10, 20, 30, 60]], float), np.array([0.7]), np.array([3]))
    assert detections_to_coco([d], [42]) == [{"image_id": 42, "category_id": 3, "bbox": [10.0, 20.0, 20.0, 40.0],
                                               "score": 0.7}]


def test_predictions_for_unknown_images_or_classes_are_refused(gt):
    with pytest.raises(DataError, match="not in the ground truth"):
        coco_map(gt, [{"image_id": 10_000, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}])
    with pytest.raises(DataError, match="categories"):
        coco_map(gt, [{"image_id": 0, "category_id": 77, "bbox": [0, 0, 5, 5], "score": 1.0}])
