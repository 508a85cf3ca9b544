"""``torch.export`` programs (``.pt2``) as ordinary modules that every command can run, fold and save.

``ExportedProgram.module()`` refuses ``.eval()`` / ``.train()`` and calls ATen operators the
graph folder does not read. ``program_module(ep)`` rewrites that graph with the functional
forms of the same operators (``aten.conv2d`` -> ``F.conv2d``, ``aten.batch_norm`` ->
``F.batch_norm``, ...), drops the pytree input/output plumbing, and checks the result against
``ep.module()`` on the program's own example input: exactly the same numbers or a
``CheckpointError``. ``save_program(module, path, example)`` writes a (folded) module back as a
``.pt2``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgerep.errors import CheckpointError


def _batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled=True):
    return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)


#: ATen overload -> (functional form, argument adapter or None when the positional order is the same)
def _functional_table() -> dict[Any, Callable]:
    aten = torch.ops.aten
    table: dict[Any, Callable] = {
        aten.conv2d.default: F.conv2d,
        aten.linear.default: F.linear,
        aten.add.Tensor: torch.add,
        aten.sub.Tensor: torch.sub,
        aten.mul.Tensor: torch.mul,
        aten.relu.default: torch.relu,
        aten.relu_.default: torch.relu,
        aten.cat.default: torch.cat,
        aten.flatten.using_ints: torch.flatten,
        aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d,
        aten.avg_pool2d.default: F.avg_pool2d,
        aten.max_pool2d.default: F.max_pool2d,
        aten.batch_norm.default: _batch_norm,
    }
    return table


class ExportedModel(nn.Module):
    """A ``.pt2`` program as a plain module: ``eval()`` works, the graph calls functional ops."""

    def __init__(self, graph_module: fx.GraphModule):
        super().__init__()
        self.program = graph_module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


def _single_input_graph(gm: fx.GraphModule) -> fx.GraphModule:
    """Functional ops, no pytree codegen, no guard call; forward(x) -> tensor."""
    table = _functional_table()
    graph = gm.graph
    graph._codegen = fx.graph.CodeGen()
    for node in list(graph.nodes):
        if node.op == "call_module" and str(node.target).startswith("_guards"):
            graph.erase_node(node)
        elif node.op == "call_function" and node.target in table:
            node.target = table[node.target]
        elif node.op == "output":
            outs = node.args[0]
            if isinstance(outs, (tuple, list)) and len(outs) == 1:
                node.args = (outs[0],)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise CheckpointError(f"the program takes {len(placeholders)} inputs; edgerep deploys single-input models")
    for name in [n for n, _ in gm.named_children() if n.startswith("_guards")]:
        delattr(gm, name)
    graph.lint()
    gm.recompile()
    return fx.GraphModule(gm, graph, "ExportedProgram")  # a plain GraphModule: .eval() / .train() work


def program_module(ep: Any, example: torch.Tensor, where: str) -> ExportedModel:
    """The program as an ``ExportedModel``, verified against ``ep.module()`` on ``example``."""
    reference = ep.module()
    try:
        gm = _single_input_graph(ep.module())
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None
    model = ExportedModel(gm)
    for m in model.modules():  # ep.module() refuses .eval(): set the flag directly
        m.training = False
    with torch.no_grad():
        want, got = reference(example), model(example)
    want = want[0] if isinstance(want, (tuple, list)) else want
    same = isinstance(got, torch.Tensor) and got.shape == want.shape
    err = float((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-30)) \
        if same else None
    if err is None or not err <= 1e-6:
        raise CheckpointError(f"{where}: the program rewritten with functional ops does not reproduce "
                              f"ExportedProgram.module() (max rel error {err})",
                              hint="please report this with the file; it uses an operator edgerep maps wrongly")
    return model


def save_program(model: nn.Module, path: str | Path, example: torch.Tensor) -> Path:
    """Export ``model`` (eval mode, batch dimension dynamic when possible) and save it as a ``.pt2``."""
    path = Path(path)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    try:
        ep = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception:  # noqa: BLE001 - a model that specialises on the batch size: export it static
        ep = torch.export.export(model, (example,))
    torch.export.save(ep, str(path))
    return path


__all__ = ["ExportedModel", "program_module", "save_program"]
