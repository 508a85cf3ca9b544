"""`edgerep debug` on the classification quant-hostile benchmark (the model of benchmarks/hostile_ptq.py).

Builds the hostile digits RepVGG (``edgerep.quant.hostile.hostile_digits`` on the shipped checkpoint: gammas
of 3 channels of 2 producer blocks x0.01, BN statistics re-measured on digits' train split), deploys it
into OUT/bundle, writes the benchmark's plain PTQ file (min-max ranges on the calib split, per-tensor
8-bit weights, no equalization or bias correction) as OUT/plain.int8.onnx, and prints the two commands:

    .venv/bin/python benchmarks/hostile_debug.py /tmp/hostile-debug
    edgerep debug /tmp/hostile-debug/bundle --int8 /tmp/hostile-debug/plain.int8.onnx --no-search
    edgerep debug /tmp/hostile-debug/bundle --min-sqnr 40
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edgerep.checkpoint import load_checkpoint, save_checkpoint
from edgerep.data import open_dataset
from edgerep.quant.calibrate import calibrate
from edgerep.quant.hostile import hostile_digits
from edgerep.quant.qdq import QdqConfig, write_qdq

ROOT = Path(__file__).resolve().parents[1]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_checkpoint(ROOT / "examples" / "checkpoints" / "repvgg_digits.pt")
    meta = loaded.meta
    train = open_dataset("digits", split="train", meta=meta)
    h = hostile_digits(loaded.model, meta.input_shape, train)
    ckpt = out / "hostile_digits.pt"
    save_checkpoint(ckpt, h.model, meta)
    print(f"hostile construction: collapsed {h.collapsed}; broken layers (identity-BN): {h.expected_layers}")
    bundle = out / "bundle"
    subprocess.run([sys.executable, "-m", "edgerep", "deploy", str(ckpt), "-o", str(bundle), "--force"], check=True,
                   stdout=subprocess.DEVNULL)
    cal = calibrate(bundle / "model.fp32.onnx", open_dataset("digits", split="calib", meta=meta), method="minmax",
                    cache_dir=out / "cache")
    plain = out / "plain.int8.onnx"
    write_qdq(bundle / "model.fp32.onnx", plain, cal, QdqConfig(activation="u8", per_channel=False,
                                                                 bias_correction=False))
    print(f"edgerep debug {bundle} --int8 {plain} --no-search")
    print(f"edgerep debug {bundle} --min-sqnr 40")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/hostile-debug"))
