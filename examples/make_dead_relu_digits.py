"""Write the dying-ReLU digits RepVGG (the recovery benchmark's model) as a checkpoint `edgerep deploy` reads.

    PYTHONPATH=. .venv/bin/python examples/make_dead_relu_digits.py /tmp/dead_relu_digits.pt
    edgerep deploy /tmp/dead_relu_digits.pt --recover qat -o /tmp/dead-bundle

The shipped examples/checkpoints/repvgg_digits.pt with ``edgerep.quant.hostile_dead.make_dead_relu``: 4 channels
of each block that feeds an identity block get beta moved 5 |gamma| down, BN statistics re-measured on digits'
train split (see docs/recovery.md).
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

from edgerep.checkpoint import load_checkpoint, save_checkpoint
from edgerep.data import open_dataset
from edgerep.quant.hostile_dead import make_dead_relu

ROOT = Path(__file__).resolve().parents[1]


def main(out: Path) -> None:
    loaded = load_checkpoint(ROOT / "examples" / "checkpoints" / "repvgg_digits.pt")
    train = open_dataset("digits", split="train", meta=loaded.meta)
    model = copy.deepcopy(loaded.model).eval()
    h = make_dead_relu(model, [torch.from_numpy(x) for x, _ in train.batches(128)], n_channels=4, sigmas=5.0)
    save_checkpoint(out, model.eval(), loaded.meta)
    print(f"{out}: {h.mechanism}; dead channels {h.dead}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dead_relu_digits.pt"))
