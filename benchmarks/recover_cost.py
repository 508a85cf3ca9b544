"""What each recovery-ladder step costs at 224 x 224: wall time and peak RSS of PTQ, AdaRound and QAT on RepVGG-A0.

    PYTHONPATH=. .venv/bin/python benchmarks/recover_cost.py [--iters 500] [--qat-steps 300] [--steps ptq,adaround,qat]

The model is edgerep's own zoo ``repvgg_a0`` (no timm), 1000 classes, random weights with randomized BN statistics
(``edgerep.blocks.testing.randomize_``), folded and exported as deploy does; data ``synthetic`` (random
normal inputs, the same generator as ``--data synthetic``): 256 calibration samples (seed 0), 64 selection samples
(seed 1, unlabelled: the budget is on the outputs' cosine). Each step runs ``quantize_model`` on the CPU target,
policy u8s8 pinned, in this process:

  ptq       --max-drop none: equalization, calibration (auto: three range methods, one pass), the policy's file
  adaround  --recover adaround with a budget no file meets (1e-6), so the step runs
  qat       --recover qat, the same budget

The budget is missed on purpose, and the mixed-precision search that would follow is not this benchmark's
subject: the run stops when it starts (the progress line "mixed precision" ends the measurement). Phases are
timed from the progress lines; RSS is sampled every 20 ms (VmRSS) and charged to the phase running. The learning
steps run torch on one thread, as edgerep sets it, with their steps sized in multiply-adds (AdaRound: one random
output window per conv step, ``AdaRoundOptions.step_macs``; QAT: 3 images per step at 224,
``QatOptions.step_macs``). Wall times on the shared host are printed with the load.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import torch

from edgerep.quant.options import (CalibrationOptions, JudgeOptions, QuantizeOptions, RecoveryOptions,
                                   TargetOptions)


class Stop(Exception):
    """The mixed-precision search began: the step under measurement is over."""


class Phases:
    """Progress lines -> phases (ptq, the learning step, rescoring); wall and peak RSS per phase."""

    def __init__(self, step: str):
        self.step, self.phase, self.t0 = step, "ptq", time.perf_counter()
        self.start = {"ptq": self.t0}
        self.rss: dict[str, float] = {}
        self.lines: list[str] = []
        self.stop = False
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self.stop:
            with open("/proc/self/status") as f:
                mib = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS")) / 1024.0
            self.rss[self.phase] = max(self.rss.get(self.phase, 0.0), mib)
            time.sleep(0.02)

    def _enter(self, phase: str) -> None:
        if phase not in self.start:
            self.phase = phase
            self.start[phase] = time.perf_counter()

    def __call__(self, msg: str) -> None:
        self.lines.append(f"{time.perf_counter() - self.t0:8.1f} s  {msg}")
        print(self.lines[-1], flush=True)
        if msg.startswith("recovery:"):
            self._enter(self.step)
        elif msg.startswith("cpu candidate") and self.phase == self.step != "ptq":
            self._enter("rescore")
        elif msg.startswith("mixed precision"):
            self._enter("end")
            raise Stop

    def seconds(self) -> dict[str, float]:
        end = self.start.get("end", time.perf_counter())
        keys = [k for k in ("ptq", self.step, "rescore") if k in self.start]
        bounds = [self.start[k] for k in keys] + [end]
        return {k: round(bounds[i + 1] - bounds[i], 1) for i, k in enumerate(keys)}


def build(tmp: Path, size: int) -> Path:
    """RepVGG-A0 from edgerep's zoo, randomized, folded and exported (dynamic batch) to ``tmp``."""
    from edgerep.blocks.testing import randomize_
    from edgerep.fold.model import fold_model
    from edgerep.models import create_model
    from edgerep.quant.export import export_onnx

    torch.manual_seed(0)
    net = randomize_(create_model("repvgg_a0", num_classes=1000), seed=0).eval()
    path = tmp / "a0.fp32.onnx"
    export_onnx(fold_model(net, torch.randn(2, 3, size, size)), path, (3, size, size), dynamic_batch=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--iters", type=int, default=RecoveryOptions().iters, help="AdaRound Adam steps per layer")
    ap.add_argument("--qat-steps", type=int, default=RecoveryOptions().qat_steps, help="QAT fine-tuning steps")
    ap.add_argument("--steps", default="ptq,adaround,qat")
    args = ap.parse_args()
    from edgerep.data.base import Preprocess
    from edgerep.data.synthetic import SyntheticDataset
    from edgerep.quant.cpu_features import detect_cpu_features
    from edgerep.quant.pipeline import quantize_model

    shape = (3, args.size, args.size)
    pre = Preprocess(shape, (0.0,) * 3, (1.0,) * 3)
    calib, sel = SyntheticDataset(pre, n=args.calib_samples, seed=0), SyntheticDataset(pre, n=64, seed=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        fp32 = build(tmp, args.size)
        for step in [s for s in args.steps.split(",") if s]:
            mode = "none" if step == "ptq" else step
            opts = QuantizeOptions(TargetOptions(("cpu",), cpu_policies=("u8s8",)),
                                   CalibrationOptions(samples=args.calib_samples, cache_dir=tmp / "cache"),
                                   JudgeOptions(max_drop=None if step == "ptq" else 1e-6),
                                   recovery=RecoveryOptions(mode, iters=args.iters, qat_steps=args.qat_steps))
            load = os.getloadavg()
            ph = Phases(step)
            try:
                quantize_model(fp32, calib, sel, tmp / step, opts, progress=ph)
            except Stop:
                pass
            ph.stop = True
            rows.append((step, ph.seconds(), dict(ph.rss), load, os.getloadavg()))
    cpu = detect_cpu_features()
    print(f"host: {cpu.model_name}, {os.cpu_count()} cores, INT8 path {cpu.int8_dot}; torch {torch.__version__} "
          f"(learning steps on 1 thread); repvgg_a0 (edgerep zoo) at {args.size}x{args.size}, "
          f"{args.calib_samples} calibration samples; AdaRound {args.iters} steps per layer, QAT {args.qat_steps}")
    print("| run | phase | wall s | peak RSS MiB | load before / after |")
    print("|---|---|---|---|---|")
    for step, secs, rss, l0, l1 in rows:
        for k, v in secs.items():
            print(f"| {step} | {k} | {v:.1f} | {rss.get(k, float('nan')):.0f} | {l0[0]:.1f} / {l1[0]:.1f} |")


if __name__ == "__main__":
    main()
