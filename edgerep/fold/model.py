"""Model-level folding: replace every train-time block by its deploy form, and prove it."""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from edgerep.errors import FoldError


@dataclass
class FoldReport:
    """What a fold changed and how exact it is (errors measured in the caller's dtype)."""

    max_abs_error: float
    max_rel_error: float  # max |a-b| / max |a|
    mean_abs_error: float
    params_before: int = 0
    params_after: int = 0
    convs_before: int = 0
    convs_after: int = 0
    dtype: str = "float32"
    input_shape: tuple[int, ...] = ()
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_convs(model: nn.Module) -> int:
    return sum(1 for m in model.modules() if isinstance(m, nn.Conv2d))


def _check_eval(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if m.training and isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout)) or (
                m.training and hasattr(m, "to_deploy")):
            raise FoldError("module is in training mode (BatchNorm uses batch statistics, which are not affine)",
                            path=name or "<model>", hint="call model.eval() before folding")


def _fold_children(module: nn.Module, prefix: str, blocks: dict[str, str] | None = None) -> None:
    """Replace every block by its ``to_deploy()``; ``blocks`` records {block path: class name}."""
    for name, child in list(module.named_children()):
        path = f"{prefix}.{name}" if prefix else name
        if hasattr(child, "to_deploy") and callable(child.to_deploy):
            try:
                folded = child.to_deploy()
            except FoldError as e:
                raise e.at(path) from None
            folded.train(False)
            setattr(module, name, folded)
            if blocks is not None:
                blocks[path] = type(child).__name__
        else:
            _fold_children(child, path, blocks)


def needs_graph_pass(model: nn.Module) -> bool:
    """Whether the traced-graph folder could still find something after the per-block fold.

    It can only when a BatchNorm is left, or some module's forward is code edgerep has not
    seen (a class from outside torch and edgerep). Skipping it otherwise saves seconds per
    deploy on large nets, since tracing and verifying every region costs real time.
    """
    for m in model.modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, torch.fx.GraphModule)):  # a graph: a .pt2 program
            return True
        mod = type(m).__module__ or ""
        if not (mod.startswith("torch.") or mod.startswith("edgerep.")):
            return True
    return False


def fold_model(model: nn.Module, example_input: torch.Tensor | None = None, *, generic: bool = True,
               verify: bool = True) -> nn.Module:
    """A new module in which every foldable train-time structure is one plain conv / linear.

    Blocks that know their own fold (``to_deploy()``) are folded by the kernel algebra;
    with ``generic=True`` and an ``example_input``, the traced-graph folder then collapses
    any remaining affine regions (conv -> BN pairs, unknown multi-branch blocks). The input
    model is never modified. Raises ``FoldError`` naming the module path when a structure
    cannot fold exactly; never returns an inexact model silently. ``verify=False`` skips the whole-model
    float64 check on ``example_input`` (only for a structure about to receive other weights: loading a folded
    checkpoint; on MobileOne-S0 at 224 that check is ~1 s quiet, ~20 s with the cores shared).
    """
    return _fold_parts(model, example_input, generic=generic, verify=verify)[0]


def fold_model_with_report(model: nn.Module, example_input: torch.Tensor | None = None, *,
                           generic: bool = True) -> tuple[nn.Module, dict | None]:
    """``fold_model`` plus what the traced-graph folder did (regions folded and refused, with
    reasons; ``None`` when the graph pass had nothing to do)."""
    return _fold_parts(model, example_input, generic=generic)[:2]


def _fold_parts(model: nn.Module, example_input: torch.Tensor | None, *, generic: bool,
                blocks: dict[str, str] | None = None, verify: bool = True) -> tuple[nn.Module, dict | None]:
    """Fold a float64 copy of ``model`` (blocks, then the graph folder), check the whole of it against
    ``model`` run in float64 on ``example_input`` (``WHOLE_RTOL_F64``, 1e-9 relative: ``FoldError`` beyond),
    and cast the verified model once to ``model``'s dtype."""
    from edgerep.fold.graph import WHOLE_RTOL_F64, _max_rel, _model_dtype
    from edgerep.fold.graph_trace import cast_floating, to_double

    _check_eval(model)
    dtype = _model_dtype(model, example_input if example_input is not None else torch.zeros(()))
    folded = to_double(model)  # a deep copy; every fold rule then runs on float64 weights
    if hasattr(folded, "to_deploy") and callable(folded.to_deploy):
        folded = folded.to_deploy()
        if blocks is not None:
            blocks[""] = type(model).__name__
    else:
        _fold_children(folded, "", blocks)
    folded.eval()
    graph_report = None
    if generic and example_input is not None and needs_graph_pass(folded):
        from edgerep.fold import graph

        result = graph.fold_graph(folded, example_input.to(torch.float64))
        folded, graph_report = result.module, result.to_dict()
    err = None
    if example_input is not None and verify:
        from torch.utils._pytree import tree_flatten

        x64 = example_input.to(torch.float64)
        with torch.no_grad():
            try:
                ref = tree_flatten(to_double(model).eval()(x64))[0]
            except Exception:  # noqa: BLE001 - the model does not take this input: the caller's check says so
                ref = None
            if ref is not None:
                err = _max_rel(ref, tree_flatten(folded.eval()(x64))[0])
        if err is not None and not err <= WHOLE_RTOL_F64:
            raise FoldError(f"the folded model differs from the original by {err:.3g} (relative, both run in "
                            f"float64; limit {WHOLE_RTOL_F64:g}): refusing an inexact fold",
                            path=type(model).__name__)
    folded = cast_floating(folded, dtype, copy=False)
    if graph_report is not None and example_input is not None and err is not None:  # graph pass ran in float64
        with torch.no_grad():
            graph_report["max_rel_error"] = _max_rel(tree_flatten(model(example_input))[0],
                                                     tree_flatten(folded.eval()(example_input))[0])
        graph_report["max_rel_error_f64"] = err
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded, graph_report


def fold_with_provenance(model: nn.Module, example_input: torch.Tensor | None = None, *,
                         generic: bool = True) -> "FoldResult":
    """The one fold every command uses: the folded module plus, for each folded layer, the
    train-time modules and branches it came from and which folder produced it."""
    from edgerep.fold.provenance import FoldResult, build_provenance

    t0 = time.perf_counter()
    blocks: dict[str, str] = {}
    folded, graph_report = _fold_parts(model, example_input, generic=generic, blocks=blocks)
    table = build_provenance(model, folded, blocks, graph_report)
    return FoldResult(folded, table, graph_report, seconds=time.perf_counter() - t0)


@torch.no_grad()
def verify_fold(original: nn.Module, folded: nn.Module, example_input: torch.Tensor) -> FoldReport:
    """Run both models in eval mode on ``example_input`` and measure the difference."""
    t0 = time.perf_counter()
    was = original.training, folded.training
    original.eval()
    folded.eval()
    try:
        a = original(example_input)
        b = folded(example_input)
    finally:
        original.train(was[0])
        folded.train(was[1])
    if isinstance(a, (tuple, list)):
        a, b = a[0], b[0]
    if a.shape != b.shape:
        raise FoldError(f"folded model outputs shape {tuple(b.shape)}, the original {tuple(a.shape)}")
    diff = (a.double() - b.double()).abs()
    scale = a.double().abs().max().clamp_min(1e-30)
    return FoldReport(
        max_abs_error=float(diff.max()),
        max_rel_error=float(diff.max() / scale),
        mean_abs_error=float(diff.mean()),
        params_before=count_params(original),
        params_after=count_params(folded),
        convs_before=count_convs(original),
        convs_after=count_convs(folded),
        dtype=str(example_input.dtype).replace("torch.", ""),
        input_shape=tuple(example_input.shape),
        seconds=time.perf_counter() - t0,
    )
