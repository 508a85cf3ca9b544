"""The recovery ladder on a detector (issue 26, "works for every task"): QAT's interpreter runs a detector's neck and
decode tail (nearest upsampling, box decode, sigmoid) exactly, its loss weighs box pixels and class scores alike,
the CPU file's learning fake-quantizes activations on that file's own grid, and on a tiny detector the ladder
meets a budget PTQ misses with every layer INT8."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detect_helpers import INPUT, tiny_detector

CALIB, SELECTION, QAT_STEPS = 64, 128, 80  # small: the test's cost, not the benchmark's


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
    assert {"Resize", "Gather", "Sigmoid", "Sub", "Mul", "Div", "Concat"} <= {n.op_type for n in m.graph.node}
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


def test_the_ladder_meets_a_budget_ptq_misses_on_the_hostile_detector_with_every_layer_int8(tmp_path):
    """The shipped hostile detector, scored by selection-split mAP: PTQ's drop halved is a budget PTQ misses; QAT
    (learning on the CPU file's u8 grid) must meet it with every layer INT8. Learning under TensorRT's s8 grid,
    or QAT unable to run the decode tail, fails it."""
    from edgerep.checkpoint import load_checkpoint
    from edgerep.data.base import Preprocess
    from edgerep.data.scenes import ScenesDataset
    from edgerep.fold.model import fold_model
    from edgerep.quant.export import export_onnx
    from edgerep.quant.options import CalibrationOptions, JudgeOptions, QuantizeOptions, RecoveryOptions, TargetOptions
    from edgerep.quant.pipeline import quantize_model
    from edgerep.tasks import get_task

    loaded = load_checkpoint("examples/checkpoints/repdet_scenes_hostile.pt")
    shape = tuple(loaded.meta.input_shape)
    path = tmp_path / "det.onnx"
    export_onnx(fold_model(loaded.model.eval(), torch.randn(2, *shape)), path, shape, dynamic_batch=True)
    pre = Preprocess(shape, (0.0,) * 3, (1.0,) * 3)
    cal, sel = ScenesDataset("calib", pre, n=CALIB), ScenesDataset("val", pre, n=SELECTION)

    def run(name: str, max_drop, mode: str = "none"):
        opts = QuantizeOptions(TargetOptions(("cpu",), cpu_policies=("u8s8",)),
                               CalibrationOptions(method="percentile", cache_dir=tmp_path / "cache"),
                               JudgeOptions(max_drop=max_drop), recovery=RecoveryOptions(mode, qat_steps=QAT_STEPS))
        return quantize_model(path, cal, sel, tmp_path / name, opts, task=get_task("detect"))

    ptq = run("ptq", None).cpu_policy.drop
    assert ptq > 0.2, ptq  # the hostile model loses mAP under PTQ on these scenes
    budget = 0.5 * ptq
    res = run("qat", budget, "qat")
    steps = [(s.step, s.met) for s in res.recovery.steps]
    assert steps == [("ptq", False), ("qat", True)], (ptq, [(s.step, s.drop) for s in res.recovery.steps])
    assert res.excluded_nodes == [] and res.cpu_policy.name == "u8s8+qat" and res.cpu_policy.drop <= budget
    assert res.recovery.qat["activations"].startswith("u8 asymmetric")  # the CPU file's own grid
