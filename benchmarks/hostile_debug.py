"""`edgerep debug` on the quant-hostile benchmarks: builds a hostile bundle and its plain PTQ file.

- ``--task classify`` (default): the hostile digits RepVGG of benchmarks/hostile_ptq.py
  (``edgerep.quant.hostile.hostile_digits`` on the shipped checkpoint: gammas of 3 channels of 2 producer
  blocks x0.01, BN statistics re-measured on digits' train split); plain PTQ = edgerep's QDQ writer with
  min-max ranges on the calib split, per-tensor 8-bit weights, no equalization or bias correction.
- ``--task detect``: examples/checkpoints/repdet_scenes_hostile.pt (examples/make_hostile_detector.py);
  plain PTQ = benchmarks/detect_ptq.py's ``plain_ptq`` (onnxruntime quantize_static, QDQ, u8/s8,
  per-channel weights, MinMax on the scenes calib split, whole graph).
- ``--task sr``: examples/checkpoints/ecbsr_x2_hostile.pt (examples/make_sr_hostile.py); plain PTQ =
  benchmarks/sr_ptq.py's ``plain_ptq`` (the same settings on the photos calib split's patches).

Each deploys into OUT/bundle, writes OUT/plain.int8.onnx and prints the debug command:

    .venv/bin/python benchmarks/hostile_debug.py /tmp/hostile-debug
    edgerep debug /tmp/hostile-debug/bundle --int8 /tmp/hostile-debug/plain.int8.onnx --no-search
    .venv/bin/python benchmarks/hostile_debug.py /tmp/hostile-det --task detect
    .venv/bin/python benchmarks/hostile_debug.py /tmp/hostile-sr --task sr
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from edgerep.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CKPTS = ROOT / "examples" / "checkpoints"


def _deploy(ckpt: Path, bundle: Path) -> None:
    subprocess.run([sys.executable, "-m", "edgerep", "deploy", str(ckpt), "-o", str(bundle), "--force"], check=True,
                   stdout=subprocess.DEVNULL)


def classify(out: Path) -> None:
    from edgerep.data import open_dataset
    from edgerep.quant.calibrate import calibrate
    from edgerep.quant.hostile import hostile_digits
    from edgerep.quant.qdq import QdqConfig, write_qdq

    loaded = load_checkpoint(CKPTS / "repvgg_digits.pt")
    meta = loaded.meta
    train = open_dataset("digits", split="train", meta=meta)
    h = hostile_digits(loaded.model, meta.input_shape, train)
    ckpt = out / "hostile_digits.pt"
    save_checkpoint(ckpt, h.model, meta)
    print(f"hostile construction: collapsed {h.collapsed}; broken layers (identity-BN): {h.expected_layers}")
    bundle = out / "bundle"
    _deploy(ckpt, bundle)
    cal = calibrate(bundle / "model.fp32.onnx", open_dataset("digits", split="calib", meta=meta), method="minmax",
                    cache_dir=out / "cache")
    write_qdq(bundle / "model.fp32.onnx", out / "plain.int8.onnx", cal,
              QdqConfig(activation="u8", per_channel=False, bias_correction=False))


def detect(out: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from detect_ptq import plain_ptq

    from edgerep.data.base import Preprocess
    from edgerep.data.scenes import ScenesDataset

    ckpt = CKPTS / "repdet_scenes_hostile.pt"
    meta = load_checkpoint(ckpt).meta
    h = meta.extra["hostile"]
    print(f"hostile construction: {h['mechanism']}; collapsed {h['collapsed']}; broken layers: {h['expected_layers']}")
    _deploy(ckpt, out / "bundle")
    plain_ptq(out / "bundle" / "model.fp32.onnx", out / "plain.int8.onnx",
              ScenesDataset("calib", Preprocess.from_meta(meta)))


def sr(out: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sr_ptq import plain_ptq

    from edgerep.data.photos import PhotosDataset
    from edgerep.data.sr import sr_preprocess

    ckpt = CKPTS / "ecbsr_x2_hostile.pt"
    meta = load_checkpoint(ckpt).meta
    print(f"hostile construction: {meta.extra['hostile']['mechanism']}")
    _deploy(ckpt, out / "bundle")
    plain_ptq(out / "bundle" / "model.fp32.onnx", out / "plain.int8.onnx",
              PhotosDataset("calib", preprocess=sr_preprocess(meta)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", type=Path, default=Path("/tmp/hostile-debug"))
    p.add_argument("--task", choices=("classify", "detect", "sr"), default="classify")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    {"classify": classify, "detect": detect, "sr": sr}[args.task](args.out)
    bundle, plain = args.out / "bundle", args.out / "plain.int8.onnx"
    print(f"edgerep debug {bundle} --int8 {plain} --no-search")
    if args.task == "classify":
        print(f"edgerep debug {bundle} --min-sqnr 40")


if __name__ == "__main__":
    main()
