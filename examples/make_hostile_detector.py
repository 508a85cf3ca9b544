"""Make the quant-hostile variant of the demo detector by the documented mechanism of ``edgerep.quant.hostile``.

``examples/checkpoints/repdet_scenes.pt`` in, ``examples/checkpoints/repdet_scenes_hostile.pt`` out (same arch,
same preprocessing): in the backbone stages whose second block has an identity branch (``stages.1``,
``stages.2``), the BN gammas of a few output channels of the first block decay to ~0 (x ``--factor``), and every
BN's running statistics are re-measured on the scenes ``train`` split (nothing is written by hand: the collapsed
identity-BN variances are measured). Folding then turns those identity BNs into centre taps of ``gamma / sigma``
hundreds of times the layer's other weights, and the producer channels reach INT8 as a sliver of a per-tensor
activation range. ``benchmarks/detect_ptq.py`` measures what plain PTQ loses on it.

    PYTHONPATH=. .venv/bin/python examples/make_hostile_detector.py
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from edgerep.checkpoint import load_checkpoint, save_checkpoint
from edgerep.data.base import Preprocess
from edgerep.data.scenes import ScenesDataset
from edgerep.quant.hostile import make_hostile


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", default="examples/checkpoints/repdet_scenes.pt")
    p.add_argument("--out", default="examples/checkpoints/repdet_scenes_hostile.pt")
    p.add_argument("--producers", default="backbone.stages.1.0,backbone.stages.2.0",
                   help="blocks whose output channels collapse (each feeds a block with an identity BN)")
    p.add_argument("--channels", type=int, default=4, help="collapsed output channels per producer (seeded)")
    p.add_argument("--factor", type=float, default=0.001,
                   help="0.001: the shipped variant (plain PTQ, decode in float, -6.85 mAP); 0.01 made the width-2.5 "
                        "demo lose only 1.19 (the width-1 demo: 5.6)")
    p.add_argument("--bn-images", type=int, default=512, help="train scenes the BN statistics are re-measured on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.src)
    model = copy.deepcopy(loaded.model).eval()
    mods = dict(model.named_modules())
    g = torch.Generator().manual_seed(args.seed)
    producers = {}
    for name in args.producers.split(","):
        producers[name] = sorted(torch.randperm(mods[name].out_channels, generator=g)[:args.channels].tolist())
    pre = Preprocess.from_meta(loaded.meta)
    train = ScenesDataset("train", pre, n=args.bn_images)
    batches = [torch.from_numpy(x) for x, _ in train.batches(64)]
    h = make_hostile(model, input_shape=tuple(loaded.meta.input_shape), producers=producers, factor=args.factor,
                     batches=batches)
    meta = copy.deepcopy(loaded.meta)
    meta.extra.pop("training", None)
    meta.extra["hostile"] = {"mechanism": h.mechanism, "collapsed": h.collapsed, "expected_layers": h.expected_layers,
                             "factor": args.factor, "bn_statistics": f"scenes train split, first {args.bn_images} images",
                             "source": args.src, "script": "examples/make_hostile_detector.py"}
    d = meta.to_dict()
    d["task"] = "detect"
    save_checkpoint(args.out, model, type(meta).from_dict(d))
    blob = torch.load(args.out, weights_only=True)
    if blob["meta"].get("task") != "detect":  # CheckpointMeta.task may not exist yet: keep the key anyway
        from pathlib import Path

        from edgerep.checkpoint import _atomic_torch_save

        blob["meta"]["task"] = "detect"
        _atomic_torch_save(Path(args.out), blob)
    print(f"collapsed {h.collapsed} (x{args.factor}); identity BNs expected to blow up in {h.expected_layers}; "
          f"saved {args.out}")
    np.set_printoptions(precision=3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
