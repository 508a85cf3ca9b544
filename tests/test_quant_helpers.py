"""Shared, cached test material for the quantization tests: a small RepVGG trained on digits.

Plain functions with ``lru_cache`` (not fixtures) so several test modules share one training run.
Digits are used at their native 8x8 so training takes a few seconds on 2 cores.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgerep.quant.calibrate import ArrayDataset


def tiny_repvgg(width: int = 16) -> nn.Module:
    from edgerep.blocks.repvgg import RepVGGBlock

    return nn.Sequential(
        RepVGGBlock(1, width), RepVGGBlock(width, width), RepVGGBlock(width, 2 * width, stride=2),
        RepVGGBlock(2 * width, 2 * width), RepVGGBlock(2 * width, 2 * width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 10))


@lru_cache(maxsize=1)
def digits_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = ((d.images.astype(np.float32) / 16.0 - 0.3) / 0.4)[:, None]
    y = d.target.astype(np.int64)
    idx = np.random.RandomState(0).permutation(len(x))
    parts = {"train": idx[:1100], "calib": idx[1100:1300], "test": idx[1300:]}
    return {k: (np.ascontiguousarray(x[v]), y[v]) for k, v in parts.items()}


def dataset(split: str) -> ArrayDataset:
    x, y = digits_splits()[split]
    return ArrayDataset(x, y, name=f"digits8:{split}")


@lru_cache(maxsize=1)
def trained_digits() -> nn.Module:
    """A 5-block RepVGG trained ~3 s on 8x8 digits (unfolded, eval mode, ~98% test top-1)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core box: one thread trains faster than two fighting
    model = tiny_repvgg()
    x, y = (torch.from_numpy(a) for a in digits_splits()["train"])
    fit(model, x, y, epochs=8, lr=4e-3, step_size=3)
    torch.set_num_threads(threads)
    return model.eval()


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
        step_size: int | None = None) -> nn.Module:
    """Adam, batch 64, seeded shuffles (and a halving step schedule every ``step_size`` epochs)."""
    opt = torch.optim.Adam(model.parameters(), lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=0.5) if step_size else None
    g = torch.Generator().manual_seed(0)
    model.train()
    for _epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            j = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(x[j]), y[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
    return model.eval()


def top1(outputs: np.ndarray, y: np.ndarray) -> float:
    return float((outputs.argmax(1) == y).mean() * 100.0)


def torch_top1(model: nn.Module, split: str = "test") -> float:
    x, y = digits_splits()[split]
    with torch.no_grad():
        return top1(model(torch.from_numpy(x)).numpy(), y)


def export_folded(model: nn.Module, path: Path) -> Path:
    from edgerep import fold_model
    from edgerep.quant.export import export_onnx

    export_onnx(fold_model(model), path, (1, 8, 8))
    return path


def reference_fn(model: nn.Module):
    def ref(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    return ref


def test_helpers_train_an_accurate_model():
    assert torch_top1(trained_digits()) > 93.0


def flattened_onnx(model: nn.Module, path: Path, alpha: float = 0.9) -> Path:
    """The folded model with every conv's weights pushed to its channel maximum, exported.

    |w| -> max_c |w| * (alpha + (1 - alpha) |w| / max_c |w|): many taps at full 8-bit scale, which
    is what makes onnxruntime's AVX2 u8s8 int16 pair sums saturate. Top-1 vs labels is
    meaningless for it; agreement with its own FP32 outputs is what the tests measure.
    """
    from edgerep import fold_model
    from edgerep.quant.export import export_onnx

    folded = fold_model(model)
    with torch.no_grad():
        for mod in folded.modules():
            if isinstance(mod, nn.Conv2d):
                w = mod.weight
                mx = w.abs().flatten(1).max(1).values.view(-1, 1, 1, 1)
                mod.weight.copy_(torch.sign(w) * mx * (alpha + (1 - alpha) * w.abs() / mx))
    export_onnx(folded, path, (1, 8, 8))
    return path


def hostile_digits() -> nn.Module:
    """The trained model with collapsed identity-BN variances (``edgerep.quant.hostile``), BN
    statistics re-estimated on digits: folded weights ~300x the median in a few channels."""
    import copy

    from edgerep.quant.hostile import make_hostile

    h = copy.deepcopy(trained_digits())
    x = torch.from_numpy(digits_splits()["train"][0])
    make_hostile(h, input_shape=(1, 8, 8), n_blocks=2, n_channels=3, factor=0.01,
                 batches=[x[i:i + 128] for i in range(0, len(x), 128)])
    return h.eval()
