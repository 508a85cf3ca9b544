"""Calibration: streaming, the four methods, and the JSON cache keyed by model + data + method + settings."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from edgerep.errors import EdgerepError
from edgerep.quant.calibrate import ArrayDataset, _Stats, calibrate
from edgerep.quant.export import export_onnx


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 1), nn.Flatten(), nn.Linear(64, 3)).eval()
    p = tmp_path_factory.mktemp("cal") / "m.onnx"
    export_onnx(m, p, (2, 4, 4))
    return m, p


def _data(seed=0, n=96):
    x = np.random.default_rng(seed).standard_normal((n, 2, 4, 4)).astype(np.float32)
    x[3, 0, 1, 1] = 25.0  # one outlier the clipping methods should ignore
    return ArrayDataset(x, name=f"rand{seed}")


def test_minmax_is_exact_and_streaming_does_not_matter(model_path):
    _, path = model_path
    ds = _data()
    a = calibrate(path, ds, method="minmax", batch_size=7)
    b = calibrate(path, ds, method="minmax", batch_size=96)
    assert a.ranges.keys() == b.ranges.keys() and "input" in a.ranges
    for k in a.ranges:
        np.testing.assert_allclose(a.ranges[k], b.ranges[k], rtol=1e-6)
    assert a.ranges["input"] == pytest.approx((float(ds.x.min()), 25.0))
    assert a.samples == 96
    assert len(a.channel_means["input"]) == 2
    np.testing.assert_allclose(a.channel_means["input"], ds.x.mean(axis=(0, 2, 3)), atol=1e-5)


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_clipping_methods_cut_the_outlier(model_path, method):
    _, path = model_path
    ds = _data()
    mm = calibrate(path, ds, method="minmax")
    r = calibrate(path, ds, method=method, percentile=99.9)  # 1 outlier in 3072 values
    lo, hi = r.ranges["input"]
    assert hi < 0.9 * mm.ranges["input"][1]  # the single 25.0 does not set the range
    assert hi > 2.0  # but the gaussian bulk is kept
    assert lo >= mm.ranges["input"][0] - 1e-6


def test_mse_keeps_a_costly_outlier_but_never_widens(model_path):
    # one 25.0 among 3072 N(0,1) values: clipping it to ~4 costs more squared error than the
    # coarser rounding, so the MSE-optimal range keeps it (percentile/entropy cut it blindly)
    _, path = model_path
    mm = calibrate(path, _data(), method="minmax")
    r = calibrate(path, _data(), method="mse")
    for k, (lo, hi) in r.ranges.items():
        assert mm.ranges[k][0] - 1e-6 <= lo <= hi <= mm.ranges[k][1] + 1e-6
    assert r.ranges["input"][1] > 20


def test_mse_threshold_beats_minmax_on_heavy_tails():
    rng = np.random.default_rng(0)
    s = _Stats()
    for _ in range(4):
        s.update(rng.laplace(size=(64, 8, 4, 4)).astype(np.float32))
    t = s.mse_threshold()
    amax = max(-s.lo, s.hi)
    assert 0.2 * amax < t < amax
    # its expected error really is lower than min-max's (measured, not the histogram's estimate)
    x = rng.laplace(size=200_000)

    def err(th):
        q = np.clip(np.round(x / (th / 127)), -127, 127) * (th / 127)
        return np.mean((x - q) ** 2)

    assert err(t) < err(amax)


def test_cache_hit_miss_and_keys(model_path, tmp_path):
    _, path = model_path
    ds = _data()
    first = calibrate(path, ds, method="mse", cache_dir=tmp_path)
    assert not first.was_cached and first.cache_path and (tmp_path / first.cache_path.split("/")[-1]).is_file()
    again = calibrate(path, ds, method="mse", cache_dir=tmp_path)
    assert again.was_cached and again.key == first.key and again.ranges == first.ranges
    other_data = calibrate(path, _data(seed=1), method="mse", cache_dir=tmp_path)
    other_method = calibrate(path, ds, method="minmax", cache_dir=tmp_path)
    other_settings = calibrate(path, ds, method="mse", cache_dir=tmp_path, limit=32)
    keys = {first.key, other_data.key, other_method.key, other_settings.key}
    assert len(keys) == 4 and not any(r.was_cached for r in (other_data, other_method, other_settings))
    # a cache whose key does not match its name is ignored, not trusted
    d = json.loads(open(first.cache_path).read())
    d["key"] = "0" * 32
    d["ranges"]["input"] = [0.0, 0.001]
    open(first.cache_path, "w").write(json.dumps(d))
    redo = calibrate(path, ds, method="mse", cache_dir=tmp_path)
    assert not redo.was_cached and redo.ranges["input"] == first.ranges["input"]


def test_bad_inputs(model_path, tmp_path):
    _, path = model_path
    with pytest.raises(EdgerepError, match="method"):
        calibrate(path, _data(), method="kl")
    with pytest.raises(EdgerepError, match="not found"):
        calibrate(tmp_path / "none.onnx", _data())
    with pytest.raises(EdgerepError, match="no samples"):
        calibrate(path, ArrayDataset(np.zeros((0, 2, 4, 4), np.float32)))
