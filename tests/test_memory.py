"""Scoring batches are bounded by the bytes of their input, so a deploy's memory does not grow with
the input size; the digits demo keeps its batch of 64 (its numbers do not change)."""
from __future__ import annotations

import numpy as np

from edgerep.memory import BATCH_BYTES, batch_for, x_shape
from edgerep.quant.calibrate import ArrayDataset


def test_batches_are_bounded_by_bytes():
    assert batch_for((1, 16, 16)) == 64  # the digits demo: unchanged
    assert batch_for((3, 224, 224)) == BATCH_BYTES // (3 * 224 * 224 * 4) == 13
    assert batch_for((3, 640, 640)) == 1
    assert batch_for((3, 4096, 4096)) == 1  # never 0
    assert batch_for((3, 32, 32), cap=32) == 32


def test_a_data_sets_sample_shape_from_its_preprocessing_or_its_first_sample():
    ds = ArrayDataset(np.zeros((5, 3, 7, 9), np.float32))
    assert x_shape(ds) == (3, 7, 9)

    from edgerep.data import open_dataset

    digits = open_dataset("digits", split="test")
    assert x_shape(digits) == tuple(digits.pre.input_shape)


def test_evaluation_at_224_runs_bounded_batches(tmp_path):
    """A real onnxruntime engine on 3x224x224 inputs is scored in 13-image batches, not 64."""
    import torch
    from torch import nn

    from edgerep.bench import entry
    from edgerep.engines.onnxruntime_engine import OrtEngine
    from edgerep.quant.export import export_onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
    export_onnx(net, tmp_path / "m.onnx", (3, 224, 224), dynamic_batch=True)
    eng = OrtEngine(tmp_path / "m.onnx")
    seen, run = [], eng.run
    eng.run = lambda x: (seen.append(len(x)), run(x))[1]
    x = np.random.default_rng(0).standard_normal((30, 3, 224, 224)).astype(np.float32)
    ds = ArrayDataset(x, np.zeros(30, np.int64))
    ref = net(torch.from_numpy(x)).detach().numpy()
    out = entry.engine_accuracy(eng, ds, eval_limit=None, labels=np.zeros(30, np.int64), reference=ref,
                                ref_accuracy=None)
    assert seen == [13, 13, 4]
    assert out["accuracy"]["samples"] == 30


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024.0 for line in f if line.startswith("VmRSS"))


def test_freed_heap_memory_goes_back_to_the_os():
    """Freed heap blocks below the top of glibc's heap stay resident until ``release_freed`` (issue 23's peak
    RSS: the check's freed tensors were still resident while quantize ran)."""
    import sys

    import pytest

    from edgerep.memory import release_freed

    if not sys.platform.startswith("linux"):
        pytest.skip("malloc_trim is glibc's")
    blocks = [np.ones(8000, dtype=np.float64) for _ in range(3000)]  # 64 KB each, on the heap: 187 MiB
    del blocks[:-1]  # the last block stays: the heap's top is in use, free() cannot shrink it
    before = _rss_mib()
    assert release_freed()
    assert before - _rss_mib() > 100, (before, _rss_mib())


def test_each_stage_hands_its_freed_memory_back(monkeypatch):
    import edgerep.memory as memory
    from edgerep.stage_graph import Stage, StageClock, run_stage

    calls = []
    monkeypatch.setattr(memory, "release_freed", lambda: calls.append(1) or True)
    stage = Stage("s", lambda: type("Out", (), {"summary": lambda self: "done"})(), "s_out", False, "starting")
    results: dict = {}
    run_stage(stage, results, lambda *_a: None, StageClock())
    assert calls == [1] and results["s_out"] is not None
