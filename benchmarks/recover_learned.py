"""What AdaRound and QAT learn on the shipped models (dying-ReLU digits, hostile detector, hostile SR), saved to npz.

    PYTHONPATH=<a checkout> .venv/bin/python benchmarks/recover_learned.py OUT.npz [--iters 500] [--qat-steps 20]
    .venv/bin/python benchmarks/recover_learned.py --compare A.npz B.npz

Run it with two checkouts on PYTHONPATH (e.g. a ``git archive`` of an older commit) and compare: every learned int8
weight, per-layer MSE and QAT loss must be identical when a change claims not to alter small models. Calibration:
minmax on the calib split (256 samples at most); learning on the u8s8 grid, on the samples the pipeline takes
(64 MiB at most); the checkpoints are read from this file's repository, the code from PYTHONPATH.
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = (("digits", "repvgg_digits.pt", "digits", False), ("detect", "repdet_scenes_hostile.pt", "scenes", False),
          ("sr", "ecbsr_x2_hostile.pt", "photos", True))


def learn(out: Path, iters: int, qat_steps: int) -> None:
    """AdaRound and QAT on each shipped model; every learned array into ``out``."""
    import onnxruntime as ort
    import torch

    from edgerep.checkpoint import load_checkpoint
    from edgerep.data import open_dataset
    from edgerep.fold.model import fold_model
    from edgerep.quant.adaround import AdaRoundOptions, adaround_model
    from edgerep.quant.calibrate import ArrayDataset, calibrate
    from edgerep.quant.export import export_onnx
    from edgerep.quant.hostile_dead import make_dead_relu
    from edgerep.quant.qat import QatOptions, qat_model
    from edgerep.quant.qdq import QdqConfig

    torch.set_num_threads(1)
    cfg = QdqConfig(activation="u8", weight="s8", per_channel=True)
    res: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        for name, ckpt, data, sr in MODELS:
            loaded = load_checkpoint(ROOT / "examples" / "checkpoints" / ckpt)
            meta, model = loaded.meta, loaded.model.eval()
            if name == "digits":  # the recover_ladder benchmark's dying-ReLU model
                model = copy.deepcopy(model).eval()
                train = open_dataset("digits", split="train", meta=meta)
                make_dead_relu(model, [torch.from_numpy(x) for x, _ in train.batches(128)], n_channels=4, sigmas=5.0)
                model.eval()
            calib = open_dataset(data, split="calib", meta=meta)
            xs = np.concatenate([np.asarray(b[0], np.float32) for b in calib.batches(64)])[:256]
            x = xs[:max(16, min(len(xs), (64 << 20) // (int(np.prod(xs.shape[1:])) * 4)))]
            p = tmp / f"{name}.onnx"
            export_onnx(fold_model(model, torch.from_numpy(xs[:2])), p, tuple(meta.input_shape), dynamic_batch=True,
                        dynamic_hw=sr)
            cal = calibrate(p, ArrayDataset(xs), method="minmax")
            a = adaround_model(p, tmp / f"{name}.ada.onnx", cal, x, cfg, options=AdaRoundOptions(iters=iters),
                               threads=2)
            s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
            teacher = s.run(None, {s.get_inputs()[0].name: x})[0]
            q = qat_model(p, tmp / f"{name}.qat.onnx", cal, x, teacher, cfg, options=QatOptions(steps=qat_steps))
            res |= {f"{name}:ada:{k}": v for k, v in a.qweights.items()}
            res |= {f"{name}:qat:{k}": v for k, v in q.qweights.items()}
            res[f"{name}:ada:mse"] = np.array([[r.mse_nearest, r.mse_learned] for r in a.layers])
            res[f"{name}:qat:loss"] = np.array([q.loss_first, q.loss_last])
            print(f"{name}: {len(x)} samples, AdaRound {a.seconds:.1f} s, QAT {q.seconds:.1f} s", flush=True)
    np.savez(out, **res)


def compare(a: Path, b: Path) -> int:
    """0 when both files hold the same arrays, bit for bit; 1 (naming them) otherwise."""
    x, y = np.load(a), np.load(b)
    diff = sorted(set(x.files) ^ set(y.files)) + [k for k in x.files if k in y.files and not np.array_equal(x[k], y[k])]
    print(f"{len(x.files)} arrays; differing: {diff or 'none'}")
    return 1 if diff else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", type=Path)
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--qat-steps", type=int, default=20)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    args = ap.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    if args.out is None:
        ap.error("OUT.npz or --compare A B")
    learn(args.out, args.iters, args.qat_steps)


if __name__ == "__main__":
    main()
