"""A tiny detector checkpoint for detection tests: ``repdet_scenes(width_scale=0.125)`` randomised (conv weights
seeded too), its batch norms' running statistics taken on 128 train scene images (so deploy's input-statistics
gate sees the inputs it was "trained" on), class priors at p = 0.01 as detectors start; 3x64x64 input (scenes are 160x160: boxes map back by the ratio)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

INPUT = (3, 64, 64)
TRAIN_IMAGES = 128  # scenes v2 train crops 18 tiles of two photos: 32 images were too few to stand for them


def tiny_detector(seed: int = 0) -> torch.nn.Module:
    from edgerep.blocks.testing import randomize_
    from edgerep.data.base import Preprocess
    from edgerep.data.scenes import ScenesDataset
    from edgerep.models import create_model

    with torch.random.fork_rng():  # the conv weights too: not whatever the global RNG holds after other tests
        torch.manual_seed(seed)
        m = create_model("repdet_scenes", width_scale=0.125)
    randomize_(m, seed)
    for h in m.heads:
        torch.nn.init.constant_(h.cls_pred.bias, -4.6)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None  # a cumulative average over the batches below
    m.train()
    with torch.no_grad():
        for x, _ in ScenesDataset("train", Preprocess(INPUT, (0.0,) * 3, (1.0,) * 3), n=TRAIN_IMAGES).batches(32):
            m(torch.from_numpy(x))
    return m.eval()


def save_tiny_detector(path: Path, *, dataset: str | None = "scenes", task: str = "classify") -> Path:
    """The tiny detector as an edgerep checkpoint (``task`` left at the default: the data set decides)."""
    from edgerep.checkpoint import CheckpointMeta, save_checkpoint

    meta = CheckpointMeta(arch="repdet_scenes", arch_kwargs={"width_scale": 0.125}, input_shape=INPUT,
                          mean=(0.0,) * 3, std=(1.0,) * 3, class_names=[str(i) for i in range(10)], dataset=dataset,
                          task=task)
    save_checkpoint(path, tiny_detector(), meta)
    return path


def transposed(outputs: np.ndarray) -> list:
    """A user's ``--postprocess`` for a model whose output is (N, anchors, 4 + C) (the tests' layout)."""
    from edgerep.bench.detect_post import postprocess

    return postprocess(np.ascontiguousarray(np.asarray(outputs).transpose(0, 2, 1)))


class Transposed(torch.nn.Module):
    """A detector whose output is (N, anchors, 4 + C): the built-in decoder cannot read it."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).transpose(1, 2)


def pycocotools_stats(bundle: Path, predictions_file: str | Path,
                      ground_truth: Path | None = None) -> tuple[np.ndarray, dict, list]:
    """COCOeval (bbox) of ``bundle``'s ``annotations/test.json`` (or the file ``ground_truth``) against a predictions
    file (relative to ``bundle``, or absolute), by pycocotools alone (nothing of edgerep's): the 12 stats, the ground
    truth's dataset dict and the predictions."""
    import contextlib
    import io
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    preds = json.loads((bundle / predictions_file).read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ground_truth or bundle / "annotations" / "test.json"))
        ev = COCOeval(gt, gt.loadRes(preds), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats, gt.dataset, preds


DEMO = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repdet_scenes.pt"


def deploy_demo_detector(root: Path, eval_samples: int) -> Path:
    """The shipped demo detector deployed with no flag but small data sizes (``eval_samples`` scenes test images, 32
    calibration images, no check) into ``root/bundle``; its gate must pass."""
    import json

    from edgerep.pipeline import DeployOptions, deploy

    res = deploy(DeployOptions(checkpoint=DEMO, out=root / "bundle", eval_samples=eval_samples, calib_samples=32,
                               bench_seconds=0.05, bench_warmup=2, cache_dir=root / "cache", run_check=False))
    assert res.passed is True, json.dumps(res.report.get("gate"), indent=1)
    return res.out
