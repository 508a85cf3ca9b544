"""The by-hand pipeline ``benchmarks/scale.py`` compares ``edgerep deploy`` with, written as a user would:
timm's ``reparameterize_model``, ``torch.onnx.export``, onnxruntime's ``quantize_static`` (u8s8,
per-channel, QDQ) on the same calibration images through a ``CalibrationDataReader``, one onnxruntime
session, 20 runs. Prints one JSON line: seconds per step. With ``--zoo`` the model is edgerep's own zoo
model of that name, folded by its blocks' own fold only (``fold_model(generic=False)``: what a user with a
``switch_to_deploy`` does; no verification, no traced-graph pass), for a venv without timm.

    python benchmarks/scale_by_hand.py CHECKPOINT.pt --size 224 --calib-samples 256 --workdir /tmp/x
    python benchmarks/scale_by_hand.py CHECKPOINT.pt --zoo --model repvgg_a0 --workdir /tmp/x
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

# As a user writes it. timm needs a torchvision that imports beside this torch (scripts/setup.sh's last
# line says whether the venv has one; where the CPU wheel index is unreachable, a venv with
# `pip install torch==2.14.1 torchvision==0.29.1 timm` does). timm installed without torchvision
# (`pip install --no-deps timm`) does not import: timm.layers imports torchvision.ops. Without timm: --zoo.


def folded_model(a: argparse.Namespace) -> torch.nn.Module:
    """The checkpoint's model, folded as a user does: timm's ``reparameterize_model``, or (``--zoo``) edgerep's
    zoo model folded by its blocks' own fold."""
    state = torch.load(a.checkpoint, weights_only=False)["state_dict"]
    if a.zoo:
        from edgerep.fold.model import fold_model
        from edgerep.models.registry import create_model

        model = create_model(a.model, num_classes=a.classes)
        model.load_state_dict(state)
        return fold_model(model.eval(), generic=False)
    import timm
    from timm.utils.model import reparameterize_model

    model = timm.create_model(a.model, pretrained=False, num_classes=a.classes)
    model.load_state_dict(state)
    return reparameterize_model(model.eval())


def synthetic_image(i: int, size: int) -> np.ndarray:
    """Calibration image i: the very sample edgerep's ``--data synthetic`` calibration set yields."""
    return np.random.default_rng([0, i]).standard_normal((3, size, size), dtype=np.float32)


class Reader(CalibrationDataReader):
    def __init__(self, n: int, size: int, batch: int = 1):
        self.n, self.size, self.batch, self.i = n, size, batch, 0

    def get_next(self):
        if self.i >= self.n:
            return None
        j = min(self.i + self.batch, self.n)
        x = np.stack([synthetic_image(k, self.size) for k in range(self.i, j)])
        self.i = j
        return {"input": x}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path, help="edgerep checkpoint written by scale.py (state_dict inside)")
    ap.add_argument("--model", default="repvgg_a0")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--zoo", action="store_true", help="edgerep's zoo model of that name, not timm's")
    a = ap.parse_args()
    t = {}
    t0 = time.perf_counter()
    model = folded_model(a)
    t["fold"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fp32, int8 = a.workdir / "model.onnx", a.workdir / "model.int8.onnx"
    torch.onnx.export(model, torch.randn(1, 3, a.size, a.size), str(fp32), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}}, dynamo=False)
    t["export"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    quantize_static(str(fp32), str(int8), Reader(a.calib_samples, a.size), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    t["quantize"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sess = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    x = synthetic_image(0, a.size)[None]
    for _ in range(20):
        sess.run(None, {"input": x})
    t["bench"] = time.perf_counter() - t0
    print(json.dumps({k: round(v, 3) for k, v in t.items()}))


if __name__ == "__main__":
    main()
