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


#: a ``.pt2`` program as a plain module (a GraphModule of class ``ExportedProgram``): ``eval()`` works, the
#: graph calls functional ops and the program's convs / linears as modules at the user's paths
ExportedModel = fx.GraphModule


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


def _as_modules(gm: fx.GraphModule) -> None:
    """Each ``F.conv2d`` / ``F.linear`` on the program's own parameters becomes an ``nn.Conv2d`` /
    ``nn.Linear`` at its parameters' path (``layer_b.weight`` -> ``layer_b``): layers keep the user's
    names through the fold, the check and every report, and a layer the fold leaves alone is still one."""
    graph = gm.graph
    readers: dict[str, int] = {}
    for n in graph.nodes:
        for a in n.all_input_nodes:
            if a.op == "get_attr":
                readers[str(a.target)] = readers.get(str(a.target), 0) + 1
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is _batch_norm:
            _bn_as_module(gm, node, readers)
            continue
        if node.op != "call_function" or node.target not in (F.conv2d, F.linear):
            continue
        args = list(node.args) + [None] * (7 - len(node.args))
        w, b = args[1], args[2]
        if not isinstance(w, fx.Node) or w.op != "get_attr" or node.kwargs or \
                (b is not None and (not isinstance(b, fx.Node) or b.op != "get_attr")):
            continue
        owner, _, wname = str(w.target).rpartition(".")
        if not owner or wname != "weight" or (b is not None and str(b.target) != f"{owner}.bias"):
            continue
        holder = gm.get_submodule(owner)
        if set(dict(holder.named_parameters(recurse=False))) - {"weight", "bias"} or list(holder.children()) or \
                any(readers.get(f"{owner}.{k}", 0) != 1 for k in ("weight", "bias") if hasattr(holder, k)):
            continue  # the holder is shared or holds more: leave the call as it is
        weight = gm.get_parameter(str(w.target))
        bias = gm.get_parameter(str(b.target)) if b is not None else None
        if node.target is F.conv2d:
            stride, padding, dilation, groups = (args[3] or 1), (args[4] or 0), (args[5] or 1), int(args[6] or 1)
            if isinstance(padding, str) or weight.dim() != 4:
                continue
            layer: nn.Module = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride,
                                         padding, dilation, groups, bias=bias is not None)
        else:
            if weight.dim() != 2:
                continue
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        layer.weight = weight
        if bias is not None:
            layer.bias = bias
        layer.training = False
        _set_child(gm, owner, layer)
        with graph.inserting_before(node):
            call = graph.call_module(owner, (args[0],))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()


def _bn_as_module(gm: fx.GraphModule, node: fx.Node, readers: dict[str, int]) -> None:
    """An eval-mode ``batch_norm`` on one holder's weight, bias and running statistics -> ``nn.BatchNorm2d``."""
    args = list(node.args) + [None] * (9 - len(node.args))
    attrs = args[1:5]
    if node.kwargs or args[5] or not all(isinstance(a, fx.Node) and a.op == "get_attr" for a in attrs):
        return
    owners = {str(a.target).rpartition(".")[0] for a in attrs}
    names = [str(a.target).rpartition(".")[2] for a in attrs]
    if len(owners) != 1 or names != ["weight", "bias", "running_mean", "running_var"] or not next(iter(owners)):
        return
    owner = next(iter(owners))
    holder = gm.get_submodule(owner)
    if list(holder.children()) or any(readers.get(str(a.target), 0) != 1 for a in attrs):
        return
    weight = gm.get_parameter(f"{owner}.weight")
    if weight.dim() != 1:
        return
    bn = nn.BatchNorm2d(weight.shape[0], eps=float(args[7] if args[7] is not None else 1e-5),
                        momentum=float(args[6]) if args[6] is not None else 0.1)
    bn.weight, bn.bias = weight, gm.get_parameter(f"{owner}.bias")
    bn.running_mean = gm.get_buffer(f"{owner}.running_mean")
    bn.running_var = gm.get_buffer(f"{owner}.running_var")
    if hasattr(holder, "num_batches_tracked"):
        bn.num_batches_tracked = holder.num_batches_tracked
    bn.training = False
    _set_child(gm, owner, bn)
    with gm.graph.inserting_before(node):
        call = gm.graph.call_module(owner, (args[0],))
    call.meta = dict(node.meta)
    node.replace_all_uses_with(call)
    gm.graph.erase_node(node)


def _set_child(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def program_module(ep: Any, example: torch.Tensor, where: str) -> ExportedModel:
    """The program as an ``ExportedModel``, verified against ``ep.module()`` on ``example``."""
    reference = ep.module()
    try:
        gm = _single_input_graph(ep.module())
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None
    _as_modules(gm)
    model = gm
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
