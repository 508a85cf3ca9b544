"""The check's report kept on disk (``edgerep.check_cache``): read back whole, nested types, NaN and infinity
included, only under the key it was written with."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from edgerep import check_cache

CKPT = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repvgg_digits.pt"


@pytest.fixture(scope="module")
def report():
    from edgerep.checkpoint import load_checkpoint
    from edgerep.data import open_dataset
    from edgerep.quant.check import check_model

    ck = load_checkpoint(CKPT)
    calib = list(open_dataset("digits", split="calib", meta=ck.meta).batches(16, 32))
    evals = list(open_dataset("digits", split="test", meta=ck.meta).batches(16, 16))
    return check_model(ck.model, example_input=ck.example_input(2), calib_batches=calib, eval_batches=evals)


def test_a_report_reads_back_whole_under_its_key_only(report, tmp_path):
    from edgerep.quant.check import CheckReport
    from edgerep.quant.weight_stats import WeightStats

    rep = dataclasses.replace(report, layers=list(report.layers))
    first = rep.layers[0]
    rep.layers[0] = dataclasses.replace(first, weight=dataclasses.replace(
        first.weight, sqnr_per_tensor_db=math.inf, sqnr_worst_channel_db=math.nan))  # an exact tensor, a dead one
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "check_sqnr.png").write_bytes(b"\x89PNG one")
    (plots / "check_weights_0.png").write_bytes(b"\x89PNG two")
    (plots / "other.txt").write_text("not a plot")
    cache = tmp_path / "cache"
    assert check_cache.save(cache, "k1", rep, plots) is not None

    back = check_cache.load(cache, "k1", tmp_path / "out")
    assert isinstance(back, CheckReport) and isinstance(back.layers[0].weight, WeightStats)
    assert back.to_dict() == rep.to_dict() and back.timings == rep.timings
    w = back.layers[0].weight
    assert w.sqnr_per_tensor_db == math.inf and math.isnan(w.sqnr_worst_channel_db)
    assert w.channel_absmax == first.weight.channel_absmax  # what the plots draw, left out of to_dict
    assert dataclasses.asdict(back.layers[1]) == dataclasses.asdict(rep.layers[1])
    assert {f.name: f.read_bytes() for f in (tmp_path / "out").iterdir()} == {
        "check_sqnr.png": b"\x89PNG one", "check_weights_0.png": b"\x89PNG two"}

    assert check_cache.load(cache, "k2", tmp_path / "none") is None  # another key: nothing
    assert not (tmp_path / "none").exists()
    path = next(cache.glob("check-*.json"))
    text = path.read_text()
    path.write_text(text.replace(check_cache.FORMAT, "edgerep.check-cache/0"))  # another format: not read
    assert check_cache.load(cache, "k1", tmp_path / "old") is None
    path.write_text(text[:100])  # torn
    assert check_cache.load(cache, "k1", tmp_path / "torn") is None


def test_the_key_covers_model_inputs_evaluation_set_and_settings():
    x = [torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)]
    base = check_cache.check_key("model", x, "sel|16", {"eval_limit": 16})
    assert base == check_cache.check_key("model", [t.clone() for t in x], "sel|16", {"eval_limit": 16})
    changed = [x[0], x[1].clone()]
    changed[1][0, 0, 0, 0] = 2.0
    others = [check_cache.check_key("other model", x, "sel|16", {"eval_limit": 16}),
              check_cache.check_key("model", changed, "sel|16", {"eval_limit": 16}),
              check_cache.check_key("model", [torch.cat(x)], "sel|16", {"eval_limit": 16}),  # other batches
              check_cache.check_key("model", x, "sel|32", {"eval_limit": 16}),
              check_cache.check_key("model", x, None, {"eval_limit": 16}),
              check_cache.check_key("model", x, "sel|16", {"eval_limit": 32}),
              check_cache.check_key("model", [t.numpy() for t in x[:1]], "sel|16", {"eval_limit": 16})]
    assert len({base, *others}) == 1 + len(others)
    assert check_cache.check_key("model", [t.numpy() for t in x], "sel|16", {"eval_limit": 16}) == base
    y = np.array([1, 2])
    labelled = check_cache.arrays_digest([x[0], y])
    assert labelled != check_cache.arrays_digest([x[0], np.array([1, 3])])  # other labels
    assert labelled != check_cache.arrays_digest([x[0], None]) != check_cache.arrays_digest([x[0]])


def test_deploy_keys_the_check_on_the_evaluation_batches_it_would_read():
    """Two selection sets with the same size and settings but other images, or other labels, are other keys."""
    from torch import nn

    from edgerep.pipeline import CheckCache, _check_cache_key
    from edgerep.quant.check import CheckOptions

    class Images:
        def __init__(self, x, y):
            self.x, self.y = x, y

        def batches(self, batch, limit=None):
            n = len(self.x) if limit is None else min(limit, len(self.x))
            for i in range(0, n, batch):
                yield self.x[i:i + batch], self.y[i:i + batch]

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 1, 4, 4)).astype(np.float32), np.arange(20) % 3
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()).eval()
    cache = CheckCache(Path("unused"), "sha", lambda msg: None)
    calib = [torch.zeros(4, 1, 4, 4)]

    def key(sel):
        return _check_cache_key(cache, model, torch.zeros(2, 1, 4, 4), None, calib, sel, 8, CheckOptions())

    base = key(Images(x, y))
    assert base == key(Images(x.copy(), y.copy()))
    other = x.copy()
    other[3, 0, 0, 0] += 1.0
    past = x.copy()
    past[-1] += 1.0  # beyond the check's evaluation limit (16): not read, not in the key
    assert len({base, key(Images(other, y)), key(Images(x, (y + 1) % 3))}) == 3
    assert key(Images(past, y)) == base and CheckOptions().eval_limit == 16
    assert _check_cache_key(None, model, torch.zeros(2, 1, 4, 4), None, calib, Images(x, y), 8, CheckOptions()) is None
