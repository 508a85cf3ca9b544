"""Users' detection data: COCO and YOLO folders read into the ScenesDataset convention (boxes in model-input
pixels), letterbox placement mapped back exactly, role splits disjoint, COCO ground truth valid for pycocotools."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgerep.checkpoint import CheckpointMeta
from edgerep.data import open_dataset
from edgerep.data.base import LETTERBOX_PAD, Preprocess, check_resize
from edgerep.data.detect_folder import DetectionFolderDataset
from edgerep.data.scenes import render, targets_of
from edgerep.errors import DataError

pytest.importorskip("PIL")
# each image: a scene placed at (top, left) on a canvas (h, w) of its own shape, so sizes and aspect ratios vary
CANVASES = [((160, 160), (0, 0)), ((200, 160), (30, 0)), ((160, 240), (0, 50)), ((90, 120), (-40, -20)),
            ((176, 176), (8, 16))]
NAMES = [str(i) for i in range(10)]


def _images(n: int = len(CANVASES), split: str = "val", first: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(HWC uint8 image, xyxy boxes in its pixels, classes) built from real scenes, boxes cut by the canvas."""
    out = []
    for k in range(n):
        (h, w), (top, left) = CANVASES[k % len(CANVASES)]
        img, objs = render(split, first + k)
        canvas = np.full((h, w, 3), 60, np.uint8)
        src = img.transpose(1, 2, 0)
        ys, xs = slice(max(0, top), min(h, top + 160)), slice(max(0, left), min(w, left + 160))
        canvas[ys, xs] = src[ys.start - top:ys.stop - top, xs.start - left:xs.stop - left]
        t = targets_of(objs)
        b = t["boxes"].astype(np.float64) + [left, top, left, top]
        clipped = np.clip(b, 0, [w, h, w, h])
        keep = (clipped[:, 2] - clipped[:, 0] > 2) & (clipped[:, 3] - clipped[:, 1] > 2)
        out.append((canvas, clipped[keep], t["classes"][keep]))
    return out


def write_coco(folder: Path, images, names=NAMES, cat_offset: int = 1) -> Path:
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    doc = {"images": [], "annotations": [], "categories": [{"id": k + cat_offset, "name": n} for k, n in enumerate(names)]}
    for i, (img, boxes, classes) in enumerate(images):
        Image.fromarray(img).save(folder / "images" / f"im{i:03d}.png")
        doc["images"].append({"id": 100 + i, "file_name": f"im{i:03d}.png", "height": img.shape[0], "width": img.shape[1]})
        for (x1, y1, x2, y2), c in zip(boxes, classes):
            doc["annotations"].append({"id": len(doc["annotations"]) + 7, "image_id": 100 + i,
                                       "category_id": int(c) + cat_offset, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                       "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    (folder / "instances.json").write_text(json.dumps(doc))
    return folder


def write_yolo(folder: Path, images, names=NAMES) -> Path:
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "classes.txt").write_text("\n".join(names) + "\n")
    for i, (img, boxes, classes) in enumerate(images):
        Image.fromarray(img).save(folder / "images" / f"im{i:03d}.png")
        h, w = img.shape[:2]
        lines = [f"{c} {float((x1 + x2) / 2 / w)!r} {float((y1 + y2) / 2 / h)!r} {float((x2 - x1) / w)!r} {float((y2 - y1) / h)!r}"
                 for (x1, y1, x2, y2), c in zip(boxes, classes)]
        (folder / "labels" / f"im{i:03d}.txt").write_text("\n".join(lines) + "\n")
    return folder


def meta(resize: str = "letterbox:160") -> CheckpointMeta:
    return CheckpointMeta(arch="repdet_scenes", input_shape=(3, 160, 160), mean=(0.0,) * 3, std=(1.0,) * 3,
                          scale=1 / 255, resize=resize, class_names=list(NAMES), dataset="scenes")


def _all(ds):
    xs, ys = [], []
    for x, y in ds.batches(2):
        xs.append(x)
        ys.extend(y)
    return np.concatenate(xs), ys


@pytest.mark.parametrize("layout", ["coco", "yolo"])
@pytest.mark.parametrize("resize", ["letterbox:160", "direct"])
def test_boxes_are_in_model_input_pixels_and_map_back_to_the_original_exactly(tmp_path, layout, resize):
    images = _images()
    root = (write_coco if layout == "coco" else write_yolo)(tmp_path / layout, images)
    ds = open_dataset(root, split="test", meta=meta(resize))
    assert isinstance(ds, DetectionFolderDataset) and ds.task == "detect" and ds.layout == layout
    x, ys = _all(ds)
    assert x.shape == (len(images), 3, 160, 160) and x.dtype == np.float32
    for i, ((img, boxes, classes), y) in enumerate(zip(images, ys)):
        h, w = img.shape[:2]
        lb = ds.placement(i)
        if resize == "direct":
            assert (lb.scale_x, lb.scale_y, lb.pad_x, lb.pad_y) == (160 / w, 160 / h, 0, 0)
        else:  # the YOLO rule: one scale for both axes, centred
            r = min(160 / h, 160 / w)
            assert abs(lb.scale_x - r) < 0.02 and abs(lb.scale_y - r) < 0.02
            assert lb.pad_x == (160 - round(w * r)) // 2 and lb.pad_y == (160 - round(h * r)) // 2
        np.testing.assert_array_equal(y["classes"], classes)
        np.testing.assert_allclose(y["boxes"], lb.to_input(boxes), atol=1e-3)  # float32 targets
        np.testing.assert_allclose(ds.to_original(i, lb.to_input(boxes)), boxes, atol=1e-9)
        assert (y["boxes"][:, 2:] <= 160 + 1e-3).all() and (y["boxes"] >= -1e-3).all()


def test_letterbox_pads_with_yolo_grey_and_keeps_the_picture(tmp_path):
    images = _images(3)
    ds = open_dataset(write_coco(tmp_path / "c", images), meta=meta())
    x, _ = _all(ds)
    lb = ds.placement(1)  # 200 x 160: tall, grey bars left and right
    assert lb.pad_x > 0 and lb.pad_y == 0
    np.testing.assert_array_equal(x[1][:, :, :lb.pad_x], np.float32(LETTERBOX_PAD / 255.0))
    np.testing.assert_array_equal(x[1][:, :, 160 - lb.pad_x:], np.float32(LETTERBOX_PAD / 255.0))
    inside = x[1][:, :, lb.pad_x + 1:160 - lb.pad_x - 1]
    assert np.abs(inside - np.float32(LETTERBOX_PAD / 255.0)).max() > 0.2
    np.testing.assert_allclose(x[0], images[0][0].transpose(2, 0, 1) / 255.0, atol=1e-6)  # 160 x 160: untouched


def test_coco_and_yolo_folders_of_the_same_images_agree(tmp_path):
    images = _images()
    coco = open_dataset(write_coco(tmp_path / "c", images, cat_offset=1), meta=meta())
    yolo = open_dataset(write_yolo(tmp_path / "y", images), meta=meta())
    (xc, yc), (xy, yy) = _all(coco), _all(yolo)
    np.testing.assert_array_equal(xc, xy)
    for a, b in zip(yc, yy):
        np.testing.assert_array_equal(a["classes"], b["classes"])
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-3)
    assert coco.class_names == yolo.class_names == NAMES


def test_coco_ground_truth_is_in_original_pixels_and_valid_for_pycocotools(tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    from edgerep.bench.detect_metrics import coco_map

    images = _images()
    ds = open_dataset(write_coco(tmp_path / "c", images, cat_offset=5), meta=meta())
    gt = ds.coco()
    assert [im["id"] for im in gt["images"]] == list(range(len(images)))
    assert [(im["height"], im["width"]) for im in gt["images"]] == [img.shape[:2] for img, _, _ in images]
    assert [c["id"] for c in gt["categories"]] == list(range(10))  # category ids 5.. mapped to class positions
    for i, (_, boxes, classes) in enumerate(images):
        anns = [a for a in gt["annotations"] if a["image_id"] == i]
        np.testing.assert_allclose([a["bbox"] for a in anns], np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]
                                   if len(boxes) else np.zeros((0, 4)), atol=1e-9)
        assert [a["category_id"] for a in anns] == classes.tolist()
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    COCO(str(path))  # pycocotools loads it
    preds = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
             for a in gt["annotations"]]
    s = coco_map(path, preds)
    assert s.map == pytest.approx(100.0) and s.images == len(images) and s.instances == len(gt["annotations"]) > 5
    moved = [{**p, "bbox": [p["bbox"][0] + 0.3 * p["bbox"][2], *p["bbox"][1:]]} for p in preds]
    assert coco_map(path, moved).map < 60.0  # not a constant: misplaced boxes score lower


def test_role_subfolders_are_read_per_role_and_disjoint(tmp_path):
    from edgerep.data.splits import resolve_splits

    root = tmp_path / "roles"
    write_yolo(root / "calib", _images(3, "calib"))
    write_yolo(root / "val", _images(3, "val"))
    write_yolo(root / "test", _images(4, "test"))
    s = resolve_splits(data=str(root), meta=meta())
    ids = s.ids()
    assert [len(ids[r]) for r in ("calibration", "selection", "test")] == [3, 3, 4]
    assert all(i.startswith("test/") for i in ids["test"]) and all(i.startswith("calib/") for i in ids["calibration"])
    assert s.test.task == "detect" and len(s.test.coco()["images"]) == 4


def test_an_unsplit_folder_is_cut_deterministically_and_the_test_role_has_its_own_ground_truth(tmp_path):
    pytest.importorskip("pycocotools")
    from edgerep.bench.detect_metrics import coco_map
    from edgerep.data.splits import resolve_splits

    images = _images(15, "val")
    root = write_coco(tmp_path / "all", images)
    s = resolve_splits(data=str(root), meta=meta())
    ids = s.ids()
    roles = [set(ids[r]) for r in ("calibration", "selection", "test")]
    assert sum(len(r) for r in roles) == 15 and not (roles[0] & roles[1] or roles[0] & roles[2] or roles[1] & roles[2])
    assert ids == resolve_splits(data=str(root), meta=meta()).ids()  # deterministic
    test = s.test
    gt = test.coco()
    assert [im["file_name"] for im in gt["images"]] == ids["test"] and [im["id"] for im in gt["images"]] == list(range(len(test)))
    whole = open_dataset(root, meta=meta())
    _, ys = _all(test)
    for k, (sid, y) in enumerate(zip(ids["test"], ys)):
        i = whole.sample_ids().index(sid)
        np.testing.assert_array_equal(y["boxes"], whole.targets()[i]["boxes"])
        np.testing.assert_allclose(test.to_original(k, y["boxes"]), images[i][1], atol=1e-3)
        anns = [a for a in gt["annotations"] if a["image_id"] == k]
        np.testing.assert_allclose([a["bbox"][:2] for a in anns], images[i][1][:, :2].reshape(-1, 2), atol=1e-9)
    preds = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
             for a in gt["annotations"]]
    assert coco_map(gt, preds).map == pytest.approx(100.0)


def test_yolo_names_from_data_yaml_and_model_class_order(tmp_path):
    pytest.importorskip("yaml")
    root = write_yolo(tmp_path / "y", _images(2))
    (root / "classes.txt").unlink()
    (root / "data.yaml").write_text("names:\n" + "".join(f"  {k}: '{n}'\n" for k, n in enumerate(NAMES)))
    m = meta()
    m.class_names = list(reversed(NAMES))  # the model's order wins: file class c is model class 9 - c
    ds = open_dataset(root, meta=m)
    _, ys = _all(ds)
    np.testing.assert_array_equal(ys[0]["classes"], 9 - _images(1)[0][2])


@pytest.mark.parametrize("line, match", [("12 0.5 0.5 0.1 0.1", "class 12 is not in classes.txt"),
                                         ("3 0.5 0.5 0.1", "got 3 values"), ("x 0.5 0.5 0.1 0.1", r"im000.txt:1")])
def test_a_bad_yolo_line_names_its_file_and_line(tmp_path, line, match):
    root = write_yolo(tmp_path / "y", _images(1))
    (root / "labels" / "im000.txt").write_text(line + "\n")
    with pytest.raises(DataError, match=match):
        open_dataset(root, meta=meta())


def test_a_centre_crop_is_refused_for_detection_and_letterbox_is_a_valid_rule(tmp_path):
    root = write_coco(tmp_path / "c", _images(1))
    with pytest.raises(DataError, match="centre crop"):
        open_dataset(root, meta=meta("shorter:160"))
    check_resize("letterbox:640")
    for bad in ("letterbox:0", "letterbox:", "letterbox:x"):
        with pytest.raises(DataError):
            check_resize(bad)


def test_preprocess_letterbox_pads_arrays_as_folders_do(tmp_path):
    """The array path (scenes, digits, .npz) letterboxes like the image readers: same geometry, grey 114."""
    pre = Preprocess((3, 160, 160), (0.0,) * 3, (1.0,) * 3, resize="letterbox:160")
    x = np.random.default_rng(0).random((2, 3, 80, 120), dtype=np.float32)
    out = pre.resize_batch(x)
    assert out.shape == (2, 3, 160, 160)
    # 80 x 120 -> 107 x 160, top pad (160 - 107) // 2 = 26
    np.testing.assert_array_equal(out[:, :, :26], np.float32(LETTERBOX_PAD / 255.0))
    np.testing.assert_array_equal(out[:, :, 26 + 107:], np.float32(LETTERBOX_PAD / 255.0))
    assert np.abs(out[:, :, 26:26 + 107] - np.float32(LETTERBOX_PAD / 255.0)).max() > 0.3


def test_class_folders_letterbox_too(tmp_path):
    """Sibling: the classification folder reader does not stretch an image under letterbox:N."""
    from PIL import Image

    (tmp_path / "cls" / "a").mkdir(parents=True)
    Image.fromarray(np.full((40, 80, 3), 250, np.uint8)).save(tmp_path / "cls" / "a" / "x.png")
    m = CheckpointMeta(arch="x", input_shape=(3, 32, 32), mean=(0.0,) * 3, std=(1.0,) * 3, resize="letterbox:32",
                       class_names=["a"])
    x, _ = next(iter(open_dataset(tmp_path / "cls", meta=m).batches(1)))
    np.testing.assert_allclose(x[0, :, :8], LETTERBOX_PAD / 255.0, atol=1e-6)  # 40 x 80 -> 16 x 32, 8 grey rows
    np.testing.assert_allclose(x[0, :, 8:24], 250 / 255.0, atol=1e-6)
