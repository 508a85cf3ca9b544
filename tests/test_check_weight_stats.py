"""Fake INT8 quantization and folded-weight statistics of ``edgerep check`` against numpy."""
from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from edgerep.quant.weight_stats import fake_quant, quant_noise, quantize_weight, sqnr_db, weight_stats


def np_quant(w: np.ndarray, amax) -> np.ndarray:
    s = np.where(np.asarray(amax) > 0, np.asarray(amax) / 127.0, 1.0)
    return np.clip(np.round(w / s), -127, 127) * s


def np_sqnr(ref: np.ndarray, q: np.ndarray) -> float:
    ref, q = ref.astype(np.float64), q.astype(np.float64)
    return 10 * math.log10(float((ref ** 2).sum()) / float(((ref - q) ** 2).sum()))


@given(st.integers(1, 6), st.integers(1, 40), st.floats(0.01, 100.0), st.integers(0, 10_000))
def test_fake_quant_is_symmetric_127_levels_with_half_step_error(out_ch, per, scale, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_ch, per, generator=g, dtype=torch.float64) * scale
    for per_channel in (False, True):
        q = quantize_weight(w, per_channel)
        amax = w.abs().amax(dim=1, keepdim=True) if per_channel else w.abs().max()
        step = amax / 127
        # every value is an integer multiple of the step, within +-127 steps, and at most half a step away
        k = q / step
        assert torch.allclose(k, k.round(), atol=1e-6)
        assert k.abs().max() <= 127 + 1e-6
        assert ((q - w).abs() <= step / 2 + 1e-12).all()
        # the range end is representable exactly
        assert torch.isclose(q.abs().max(), w.abs().max())
    a = w.abs().max()
    assert torch.allclose(quant_noise(w, a), fake_quant(w, a) - w, atol=1e-12)


def test_weight_sqnr_matches_numpy_per_tensor_and_per_channel():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(24, 16, 3, 3, generator=g) * 0.1
    w[5, 3, 1, 1] = 30.0  # one huge centre tap, as an identity-BN branch makes
    st_ = weight_stats(w)
    wn = w.numpy().astype(np.float64)
    pt = np_sqnr(wn, np_quant(wn, np.abs(wn).max()))
    rows = wn.reshape(24, -1)
    pc = np_sqnr(rows, np_quant(rows, np.abs(rows).max(axis=1, keepdims=True)))
    assert abs(st_.sqnr_per_tensor_db - pt) < 0.01
    assert abs(st_.sqnr_per_channel_db - pc) < 0.01
    # the outlier channel dominates the range: spread and per-tensor damage both show it
    assert st_.channel_spread > 20
    assert st_.sqnr_per_channel_db > st_.sqnr_per_tensor_db + 10
    med = sorted(np_sqnr(r, np_quant(r, np.abs(wn).max())) for r in rows)[(24 - 1) // 2]
    assert abs(st_.sqnr_per_tensor_median_channel_db - med) < 0.01
    assert st_.sqnr_per_tensor_median_channel_db < 10  # ordinary channels keep almost nothing
    # descriptive statistics
    flat = wn.reshape(-1)
    c = flat - flat.mean()
    assert math.isclose(st_.std, flat.std(), rel_tol=1e-5)
    assert math.isclose(st_.kurtosis, (c ** 4).mean() / flat.var() ** 2 - 3, rel_tol=1e-4)
    assert math.isclose(st_.beyond_k_sigma, float((np.abs(c) > 3 * flat.std()).mean()), abs_tol=1e-9)
    assert sum(st_.histogram["counts"]) == w.numel()


def test_gaussian_weights_reach_the_textbook_8bit_sqnr():
    w = torch.randn(64, 64, 3, 3, generator=torch.Generator().manual_seed(0))
    st_ = weight_stats(w)
    # 127 levels over a ~4.5 sigma range: 20 log10(127 / 4.5) + 10 log10(12) ~ 39.8 dB
    assert 36 < st_.sqnr_per_tensor_db < 42
    assert st_.channel_spread < 1.5
    assert abs(st_.kurtosis) < 0.2


def test_sqnr_of_exact_and_zero_tensors():
    x = torch.arange(-127, 128, dtype=torch.float32) / 127  # exactly on the grid: only float rounding left
    assert sqnr_db(x, fake_quant(x, 1.0)) > 120
    assert sqnr_db(x, x) == math.inf
    z = torch.zeros(4, 3)
    assert torch.equal(quantize_weight(z, True), z)
    st_ = weight_stats(torch.zeros(3, 2, 1, 1))
    assert st_.absmax == 0.0


@given(st.lists(st.integers(1, 300), min_size=1, max_size=5), st.sampled_from([90.0, 99.0, 99.9, 99.99, 100.0]),
       st.integers(0, 10_000))
def test_streamed_percentile_equals_numpy(batch_sizes, p, seed):
    """The percentile kept from the largest values per batch is numpy's, however the data is split."""
    from edgerep.quant.sensitivity import _TopK

    g = np.random.default_rng(seed)
    chunks = [np.abs(g.standard_t(3, size=n)).astype(np.float32) for n in batch_sizes]
    total = sum(batch_sizes)
    top = _TopK(p)
    for c in chunks:
        top.add(torch.from_numpy(c), total)
    expected = float(np.percentile(np.concatenate(chunks).astype(np.float64), p))
    assert math.isclose(top.percentile(total), expected, rel_tol=1e-5, abs_tol=1e-6)
