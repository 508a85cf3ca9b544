"""Loading a folded checkpoint rebuilds the folded structure (``_fold_like``) without the whole-model float64
proof: its weights are replaced by the checkpoint's at once. The proof runs where the fold is made
(``fold_checkpoint``), once: on MobileOne-S0 at 224 the extra proof cost ~1 s per load on a quiet host, ~22 s
with the cores shared."""
from __future__ import annotations

import torch

import edgerep.fold.graph as graph


def test_loading_a_folded_checkpoint_runs_no_float64_whole_model_check(tmp_path, monkeypatch):
    from edgerep.checkpoint import CheckpointMeta, fold_checkpoint, load_checkpoint, save_checkpoint
    from edgerep.models.registry import create_model

    torch.manual_seed(0)
    net = create_model("mobileone_digits", num_classes=10).eval()
    save_checkpoint(tmp_path / "m.pt", net, CheckpointMeta(arch="mobileone_digits", arch_kwargs={"num_classes": 10},
                                                           input_shape=(1, 8, 8), mean=(0.0,), std=(1.0,)))
    calls = []
    real = graph._max_rel
    monkeypatch.setattr(graph, "_max_rel", lambda a, b: calls.append(1) or real(a, b))
    fold_checkpoint(tmp_path / "m.pt", tmp_path / "folded.pt")
    made = len(calls)
    assert made >= 1  # the fold itself is proven
    calls.clear()
    loaded = load_checkpoint(tmp_path / "folded.pt")
    assert calls == [], "loading a folded checkpoint ran the whole-model float64 check again"
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():  # and the structure it rebuilt holds the fold: the same outputs as the model folded
        assert torch.allclose(loaded.model(x), net(x), rtol=1e-4, atol=1e-4)
