"""One model path for every command: load (any accepted form) -> one loaded model -> fold -> one
fold result (folded module + provenance + verification).

``fold``, ``check``, ``quantize``, ``deploy`` and ``bench`` all call ``fold_loaded``; none folds
on its own, so what ``check`` analyses is what ``deploy`` ships.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from edgerep.checkpoint import LoadedCheckpoint, load_checkpoint
from edgerep.errors import FoldError
from edgerep.fold.model import fold_with_provenance, verify_fold
from edgerep.fold.provenance import FoldResult

#: max relative error a fold may show in float32 before a command refuses it
FOLD_TOLERANCE = 1e-4


def load_model(path: str | Path, load: Mapping[str, Any] | None = None) -> LoadedCheckpoint:
    """``load_checkpoint`` with the CLI's keyword arguments (arch, arch_kwargs, input_shape, trust)."""
    return load_checkpoint(path, **dict(load or {}))


def example_input(loaded: LoadedCheckpoint, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal batch of the model's input shape (fold verification, tracing)."""
    return torch.randn((batch, *loaded.meta.input_shape), generator=torch.Generator().manual_seed(seed))


def fold_loaded(loaded: LoadedCheckpoint, *, example: torch.Tensor | None = None,
                extra_inputs: Iterable[torch.Tensor] = (), generic: bool = True,
                tolerance: float = FOLD_TOLERANCE) -> FoldResult:
    """Fold ``loaded.model`` (blocks, then the graph folder), verify it on ``example`` (and on
    ``extra_inputs``, e.g. real data) and return the one ``FoldResult``. An inexact fold raises
    ``FoldError``: no command ships or measures it."""
    t0 = time.perf_counter()
    x = example if example is not None else example_input(loaded)
    result = fold_with_provenance(loaded.model, x if generic else None, generic=generic)
    rep = verify_fold(loaded.model, result.module, x)
    for extra in extra_inputs:
        more = verify_fold(loaded.model, result.module, extra)
        if more.max_rel_error > rep.max_rel_error:
            rep.max_rel_error, rep.max_abs_error = more.max_rel_error, more.max_abs_error
    if not rep.max_rel_error <= tolerance:
        raise FoldError(f"folded model differs from the original by {rep.max_rel_error:.2e} relative "
                        f"(tolerance {tolerance:.0e}); refusing to use an inexact fold", path=loaded.meta.arch)
    if rep.convs_before == 0 and result.graph:  # a .pt2 program calls F.conv2d: count executed convs
        rep.convs_before = int(result.graph.get("convs_before") or 0)
        rep.convs_after = int(result.graph.get("convs_after") or rep.convs_after)
    rep.seconds = time.perf_counter() - t0
    result.verify = rep
    result.seconds = rep.seconds
    return result


def load_and_fold(path: str | Path, load: Mapping[str, Any] | None = None, **fold_kwargs: Any
                  ) -> tuple[LoadedCheckpoint, FoldResult]:
    """``load_model`` then ``fold_loaded``: the entry every command starts from."""
    loaded = load_model(path, load)
    return loaded, fold_loaded(loaded, **fold_kwargs)


__all__ = ["FOLD_TOLERANCE", "load_model", "example_input", "fold_loaded", "load_and_fold"]
