"""Calibration memory is bounded by one run's activations, never by the number of samples (issue 23):
histograms merged chunk by chunk equal the histograms of whole batches, and chunking changes no range."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from onnxruntime.quantization.calibrate import HistogramCollector
from torch import nn

from hypothesis import given
from hypothesis import strategies as st

import edgerep.quant.calibrate as calibrate_mod
from edgerep.quant.calibrate import _MAX_BINS, ArrayDataset, _AbsHistogram, _Stats, bin_counts, calibrate_many
from edgerep.quant.export import export_onnx

AUTO = ("mse", "percentile", "minmax")


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """Activations of ~6 KB per sample: the data set, not the model, dominates memory when kept."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    p = tmp_path_factory.mktemp("stream") / "wide.onnx"
    export_onnx(m, p, (3, 8, 8))
    return p


def _batches(rng, n_batches, shape=(4, 3, 5, 5)):
    """Batches whose |x| maximum grows, with a value exactly at an earlier maximum (the edge case)."""
    out = []
    for i in range(n_batches):
        a = rng.standard_normal(shape).astype(np.float32) * (1.0 + 0.7 * i)
        if i >= 2:
            a.flat[0] = np.abs(out[0]).max()
        out.append(a)
    return out


@st.composite
def _values_and_edges(draw):
    """Edges as onnxruntime makes them (np.histogram's over a range, extended at a fixed width in float32),
    or arbitrary sorted ones with repeats; values with NaN, infinities and exact edge hits."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    nb = draw(st.integers(1, 300))
    kind = draw(st.sampled_from(["onnxruntime", "extended", "sorted"]))
    if kind == "sorted":
        edges = np.sort(rng.choice(rng.standard_normal(nb + 1), nb + 1)).astype(np.float32)
    else:
        lo, hi = sorted(float(v) for v in np.abs(rng.standard_normal(2)) * 10.0 ** draw(st.integers(-6, 4)))
        edges = np.histogram(np.array([lo, hi], np.float32), bins=nb)[1].astype(np.float32)
        if kind == "extended":
            w = edges[1] - edges[0]
            edges = np.hstack((edges, np.arange(edges[-1] + w, edges[-1] * 3 + w, w))).astype(np.float32)
    x = (rng.standard_normal(draw(st.integers(0, 500))) * float(np.abs(edges).max() + 1)).astype(np.float32)
    if x.size:
        hits = rng.integers(0, x.size, x.size // 3)
        x[hits] = rng.choice(edges, hits.size)
        x[rng.integers(0, x.size, 3)] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), 3)
    return x, edges


@given(_values_and_edges())
def test_bin_counts_are_numpys_histogram_at_those_edges(case):
    x, edges = case
    np.testing.assert_array_equal(bin_counts(x, edges), np.histogram(x, bins=edges)[0])


@given(_values_and_edges(), st.integers(1, 64))
def test_bin_counts_in_blocks_are_numpys_histogram(case, block):
    """Binned a block at a time (issue 23's cost: the temporaries stay in cache), the counts are numpy's."""
    x, edges = case
    before, calibrate_mod.BLOCK = calibrate_mod.BLOCK, block
    try:
        np.testing.assert_array_equal(bin_counts(x, edges), np.histogram(x, bins=edges)[0])
    finally:
        calibrate_mod.BLOCK = before


def _whole_array_hist(batches):
    """_Stats' |x| histogram as the whole-array code made it: floor(|x| / width) in float32, halved per doubling."""
    hist, width = None, 0.0
    for a in batches:
        amax = float(np.abs(a).max())
        if hist is None:
            width, hist = max(amax, 1e-12) / 2048, np.zeros(2048, np.int64)
        idx = (np.abs(a).ravel() / width).astype(np.int64)
        need = int(np.float32(amax) / np.float32(width)) + 1
        while need > _MAX_BINS:
            hist = np.append(hist, 0) if len(hist) % 2 else hist
            hist, width, idx, need = hist.reshape(-1, 2).sum(axis=1), width * 2, idx // 2, (need - 1) // 2 + 1
        hist = np.concatenate([hist, np.zeros(max(0, need - len(hist)), np.int64)])
        hist += np.bincount(idx, minlength=len(hist))
    return hist, width


@pytest.mark.parametrize("block", [1, 7, 1 << 16])
def test_stats_histogram_in_blocks_is_the_whole_array_histogram(block, monkeypatch):
    """Blocks, the int32 route and the shift for coarsened bins give the whole-array histogram, bin for bin
    (later batches up to 100x the first's range: the bins double several times)."""
    monkeypatch.setattr(calibrate_mod, "BLOCK", block)
    rng = np.random.default_rng(11)
    batches = [rng.standard_normal((2, 3, 7, 5)).astype(np.float32) * s for s in (1.0, 3.0, 30.0, 100.0, 0.5)]
    st_ = _Stats()
    for b in batches:
        st_.update(b)
    hist, width = _whole_array_hist(batches)
    assert st_.width == width and len(st_.hist) > 2048
    np.testing.assert_array_equal(st_.hist, hist)


def test_abs_histogram_chunks_equal_onnxruntime_whole_batches():
    rng = np.random.default_rng(3)
    batches = _batches(rng, 5)
    ref = HistogramCollector("percentile", True, 2048, 128, 99.99, "same")
    for b in batches:
        ref.collect({"t": b})
    h = _AbsHistogram(2048)
    for k, b in enumerate(batches):
        parts = np.array_split(b, 3)
        if k == 0:
            for p in parts:
                h.prime(p)
        for p in parts:
            h.update(p)
        h.end_batch()
    r_hist, r_edges, r_lo, r_hi = ref.histogram_dict["t"]
    hist, edges, lo, hi = h.entry()
    assert len(r_edges) > 2049  # later batches extended the bins
    np.testing.assert_array_equal(edges, r_edges)
    np.testing.assert_array_equal(hist, r_hist)
    assert (lo, hi) == (r_lo, r_hi)
    assert not h._pending  # nothing of a batch survives its end


def test_stats_chunks_equal_whole_batches_and_stay_fixed_size():
    rng = np.random.default_rng(5)
    batches = _batches(rng, 40, shape=(8, 3, 6, 6))
    whole, chunked = _Stats(), _Stats()
    sizes = []
    for k, b in enumerate(batches):
        whole.update(b)
        parts = np.array_split(b, 4)
        if k == 0:
            for p in parts:
                chunked.prime(p)
        for p in parts:
            chunked.update(p)
        sizes.append(sum(v.nbytes for v in vars(chunked).values() if isinstance(v, np.ndarray)))
    np.testing.assert_array_equal(chunked.hist, whole.hist)
    assert chunked.width == whole.width and (chunked.lo, chunked.hi) == (whole.lo, whole.hi)
    np.testing.assert_allclose(chunked.channel_means(), whole.channel_means(), rtol=1e-12)
    # the state is bounded by the histogram's cap and the channel sums, whatever the batches seen
    assert max(sizes) <= _MAX_BINS * 8 + 3 * 8, max(sizes)
    assert chunked.hist.size <= _MAX_BINS


def test_chunking_changes_no_range(wide_model):
    x = np.random.default_rng(0).standard_normal((96, 3, 8, 8)).astype(np.float32)
    x[50] *= 4.0  # a later batch beyond the first batch's range
    ds = ArrayDataset(x)
    a = calibrate_many(wide_model, ds, AUTO, batch_size=32, limit=None)
    b = calibrate_many(wide_model, ds, AUTO, batch_size=32, limit=None, run_bytes=1)  # one sample per run
    for m in AUTO:
        assert a[m].ranges == b[m].ranges, m
        assert a[m].channel_means.keys() == b[m].channel_means.keys()
        for k in a[m].channel_means:
            np.testing.assert_allclose(a[m].channel_means[k], b[m].channel_means[k], rtol=1e-12)


def _peak_bytes(model, n: int) -> int:
    x = np.random.default_rng(1).standard_normal((n, 3, 8, 8)).astype(np.float32)

    class Lazy(ArrayDataset):  # yields fresh batches: the data set itself holds nothing
        def batches(self, batch_size, limit=None):
            for i in range(0, n, batch_size):
                yield x[i:i + batch_size].copy(), None

    ds = Lazy(x[:1])
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    calibrate_many(model, ds, AUTO, batch_size=16, limit=None)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def test_calibration_memory_does_not_grow_with_the_samples(wide_model):
    few, many = _peak_bytes(wide_model, 64), _peak_bytes(wide_model, 1024)
    # 16x the samples: kept activations alone would add ~6 MB; the streamed state adds nothing
    assert many < 1.2 * few + 256 * 1024, (few, many)


def test_synthetic_calibration_set_has_the_samples_asked(tmp_path):
    from edgerep.checkpoint import CheckpointMeta
    from edgerep.pipeline import DeployOptions, resolve_calibration, resolve_data

    meta = CheckpointMeta(arch="x", input_shape=(3, 8, 8))
    opts = DeployOptions(checkpoint=tmp_path / "m.pt", data="synthetic", calib_samples=1024)
    splits = resolve_data(opts, meta, resolve_calibration(opts, meta))
    assert len(splits.calibration) == 1024
    assert len(splits.selection) == 256 and len(splits.test) == 256  # only calibration follows --calib-samples
    first = next(iter(splits.calibration.batches(2)))[0]
    assert np.array_equal(first[0], np.random.default_rng([0, 0]).standard_normal((3, 8, 8), dtype=np.float32))
