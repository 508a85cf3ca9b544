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
