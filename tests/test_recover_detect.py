"""The recovery ladder on a detector (issue 26, "works for every task"): QAT's interpreter runs a detector's neck and
decode tail (nearest upsampling, box decode, sigmoid) exactly, its loss weighs box pixels and class scores alike,
the CPU file's learning fake-quantizes activations on that file's own grid, and on a tiny detector the ladder
meets a budget PTQ misses with every layer INT8."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detect_helpers import INPUT, tiny_detector
from edgerep.quant.calibrate import ArrayDataset


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    from edgerep.data.base import Preprocess
    from edgerep.data.scenes import ScenesDataset
    from edgerep.fold.model import fold_model
    from edgerep.quant.export import export_onnx

    d = tmp_path_factory.mktemp("det")
    model = tiny_detector()
    path = d / "det.onnx"
    export_onnx(fold_model(model, torch.randn(2, *INPUT)), path, INPUT, dynamic_batch=True)
    pre = Preprocess(INPUT, (0.0,) * 3, (1.0,) * 3)
    calib = np.concatenate([x for x, _ in ScenesDataset("calib", pre, n=64).batches(32)])
    val = np.concatenate([x for x, _ in ScenesDataset("val", pre, n=32).batches(32)])
    return path, calib, val, d


def test_the_qat_student_runs_a_detector_graph_exactly(det):
    import onnx
    import onnxruntime as ort

    from edgerep.quant.qat import Student

    path, _, val, _ = det
    m = onnx.load(str(path))
    assert {"Resize", "Slice", "Sigmoid", "Sub", "Mul", "Div", "Concat"} <= {n.op_type for n in m.graph.node}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": val[:4]})[0]
    with torch.no_grad():
        got = Student(m, {}, {})(torch.from_numpy(val[:4])).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_a_resize_qat_cannot_run_exactly_is_refused_by_name():
    from edgerep.quant.qat import Unsupported, _resize_nearest

    x = torch.ones(1, 1, 2, 2)
    scales = torch.tensor([1.0, 1.0, 2.0, 2.0])
    ok = {"mode": b"nearest", "coordinate_transformation_mode": b"asymmetric", "nearest_mode": b"floor"}
    assert _resize_nearest([x, None, scales], ok).shape == (1, 1, 4, 4)
    with pytest.raises(Unsupported, match="linear"):
        _resize_nearest([x, None, scales], ok | {"mode": b"linear"})
    with pytest.raises(Unsupported, match="scales"):
        _resize_nearest([x, None, torch.tensor([1.0, 1.0, 1.5, 1.5])], ok)


def test_distillation_weighs_every_output_channel_by_its_spread():
    from edgerep.quant.qat import channel_weights

    rng = np.random.default_rng(0)
    t = np.concatenate([rng.normal(80, 40, (16, 4, 50)), rng.uniform(0, 0.05, (16, 10, 50))], 1).astype(np.float32)
    w = channel_weights(t)
    assert w.shape == (1, 14, 1)
    err = np.concatenate([np.full((16, 4, 50), 4.0), np.full((16, 10, 50), 0.01 ** 2)], 1)  # 2 px, 0.01 score
    per_channel = (w * err).mean((0, 2))
    assert per_channel[4:].mean() > 0.3 * per_channel[:4].mean()  # raw: the scores weighed 1e-4 of the boxes
    assert channel_weights(np.ones(5, np.float32)).tolist() == [1.0]


def test_the_ladder_runs_on_a_detector_and_ships_every_layer_int8(det):
    """The tiny detector scored by the detect task (unlabelled selection: the head tensor's cosine): AdaRound
    meets a budget PTQ misses with every layer INT8; QAT runs on the detector graph; both learn on the CPU file's
    own activation grid (u8 asymmetric for u8s8). The hostile detector's table: benchmarks/recover_ladder_tasks.py."""
    from edgerep.quant.options import CalibrationOptions, JudgeOptions, QuantizeOptions, RecoveryOptions, TargetOptions
    from edgerep.quant.pipeline import quantize_model
    from edgerep.tasks import get_task

    path, calib, val, d = det
    cal, sel = ArrayDataset(calib, name="det:calib"), ArrayDataset(val, name="det:val")

    def run(name: str, max_drop, mode: str = "none", **kw):
        opts = QuantizeOptions(TargetOptions(("cpu",), cpu_policies=("u8s8",)),
                               CalibrationOptions(method="minmax", cache_dir=d / "cache"),
                               JudgeOptions(max_drop=max_drop), recovery=RecoveryOptions(mode, **kw))
        return quantize_model(path, cal, sel, d / name, opts, task=get_task("detect"))

    ptq = run("ptq", None).cpu_policy.drop
    budget = 0.95 * ptq  # AdaRound: 0.386 -> 0.329 with 100 steps per layer
    res = run("adaround", budget, "adaround", iters=50)
    steps = [(s.step, s.met) for s in res.recovery.steps]
    assert steps == [("ptq", False), ("adaround", True)], (ptq, [(s.step, s.drop) for s in res.recovery.steps])
    assert res.excluded_nodes == [] and res.cpu_policy.name == "u8s8+adaround" and res.cpu_policy.drop <= budget
    assert res.recovery.adaround["activations"] == "u8 asymmetric per tensor"
    assert len([r for r in res.recovery.adaround["layers"] if not r["skipped"]]) == 29
    res = run("qat", budget, "qat", qat_steps=10)
    assert [s.step for s in res.recovery.steps][:2] == ["ptq", "qat"]
    assert res.recovery.qat["activations"] == "u8 asymmetric" and res.recovery.qat["layers"] == 29


def test_the_cpu_file_learns_on_the_grid_of_its_most_accurate_learnable_policy():
    from types import SimpleNamespace

    from edgerep.quant.pipeline import _cache_key, _learning_grid
    from edgerep.quant.policy import TENSORRT
    from edgerep.quant.qdq import QdqConfig

    u8s8 = QdqConfig(activation="u8", weight="s8", per_channel=True)
    s8s8 = QdqConfig(activation="s8", weight="s8", per_channel=True)
    w7 = QdqConfig(activation="u8", weight="s8", per_channel=True, reduce_range=True)

    def m(cfg, drop):
        return SimpleNamespace(policy=SimpleNamespace(qdq=cfg), candidate=SimpleNamespace(drop=drop))

    assert _learning_grid([m(u8s8, 0.6), m(s8s8, 1.1), m(w7, 0.2)]) is u8s8  # 7-bit weights are not learnable
    assert _learning_grid([m(u8s8, 0.9), m(s8s8, 0.4)]) is s8s8
    t = SimpleNamespace(tag="")
    assert _cache_key(t, "qat", u8s8) != _cache_key(t, "qat", TENSORRT)  # not shared across grids
    assert _cache_key(t, "qat", TENSORRT) == _cache_key(t, "qat", TENSORRT)


def test_qat_reports_the_grid_it_fake_quantized_with(det, tmp_path):
    from edgerep.quant.calibrate import calibrate
    from edgerep.quant.policy import TENSORRT
    from edgerep.quant.qat import QatOptions, qat_model
    from edgerep.quant.qdq import QdqConfig

    path, calib, _, _ = det
    cal = calibrate(path, ArrayDataset(calib[:32]), method="minmax")
    import onnxruntime as ort

    teacher = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": calib[:32]})[0]
    u8s8 = QdqConfig(activation="u8", weight="s8", per_channel=True)
    for cfg, want in ((u8s8, "u8 asymmetric"), (TENSORRT, "s8 symmetric")):
        r = qat_model(path, tmp_path / "q.onnx", cal, calib[:32], teacher, cfg, options=QatOptions(steps=2))
        assert r.activations == want and r.to_dict()["activations"] == want
