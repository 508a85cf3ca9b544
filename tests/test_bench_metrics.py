"""Latency statistics and accuracy / fidelity metrics against direct computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgerep.bench import metrics
from edgerep.bench.accuracy import score
from edgerep.bench.latency import percentile


def test_percentile_matches_trtexec_rule():
    t = np.arange(1, 101, dtype=float)  # 1..100 ms
    assert percentile(t, 50) == 50.0
    assert percentile(t, 90) == 90.0
    assert percentile(t, 99) == 99.0
    assert percentile(np.array([5.0]), 99) == 5.0


@given(st.lists(st.floats(0.01, 1000), min_size=1, max_size=200))
def test_percentiles_are_ordered_samples(ts):
    t = np.sort(np.asarray(ts))
    p = [percentile(t, q) for q in (50, 90, 99)]
    assert t[0] <= p[0] <= p[1] <= p[2] <= t[-1] and all(v in t for v in p)


def test_topk_and_agreement():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 2])
    assert metrics.topk_correct(logits, labels, 1) == 2
    assert metrics.topk_correct(logits, labels, 2) == 3
    assert metrics.argmax_agreement(logits, logits[:, [0, 1, 2]]) == 1.0


def test_sqnr_and_cosine_direct():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((16, 10))
    noise = 0.01 * rng.standard_normal((16, 10))
    expected = 10 * math.log10((ref ** 2).sum() / (noise ** 2).sum())
    assert metrics.sqnr_db(ref, ref + noise) == pytest.approx(expected)
    assert metrics.sqnr_db(ref, ref) == math.inf
    assert metrics.cosine(ref, 3 * ref) == pytest.approx(1.0)
    assert metrics.cosine(ref, -ref) == pytest.approx(-1.0)


def test_score_with_and_without_labels():
    ref = np.eye(4, dtype=np.float32)
    out = ref.copy()
    out[3] = [1, 0, 0, 0]  # one wrong
    r = score(out, np.arange(4), ref)
    assert r.top1 == 75.0 and r.correct == 3 and r.fidelity.top1_agreement == 75.0 and r.samples == 4
    assert (r.task, r.metric, r.unit, r.vs) == ("classify", "top1", "%", "labels")
    r = score(out, None, ref, user_metric=lambda o, y, rf: {"l1": float(np.abs(o - rf).sum())})
    assert r.top1 is None and r.user == {"l1": 2.0}
    # without labels the metric is what is measured then: agreement with the reference, and it says so
    assert (r.metric, r.unit, r.vs, r.value, r.correct) == ("top1_agreement", "%", "unfolded fp32", 75.0, 3)
    assert r.fidelity.sqnr_db is not None


def test_top1_ties_are_broken_like_argmax_never_in_the_models_favour():
    """INT8 logits tie exactly; a tie between the label and a lower class index is not a hit."""
    logits = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 3.0, 3.0]], dtype=np.float32)
    labels = np.array([1, 2, 2])
    assert metrics.topk_correct(logits, labels, 1) == int((logits.argmax(1) == labels).sum()) == 0
    assert metrics.topk_correct(logits, labels, 2) == 2  # rows 0 and 1 (row 2: classes 0, 1 come first)
