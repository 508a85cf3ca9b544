"""The built-in ``scenes`` detection set: deterministic, roles share no background region and no digit
image, boxes are the exact ink boxes, COCO ground truth matches the targets."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from edgerep.data import scenes as S
from edgerep.data.base import Dataset, Subset
from edgerep.data.digits import _raw

N = 120  # scenes per split the tests look at


@pytest.fixture(scope="module")
def windows() -> dict[str, list[tuple]]:
    return {s: [S.background_window(s, i) for i in range(S.SIZES[s])] for s in S.SPLITS}


def test_scenes_are_deterministic_and_differ_across_splits():
    a, b = S.ScenesDataset("val", n=8), S.ScenesDataset("val", n=8)
    xa, ta = next(a.batches(8))
    xb, tb = next(b.batches(8))
    assert np.array_equal(xa, xb) and a.fingerprint() == b.fingerprint()
    assert all(np.array_equal(p["boxes"], q["boxes"]) and np.array_equal(p["classes"], q["classes"])
               for p, q in zip(ta, tb))
    assert S.ScenesDataset("test", n=8).fingerprint() != a.fingerprint()
    assert xa.shape == (8, 3, 160, 160) and xa.dtype == np.float32 and 0 <= xa.min() and xa.max() <= 1


def test_no_background_region_is_in_two_roles(windows):
    """Every crop lies inside one of its role's tiles, inside the photo; no two roles' tiles overlap."""
    for split, ws in windows.items():
        role_tiles = S.tiles()[split]
        for name, top, left, side, _, _ in ws:
            assert any(name == p and t <= top and top + side <= t + S.TILE[0] and l <= left
                       and left + side <= l + S.TILE[1] for p, t, l in role_tiles), (split, name, top, left, side)
            assert top + side <= S._photo(name).shape[0] and left + side <= S._photo(name).shape[1]
    for a, b in itertools.combinations(S.SPLITS, 2):
        for pa, ta, la in S.tiles()[a]:
            for pb, tb, lb in S.tiles()[b]:
                assert pa != pb or ta + S.TILE[0] <= tb or tb + S.TILE[0] <= ta or la + S.TILE[1] <= lb \
                    or lb + S.TILE[1] <= la, f"{a} and {b} share pixels of {pa}"


def test_every_role_draws_from_both_photos_with_colour_statistics_like_trains(windows):
    """Roles are alike (version 1 gave calib a brighter photo region and val / test another photo: the demo
    detector's input-statistics gate failed on its own calibration split): every role uses both photos, and
    each channel's mean over 64 backgrounds is within 0.5 of train's standard deviation of train's."""
    assert all({w[0] for w in ws} == set(S.PHOTOS) for ws in windows.values())
    stats = {}
    for split in S.SPLITS:
        b = np.stack([S.background(split, i) for i in range(64)])
        stats[split] = (b.mean((0, 1, 2)), b.std((0, 1, 2)))
    mu_train, sd_train = stats["train"]
    for split in ("calib", "val", "test"):
        shift = np.abs(stats[split][0] - mu_train) / sd_train
        assert shift.max() < 0.5, (split, shift)


def test_no_digit_image_is_an_object_in_two_roles():
    used = {s: {o.digit for i in range(S.SIZES[s]) for o in S.layout(s, i)} for s in S.SPLITS}
    for a, b in itertools.combinations(S.SPLITS, 2):
        assert not used[a] & used[b], f"{a} and {b} paste the same digit images"
    # and no rendered scene occurs in two roles
    digests = {s: set(S.ScenesDataset(s, n=40).sample_digests()) for s in S.SPLITS}
    assert all(not digests[a] & digests[b] for a, b in itertools.combinations(S.SPLITS, 2))


def test_objects_counts_sizes_and_classes_are_as_documented():
    objs = [S.layout("train", i) for i in range(400)]
    counts = [len(o) for o in objs]
    assert min(counts) == 1 and max(counts) == 6
    sizes = [o.size for os_ in objs for o in os_]
    assert min(sizes) >= 12 and max(sizes) <= 48 and max(sizes) - min(sizes) > 30
    labels = _raw()[1]
    assert all(o.label == labels[o.digit] for os_ in objs for o in os_)
    assert set(o.label for os_ in objs for o in os_) == set(range(10))
    # partial overlap happens, full cover never
    overlaps = [S._iou_cover(a.box, b.box) for os_ in objs for a, b in itertools.combinations(os_, 2)]
    assert any(iou > 0 for iou, _ in overlaps)
    assert all(iou <= 0.3 for iou, _ in overlaps)


def test_boxes_are_the_tight_ink_boxes_of_what_was_pasted():
    for i in range(N):
        img, objs = S.render("test", i)
        bg = np.round(S.background("test", i)).astype(np.uint8).transpose(2, 0, 1)
        changed = (img != bg).any(0)
        pasted = np.zeros_like(changed)
        for o in objs:
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 160
            ink = S._patch(o.digit, o.size) >= S.INK
            # the box edges touch ink; nothing outside the box inside the patch has ink
            local = ink[y1 - o.y:y2 - o.y, x1 - o.x:x2 - o.x]
            assert local[0].any() and local[-1].any() and local[:, 0].any() and local[:, -1].any()
            assert local.sum() == ink.sum()
            pasted[o.y:o.y + o.size, o.x:o.x + o.size] = True
        assert not (changed & ~pasted).any(), "pixels changed outside every pasted patch"


def test_coco_ground_truth_matches_the_targets():
    ds = S.ScenesDataset("test", n=N)
    gt = ds.coco()
    targets = ds.targets()
    assert [im["id"] for im in gt["images"]] == list(range(N))
    assert [im["file_name"] for im in gt["images"]] == ds.sample_ids()
    assert [c["id"] for c in gt["categories"]] == list(range(10))
    assert len(gt["annotations"]) == sum(len(t["classes"]) for t in targets)
    assert len({a["id"] for a in gt["annotations"]}) == len(gt["annotations"])
    by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for i, t in enumerate(targets):
        anns = by_image.get(i, [])
        xywh = np.array([a["bbox"] for a in anns]).reshape(-1, 4)
        assert np.array_equal(np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], t["boxes"])
        assert [a["category_id"] for a in anns] == t["classes"].tolist()
        assert all(a["area"] == a["bbox"][2] * a["bbox"][3] and a["iscrowd"] == 0 for a in anns)
    # the targets batches() yields are the ones targets() lists
    _, tb = next(ds.batches(N))
    assert all(np.array_equal(p["boxes"], q["boxes"]) for p, q in zip(tb, targets))


def test_a_subset_reads_rows_and_keeps_the_detection_task():
    ds = S.ScenesDataset("calib", n=30)
    sub = Subset(ds, np.array([3, 4, 5, 20]), "some")
    x, t = next(sub.batches(10))
    xf, tf = ds._rows(np.array([3, 4, 5, 20]))
    assert np.array_equal(x, xf) and len(t) == 4 and sub.task == "detect" and ds.labels() is None
    assert np.array_equal(t[3]["boxes"], tf[3]["boxes"])
    # the generic run-wise row reader keeps one target dict per image too
    xg, tg = Dataset._read_rows(ds, np.array([3, 4, 5, 20]))
    assert np.array_equal(xg, xf) and isinstance(tg, list) and [len(a["classes"]) for a in tg] == [len(a["classes"]) for a in tf]
    assert sub.sample_ids() == ["scenes/calib/3", "scenes/calib/4", "scenes/calib/5", "scenes/calib/20"]


def test_bad_split_is_a_data_error():
    from edgerep.errors import DataError

    with pytest.raises(DataError, match="splits train, calib, val, test"):
        S.ScenesDataset("holdout")


def test_500_scenes_take_seconds():
    ds = S.ScenesDataset("test")
    next(ds.batches(1))  # photos, digits and imports loaded
    t0 = time.process_time()  # CPU seconds: the shared CI box's wall time would measure neighbours
    n = sum(len(x) for x, _ in ds.batches(100))
    assert n == 500 and time.process_time() - t0 < 15.0
