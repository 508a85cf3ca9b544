"""onnxruntime's shape inference writes ``<stem>-inferred.onnx`` beside the model it reads and then
deletes it: a user's file of that name is overwritten and removed, a read-only model folder fails and
two calibrations of one model race. edgerep hands onnxruntime a private link of the model instead."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgerep.quant.calibrate import ArrayDataset, calibrate_many
from edgerep.quant.export import export_onnx
from edgerep.quant.qdq import QdqConfig, write_qdq


def _model(folder):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()
    p = folder / "model.onnx"
    export_onnx(m, p, (3, 8, 8))
    return p


def test_calibration_and_qdq_leave_the_models_folder_as_it_was(tmp_path):
    model = _model(tmp_path)
    mine = tmp_path / "model-inferred.onnx"  # the user's own file that happens to have onnxruntime's name
    mine.write_text("the user's file\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    data = ArrayDataset(np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    cals = calibrate_many(model, data, ("mse", "minmax", "percentile"), batch_size=4, limit=8)
    out = tmp_path.parent / f"{tmp_path.name}-out"
    out.mkdir()
    write_qdq(model, out / "model.int8.onnx", cals["minmax"], QdqConfig())
    assert mine.read_text() == "the user's file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (out / "model.int8.onnx").is_file()


def test_a_model_with_external_data_calibrates_from_its_private_link(tmp_path):
    import onnx

    src = _model(tmp_path / "plain") if (tmp_path / "plain").mkdir() is None else None
    ext = tmp_path / "ext"
    ext.mkdir()
    proto = onnx.load(str(src))
    onnx.save(proto, str(ext / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    before = sorted(p.name for p in ext.iterdir())
    data = ArrayDataset(np.random.default_rng(1).standard_normal((8, 3, 8, 8)).astype(np.float32))
    ranges = calibrate_many(ext / "model.onnx", data, ("minmax",), batch_size=4, limit=8)["minmax"]
    plain = calibrate_many(src, data, ("minmax",), batch_size=4, limit=8)["minmax"]
    assert sorted(p.name for p in ext.iterdir()) == before == ["model.onnx", "weights.bin"]
    assert ranges.ranges.keys() == plain.ranges.keys()
    for k, (lo, hi) in plain.ranges.items():
        assert np.allclose(ranges.ranges[k], (lo, hi))


def test_minmax_ranges_are_onnxruntimes_minmax_calibrator_bit_for_bit(tmp_path):
    """calibrate_many's minmax comes from its own pass (no second forward pass through onnxruntime's
    MinMaxCalibrater); the ranges are the calibrator's, exactly, fed the same batches."""
    import contextlib
    import io

    from edgerep.quant.calibrate import _OneBatchReader, _ort_calibrator

    model = _model(tmp_path)
    x = np.random.default_rng(3).standard_normal((24, 3, 8, 8)).astype(np.float32) * 3.0
    ours = calibrate_many(model, ArrayDataset(x), ("minmax",), batch_size=8, limit=24)["minmax"].ranges
    (tmp_path / "ort").mkdir()
    cal = _ort_calibrator(model, "minmax", tmp_path / "ort", {})
    with contextlib.redirect_stdout(io.StringIO()):
        for i in range(0, 24, 8):
            cal.collect_data(_OneBatchReader({"input": x[i:i + 8]}))
        td = cal.compute_data()
    theirs = {n: (float(np.asarray(t.range_value[0]).min()), float(np.asarray(t.range_value[1]).max()))
              for n, t in td.data.items()}
    assert set(theirs) <= set(ours) and len(theirs) >= 4
    assert {n: ours[n] for n in theirs} == theirs
