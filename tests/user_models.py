"""A user's own model, as a new user would bring it: a small conv net trained on digits with inputs in
[0, 1] (no mean/std), saved as a plain state_dict. Factory for ``--arch user_models:small_net``."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn


def small_net(num_classes: int = 10) -> nn.Module:
    """Two conv+BN+ReLU stages, a 1x1 branch summed in, global pool, linear: 1x8x8 input."""
    return _SmallNet(num_classes)


class _SmallNet(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.c1x1 = nn.Sequential(nn.Conv2d(1, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.c2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32),
                                nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x):
        return self.head(self.c2(torch.relu(self.c1(x) + self.c1x1(x))))


def digits_01(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A digits split at its native 8x8 in [0, 1]: the "real" preprocessing of this user's model."""
    from edgerep.data.base import Preprocess
    from edgerep.data.digits import DigitsDataset

    ds = DigitsDataset(split, Preprocess((1, 8, 8), (0.0,), (1.0,)))
    x, y = next(ds.batches(len(ds)))
    return torch.from_numpy(x), torch.from_numpy(y)


@lru_cache(maxsize=1)
def trained_small_net() -> nn.Module:
    """Trained a few seconds on digits' train split, inputs in [0, 1]; ~95% on the test split."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny net on a shared 2-core box: one thread trains fastest
    from test_quant_helpers import fit

    model = small_net()
    x, y = digits_01("train")
    fit(model, x, y, epochs=10, lr=1e-2)
    torch.set_num_threads(threads)
    return model.eval()


def save_state_dict(model: nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def top1(model: nn.Module, split: str = "test") -> float:
    x, y = digits_01(split)
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean() * 100)


if __name__ == "__main__":  # pragma: no cover
    m = trained_small_net()
    print({s: round(top1(m, s), 2) for s in ("train", "val", "test")}, np.__version__)
