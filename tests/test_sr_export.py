"""SR at any input size: one FP32 ONNX file with dynamic batch, height and width serves calibration on
patches and evaluation on whole frames, and onnxruntime's QDQ INT8 of it runs at every size; a classifier's
export keeps its fixed size. The quant-hostile SR variant is the same function in FP32 with channel ranges
``factor`` apart."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

from edgerep.blocks.testing import randomize_
from edgerep.fold.model import fold_model
from edgerep.models import create_model
from edgerep.quant.export import export_onnx
from edgerep.quant.hostile_sr import make_hostile_sr


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return randomize_(create_model("ecbsr_x2", module_nums=2, channel_nums=8), seed=seed).eval()


def _dims(vi) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def _qdq(fp32, out, patches):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader:
        def __init__(self):
            self.it = iter([{"input": p} for p in patches])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax)


def test_sr_export_has_dynamic_height_and_width_and_int8_runs_at_every_size(tmp_path):
    import onnxruntime as ort

    model = _tiny()
    folded = fold_model(model, torch.rand(1, 3, 12, 12))
    fp32 = tmp_path / "sr.fp32.onnx"
    rep = export_onnx(folded, fp32, (3, 16, 16), dynamic_hw=True)
    assert rep.dynamic_hw and rep.dynamic_batch
    g = onnx.load(str(fp32)).graph
    assert _dims(g.input[0]) == ["batch", 3, "height", "width"]
    assert _dims(g.output[0])[0] == "batch" and all(isinstance(d, str) for d in _dims(g.output[0])[2:])
    rng = np.random.RandomState(0)
    patches = [rng.rand(4, 3, 16, 16).astype(np.float32) for _ in range(3)]  # calibration: patches
    int8 = tmp_path / "sr.int8.onnx"
    _qdq(fp32, int8, patches)
    s32 = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    s8 = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    for n, h, w in [(4, 16, 16), (1, 37, 53), (2, 90, 160)]:  # a patch batch, odd whole images, a small frame
        x = rng.rand(n, 3, h, w).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        f, q = s32.run(None, {"input": x})[0], s8.run(None, {"input": x})[0]
        assert f.shape == q.shape == (n, 3, 2 * h, 2 * w)
        assert np.max(np.abs(f - ref)) < 1e-4
        snr = 10 * np.log10(np.mean(ref ** 2) / np.mean((q - ref) ** 2))
        assert snr > 20.0  # INT8 of the same file: close to FP32 at every size


def test_classifier_export_keeps_a_fixed_size(tmp_path):
    model = create_model("repvgg_digits").eval()
    rep = export_onnx(fold_model(model), tmp_path / "c.onnx", (1, 16, 16))
    g = onnx.load(str(tmp_path / "c.onnx")).graph
    assert not rep.dynamic_hw
    assert _dims(g.input[0]) == ["batch", 1, 16, 16]


def test_export_refuses_a_model_whose_size_is_baked_in(tmp_path):
    """A model that only works at one size fails the second-size check with the file named, not silently."""

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            h = int(x.shape[2])  # a Python int: traced as the constant 16
            return self.conv(x)[:, :, :h - 1]

    from edgerep.errors import EdgerepError

    with pytest.raises(EdgerepError, match="f.onnx"):
        export_onnx(Fixed().eval(), tmp_path / "f.onnx", (3, 16, 16), dynamic_hw=True)


def test_hostile_sr_is_the_same_function_with_channel_ranges_factor_apart():
    model = _tiny(1)
    hostile = copy.deepcopy(model)
    how = make_hostile_sr(hostile, blocks=(0, 1), channels=(0, 3), factor=32.0)
    x = torch.rand(2, 3, 13, 17)
    acts = {}

    def hook(name):
        return lambda m, i, o: acts.__setitem__(name, o.detach())

    hs = [hostile.backbone[k].register_forward_hook(hook(k)) for k in (0, 1)]
    with torch.no_grad():
        a, b = model(x), hostile(x)
    for h in hs:
        h.remove()
    assert torch.max(torch.abs(a - b)) <= 1e-4 * max(1.0, float(a.abs().max()))
    for k in (0, 1):
        r = acts[k].abs().amax(dim=(0, 2, 3))
        others = torch.cat([r[1:3], r[4:]])
        assert float(r[[0, 3]].min()) > 4 * float(others.median())  # the drifted channels dominate the tensor
    assert "x32" in how.mechanism()
    with pytest.raises(ValueError, match="following block"):
        make_hostile_sr(copy.deepcopy(model), blocks=(3,))  # the tail ECB has no next block
