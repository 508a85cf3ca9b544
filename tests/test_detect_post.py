"""Detection post-processing: class-aware NMS properties, decode of the (N, 4 + C, A) layout, letterbox."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgerep.bench.detect_post import (IOU_THRESHOLD, MAX_DETECTIONS, SCORE_THRESHOLD, box_iou, decode, letterbox,
                                       nms, postprocess)


@st.composite
def box_sets(draw, max_n: int = 60):
    n = draw(st.integers(0, max_n))
    xy = draw(arrays(np.float64, (n, 2), elements=st.floats(0, 100, allow_subnormal=False)))
    wh = draw(arrays(np.float64, (n, 2), elements=st.floats(0.5, 40, allow_subnormal=False)))
    # few distinct scores and clustered boxes, so ties and overlaps are common
    scores = draw(arrays(np.float64, (n,), elements=st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9, 0.95])))
    classes = draw(arrays(np.int64, (n,), elements=st.integers(0, 2)))
    thr = draw(st.sampled_from([0.3, 0.5, IOU_THRESHOLD]))
    cap = draw(st.integers(1, 80))
    return np.c_[xy, xy + wh], scores, classes, thr, cap


@given(box_sets())
def test_nms_keeps_no_overlapping_pair_of_a_class_sorted_and_capped(case):
    boxes, scores, classes, thr, cap = case
    keep = nms(boxes, scores, classes, thr, cap)
    assert len(keep) <= cap and len(set(keep.tolist())) == len(keep)
    assert np.all(np.diff(scores[keep]) <= 0), "not sorted by score"
    iou = box_iou(boxes[keep], boxes[keep])
    same = classes[keep][:, None] == classes[keep][None, :]
    np.fill_diagonal(same, False)
    assert not (iou[same] > thr).any()


@given(box_sets())
def test_nms_drops_a_box_only_for_a_better_box_of_its_own_class(case):
    """Without the cap: every dropped box overlaps a kept box of its class scoring at least as high."""
    boxes, scores, classes, thr, _ = case
    keep = nms(boxes, scores, classes, thr, max_detections=len(scores) + 1)
    dropped = np.setdiff1d(np.arange(len(scores)), keep)
    for d in dropped:
        k = keep[(classes[keep] == classes[d]) & (scores[keep] >= scores[d])]
        assert (box_iou(boxes[d], boxes[k]) > thr).any(), f"box {d} dropped with no same-class suppressor"


def test_nms_keeps_the_same_box_of_two_classes_and_drops_a_duplicate():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0.5, 0, 10, 10], [50, 50, 60, 60]], float)
    keep = nms(boxes, np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 1, 0, 0]))
    assert keep.tolist() == [0, 1, 3]


def test_decode_reads_cxcywh_rows_then_class_scores():
    out = np.zeros((2, 4 + 3, 5), np.float32)
    out[0, :4, 1] = [50, 40, 20, 10]
    out[0, 4 + 2, 1] = 0.8
    out[0, 4 + 0, 1] = 0.0005  # below the 0.001 candidate threshold
    out[1, :4, 4] = [10, 10, 4, 4]
    out[1, 4 + 1, 4] = 0.5
    out[1, 4 + 2, 4] = 0.4  # multi-label: the same anchor is a candidate for two classes
    (b0, s0, c0), (b1, s1, c1) = decode(out)
    assert b0.tolist() == [[40, 35, 60, 45]] and c0.tolist() == [2] and np.allclose(s0, [0.8])
    assert b1.tolist() == [[8, 8, 12, 12]] * 2 and sorted(c1.tolist()) == [1, 2]
    dets = postprocess(out)
    assert [len(d) for d in dets] == [1, 2] and dets[1].classes.tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"\(N, 4 \+ C, anchors\)"):
        decode(np.zeros((1, 4, 10)))


def test_postprocess_defaults_are_the_coco_evaluation_ones():
    assert (SCORE_THRESHOLD, IOU_THRESHOLD, MAX_DETECTIONS) == (0.001, 0.65, 300)
    a = 400
    out = np.zeros((1, 5, a), np.float32)
    out[0, 0] = np.arange(a) * 30.0  # far apart: nothing suppresses anything
    out[0, 1], out[0, 2], out[0, 3] = 10, 8, 8
    out[0, 4] = np.linspace(0.9, 0.002, a)
    (d,) = postprocess(out)
    assert len(d) == 300 and np.allclose(d.scores, out[0, 4, :300])


@given(st.integers(1, 300), st.integers(1, 300), st.integers(8, 320), st.integers(8, 320),
       arrays(np.float64, (5, 4), elements=st.floats(0, 1)))
def test_letterbox_maps_boxes_there_and_back_exactly(h, w, th, tw, frac):
    img = np.zeros((h, w, 3), np.uint8)
    canvas, lb = letterbox(img, (th, tw))
    assert canvas.shape == (th, tw, 3) and canvas.dtype == np.uint8
    x = np.sort(frac[:, [0, 2]], 1) * w
    y = np.sort(frac[:, [1, 3]], 1) * h
    boxes = np.c_[x[:, 0], y[:, 0], x[:, 1], y[:, 1]]
    there = lb.to_input(boxes)
    assert (there[:, [0, 2]] >= lb.pad_x - 1e-9).all() and (there[:, [2]] <= lb.pad_x + lb.scale_x * w + 1e-9).all()
    assert np.allclose(lb.to_original(there), boxes, rtol=0, atol=1e-9)
    assert np.allclose(lb.to_original(there, clip=True), boxes, rtol=0, atol=1e-9)


def test_letterbox_places_the_image_in_the_middle_and_pads_with_grey():
    img = np.full((50, 100, 3), 200, np.uint8)
    canvas, lb = letterbox(img, 160)
    assert (lb.scale_x, lb.scale_y, lb.pad_x, lb.pad_y) == (1.6, 1.6, 0, 40)
    assert (canvas[:40] == 114).all() and (canvas[120:] == 114).all() and (canvas[40:120] == 200).all()
    # a box around the whole image lands on the unpadded band, and comes back
    there = lb.to_input([[0, 0, 100, 50]])
    assert there.tolist() == [[0, 40, 160, 120]] and lb.to_original(there).tolist() == [[0, 0, 100, 50]]
